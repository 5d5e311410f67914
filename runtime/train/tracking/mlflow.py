"""MLflow: one MLflow run per training run, in the experiment named after the spec.

`--track mlflow` uses `MLFLOW_TRACKING_URI` when it is set, else a local store in `mlruns/`
of the current directory (beside `runs/`): an SQLite database `mlruns/mlflow.db` and artifacts
under `mlruns/artifacts/`, so it works with no server (`mlflow ui --backend-store-uri
sqlite:///mlruns/mlflow.db` shows it). `--track mlflow:URI` names any tracking URI (`http://host:5000`,
`sqlite:///path.db`, `databricks`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.runtime.train.tracking.base import TrackedRun, Tracker, metrics_of

LOCAL_DIR = "mlruns"
BATCH = 100  # MLflow's limit of params per log_batch call


def default_tracking_uri(cwd: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI`, else the local store in `<cwd>/mlruns` (an absolute URI, so
    processes with another working directory, such as Ray trials, write to the same one)."""
    import os

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = (cwd or Path.cwd()).resolve() / LOCAL_DIR
    return f"sqlite:///{root / 'mlflow.db'}"


class MlflowTracker(Tracker):
    name = "mlflow"
    requires = "mlflow"

    def start(self, run: TrackedRun, stored: dict | None) -> dict:
        uri = stored["tracking_uri"] if stored else (self.target or default_tracking_uri())
        self.client = _client(uri)
        if stored:
            self.run_id = stored["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logged = max(stored["epoch"], self._last_logged_epoch())
        else:
            experiment = self._experiment(uri, run.experiment)
            created = self.client.create_run(
                experiment,
                run_name=run.name,
                tags={
                    "nnspec.run_dir": str(run.run_dir.resolve()),
                    "nnspec.spec": run.experiment,
                    "mlflow.source.name": "nnspec train",
                },
            )
            self.run_id = created.info.run_id
            self._log_params(run.params)
            self.client.log_artifact(self.run_id, str(run.spec_file))
            logged = 0
        return {"tracking_uri": uri, "run_id": self.run_id, "epoch": logged}

    def _experiment(self, uri: str, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]).parent.name == LOCAL_DIR:
            artifacts = (Path(uri[len("sqlite:///") :]).parent / "artifacts" / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # created meanwhile by a parallel run of the same sweep
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, "" if v is None else str(v)) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    def _last_logged_epoch(self) -> int:
        history = self.client.get_metric_history(self.run_id, "train_loss")
        return max((m.step for m in history), default=0)

    def log_epoch(self, record: dict) -> None:
        self._log_metrics(metrics_of(record), record["epoch"])

    def log_final(self, final: dict) -> None:
        self._log_metrics(metrics_of(final), final.get("epochs", 0))

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(items), BATCH * 10):
            self.client.log_batch(self.run_id, metrics=items[start : start + BATCH * 10])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status.upper())

    def describe(self, record: dict) -> str:
        return f"{record['tracking_uri']} (run {record['run_id']})"

    @classmethod
    def reopen(cls, stored: dict) -> MlflowTracker:
        """The tracker of a stored run, for adding artifacts after training."""
        tracker = cls(stored["tracking_uri"])
        tracker.client, tracker.run_id = _client(stored["tracking_uri"]), stored["run_id"]
        return tracker


def _client(uri: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # MLflow logs each step of creating a new database at INFO on the console.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as error:
        raise UsageError(
            f"--track mlflow:{uri}: {error.message.splitlines()[0]}\n    hint: leave the URI "
            "out for a local store in mlruns/, or give sqlite:///PATH.db or http://HOST:PORT",
        ) from error
