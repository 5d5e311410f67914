"""How a run reports itself in its log: the per-epoch line and the metrics line."""

from __future__ import annotations


def epoch_line(record: dict, epochs: int, task) -> str:
    train = task.describe(record, "train_")
    val = task.describe(record, "val_")
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f}"
        f"{' ' + train if train else ''}  val loss {record['val_loss']:.4f}"
        f"{' ' + val if val else ''}  lr {record['lr']:.4g}  "
        f"{record['images_per_second']:.0f} img/s  {record['epoch_seconds']:.1f}s"
    )


def metric_text(metrics: dict) -> str:
    """`accuracy 98.33%, top5_accuracy 100.00%` / `mean_iou 0.8123, pixel_accuracy 97.10%`."""
    parts = []
    for key, value in metrics.items():
        if key in ("loss", "count") or not isinstance(value, float):
            continue
        parts.append(f"{key} {100 * value:.2f}%" if "accuracy" in key else f"{key} {value:.4f}")
    return ", ".join(parts)
