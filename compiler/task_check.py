"""Does the spec hang together for its task? Located problems, collected, never a mismatch
found later by training.

Two checks:

- `spec_task_problems(spec)`, run by `load_spec`: the settings that only make sense for some
  tasks or inputs (`loss:` for a sigmoid or regression task, MixUp on masks, per-label
  thresholds that do not match `labels`, augmentation of a non-image input).
- `output_task_problems(graph)`, run by `nnspec check` and before training and export: the
  network's output can serve the task (a [C] vector of C >= 2 classes for classification, a
  [C, H, W] map the input's size for segmentation, one output per label).
"""

from __future__ import annotations

from nnspec.compiler.errors import Mark, Problem
from nnspec.compiler.training_schema import BATCH_AUGMENTS

# Augmentations torchvision cannot apply to masks (they would move pixels without their labels).
MASKLESS = ("trivial_augment", "rand_augment")
# Augmentations that change pixel values, so they need to know the range the values live in.
COLOUR = ("color_jitter", "trivial_augment", "rand_augment")


def _mark(spec, path: tuple) -> Mark | None:
    smap = spec.source_map
    return smap.mark(path) if smap is not None else None


def spec_problem(spec, path: tuple, message: str, hint: str = "") -> Problem:
    """A problem at `path` of the spec (its file:line:col when it came from a file)."""
    from nnspec.compiler.load import format_path

    return Problem(message, path=format_path(path), mark=_mark(spec, path), hint=hint)


def spec_task_problems(spec) -> list[Problem]:
    """Task-dependent settings that contradict the task, the labels or the input."""
    task = spec.task
    problems: list[Problem] = []
    if task.type in ("multilabel", "regression") and spec.loss is not None:
        where = "task.pos_weight" if task.type == "multilabel" else "task.loss"
        problems.append(spec_problem(
            spec, ("loss",), f"`loss:` configures cross entropy, which a {task.type} task does "
            "not use", hint=f"remove it; {task.type} sets its loss under {where}"))
    if task.type == "multilabel" and spec.labels:
        for name in ("threshold", "pos_weight"):
            value = getattr(task, name)
            if isinstance(value, list) and len(value) != len(spec.labels):
                problems.append(spec_problem(
                    spec, ("task", name), f"{len(value)} {name} values for {len(spec.labels)} "
                    "labels", hint="give one value, or one per label in `labels` order"))
    problems += _augment_problems(spec)
    return problems


def _augment_problems(spec) -> list[Problem]:
    train = spec.train
    entries = list(getattr(train, "augment", None) or [])
    if not entries:
        return []
    problems = []
    inputs = spec.input_specs
    image = next(iter(inputs.values()))
    if len(inputs) > 1 or len(image.shape) != 3 or image.dtype != "float32":
        shape = [list(s.shape) for s in inputs.values()]
        return [spec_problem(spec, ("train", "augment"), "augmentation works on one image-like "
                         f"input [C, H, W] (float32); this spec's inputs are {shape}")]
    for index, entry in enumerate(entries):
        path = ("train", "augment", index)
        if entry.type in BATCH_AUGMENTS and spec.task.type != "classification":
            problems.append(spec_problem(
                spec, path, f"{entry.type} mixes the labels of whole samples, which only "
                f"classification targets allow (the task is {spec.task.type})"))
        if entry.type in MASKLESS and spec.task.type == "segmentation":
            problems.append(spec_problem(
                spec, path, f"{entry.type} cannot move masks with their images (torchvision "
                "applies it to images only)", hint="use random_resized_crop, flips, rotation "
                "and color_jitter for segmentation"))
        if entry.type in COLOUR and image.shape[0] not in (1, 3):
            problems.append(spec_problem(
                spec, path, f"{entry.type} works on grey or RGB images, not "
                f"{image.shape[0]} channels"))
    return problems


def output_task_problems(
    graph, num_classes: int | None = None, data: str | None = None
) -> list[Problem]:
    """Problems with the network's output for the spec's task.

    Args:
        graph: the compiled graph (its spec carries the task and labels).
        num_classes: the class (or label) count of the training data, when known.
        data: the name of that data source, for the message.
    """
    spec = graph.spec
    task = spec.task.type
    shape = tuple(graph.output_shape)
    labels = list(spec.labels) if spec.labels else None
    if task == "regression":
        return []
    classes = shape[0] if shape else 0
    if task in ("classification", "multilabel") and len(shape) != 1:
        return [_output_problem(
            graph, f"the output is {list(shape)}, but a {task} head gives one score per "
            f"{'class' if task == 'classification' else 'label'}: [N]",
            "end the network with global_avg_pool/flatten and a linear layer"
            + ("; or declare `task: segmentation` for per-pixel classes"
               if len(shape) >= 2 and task == "classification" else ""))]
    if task == "segmentation":
        spatial = tuple(next(iter(graph.inputs.values())).shape[1:])
        if len(shape) < 2 or tuple(shape[1:]) != spatial:
            return [_output_problem(
                graph, f"the output is {list(shape)}, but segmentation needs per-pixel class "
                f"scores [C, {', '.join(map(str, spatial))}] (the input's size)",
                "end with a 1x1 conv to C channels at the input's resolution")]
        ignore = spec.task.ignore_index
        if ignore is not None and 0 <= ignore < classes:
            return [spec_problem(graph.spec, ("task", "ignore_index"),
                             f"ignore_index {ignore} is one of the {classes} classes",
                             hint="use a value outside 0..C-1 (255 or -1), or null")]
    if task != "multilabel" and classes < 2:
        return [_output_problem(
            graph, f"{classes} output(s) cannot tell classes apart: a {task} head needs one "
            "per class (2 or more)", "for one score per sample, declare `task: regression` "
            "or `task: multilabel`")]
    noun = "labels" if task == "multilabel" else "classes"
    for count, source in ((len(labels) if labels else None, "`labels`"),
                          (num_classes, f"data {data!r}" if data else "the data")):
        if count is not None and count != classes:
            return [_output_problem(
                graph, f"{source} has {count} {noun} but the model outputs {classes}",
                _out_hint(graph, count))]
    return []


def _out_hint(graph, count: int) -> str:
    node = graph.node(graph.output)
    field = "out" if hasattr(node.config, "out") else None
    if field and "." not in node.id and node.path.startswith("network["):
        return (f"set the last layer's {field} to {count}, e.g. "
                f"--set {node.path}.{node.kind}.{field}={count}")
    return f"make the output layer ({node.id}) give {count}"


def _output_problem(graph, message: str, hint: str) -> Problem:
    node = graph.node(graph.output)
    spec = graph.spec
    mark = node.mark or _mark(spec, ("network",))
    return Problem(f"{message} (task: {spec.task.type})", path=node.path, mark=mark, hint=hint)
