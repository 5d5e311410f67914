"""Weights & Biases: one W&B run per training run, its files in the run directory's `wandb/`.

`--track wandb[:[ENTITY/]PROJECT]` (default project: `WANDB_PROJECT`, else the spec's name).
Online when W&B has an API key (`wandb login`, `WANDB_API_KEY`); otherwise offline, writing
everything under `RUN_DIR/wandb/offline-run-*` with no network (`wandb sync` uploads it later).
`WANDB_MODE` decides when it is set. A resumed run continues the same W&B run id.
"""

from __future__ import annotations

import netrc
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

from nnspec.runtime.train.tracking.base import TrackedRun, Tracker, metrics_of


class WandbTracker(Tracker):
    name = "wandb"
    requires = "wandb"

    def start(self, run: TrackedRun, stored: dict | None) -> dict:
        import wandb

        entity, project = _entity_project(self.target, run.experiment)
        if stored:
            entity, project = stored.get("entity"), stored["project"]
        mode = stored["mode"] if stored else choose_mode()
        self.run = wandb.init(
            entity=entity,
            project=project,
            name=run.name,
            id=stored["id"] if stored else None,
            resume="allow",
            dir=str(run.run_dir),
            config=None if stored else run.params,
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(silent=True),
        )
        if not stored:
            self._save(run.spec_file)
        return {
            "id": self.run.id,
            "entity": entity,
            "project": project,
            "mode": mode,
            "dir": str(run.run_dir),
            "name": run.name,
            "epoch": stored["epoch"] if stored else 0,
        }

    def log_epoch(self, record: dict) -> None:
        self.run.log(metrics_of(record), step=record["epoch"])

    def log_final(self, final: dict) -> None:
        self.run.summary.update({k: v for k, v in final.items() if not isinstance(v, dict)})

    def log_artifact(self, path: Path) -> None:
        """An exported model becomes a versioned W&B artifact of type `model`; other files
        (final.json) join the run's files."""
        import wandb

        path = Path(path)
        if path.suffix != ".onnx":
            self._save(path)
            return
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.run.name or self.run.id}-{path.stem}")
        artifact = wandb.Artifact(name, type="model")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def _save(self, path: Path) -> None:
        # A copy inside W&B's files directory: saving a file from elsewhere symlinks it, with
        # a warning on the console.
        copy = Path(self.run.dir) / path.name
        shutil.copyfile(path, copy)
        self.run.save(str(copy), base_path=self.run.dir, policy="now")

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)

    def describe(self, record: dict) -> str:
        where = f"{record['entity']}/{record['project']}" if record["entity"] else record["project"]
        text = f"{record['mode']} run {record['id']} of project {where}"
        if record["mode"] == "offline":
            text += f" (upload later: wandb sync {record['dir']}/wandb/offline-run-*)"
        return text

    def release(self) -> None:
        self.run.finish()

    @classmethod
    def reopen(cls, stored: dict) -> WandbTracker:
        """The tracker of a stored run (resumed by id), for adding artifacts after training."""
        tracker = cls(None)
        spec_file = Path(stored["dir"]) / "spec.yaml"
        run = TrackedRun(Path(stored["dir"]), stored["project"], stored["name"], {}, spec_file)
        tracker.start(run, stored)
        return tracker


def choose_mode() -> str:
    """`WANDB_MODE` when set; else online with an API key, offline without one."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _entity_project(target: str | None, default_project: str) -> tuple[str | None, str]:
    if target:
        entity, _, project = target.rpartition("/")
        return entity or None, project
    return None, os.environ.get("WANDB_PROJECT") or default_project
