"""nnspec.runtime.train: a spec and its data become a resumable, evaluated run directory.

    from nnspec.compiler import load_spec
    from nnspec.runtime.train import TrainOptions, train
    final = train(load_spec("specs/digits_cnn.yaml"), TrainOptions(epochs=3, out="runs/d"))
    final["test_accuracy"]

Public API:
    train(spec, options, log=print, on_epoch=None) -> dict   the run's final metrics (final.json)
    finish_run(spec, options, reason)            end a run at its checkpoint, test it
    TrainOptions                                 what the command line sets
    evaluate_run(run_dir, data=, split=, ...)    `nnspec eval`
    load_trained_model(run_dir, checkpoint=)     (model in eval mode, spec)
    load_data(source, inputs, task=, ...)        DataSplits of a data source (data/ package)
    load_spec_data(spec, source)                 the same for a spec's inputs, task and labels
    make_loader(dataset, batch_size, train=)     the trainer's DataLoader
    make_task(spec), Task, TASKS                 the spec's task: loss, targets, metrics
    build_augmentation(entries, contract, ...)   train.augment on torchvision.transforms.v2
    build_optimizer(model, config), Schedule     optimizer and lr/momentum schedules
    save_checkpoint / load_checkpoint            crash-safe safetensors checkpoints
    import_weights(spec, source, out)            `nnspec import-weights`: any state_dict file
    match_weights(source, target, rules=)        which source tensor fills which spec tensor
    read_state_dict(path)                        tensors of a .pth / checkpoint / .safetensors
    Distributed                                  this process's place in a torchrun job
    init_from_weights(model, source, strict=)    `--init-from`: load by spec id and shape
    ModelEma                                     `train.ema` (timm's ModelEmaV3 rule)
    log_run_artifact(run_dir, path)              a file into the trackers of a run
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "train": "trainer", "finish_run": "trainer", "training_loss": "loop",
    "TrainOptions": "options",
    "evaluate": "evaluate", "evaluate_run": "evaluate", "load_trained_model": "evaluate",
    "DataSplits": "data", "DataRequest": "data", "load_data": "data", "load_spec_data": "data",
    "make_loader": "data", "make_task": "tasks", "Task": "tasks", "TASKS": "tasks",
    "build_augmentation": "augment",
    "build_optimizer": "optim", "Schedule": "schedules",
    "Checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "import_weights": "weights", "import_torchvision_weights": "weights",
    "match_weights": "weight_mapping", "read_state_dict": "state_dict_files",
    "Distributed": "distributed", "choose_run_dir": "run_dir", "resolve_device": "device",
    "init_from_weights": "finetune", "InitReport": "finetune", "ModelEma": "ema",
    "log_run_artifact": "tracking.session",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
