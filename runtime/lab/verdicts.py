"""An experiment's verdicts: each expectation judged by a test that accounts for the seed spread.

A claim "A beats B on a metric" is judged by Welch's t-test (unequal variances), one-sided in
the predicted direction at `ALPHA`: "holds" when A is significantly better, "does not hold"
when A is significantly worse (the one-sided test the other way), "inconclusive" otherwise. A
claim "A and B are equivalent within a margin" (`equivalent_within`) is judged by TOST, two
one-sided Welch tests: "holds" when the difference is significantly inside ±margin, "does not
hold" when it is significantly outside (the one-sided test beyond the nearer edge, at alpha/2
per edge), "inconclusive" otherwise.

Everything is computed from a sweep's per-point summary (mean, sample std and the number of
finished runs), so stored outcomes are re-judged without re-running. With extra grid axes each
variant is taken at its best grid point by the metric's mean, among the points whose every
seed finished when there are such points. A variant all of whose runs failed (e.g. training
diverged) counts as worst; a side with fewer than two finished runs has no spread to test
against, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

ALPHA = 0.05
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
TOO_FEW = "inconclusive (n < 2)"


class Expectation(BaseModel):
    """The claim's prediction: `better` beats `worse` on `metric`; or, with
    `equivalent_within`, the two are equal on `metric` within that margin."""

    model_config = ConfigDict(extra="forbid")

    better: str
    worse: str
    metric: str
    lower_is_better: bool = False
    equivalent_within: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class Sample:
    """Summary statistics of one side: mean, sample std (ddof 1) and the number of runs."""

    mean: float
    std: float
    n: int


def p_greater(a: Sample, b: Sample, shift: float = 0.0) -> float:
    """Welch's one-sided p-value of H0: mean_a - mean_b <= shift, against "> shift".

    Both stds zero (every seed gave the same value, or the metric is exact like a parameter
    count): the difference is known, and p is 0 when it exceeds `shift`, else 1.
    """
    from scipy import stats

    if a.std == 0 and b.std == 0:
        return 0.0 if a.mean - b.mean > shift else 1.0
    result = stats.ttest_ind_from_stats(
        a.mean - shift, a.std, a.n, b.mean, b.std, b.n, equal_var=False, alternative="greater"
    )
    return float(result.pvalue)


def judge_difference(better: Sample, worse: Sample, lower_is_better: bool,
                     alpha: float = ALPHA) -> dict:  # fmt: skip
    """"`better` beats `worse`": holds / does not hold / inconclusive, with both p-values."""
    if lower_is_better:
        p_predicted, p_opposite = p_greater(worse, better), p_greater(better, worse)
    else:
        p_predicted, p_opposite = p_greater(better, worse), p_greater(worse, better)
    outcome = HOLDS if p_predicted < alpha else FAILS if p_opposite < alpha else UNSURE
    return {"outcome": outcome, "p_value": p_predicted, "p_opposite": p_opposite}


def judge_equivalence(a: Sample, b: Sample, margin: float, alpha: float = ALPHA) -> dict:
    """"`a` equals `b` within ±margin" by TOST; `p_value` is TOST's (the larger one-sided p),
    `p_outside` that of the difference lying beyond the nearer edge (two-sided)."""
    inside_low = p_greater(a, b, -margin)  # H0: d <= -margin
    inside_high = p_greater(b, a, -margin)  # H0: d >= margin
    beyond_high = p_greater(a, b, margin)  # H0: d <= margin
    beyond_low = p_greater(b, a, margin)  # H0: d >= -margin
    p_tost = max(inside_low, inside_high)
    p_outside = min(1.0, 2 * min(beyond_high, beyond_low))
    outcome = HOLDS if p_tost < alpha else FAILS if p_outside < alpha else UNSURE
    return {"outcome": outcome, "p_value": p_tost, "p_outside": p_outside}


def rule_text(expectation: Expectation, alpha: float = ALPHA) -> str:
    """The rule an expectation is judged by, in words (recorded with each verdict)."""
    if expectation.equivalent_within is not None:
        return (f"TOST (two one-sided Welch t-tests), margin ±{expectation.equivalent_within:g},"
                f" alpha {alpha:g}")  # fmt: skip
    return f"Welch t-test, one-sided in the predicted direction, alpha {alpha:g}"


def best_point(summary: Sequence[dict], variant: str, metric: str,
               lower_is_better: bool) -> dict | None:  # fmt: skip
    """The variant's grid point with the best mean of `metric`, preferring points whose every
    run finished (an lr at which some seeds diverge is not a usable lr); None when no point of
    the variant has the metric. Returns the point's stat with `point` and `n` added."""
    entries = [e for e in summary if e["point"].split(",", 1)[0] == variant and metric in e]
    complete = [e for e in entries if e.get("finished") == e.get("runs")]
    if not entries:
        return None
    pick = min if lower_is_better else max
    entry = pick(complete or entries, key=lambda e: e[metric]["mean"])
    stat = entry[metric]
    return {**stat, "point": entry["point"], "n": int(stat.get("n", entry.get("finished", 0)))}


def judge(expectation: Expectation, summary: Sequence[dict], alpha: float = ALPHA) -> dict:
    """One expectation's verdict from a sweep summary: the expectation's fields, `outcome`,
    `rule`, `alpha`, the p-values and each side's value (mean, std, n, grid point)."""
    metric, lower = expectation.metric, expectation.lower_is_better
    better = best_point(summary, expectation.better, metric, lower)
    worse = best_point(summary, expectation.worse, metric, lower)
    verdict = {**expectation.model_dump(), "rule": rule_text(expectation, alpha), "alpha": alpha,
               "better_value": better, "worse_value": worse}  # fmt: skip
    if better is None or worse is None:
        return {**verdict, **_without_results(expectation, summary, better, worse)}
    if min(better["n"], worse["n"]) < 2:
        counts = ", ".join(f"{side['n']} of {side['point']}" for side in (better, worse))
        return {**verdict, "outcome": TOO_FEW, "p_value": None,
                "reason": f"finished runs: {counts}"}  # fmt: skip
    a = Sample(better["mean"], better["std"], better["n"])
    b = Sample(worse["mean"], worse["std"], worse["n"])
    if expectation.equivalent_within is not None:
        return {**verdict, **judge_equivalence(a, b, expectation.equivalent_within, alpha)}
    return {**verdict, **judge_difference(a, b, lower, alpha)}


def judge_all(expectations: Sequence[Expectation], summary: Sequence[dict],
              alpha: float = ALPHA) -> list[dict]:  # fmt: skip
    return [judge(expectation, summary, alpha) for expectation in expectations]


def rejudge(verdicts: Sequence[dict], summary: Sequence[dict], alpha: float = ALPHA) -> list[dict]:
    """Stored verdicts judged again with the current rule (their expectations are stored in
    them), from the stored summary."""
    fields = Expectation.model_fields
    expectations = [Expectation(**{k: v[k] for k in fields if k in v}) for v in verdicts]
    return judge_all(expectations, summary, alpha)


def describe(verdict: dict) -> str:
    """A verdict in one line: the claim, the outcome and the p-value(s) behind it."""
    return f"{claim_text(verdict)}: {verdict['outcome']}{evidence_text(verdict)}" \
           f"{points_text(verdict)}"


def points_text(verdict: dict) -> str:
    """Which grid points were compared, when a variant was taken at its best of a grid."""
    points = [side["point"] for side in (verdict.get("better_value"), verdict.get("worse_value"))
              if side]  # fmt: skip
    if not any("," in point for point in points):
        return ""
    return f" [{' vs '.join(points)}]"


def claim_text(verdict: dict) -> str:
    """What a verdict judged, e.g. "adamw better than adam_l2 on test_accuracy"."""
    if verdict.get("equivalent_within") is not None:
        return (f"{verdict['better']} equivalent to {verdict['worse']} within "
                f"±{verdict['equivalent_within']:g} on {verdict['metric']}")  # fmt: skip
    return f"{verdict['better']} better than {verdict['worse']} on {verdict['metric']}"


def evidence_text(verdict: dict) -> str:
    """The p-values (or the reason there are none) behind a verdict, in parentheses."""
    if verdict.get("p_value") is None:
        return f" ({verdict['reason']})" if verdict.get("reason") else ""
    if verdict.get("equivalent_within") is not None:
        return f" (TOST p {_p(verdict['p_value'])}, outside margin p {_p(verdict['p_outside'])})"
    return f" (Welch one-sided p {_p(verdict['p_value'])}, opposite p {_p(verdict['p_opposite'])})"


def _p(value: float) -> str:
    """`= 0.034`, `= 0.0061` or `< 1e-4`."""
    return "< 1e-4" if value < 1e-4 else f"= {value:.2g}" if value < 0.01 else f"= {value:.3f}"


def _without_results(expectation: Expectation, summary: Sequence[dict],
                     better: dict | None, worse: dict | None) -> dict:  # fmt: skip
    """A side without the metric: all its runs failed (counts as worst) or it never ran."""
    failed = {name for name in (expectation.better, expectation.worse)
              if _all_failed(summary, name)}  # fmt: skip
    missing = [name for name, side in ((expectation.better, better), (expectation.worse, worse))
               if side is None]  # fmt: skip
    if any(name not in failed for name in missing):
        return {"outcome": "no result", "p_value": None,
                "reason": f"no runs of {' and '.join(missing)}"}  # fmt: skip
    if len(missing) == 2:
        return {"outcome": UNSURE, "p_value": None, "reason": "all runs of both failed"}
    reason = f"all runs of {missing[0]} failed"
    if expectation.equivalent_within is not None or missing[0] == expectation.better:
        return {"outcome": FAILS, "p_value": None, "reason": reason}
    return {"outcome": HOLDS, "p_value": None, "reason": reason}


def _all_failed(summary: Sequence[dict], variant: str) -> bool:
    entries = [e for e in summary if e["point"].split(",", 1)[0] == variant]
    return bool(entries) and all(e.get("runs", 0) > 0 and e.get("finished", 0) == 0
                                 for e in entries)  # fmt: skip
