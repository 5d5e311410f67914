"""TensorBoard: event files in the run directory's `tb/` (`tensorboard --logdir runs`)."""

from __future__ import annotations

from nnspec.runtime.train.tracking.base import TrackedRun, Tracker, metrics_of


class TensorBoardTracker(Tracker):
    """Scalars grouped as train/, val/, optimizer/, speed/ and test/; always on."""

    name = "tensorboard"

    def start(self, run: TrackedRun, stored: dict | None) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        logged = stored["epoch"] if stored else 0
        # On resume, TensorBoard hides whatever an earlier session wrote after `logged` (a
        # kill between the events and tracking.json), so the replay cannot show twice.
        purge = logged + 1 if stored else None
        self.writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=purge)
        self.epoch = logged
        return {"epoch": logged}

    def log_epoch(self, record: dict) -> None:
        self.epoch = record["epoch"]
        for key, value in metrics_of(record).items():
            if key != "step":
                self.writer.add_scalar(tensorboard_tag(key), value, self.epoch)
        self.writer.flush()

    def log_final(self, final: dict) -> None:
        for key, value in metrics_of(final).items():
            if key.startswith("test_"):
                self.writer.add_scalar(f"test/{key[len('test_'):]}", value, self.epoch)
        self.writer.flush()

    def log_artifact(self, path) -> None:
        """TensorBoard keeps no files: the run directory holds them."""

    def finish(self, status: str) -> None:
        self.writer.close()


def tensorboard_tag(key: str) -> str:
    """`train_loss` -> `train/loss`, `lr` -> `optimizer/lr`, `epoch_seconds` -> `speed/...`."""
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    if key in ("lr", "momentum"):
        return f"optimizer/{key}"
    return f"speed/{key}"
