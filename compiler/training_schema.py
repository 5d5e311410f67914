"""Training settings of a spec: optimizer, schedules, loss, and training defaults.

Owned by the training stage; the compiler only validates them as part of the spec. Every model
forbids extra keys and defaults every field, so `optimizer: {lr: 0.05}` is a complete section.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamGroupConfig(_Strict):
    """Parameters whose names match `params` (glob patterns on a parameter name or on the id of
    a module holding it, e.g. `classifier` or `layer4.*`) train with their own settings."""

    params: list[str] = Field(min_length=1)
    lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat | None = None


LBFGS_FIELDS = ("max_iter", "max_eval", "history_size", "line_search_fn", "tolerance_grad",
                "tolerance_change")


class OptimizerConfig(_Strict):
    type: Literal["sgd", "adam", "adamw", "rmsprop", "lbfgs"] = "sgd"
    lr: PositiveFloat = 0.1
    """Default 0.1; 1 for lbfgs (torch's default: the quasi-Newton step at full length)."""
    momentum: Fraction = 0.0
    """SGD and RMSprop momentum (Adam's counterpart is `betas[0]`)."""
    nesterov: bool = False
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    alpha: Fraction = 0.99
    """RMSprop's smoothing constant."""
    weight_decay: NonNegativeFloat = 0.0
    weight_decay_mode: Literal["l2", "decoupled"] | None = None
    """`l2`: decay added to the gradient; `decoupled`: weights shrink separately (AdamW).
    Default: `decoupled` for adamw, `l2` otherwise."""
    no_decay: list[str] = Field(default_factory=list)
    """Roles, as each layer kind declares them: `bias` (every bias, `in_proj_bias` and LSTM's
    `bias_ih_l0` included), `norm` (parameters of batch/layer/group norm layers), `embedding`
    (embedding tables, position embeddings, class tokens, relative position bias tables),
    `scale` (learnable scales: layer scale, attention temperature); or glob patterns on
    parameter names."""
    groups: list[ParamGroupConfig] = Field(default_factory=list)
    # torch.optim.LBFGS's options, under torch's names (lbfgs only)
    max_iter: PositiveInt = 20
    """lbfgs: at most this many iterations (each a direction and a line search) per step."""
    max_eval: PositiveInt | None = None
    """lbfgs: at most this many loss evaluations per step (default: max_iter * 5 / 4)."""
    history_size: PositiveInt = 100
    line_search_fn: Literal["strong_wolfe"] | None = "strong_wolfe"
    """lbfgs: `strong_wolfe`, or null for fixed steps of `lr` (torch's default, which
    diverges easily on networks)."""
    tolerance_grad: NonNegativeFloat = 1e-7
    tolerance_change: NonNegativeFloat = 1e-9

    @model_validator(mode="before")
    @classmethod
    def _lbfgs_lr(cls, data):
        if isinstance(data, dict) and data.get("type") == "lbfgs" and "lr" not in data:
            return {**data, "lr": 1.0}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerConfig:
        if self.nesterov and not (self.type == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs type: sgd and a momentum > 0")
        fields = type(self).model_fields
        given = [f for f in LBFGS_FIELDS if getattr(self, f) != fields[f].default]
        if self.type != "lbfgs" and given:
            raise ValueError(f"{', '.join(given)}: options of type: lbfgs, not of {self.type}")
        if self.type == "lbfgs" and self.momentum:
            raise ValueError("lbfgs has no momentum: leave out optimizer.momentum")
        if self.type == "adamw" and self.weight_decay_mode == "l2":
            raise ValueError(
                "adamw decouples weight decay by definition; for an L2 term use "
                "type: adam with weight_decay_mode: l2",
            )
        return self

    @property
    def decay_mode(self) -> Literal["l2", "decoupled"]:
        if self.weight_decay_mode is not None:
            return self.weight_decay_mode
        return "decoupled" if self.type == "adamw" else "l2"


class _Warmup(_Strict):
    warmup_epochs: NonNegativeFloat = 0.0
    """Linear warmup from lr/warmup_steps to lr, then the schedule runs over the steps left."""


class ConstantLR(_Warmup):
    type: Literal["constant"] = "constant"


class StepLR(_Warmup):
    type: Literal["step"]
    step_epochs: PositiveInt = 30
    gamma: PositiveFloat = 0.1


class MultiStepLR(_Warmup):
    type: Literal["multistep"]
    milestones: list[PositiveInt] = Field(min_length=1)
    """Epochs (counted after warmup) at which the lr is multiplied by gamma."""
    gamma: PositiveFloat = 0.1

    @model_validator(mode="after")
    def _increasing(self) -> MultiStepLR:
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            raise ValueError(f"milestones must increase, got {self.milestones}")
        return self


class CosineLR(_Warmup):
    type: Literal["cosine"]
    min_lr: NonNegativeFloat = 0.0


class ExponentialLR(_Warmup):
    """torch.optim.lr_scheduler.ExponentialLR stepped once per epoch: lr * gamma^epoch."""

    type: Literal["exponential"]
    gamma: PositiveFloat = 0.9


class OneCycleLR(_Warmup):
    """Smith's one-cycle policy as torch.optim.lr_scheduler.OneCycleLR (cosine annealing):
    the optimizer's lr is the peak. With `cycle_momentum` (torch's default) the momentum
    (SGD, RMSprop) or beta1 (Adam) moves inversely, max -> base -> max."""

    type: Literal["one_cycle"]
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    div_factor: PositiveFloat = 25.0
    final_div_factor: PositiveFloat = 1e4
    cycle_momentum: bool = True
    base_momentum: Fraction = 0.85
    max_momentum: Fraction = 0.95


LrScheduleConfig = Annotated[
    ConstantLR | StepLR | MultiStepLR | ExponentialLR | CosineLR | OneCycleLR,
    Field(discriminator="type"),
]


class ConstantMomentum(_Strict):
    type: Literal["constant"] = "constant"


class SutskeverMomentum(_Strict):
    """Sutskever et al. (2013): mu_t = min(1 - 2^(-1 - log2(floor(t / period) + 1)), max)."""

    type: Literal["sutskever"]
    max: Fraction = 0.99
    period: PositiveInt = 250


MomentumScheduleConfig = Annotated[
    ConstantMomentum | SutskeverMomentum, Field(discriminator="type")
]


class ScheduleConfig(_Strict):
    lr: LrScheduleConfig = Field(default_factory=ConstantLR)
    momentum: MomentumScheduleConfig = Field(default_factory=ConstantMomentum)


class LossConfig(_Strict):
    type: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: Fraction = 0.0


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositivePair = tuple[PositiveFloat, PositiveFloat]


class _Augment(_Strict):
    @model_validator(mode="after")
    def _ordered_pairs(self):
        for name in ("scale", "ratio"):
            pair = getattr(self, name, None)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"{name} must be [low, high], got {list(pair)}")
        return self


class RandomResizedCropAug(_Augment):
    """A random area and aspect ratio cut out and resized to the input's H x W (Inception's
    crop, torchvision's RandomResizedCrop); replaces the input's `preprocess` in training."""

    type: Literal["random_resized_crop"]
    scale: tuple[Annotated[float, Field(gt=0.0, le=1.0)], Annotated[float, Field(gt=0.0, le=1.0)]] = (0.08, 1.0)
    ratio: PositivePair = (3 / 4, 4 / 3)


class HorizontalFlipAug(_Augment):
    type: Literal["horizontal_flip"]
    p: Probability = 0.5


class VerticalFlipAug(_Augment):
    type: Literal["vertical_flip"]
    p: Probability = 0.5


class RotationAug(_Augment):
    """A random rotation by up to +-degrees (corners filled with 0; masks with ignore_index)."""

    type: Literal["rotation"]
    degrees: Annotated[float, Field(gt=0.0, le=180.0)]


class ColorJitterAug(_Augment):
    type: Literal["color_jitter"]
    brightness: NonNegativeFloat = 0.0
    contrast: NonNegativeFloat = 0.0
    saturation: NonNegativeFloat = 0.0
    hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0


class TrivialAugmentAug(_Augment):
    """TrivialAugment (Muller & Hutter 2021): one random op at a random strength per image."""

    type: Literal["trivial_augment"]
    num_magnitude_bins: Annotated[int, Field(ge=2)] = 31


class RandAugmentAug(_Augment):
    type: Literal["rand_augment"]
    num_ops: PositiveInt = 2
    magnitude: Annotated[int, Field(ge=0)] = 9
    num_magnitude_bins: Annotated[int, Field(ge=2)] = 31


class RandomErasingAug(_Augment):
    """Erase a random rectangle (Zhong et al. 2017); masks are left as they are."""

    type: Literal["random_erasing"]
    p: Probability = 0.5
    scale: tuple[Annotated[float, Field(gt=0.0, lt=1.0)], Annotated[float, Field(gt=0.0, lt=1.0)]] = (0.02, 0.33)
    ratio: PositivePair = (0.3, 3.3)


class MixUpAug(_Augment):
    """Batch-level: mixes pairs of samples and their one-hot labels (classification)."""

    type: Literal["mixup"]
    alpha: PositiveFloat = 1.0


class CutMixAug(_Augment):
    """Batch-level: pastes a box of another sample, labels mixed by area (classification)."""

    type: Literal["cutmix"]
    alpha: PositiveFloat = 1.0


AugmentConfig = Annotated[
    RandomResizedCropAug | HorizontalFlipAug | VerticalFlipAug | RotationAug | ColorJitterAug
    | TrivialAugmentAug | RandAugmentAug | RandomErasingAug | MixUpAug | CutMixAug,
    Field(discriminator="type"),
]
AUGMENT_NAMES = (
    "random_resized_crop", "horizontal_flip", "vertical_flip", "rotation", "color_jitter",
    "trivial_augment", "rand_augment", "random_erasing", "mixup", "cutmix",
)  # fmt: skip
#: entries that act on whole batches (after the per-sample pipeline)
BATCH_AUGMENTS = ("mixup", "cutmix")


def _augment_entry(value):
    """`horizontal_flip` or `{horizontal_flip: {p: 0.3}}` -> `{type: horizontal_flip, p: 0.3}`
    (the written-back form with `type` is accepted as it is)."""
    from nnspec.compiler.suggest import did_you_mean

    if isinstance(value, dict) and "type" in value:
        return value
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, dict) and len(value) == 1:
        name, options = next(iter(value.items()))
        options = {} if options is None else options
    else:
        raise ValueError("an augmentation is a name or a one-key mapping {name: {options}}")
    if name not in AUGMENT_NAMES:
        raise ValueError(
            f"unknown augmentation {name!r}{did_you_mean(str(name), list(AUGMENT_NAMES))}; "
            f"known: {', '.join(AUGMENT_NAMES)}"
        )
    if not isinstance(options, dict):
        raise ValueError(f"the options of {name} must be a mapping, got {options!r}")
    return {"type": name, **options}


MonitorMode = Literal["auto", "min", "max"]
"""`auto`: `min` for a loss or an error (`loss`, `mae`, `mse`, `rmse` in its name), else `max`
(as Keras decides, extended to the regression task's error metrics)."""


class BestConfig(_Strict):
    """The per-epoch metric that picks the `best` checkpoint (the one final.json, eval and
    export use). Ties on an accuracy fall to the loss of the same split (`val_accuracy` ->
    `val_loss`)."""

    metric: str | None = None
    """Default: the task's validation metric (`val_accuracy` for classification)."""
    mode: MonitorMode = "auto"


class EarlyStoppingConfig(_Strict):
    """Stop when `metric` has not improved by more than `min_delta` for `patience` epochs."""

    metric: str | None = None
    """Default: the metric of `train.best`."""
    mode: MonitorMode = "auto"
    patience: PositiveInt = 5
    min_delta: NonNegativeFloat = 0.0


class EmaConfig(_Strict):
    """An exponential moving average of the weights (parameters and buffers), updated after
    every optimizer step with timm's ModelEmaV3 rule: `ema = decay * ema + (1 - decay) * w`."""

    decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9998
    warmup: bool = False
    """Ramp the decay up as `1 - (1 + t)^-warmup_power` (capped at `decay`), so early averages
    are not dominated by the initial weights."""
    warmup_power: PositiveFloat = 2 / 3


class FreezeConfig(_Strict):
    """Parameters matching `params` (glob patterns on a parameter name or on the id of a module
    holding it, as in `optimizer.groups`) do not train; batch norms among them stay in eval
    mode. `unfreeze_at_epoch: N` trains them from epoch N on (epochs count from 1)."""

    params: list[str] = Field(min_length=1)
    unfreeze_at_epoch: PositiveInt | None = None


class TrainConfig(_Strict):
    """Per-spec training defaults; the matching `nnspec train` flags override them."""

    data: str = "digits"
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    seed: int = 0
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.2
    grad_clip: PositiveFloat | None = None
    """Clip the global gradient norm to this value."""
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = False
    compile: bool = False
    num_workers: Annotated[int, Field(ge=0)] = 0
    accumulate: PositiveInt = 1
    """Optimizer step every N batches (gradients summed over them): the effective batch is
    batch_size x accumulate (x processes under torchrun)."""
    ema: EmaConfig | None = None
    best: BestConfig = Field(default_factory=BestConfig)
    early_stopping: EarlyStoppingConfig | None = None
    freeze: FreezeConfig | None = None
    """A list of patterns is short for `{params: [...]}`."""
    augment: list[Annotated[AugmentConfig, BeforeValidator(_augment_entry)]] = Field(
        default_factory=list
    )
    """Training-only augmentation, applied in order to each training sample (torchvision
    transforms v2; masks move with their images); `mixup`/`cutmix` act on whole batches."""

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_shorthand(cls, value):
        return {"params": value} if isinstance(value, list) else value
