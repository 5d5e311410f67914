"""The spec's top-level model: pydantic v2, strict, unknown keys refused.

Layer parameters are validated later, node by node, through the layer registry's discriminated
union (blocks must be expanded first, so that `$args` are substituted and errors point into the
block). Everything else about a spec is validated here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from nnspec.compiler.load import SourceMap
from nnspec.compiler.task_schema import ClassificationTask, TaskConfig, task_from_shorthand
from nnspec.compiler.training_schema import LossConfig, OptimizerConfig, ScheduleConfig, TrainConfig

FORMAT_VERSION = 1
#: migrations[n] turns a version-n document into version n+1 (none needed yet)
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]
PositiveInt = Annotated[int, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


Size2 = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class PreprocessSpec(Strict):
    """How an image file becomes the input: resize, then center crop (torchvision's order).

    `resize: N` scales the shorter side to N (aspect kept), `resize: [H, W]` to exactly H x W;
    `center_crop` cuts the input's H x W from the middle. Without a `preprocess`, images are
    resized to the input's H x W.
    """

    resize: PositiveInt | Size2 | None = None
    center_crop: PositiveInt | Size2 | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


class InputSpec(Strict):
    """One model input: its per-sample shape, dtype, raw value range and image preprocessing."""

    # a dim beyond int32 is no tensor anyone can allocate (compiler/magnitude.py)
    shape: list[Annotated[int, Field(gt=0, le=2**31 - 1)]] = Field(min_length=1, max_length=5)
    dtype: Literal["float32", "int64"] = "float32"
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    """[low, high] of the raw values the model takes (the digits: [0, 16]; 8-bit images as
    they are: [0, 255]; scaled images: [0, 1]). Images are converted into it; data outside it
    is refused. Unset: images are scaled to [0, 1] and arrays are not checked."""
    preprocess: PreprocessSpec | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range must be [low, high] with low < high, got {self.range}")
        if self.preprocess is not None:
            _check_preprocess(self.preprocess, self.shape, self.dtype)
        return self

    @property
    def is_image(self) -> bool:
        """A float [C, H, W] input with 1 (grey) or 3 (RGB) channels: image files can feed it."""
        return self.dtype == "float32" and len(self.shape) == 3 and self.shape[0] in (1, 3)


def _check_preprocess(pre: PreprocessSpec, shape: list[int], dtype: str) -> None:
    if not (dtype == "float32" and len(shape) == 3 and shape[0] in (1, 3)):
        raise ValueError(
            f"preprocess applies to image inputs [1 or 3, H, W] (float32), not {shape} ({dtype})"
        )
    size = list(shape[1:])
    crop = [pre.center_crop] * 2 if isinstance(pre.center_crop, int) else pre.center_crop
    if crop is not None and list(crop) != size:
        raise ValueError(f"center_crop {list(crop)} must be the input's H x W {size}")
    if crop is None and isinstance(pre.resize, int):
        raise ValueError(
            f"resize: {pre.resize} scales the shorter side, which does not give {size} for "
            f"every image; add center_crop: {size} or resize to [H, W]"
        )
    if crop is None and pre.resize is not None and list(pre.resize) != size:
        raise ValueError(f"resize {list(pre.resize)} without a center_crop must be {size}")
    if crop is not None and pre.resize is not None:
        # `resize: N` makes the shorter side N, so both sides are at least N
        covered = [pre.resize] * 2 if isinstance(pre.resize, int) else pre.resize
        if covered[0] < size[0] or covered[1] < size[1]:
            raise ValueError(f"resize {pre.resize} gives images smaller than the crop {size}")


class NormalizeSpec(Strict):
    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


InitSchemeName = Literal[
    "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
    "normal", "trunc_normal", "uniform", "orthogonal", "zeros", "ones", "constant", "default",
]


class InitScheme(Strict):
    """One initialisation scheme; a bare name in the spec means `{scheme: name}`."""

    scheme: InitSchemeName
    mode: Literal["fan_in", "fan_out"] | None = None
    nonlinearity: Literal["relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu"] | None = None
    a: float | None = None
    b: float | None = None
    gain: float | None = None
    mean: float = 0.0
    std: float | None = None
    value: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"scheme": value} if isinstance(value, str) else value


class InitConfig(Strict):
    """Default init per layer category, plus the options that apply to all of them."""

    conv: InitScheme | None = None
    linear: InitScheme | None = None
    norm: InitScheme | None = None
    embedding: InitScheme | None = None
    recurrent: InitScheme | None = None
    attention: InitScheme | None = None
    token: InitScheme | None = None
    bias: InitScheme | None = None
    mode: Literal["fan_in", "fan_out"] | None = None
    nonlinearity: Literal["relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu"] | None = None
    zero_init_residual: bool = False
    seed: int | None = None
    #: schemes for individual layer kinds (`conv_transpose: zeros`), more specific than categories
    kinds: dict[str, InitScheme] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_kinds(cls, value):
        if not isinstance(value, dict):
            return value
        from nnspec.compiler.layers import kind_names

        names = set(kind_names()) - set(cls.model_fields)
        kinds = {k: v for k, v in value.items() if k in names}
        if not kinds:
            return value
        rest = {k: v for k, v in value.items() if k not in names}
        return {**rest, "kinds": {**rest.get("kinds", {}), **kinds}}

    def scheme_for(self, kind: str, category: str | None) -> InitScheme | None:
        """The weight scheme for a layer kind: its own entry, else its category's."""
        if kind in self.kinds:
            return self.kinds[kind]
        return getattr(self, category) if category else None


class NodeInit(Strict):
    """A per-node init override: `init: orthogonal` or `init: {weight: ..., bias: ...}`."""

    weight: InitScheme | None = None
    bias: InitScheme | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_scheme(cls, value):
        if isinstance(value, str) or (isinstance(value, dict) and "scheme" in value):
            return {"weight": value}
        return value


class BlockDef(Strict):
    """A named, parameterised sub-network. Exactly one body: residual, branches or layers."""

    args: dict[Identifier, Any] = Field(default_factory=dict)
    description: str = ""
    residual: Any = None
    branches: Any = None
    layers: list[Any] | None = None

    @model_validator(mode="after")
    def _one_body(self):
        bodies = [k for k in ("residual", "branches", "layers") if getattr(self, k) is not None]
        if len(bodies) != 1:
            found = ", ".join(bodies) or "none"
            raise ValueError(f"a block needs exactly one of residual, branches, layers (found {found})")
        return self


class HeadSpec(Strict):
    """A training-only head: its loss is added (weighted) in training; absent in eval/export."""

    id: Identifier
    from_: str = Field(alias="from")
    loss_weight: float = Field(1.0, ge=0)
    network: list[Any] = Field(min_length=1)


class LintConfig(Strict):
    ignore: list[str] = Field(default_factory=list)


class Spec(Strict):
    nnspec: Literal[1]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=128)]
    description: str = ""
    input: InputSpec | None = None
    inputs: dict[Identifier, InputSpec] | None = None
    normalize: Literal["auto"] | NormalizeSpec | None = None
    labels: list[str] | None = None
    task: TaskConfig = Field(default_factory=ClassificationTask)
    vars: dict[Identifier, Any] = Field(default_factory=dict)
    init: InitConfig = Field(default_factory=InitConfig)
    blocks: dict[Identifier, BlockDef] = Field(default_factory=dict)
    network: list[Any] = Field(min_length=1)
    output: NodeId | None = None
    output_name: Identifier = "logits"
    heads: list[HeadSpec] = Field(default_factory=list)
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    loss: LossConfig | None = None
    train: TrainConfig | None = None
    lint: LintConfig | None = None

    _data: dict = PrivateAttr(default_factory=dict)
    _source: SourceMap | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, value: str) -> str:
        # the name becomes runs/NAME, a Triton model folder, NAME.onnx
        if value in (".", ".."):
            raise ValueError(f"a spec name cannot be {value!r}: it names folders (runs/NAME)")
        return value

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, value):
        return task_from_shorthand(value)

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, value):
        if value is not None and not value:
            raise ValueError("inputs needs at least one entry")
        return value

    @model_validator(mode="after")
    def _one_input_form(self):
        if (self.input is None) == (self.inputs is None):
            raise ValueError("give exactly one of `input` (one input) or `inputs` (named inputs)")
        if self.inputs is not None and isinstance(self.normalize, NormalizeSpec):
            raise ValueError("top-level `normalize` applies to a single `input` only")
        if isinstance(self.normalize, NormalizeSpec):
            channels = self.input.shape[0]
            if len(self.normalize.mean) != channels:
                raise ValueError(
                    f"normalize has {len(self.normalize.mean)} values for {channels} input channels"
                )
        return self

    # ------------------------------------------------------------------ derived, not stored
    @property
    def input_specs(self) -> dict[str, InputSpec]:
        """Named inputs in order; a single `input` is named `input`."""
        return dict(self.inputs) if self.inputs is not None else {"input": self.input}

    @property
    def source(self) -> str:
        return self._source.file if self._source else "<dict>"

    @property
    def source_map(self) -> SourceMap | None:
        return self._source

    def to_data(self) -> dict:
        """The spec as plain data (after overrides) that `load_spec` accepts again."""
        return json.loads(json.dumps(self._data))

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the spec data: equal specs, equal hashes."""
        text = json.dumps(self._data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
