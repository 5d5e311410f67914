"""How a model call moves tensors: plain `session.run` on CPU, I/O binding on a GPU.

On the CUDA and TensorRT execution providers a plain `session.run` copies every input from
pageable host memory inside the call and every output back the same way. The I/O binding
runner instead stages each input in a page-locked (pinned) host buffer, which the GPU reads by
DMA, binds the outputs on the device, and copies them back once after the run (onnxruntime's
"I/O Binding" guide). Pinned buffers come from the execution provider's own host-accessible
allocator (`OrtEpDevice.memory_info(HOST_ACCESSIBLE)`) and are kept per thread and shape, so
a batch size seen once costs no allocation again; where this onnxruntime build offers no such
allocator, inputs are bound from ordinary host memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

Arrays = dict[str, np.ndarray]
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


def make_runner(session, output_names: list[str]) -> Callable[[Arrays], Arrays]:
    """The model call for `session`: I/O binding on a GPU provider, `session.run` otherwise."""
    provider = session.get_providers()[0]
    if provider in GPU_PROVIDERS:
        options = session.get_provider_options().get(provider, {})
        return IoBindingRunner(
            session, output_names, GPU_PROVIDERS[provider], int(options.get("device_id", 0))
        )

    def run(feed: Arrays) -> Arrays:
        return dict(zip(output_names, session.run(output_names, feed), strict=True))

    return run


def pinned_memory_info(provider: str, device_id: int):
    """The host-accessible (pinned) memory of `provider`'s device, or None if not offered."""
    import onnxruntime as ort

    get_devices = getattr(ort, "get_ep_devices", None)  # onnxruntime >= 1.22
    memory_type = getattr(ort, "OrtDeviceMemoryType", None)
    if get_devices is None or memory_type is None:
        return None
    # An execution provider lists its devices in ordinal order (device_id 0 first).
    devices = [d for d in get_devices() if d.ep_name == provider]
    if device_id >= len(devices):
        return None
    return devices[device_id].memory_info(memory_type.HOST_ACCESSIBLE)


class IoBindingRunner:
    """One model call with inputs bound from pinned buffers and outputs bound on the device.

    Args:
        session: an onnxruntime InferenceSession.
        output_names: the outputs to return, in order.
        device_type: where outputs are bound ("cuda"; "cpu" runs the same code on CPU).
        device_id: the device's index.
    """

    def __init__(self, session, output_names: list[str], device_type: str, device_id: int = 0):
        self._session = session
        self._outputs = output_names
        self._device_type = device_type
        self._device_id = device_id
        provider = session.get_providers()[0]
        self._pinned = pinned_memory_info(provider, device_id) if device_type != "cpu" else None
        self._local = threading.local()  # each thread its own staging buffers

    @property
    def pinned(self) -> bool:
        """Whether inputs are staged in pinned host memory."""
        return self._pinned is not None

    def __call__(self, feed: Arrays) -> Arrays:
        if any(array.dtype == object for array in feed.values()):
            # Strings never go to a device; onnxruntime handles them on the host.
            values = self._session.run(self._outputs, feed)
            return dict(zip(self._outputs, values, strict=True))
        binding = self._session.io_binding()
        for name, array in feed.items():
            array = np.ascontiguousarray(array)
            if self._pinned is None:
                binding.bind_cpu_input(name, array)
            else:
                binding.bind_ortvalue_input(name, self._staged(name, array))
        for name in self._outputs:
            binding.bind_output(name, self._device_type, self._device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(self._outputs, binding.copy_outputs_to_cpu(), strict=True))

    def _staged(self, name: str, array: np.ndarray):
        import onnxruntime as ort

        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (name, array.shape, array.dtype.str)
        value = buffers.get(key)
        if value is None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(array.shape), array.dtype.type, memory_info=self._pinned
            )
            buffers[key] = value
        value.update_inplace(array)
        return value
