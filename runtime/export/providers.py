"""onnxruntime execution providers: names users type, and the choice behind `auto`."""

from __future__ import annotations

from nnspec.compiler.errors import UsageError

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CHOICES = ("auto", *PROVIDER_NAMES)


def resolve_providers(choice: str = "auto") -> list[str]:
    """Return the onnxruntime provider list for `choice`, best first, CPU always last.

    `auto` picks TensorRT > CUDA > CPU among those this onnxruntime build offers; a provider
    asked for by name that this build lacks is a UsageError that lists what is available.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if choice == "auto":
        order = [PROVIDER_NAMES[k] for k in ("tensorrt", "cuda", "cpu")]
        return [p for p in order if p in available] or ["CPUExecutionProvider"]
    if choice not in PROVIDER_NAMES:
        raise UsageError(f"unknown provider {choice!r}; choose one of {', '.join(CHOICES)}")
    wanted = PROVIDER_NAMES[choice]
    if wanted not in available:
        offered = ", ".join(k for k, v in PROVIDER_NAMES.items() if v in available)
        raise UsageError(
            f"provider {choice!r} is not available in this onnxruntime build (offered: {offered})",
        )
    return [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
