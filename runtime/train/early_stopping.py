"""Which epoch is `best` (`train.best`), and when to stop early (`train.early_stopping`).

Both watch one per-epoch metric of the run's records (`val_loss`, `val_accuracy`,
`val_ema_accuracy`, ...), minimised or maximised. Their state is plain JSON kept in every
checkpoint, so a resumed run picks and stops exactly as a straight one. A metric that is NaN
(an empty split) never improves; the first epoch is always the first `best`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.suggest import did_you_mean
from nnspec.compiler.training_schema import BestConfig, EarlyStoppingConfig, MonitorMode


@dataclass(frozen=True)
class Monitor:
    """One metric and its direction."""

    metric: str
    mode: str  # "min" or "max"

    @classmethod
    def of(cls, metric: str, mode: MonitorMode = "auto") -> Monitor:
        if mode == "auto":  # a loss or an error (regression's mae, rmse) falls as it improves
            errors = ("loss", "mae", "mse", "rmse")
            mode = "min" if any(word in metric for word in errors) else "max"
        return cls(metric, mode)

    def gain(self, value: float, reference: float) -> float:
        """How much better `value` is than `reference` (negative: worse; NaN: no value)."""
        return value - reference if self.mode == "max" else reference - value


class BestPicker:
    """Picks the `best` epoch by `train.best`; ties on an accuracy fall to the loss of the same
    split (`val_accuracy` -> `val_loss`)."""

    def __init__(self, config: BestConfig, default: Monitor):
        first = Monitor.of(config.metric, config.mode) if config.metric else default
        self.monitors = [first]
        if first.metric.endswith("accuracy"):
            self.monitors.append(Monitor.of(first.metric[: -len("accuracy")] + "loss"))

    @property
    def metric(self) -> str:
        return self.monitors[0].metric

    def improves(self, record: dict, best: dict | None) -> bool:
        """Whether `record` beats the best record so far (`None`: there is none yet)."""
        if best is None:
            return True
        for monitor in self.monitors:
            value, reference = record.get(monitor.metric, math.nan), best[monitor.metric]
            if math.isnan(value) or math.isnan(reference):
                if math.isnan(value) and math.isnan(reference):
                    continue  # neither has it (no validation split): ask the next monitor
                return math.isnan(reference)  # a value beats none
            gain = monitor.gain(value, reference)
            if gain != 0:
                return gain > 0
        # Nothing to compare on (no validation data): the newest weights are the best guess.
        return all(math.isnan(record.get(m.metric, math.nan)) for m in self.monitors)

    def summary(self, record: dict) -> dict:
        """The values of `record` this picker compares (kept in the checkpoint state)."""
        return {m.metric: record.get(m.metric, math.nan) for m in self.monitors}


class EarlyStopping:
    """Keras's EarlyStopping rule: stop after `patience` epochs in a row without an improvement
    of more than `min_delta` over the best value seen."""

    def __init__(self, config: EarlyStoppingConfig, default_metric: str):
        self.config = config
        self.monitor = Monitor.of(config.metric or default_metric, config.mode)
        self.best: float | None = None
        self.bad_epochs = 0

    def update(self, record: dict) -> bool:
        """Take an epoch's record; True when training should stop after it."""
        value = record.get(self.monitor.metric, math.nan)
        if self.best is None or self.monitor.gain(value, self.best) > self.config.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.config.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def check_metrics(settings, metrics: list[str]) -> None:
    """Refuse a `train.best` or `train.early_stopping` metric the run does not record.

    Raises:
        SpecError: naming the setting, the metric and the metrics there are.
    """
    watched = []
    if settings.best.metric is not None:
        watched.append(("train.best.metric", settings.best.metric))
    if settings.early_stopping is not None and settings.early_stopping.metric is not None:
        watched.append(("train.early_stopping.metric", settings.early_stopping.metric))
    problems = [
        Problem(
            f"{metric!r} is not a metric of this run" + did_you_mean(metric, metrics),
            path=path,
            hint=f"metrics recorded each epoch: {', '.join(metrics)}",
        )
        for path, metric in watched
        if metric not in metrics
    ]
    if problems:
        raise SpecError(problems)
