"""Experiment verdicts: Welch's t-test and TOST from the per-point summary, checked against
scipy on the raw samples and the Welch formula in numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from nnspec.runtime.lab.experiments import Experiment, verdict
from nnspec.runtime.lab.sweep import summarise
from nnspec.runtime.lab.verdicts import Sample, describe, p_greater, rejudge


def _summary(samples: dict[str, list[float | None]], metric: str = "acc") -> list[dict]:
    """The sweep summary of runs with these metric values per point (None: a failed run)."""
    rows = [
        {"point": point, "seed": seed, "status": "missing"} if value is None
        else {"point": point, "seed": seed, "status": "finished", metric: value}
        for point, values in samples.items()
        for seed, value in enumerate(values)
    ]  # fmt: skip
    return summarise(rows)


def _experiment(*expect: dict, variants=("a", "b")) -> Experiment:
    return Experiment(name="x", claim="a beats b", spec="spec.yaml",
                      variants={v: {} for v in variants}, expect=list(expect))  # fmt: skip


def _welch_p_numpy(a: np.ndarray, b: np.ndarray, shift: float = 0.0) -> float:
    """P(T > t) for H0: mean_a - mean_b <= shift, the Welch formula written out."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean() - shift) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(stats.t.sf(t, df))


RNG = np.random.default_rng(7)
PAIRS = [
    (RNG.normal(0.9, 0.02, 3), RNG.normal(0.85, 0.05, 3)),
    (RNG.normal(0.5, 0.1, 5), RNG.normal(0.55, 0.01, 4)),
    (RNG.normal(2.0, 1.0, 2), RNG.normal(1.0, 0.3, 6)),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_p_value_from_summary_equals_welch_on_the_raw_samples(a, b):
    sa = Sample(a.mean(), a.std(ddof=1), len(a))
    sb = Sample(b.mean(), b.std(ddof=1), len(b))
    raw = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert p_greater(sa, sb) == pytest.approx(raw, rel=1e-9)
    assert p_greater(sa, sb) == pytest.approx(_welch_p_numpy(a, b), rel=1e-9)
    assert p_greater(sa, sb, 0.03) == pytest.approx(_welch_p_numpy(a, b, 0.03), rel=1e-9)


def test_better_significantly_higher_holds_with_its_p_value():
    a, b = [0.95, 0.96, 0.97], [0.90, 0.91, 0.93]
    (result,) = verdict(_experiment({"better": "a", "worse": "b", "metric": "acc"}),
                        _summary({"a": a, "b": b}))  # fmt: skip
    assert result["outcome"] == "holds"
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)
    assert result["p_opposite"] == pytest.approx(1 - expected, rel=1e-9)
    assert result["rule"] == "Welch t-test, one-sided in the predicted direction, alpha 0.05"
    assert result["better_value"]["n"] == 3 and result["worse_value"]["point"] == "b"


def test_significantly_worse_does_not_hold_and_overlap_is_inconclusive():
    claim = {"better": "a", "worse": "b", "metric": "acc"}
    worse = verdict(_experiment(claim), _summary({"a": [0.5, 0.52, 0.51], "b": [0.9, 0.91, 0.9]}))
    assert worse[0]["outcome"] == "does not hold"
    assert worse[0]["p_opposite"] < 0.05 < worse[0]["p_value"]
    noisy = verdict(_experiment(claim), _summary({"a": [0.8, 0.95, 0.85], "b": [0.82, 0.9, 0.8]}))
    assert noisy[0]["outcome"] == "inconclusive"
    # The old rule (gap > larger std) called this "holds": a gap of 0.0225 against stds of
    # 0.014 and 0.011, but with two seeds each Welch's test is not significant at 0.05.
    close = verdict(_experiment(claim), _summary({"a": [0.9, 0.92], "b": [0.88, 0.895]}))
    expected = stats.ttest_ind([0.9, 0.92], [0.88, 0.895], equal_var=False,
                               alternative="greater").pvalue  # fmt: skip
    assert close[0]["p_value"] == pytest.approx(expected) and expected > 0.05
    assert close[0]["outcome"] == "inconclusive"


def test_lower_is_better_tests_the_other_tail():
    loss = {"a": [0.20, 0.21, 0.19], "b": [0.30, 0.33, 0.31]}
    claim = {"better": "a", "worse": "b", "metric": "acc", "lower_is_better": True}
    (result,) = verdict(_experiment(claim), _summary(loss))
    assert result["outcome"] == "holds"
    expected = stats.ttest_ind(loss["b"], loss["a"], equal_var=False, alternative="greater")
    assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_each_variant_is_taken_at_its_best_grid_point_with_every_seed_finished():
    summary = _summary({
        "a,lr=1": [0.50, 0.52, 0.51], "a,lr=2": [0.90, 0.91, 0.92],
        "a,lr=3": [0.99, None, None],  # best mean, but two of three seeds diverged
        "b,lr=1": [0.80, 0.81, 0.80], "b,lr=2": [0.10, 0.12, 0.11],
    })  # fmt: skip
    (result,) = verdict(_experiment({"better": "a", "worse": "b", "metric": "acc"}), summary)
    assert result["better_value"]["point"] == "a,lr=2"
    assert result["worse_value"]["point"] == "b,lr=1"
    assert result["outcome"] == "holds"
    assert describe(result).endswith(" [a,lr=2 vs b,lr=1]")


def test_fewer_than_two_finished_runs_is_inconclusive_and_says_so():
    claim = {"better": "a", "worse": "b", "metric": "acc"}
    one_seed = verdict(_experiment(claim), _summary({"a": [0.99], "b": [0.1]}))
    assert one_seed[0]["outcome"] == "inconclusive (n < 2)" and one_seed[0]["p_value"] is None
    survivor = verdict(_experiment(claim), _summary({"a": [0.99, None, None], "b": [0.1, 0.2]}))
    assert survivor[0]["outcome"] == "inconclusive (n < 2)"
    assert survivor[0]["better_value"]["n"] == 1
    assert describe(survivor[0]).endswith(": inconclusive (n < 2) (finished runs: 1 of a, 2 of b)")


def test_a_variant_whose_runs_all_failed_counts_as_worst():
    claim = {"better": "a", "worse": "b", "metric": "acc"}
    worse_failed = verdict(_experiment(claim), _summary({"a": [0.8, 0.9], "b": [None, None]}))
    assert worse_failed[0]["outcome"] == "holds"
    assert worse_failed[0]["reason"] == "all runs of b failed"
    better_failed = verdict(_experiment(claim), _summary({"a": [None, None], "b": [0.8, 0.9]}))
    assert better_failed[0]["outcome"] == "does not hold"
    both = verdict(_experiment(claim), _summary({"a": [None], "b": [None]}))
    assert both[0]["outcome"] == "inconclusive"
    assert "all runs of a failed" in describe(better_failed[0])


def test_equivalence_by_tost_holds_fails_or_is_inconclusive():
    margin = 0.01
    claim = {"better": "a", "worse": "b", "metric": "acc", "equivalent_within": margin}
    a, b = np.array([0.970, 0.972, 0.971, 0.969]), np.array([0.971, 0.970, 0.972, 0.970])
    (same,) = verdict(_experiment(claim), _summary({"a": list(a), "b": list(b)}))
    # TOST: the larger of the two one-sided p-values against the margin edges
    low = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
    high = stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
    assert same["p_value"] == pytest.approx(max(low, high), rel=1e-9)
    assert same["outcome"] == "holds"
    assert same["rule"] == "TOST (two one-sided Welch t-tests), margin ±0.01, alpha 0.05"

    far = verdict(_experiment(claim), _summary({"a": [0.95, 0.951, 0.949], "b": [0.98, 0.981]}))
    assert far[0]["outcome"] == "does not hold"
    beyond = stats.ttest_ind([0.95, 0.951, 0.949], np.array([0.98, 0.981]) - margin,
                             equal_var=False, alternative="less").pvalue  # fmt: skip
    assert far[0]["p_outside"] == pytest.approx(2 * beyond, rel=1e-9)

    wide = verdict(_experiment(claim), _summary({"a": [0.90, 0.99, 0.95], "b": [0.96, 0.93]}))
    assert wide[0]["outcome"] == "inconclusive"
    failed = verdict(_experiment(claim), _summary({"a": [None, None], "b": [0.96, 0.93]}))
    assert failed[0]["outcome"] == "does not hold"


def test_exact_metrics_compare_without_spread():
    # a parameter count is the same in every run: both stds are zero, the difference exact
    summary = [{"point": p, "runs": 3, "finished": 3, "params": {"mean": m, "std": 0.0, "n": 3}}
               for p, m in (("a", 19562.0), ("b", 1070314.0))]  # fmt: skip
    claim = {"better": "a", "worse": "b", "metric": "params", "lower_is_better": True}
    (result,) = verdict(_experiment(claim), summary)
    assert result["outcome"] == "holds" and result["p_value"] == 0.0


def test_stored_verdicts_are_judged_again_by_the_current_rule():
    summary = _summary({"a": [0.8, 0.95, 0.85], "b": [0.82, 0.9, 0.8]})
    stored = [{"better": "a", "worse": "b", "metric": "acc", "outcome": "holds"}]  # old rule
    (result,) = rejudge(stored, summary)
    assert result["outcome"] == "inconclusive" and result["p_value"] > 0.05


def test_experiments_table_rejudges_a_stored_outcome(tmp_path, capsys):
    from nnspec.runtime.cli import main

    (tmp_path / "claim.yaml").write_text(
        "name: claim\nclaim: a beats b\nspec: spec.yaml\n"
        "variants: {a: {}, b: {}}\n"
        "expect: [{better: a, worse: b, metric: test_accuracy}]\n"
    )
    summary = _summary({"a": [0.95, 0.96, 0.97], "b": [0.90, 0.91, 0.93]}, "test_accuracy")
    stored = {"name": "claim", "claim": "a beats b", "summary": summary,
              "verdicts": [{"better": "a", "worse": "b", "metric": "test_accuracy",
                            "outcome": "does not hold"}]}  # fmt: skip
    (tmp_path / "out" / "claim").mkdir(parents=True)
    (tmp_path / "out" / "claim" / "outcome.json").write_text(json.dumps(stored))
    args = ["experiments", "table", "--dir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    p = stats.ttest_ind([0.95, 0.96, 0.97], [0.90, 0.91, 0.93], equal_var=False,
                        alternative="greater").pvalue  # fmt: skip
    assert last.startswith("- **claim**: a better than b on test_accuracy: **holds** (Welch")
    assert f"p = {p:.2g}," in last  # p = 0.008: two significant digits
