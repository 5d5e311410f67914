"""Property tests: random valid specs infer the shapes a real forward pass produces, and random
mutations of valid specs end in exit 0 or 2, never a traceback."""

from __future__ import annotations

import copy
import json

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnspec.compiler import SpecError, build_model
from nnspec.runtime.cli import main

IMAGE_LAYERS = st.one_of(
    st.builds(lambda o, k, s, p, g: {"conv": {"out": o * g, "kernel": k, "stride": s,
                                              "padding": p, "groups": 1}},
              st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
              st.just(1)),
    st.builds(lambda k, s, c: {"maxpool": {"kernel": k, "stride": s, "ceil_mode": c}},
              st.integers(1, 2), st.integers(1, 2), st.booleans()),
    st.builds(lambda k: {"avgpool": {"kernel": k, "padding": 0}}, st.integers(1, 2)),
    st.sampled_from(["relu", "batchnorm", "gelu", "tanh", {"dropout": {"p": 0.3}},
                     {"dropout": {"p": 0.2, "channel": True}}, "identity", "hardswish"]),
    st.builds(lambda s: {"upsample": {"scale": s}}, st.integers(1, 2)),
    st.builds(lambda o: {"conv_transpose": {"out": o, "kernel": 2, "stride": 2}},
              st.integers(1, 4)),
)
HEADS = st.sampled_from([
    ["global_avg_pool", {"linear": {"out": 3}}],
    ["flatten", {"linear": {"out": 5}}],
    [{"global_max_pool": {"keep_dims": True}}, "flatten"],
    [{"adaptive_avg_pool": {"size": 2}}, "flatten", {"layernorm": {}}],
])


@st.composite
def image_specs(draw):
    channels = draw(st.integers(1, 4))
    size = draw(st.integers(4, 12))
    layers = draw(st.lists(IMAGE_LAYERS, min_size=1, max_size=6))
    if draw(st.booleans()):  # wrap a prefix in a residual block with an auto shortcut
        layers = [{"residual": {"body": layers[:2], "shortcut": "auto"}}] + layers[2:]
    return {"nnspec": 1, "name": "random", "input": {"shape": [channels, size, size]},
            "network": layers + draw(HEADS)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_specs())
def test_inferred_shapes_equal_a_real_forward_pass(spec):
    try:
        model = build_model(spec)
    except SpecError:
        return  # e.g. a kernel larger than what is left of the image: a clean, located error
    model.eval()
    shapes = {}
    hooks = [model.get_submodule(n.id).register_forward_hook(
        lambda m, i, o, nid=n.id: shapes.__setitem__(nid, tuple(o.shape[1:])))
        for n in model.graph.nodes]
    with torch.no_grad():
        out = model(torch.randn(2, *spec["input"]["shape"]))
    for h in hooks:
        h.remove()
    for node in model.graph.nodes:
        assert shapes[node.id] == node.shape, node.id
    assert tuple(out.shape[1:]) == model.graph.output_shape


def _mutations():
    leaf = st.one_of(st.integers(-3, 1_000_000_000), st.floats(allow_nan=True),
                     st.text(max_size=8), st.booleans(), st.none(),
                     st.lists(st.integers(-2, 5), max_size=3),
                     st.sampled_from(["$x", "${1/0}", "${x.__class__}", "batchnrom", "conv"]))
    return st.tuples(st.integers(0, 10_000), st.sampled_from(["set", "delete", "rename"]), leaf)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


def _mutate(data, choice, action, value):
    paths = [p for p in _paths(data) if p]
    path = paths[choice % len(paths)]
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if action == "set":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif isinstance(parent, dict):
        parent[str(value)[:6] or "k"] = parent.pop(key)


BASE = yaml.safe_load(open("specs/examples/inception_net.yaml"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(_mutations(), min_size=1, max_size=3))
def test_mutated_specs_exit_0_or_2_never_a_traceback(tmp_path, capsys, mutations):
    data = copy.deepcopy(BASE)
    for choice, action, value in mutations:
        _mutate(data, choice, action, value)
    path = tmp_path / "mutant.json"
    path.write_text(json.dumps(data))
    code = main(["check", str(path)])  # an uncaught exception would fail the test here
    assert code in (0, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:
        assert "mutant.json" in err
