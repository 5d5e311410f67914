"""Where served models come from: files, folders and Triton-style repositories with versions.

A path names one of:

- `MODEL.onnx`: one model named after the file stem, version 1;
- a folder of `.onnx` files: one such model per file;
- a Triton model repository `DIR/<name>/<version>/model.onnx`, each model folder with an
  optional `config.pbtxt`;
- one model's folder of such a repository, `DIR/<version>/model.onnx`.

A repository model serves the versions its version policy selects: `version_policy` in its
config.pbtxt if there is one, else the server's (``--version-policy``, default the latest
one, as Triton). config.pbtxt is read as what it is, protobuf text format of Triton's
ModelConfig (the fields nnspec uses are in `proto/model_config.proto`; others are skipped):
`max_batch_size`, `version_policy`, an output's `label_filename`, `instance_group` counts and
`dynamic_batching.max_queue_delay_microseconds`.

Each version's file is stamped with its modification time and size, so that a poll can tell a
new or rewritten version from one already being served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nnspec.compiler.errors import ServeError

VERSION_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered versions to serve: the `latest` N, `specific` ones, or all (neither)."""

    latest: int | None = 1
    specific: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """`latest`, `latest:N`, `all` or `specific:V1,V2,...`; ServeError otherwise."""
        kind, _, values = text.strip().partition(":")
        try:
            if kind == "all" and not values:
                return cls(latest=None)
            if kind == "latest":
                count = int(values) if values else 1
                if count >= 1:
                    return cls(latest=count)
            if kind == "specific" and values:
                versions = tuple(sorted({int(v) for v in values.split(",")}))
                if all(v >= 1 for v in versions):
                    return cls(latest=None, specific=versions)
        except ValueError:
            pass
        raise ServeError(
            f"version policy {text!r} is not one of: latest, latest:N (N >= 1), all, "
            "specific:V1,V2 (version numbers >= 1)"
        )

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of `available`, ascending."""
        ordered = sorted(available)
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        if self.latest is not None:
            return ordered[-self.latest :]
        return ordered

    def __str__(self) -> str:
        if self.specific is not None:
            return "specific:" + ",".join(str(v) for v in self.specific)
        return "all" if self.latest is None else f"latest:{self.latest}"

    def as_config(self) -> dict:
        """Triton's JSON form of the policy (ModelVersionPolicy)."""
        if self.specific is not None:
            return {"specific": {"versions": list(self.specific)}}
        if self.latest is None:
            return {"all": {}}
        return {"latest": {"num_versions": self.latest}}


@dataclass(frozen=True)
class TritonConfig:
    """What the server takes from a model's config.pbtxt (None: not set there)."""

    max_batch_size: int | None = None
    version_policy: VersionPolicy | None = None
    labels: list[str] | None = None
    instances: int | None = None
    max_queue_delay_ms: float | None = None


@dataclass(frozen=True)
class VersionSource:
    """One version's model file, stamped so that a rewritten file is seen as changed."""

    version: str
    onnx_path: Path
    stamp: tuple[int, int]  # (mtime in ns, size)


@dataclass(frozen=True)
class RepositoryModel:
    """A model as the repository holds it now: the versions to serve, ascending, and config."""

    name: str
    versions: tuple[VersionSource, ...]
    config: TritonConfig
    policy: VersionPolicy


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def _numbered_versions(model_dir: Path) -> dict[int, Path]:
    found = {}
    for entry in model_dir.iterdir():
        if re.fullmatch(r"[0-9]+", entry.name) and (entry / VERSION_FILE).is_file():
            found[int(entry.name)] = entry / VERSION_FILE
    return found


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and bool(_numbered_versions(path))


def read_triton_config(model_dir: Path) -> TritonConfig:
    """The settings nnspec reads from `model_dir/config.pbtxt` (all None without one).

    Raises:
        ServeError: the file is not valid protobuf text format of a ModelConfig, or names a
            label file that does not exist.
    """
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return TritonConfig()
    from google.protobuf import text_format

    from nnspec.runtime.serve.grpc_messages import ModelConfig

    config = ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise ServeError(f"{path}: not a valid Triton model configuration: {error}") from error
    labels = None
    label_file = next((o.label_filename for o in config.output if o.label_filename), None)
    if label_file:
        label_path = model_dir / label_file
        if Path(label_file).name != label_file or not label_path.is_file():
            raise ServeError(f"{path}: label_filename {label_file!r} is not a file in {model_dir}")
        lines = label_path.read_text(encoding="utf-8").splitlines()
        labels = [line.strip() for line in lines if line.strip()]
    return TritonConfig(
        # As in Triton, a config without max_batch_size means 0: the model does not batch.
        max_batch_size=config.max_batch_size,
        version_policy=_config_policy(config, path),
        labels=labels,
        instances=sum(g.count for g in config.instance_group) or None,
        max_queue_delay_ms=(
            config.dynamic_batching.max_queue_delay_microseconds / 1000
            if config.dynamic_batching.max_queue_delay_microseconds
            else None
        ),
    )


def _config_policy(config, path: Path) -> VersionPolicy | None:
    if not config.HasField("version_policy"):
        return None
    choice = config.version_policy.WhichOneof("policy_choice")
    if choice == "latest":
        count = config.version_policy.latest.num_versions
        if count < 1:
            raise ServeError(f"{path}: version_policy latest needs num_versions >= 1")
        return VersionPolicy(latest=count)
    if choice == "specific":
        versions = tuple(sorted(config.version_policy.specific.versions))
        return VersionPolicy(latest=None, specific=versions)
    return VersionPolicy(latest=None)


class ModelRepository:
    """The models under one path, read afresh on every call (polling relies on that).

    Args:
        path: a model file, a folder of them, a repository, or one model's folder.
        policy: the version policy of models whose config.pbtxt sets none.
    """

    def __init__(self, path: str | Path, policy: VersionPolicy | None = None):
        self.path = Path(path)
        self.policy = policy or VersionPolicy()

    def names(self) -> list[str]:
        """The model names the path holds now, sorted.

        Raises:
            ServeError: the path does not exist or is not a model, or two models share a name.
        """
        path = self.path
        if not path.exists():
            raise ServeError(f"model path {str(path)!r} does not exist")
        if path.is_file():
            if path.suffix != ".onnx":
                raise ServeError(f"{path}: expected an .onnx file or a model directory")
            return [path.stem]
        if _is_model_folder(path):  # one model's folder of a repository
            return [path.resolve().name]
        files = [p.stem for p in path.glob("*.onnx") if p.is_file()]
        folders = [p.name for p in path.iterdir() if _is_model_folder(p)]
        duplicates = sorted(set(files) & set(folders))
        if duplicates:
            raise ServeError(
                f"model name(s) {', '.join(duplicates)} appear twice in {path} "
                "(both as NAME.onnx and as a repository folder NAME/); rename one",
            )
        return sorted(files + folders)

    def read(self, name: str) -> RepositoryModel:
        """Model `name` as it is on disk now, with the versions its policy selects.

        Raises:
            ServeError: no such model, or its config or versions are unusable.
        """
        path = self.path
        if path.is_file():
            if name != path.stem:
                raise ServeError(f"no model {name!r} in {path}")
            return self._single_file(name, path)
        if _is_model_folder(path):
            if name != path.resolve().name:
                raise ServeError(f"no model {name!r} in {path}")
            return self._model_folder(name, path)
        # `name` comes from a URL: only names listed in the folder are looked up.
        if name not in self.names():
            raise ServeError(f"no model {name!r} in {path}")
        model_dir = path / name
        if _is_model_folder(model_dir):
            return self._model_folder(name, model_dir)
        return self._single_file(name, path / f"{name}.onnx")

    def _single_file(self, name: str, onnx_path: Path) -> RepositoryModel:
        source = VersionSource("1", onnx_path, _stamp(onnx_path))
        return RepositoryModel(name, (source,), TritonConfig(), self.policy)

    def _model_folder(self, name: str, model_dir: Path) -> RepositoryModel:
        config = read_triton_config(model_dir)
        policy = config.version_policy or self.policy
        available = _numbered_versions(model_dir)
        chosen = policy.select(list(available))
        if not chosen:
            have = ", ".join(str(v) for v in sorted(available)) or "none"
            raise ServeError(
                f"{model_dir}: version policy {policy} selects none of its versions ({have})"
            )
        versions = tuple(VersionSource(str(v), available[v], _stamp(available[v])) for v in chosen)
        return RepositoryModel(name, versions, config, policy)
