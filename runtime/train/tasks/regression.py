"""`task: regression`: float targets shaped like the model's output. MSE, L1 or Huber loss;
metrics MAE, RMSE and R² in the targets' own units.

With `standardize: true` the model trains on (y - mean) / std of the training targets (per
output element); the run keeps the statistics (`targets.json`) and the model's eval-mode
output, hence the exported graph, is `output * std + mean`: predictions in the targets' units.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from nnspec.compiler.errors import DataError
from nnspec.runtime.train.tasks.base import Task, target_error

LOSSES = {"mse": lambda c: nn.MSELoss(), "l1": lambda c: nn.L1Loss(),
          "huber": lambda c: nn.HuberLoss(delta=c.huber_delta)}  # fmt: skip


class RegressionTask(Task):
    name = "regression"
    monitor = "rmse"
    higher_is_better = False
    shown = (("mae", "MAE", False), ("r2", "R2", False))

    def __init__(self, config, output_shape, labels):
        super().__init__(config, output_shape, labels)
        self.criterion = LOSSES[config.loss](config)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def check_targets(self, target):
        if tuple(target.shape[1:]) != self.output_shape:
            raise target_error(self.name, f"expected targets shaped like the output "
                               f"{list(self.output_shape)} per sample, got "
                               f"{list(target.shape[1:])}")  # fmt: skip
        if not torch.is_floating_point(target) or not bool(torch.isfinite(target).all()):
            raise target_error(self.name, "values must be finite floats")

    def fit(self, splits) -> dict:
        if not self.config.standardize:
            return {}
        total = total_sq = None
        count = 0
        for _, y in DataLoader(splits.train, batch_size=512):
            y = y.double().reshape(len(y), -1)
            total = y.sum(0) if total is None else total + y.sum(0)
            total_sq = (y * y).sum(0) if total_sq is None else total_sq + (y * y).sum(0)
            count += len(y)
        if not count:
            raise DataError("cannot standardise the targets: the training split is empty")
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        state = {"mean": mean.tolist(), "std": std.tolist()}
        self.restore(state)
        return state

    def restore(self, state: dict) -> None:
        if state.get("mean") is not None:
            self.mean = torch.tensor(state["mean"], dtype=torch.float32).view(self.output_shape)
            self.std = torch.tensor(state["std"], dtype=torch.float32).view(self.output_shape)

    def prepare_model(self, model) -> None:
        if self.mean is not None:
            model.set_output_standardization(self.mean.flatten().tolist(),
                                             self.std.flatten().tolist())  # fmt: skip

    def _standardized(self, values: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return values
        mean, std = self.mean.to(values.device), self.std.to(values.device)
        return (values - mean) / std

    def loss(self, output, target):
        return self.criterion(output.float(), self._standardized(target.float()))

    def eval_loss(self, output, target):
        # eval outputs are in target units: compare in training units, like the training loss
        return self.criterion(self._standardized(output.float()),
                              self._standardized(target.float()))  # fmt: skip

    def eval_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

        return MetricCollection({
            "mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score(),
        }, compute_groups=False)  # fmt: skip

    def update_eval(self, metrics, output, target):
        output, target = output.float().reshape(len(output), -1), target.float().reshape(
            len(target), -1)
        metrics["mae"].update(output, target)
        metrics["rmse"].update(output, target)
        # one R² per output element, averaged (sklearn's uniform_average)
        metrics["r2"].update(output.squeeze(1) if output.shape[1] == 1 else output,
                             target.squeeze(1) if target.shape[1] == 1 else target)

    def metadata(self) -> dict:
        return {"type": self.name, "loss": self.config.loss,
                "standardized_targets": bool(self.config.standardize),
                "outputs_in_target_units": True}  # fmt: skip
