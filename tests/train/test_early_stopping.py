"""`train.best` and `train.early_stopping` on hand-made epoch records."""

from __future__ import annotations

import math

import pytest

from nnspec.compiler import SpecError
from nnspec.compiler.training_schema import BestConfig, EarlyStoppingConfig, TrainConfig
from nnspec.runtime.train.early_stopping import BestPicker, EarlyStopping, Monitor, check_metrics

ACCURACY = Monitor("val_accuracy", "max")  # the classification task's default


def test_auto_mode_minimises_losses_and_maximises_the_rest():
    assert Monitor.of("val_loss").mode == "min"
    assert Monitor.of("val_ema_loss").mode == "min"
    assert Monitor.of("val_accuracy").mode == "max"
    assert Monitor.of("val_loss", "max").mode == "max"


def pick(picker: BestPicker, records: list[dict]) -> list[int]:
    """The epochs at which `best` would be saved."""
    best, saved = None, []
    for epoch, record in enumerate(records, start=1):
        if picker.improves(record, best):
            best, saved = picker.summary(record), [*saved, epoch]
    return saved


def test_best_is_the_highest_accuracy_with_ties_falling_to_the_lower_loss():
    records = [
        {"val_accuracy": 0.5, "val_loss": 1.0},
        {"val_accuracy": 0.7, "val_loss": 0.9},
        {"val_accuracy": 0.7, "val_loss": 0.8},  # tie on accuracy, lower loss: better
        {"val_accuracy": 0.7, "val_loss": 0.85},
        {"val_accuracy": 0.6, "val_loss": 0.1},
    ]
    assert pick(BestPicker(BestConfig(), ACCURACY), records) == [1, 2, 3]
    assert pick(BestPicker(BestConfig(metric="val_loss"), ACCURACY), records) == [1, 2, 3, 5]


def test_a_nan_metric_never_improves_and_a_value_beats_a_nan():
    records = [{"val_loss": math.nan}, {"val_loss": 0.5}, {"val_loss": math.nan}]
    assert pick(BestPicker(BestConfig(metric="val_loss"), ACCURACY), records) == [1, 2]
    assert pick(BestPicker(BestConfig(metric="val_loss"), ACCURACY), records[1:]) == [1]


def test_without_validation_metrics_the_newest_epoch_is_best():
    """No validation split: every val metric is NaN, and `best` follows the last epoch
    (keeping epoch 1's weights would test a barely trained model)."""
    records = [{"val_accuracy": math.nan, "val_loss": math.nan}] * 3
    assert pick(BestPicker(BestConfig(), ACCURACY), records) == [1, 2, 3]


def test_early_stopping_waits_patience_epochs_without_a_min_delta_improvement():
    config = EarlyStoppingConfig(metric="val_loss", patience=2, min_delta=0.05)
    stopper = EarlyStopping(config, default_metric="val_accuracy")
    losses = [1.0, 0.9, 0.88, 0.87, 0.7, 0.69, 0.68]
    # 0.9 improves by 0.1; 0.88 and 0.87 by less than 0.05 on 0.9: stop after the 4th epoch.
    stops = [stopper.update({"val_loss": v}) for v in losses[:4]]
    assert stops == [False, False, False, True]
    assert stopper.state_dict() == {"best": 0.9, "bad_epochs": 2}

    resumed = EarlyStopping(config, default_metric="val_accuracy")
    resumed.load_state_dict({"best": 0.9, "bad_epochs": 1})
    assert resumed.update({"val_loss": 0.7}) is False and resumed.bad_epochs == 0


def test_early_stopping_defaults_to_the_best_metric():
    stopper = EarlyStopping(EarlyStoppingConfig(patience=1), default_metric="val_accuracy")
    assert stopper.monitor == Monitor("val_accuracy", "max")
    assert [stopper.update({"val_accuracy": a}) for a in (0.5, 0.6, 0.6)] == [False, False, True]


def test_unknown_metrics_are_spec_errors_naming_the_setting_and_the_choices():
    settings = TrainConfig.model_validate(
        {"best": {"metric": "val_acuracy"}, "early_stopping": {"metric": "val_los"}}
    )
    with pytest.raises(SpecError) as caught:
        check_metrics(settings, ["train_loss", "val_loss", "val_accuracy"])
    message = str(caught.value)
    assert "train.best.metric: 'val_acuracy'" in message and "did you mean 'val_accuracy'" in message
    assert "train.early_stopping.metric" in message and "2 problems" in message
