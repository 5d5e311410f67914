"""The spec's task and input contract: validated by pydantic, every problem located."""

from __future__ import annotations

import pytest

from nnspec.compiler import SpecError, load_spec
from tests.compiler.fixtures import write_spec


def problems(tmp_path, body: str) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, body))
    return str(caught.value)


def test_task_defaults_to_classification_and_takes_a_bare_name(tmp_path):
    plain = load_spec(write_spec(tmp_path, "input: {shape: [4]}\nnetwork: [{linear: {out: 3}}]\n"))
    assert plain.task.type == "classification"
    path = write_spec(tmp_path, "input: {shape: [4]}\ntask: regression\n"
                                "network: [{linear: {out: 1}}]\n", name="r.yaml")  # fmt: skip
    task = load_spec(path).task
    assert (task.type, task.loss, task.standardize) == ("regression", "mse", False)


def test_task_errors_name_the_place_and_the_choices(tmp_path):
    text = problems(tmp_path, """
        input: {shape: [4]}
        task: segmentaton
        network: [{linear: {out: 3}}]
    """)
    assert "spec.yaml:4:7: task: unknown task 'segmentaton' (did you mean 'segmentation'?)" in text
    text = problems(tmp_path, """
        input: {shape: [4]}
        task: {type: multilabel, threshold: 1.5, pos_weight: -1}
        network: [{linear: {out: 3}}]
    """)
    assert "spec.yaml:4:37: task.threshold: expected less than or equal to 1, got 1.5" in text
    assert "task.pos_weight" in text and "2 problems found" in text


def test_options_that_contradict_the_task_are_located(tmp_path):
    text = problems(tmp_path, """
        input: {shape: [4]}
        labels: [a, b]
        task: {type: multilabel, threshold: [0.5, 0.5, 0.5]}
        loss: {label_smoothing: 0.1}
        network: [{linear: {out: 2}}]
    """)
    assert "spec.yaml:6:7: loss: `loss:` configures cross entropy, which a multilabel task " \
           "does not use" in text
    assert "spec.yaml:5:37: task.threshold: 3 threshold values for 2 labels" in text


def test_input_range_and_preprocess_are_checked_against_the_shape(tmp_path):
    spec = load_spec(write_spec(tmp_path, """
        input: {shape: [3, 224, 224], range: [0, 255],
                preprocess: {resize: 256, center_crop: 224, interpolation: bicubic}}
        network: [global_avg_pool, {linear: {out: 2}}]
    """))
    assert spec.input.range == [0, 255] and spec.input.preprocess.resize == 256
    assert "range must be [low, high] with low < high" in problems(tmp_path, """
        input: {shape: [1, 8, 8], range: [16, 0]}
        network: [global_avg_pool, {linear: {out: 2}}]
    """)
    assert "center_crop [200, 200] must be the input's H x W [224, 224]" in problems(tmp_path, """
        input: {shape: [3, 224, 224], preprocess: {resize: 256, center_crop: 200}}
        network: [global_avg_pool, {linear: {out: 2}}]
    """)
    assert "resize: 256 scales the shorter side" in problems(tmp_path, """
        input: {shape: [3, 224, 224], preprocess: {resize: 256}}
        network: [global_avg_pool, {linear: {out: 2}}]
    """)
    assert "preprocess applies to image inputs" in problems(tmp_path, """
        input: {shape: [16], preprocess: {resize: [4, 4]}}
        network: [{linear: {out: 2}}]
    """)
