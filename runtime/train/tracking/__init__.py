"""Experiment tracking: TensorBoard always, MLflow and W&B on request (`--track`).

Each tracker is one module with one class implementing `base.Tracker`, named in `TRACKERS`.
A run's trackers are driven together by `session.TrackingSession` (rank 0 only), which keeps
`tracking.json` in the run directory: the tracker runs' ids, so that `--resume` continues the
same runs and replays only the epochs they lack, and `nnspec export` adds the ONNX file to them.

Public API:
    TRACKERS                          tracker name -> "module:Class"
    parse_track(items) -> dict        `--track NAME[:TARGET]` values, checked
    TrackingSession                   the trackers of one run
    log_run_artifact(run_dir, path)   a file (the exported model) into every tracker of a run
    flatten_params(spec, options)     the flat parameters trackers record
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "TRACKERS": "session", "parse_track": "session", "TrackingSession": "session",
    "log_run_artifact": "session", "flatten_params": "base", "Tracker": "base",
    "TrackedRun": "base",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
