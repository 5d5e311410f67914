"""The claims table of docs/experiments.md and the experiment files agree: every experiment in
specs/experiments/ tests a claim named in the table, and every experiment the table names is a
file there."""

from __future__ import annotations

import re
from pathlib import Path

from nnspec.runtime.lab.experiments import experiment_files

DOC = Path(__file__).resolve().parents[2] / "docs" / "experiments.md"
HEADING = "## The lecture's claims and where each is checked"


def _table_rows() -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first markdown table after the claims heading."""
    lines = DOC.read_text().split(HEADING, 1)[1].splitlines()
    table = [line for line in _first_block(lines) if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
    return cells[0], [row for row in cells[2:]]


def _first_block(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def _named_experiments() -> set[str]:
    header, rows = _table_rows()
    column = header.index("experiment")
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row[column])}


def test_the_table_has_a_row_per_claim_with_an_experiment_or_a_reason():
    header, rows = _table_rows()
    assert header[:4] == ["lecture", "claim", "experiment", "other checks, or why not at this scale"]
    assert len(rows) >= 25
    for row in rows:
        assert len(row) == len(header), row
        assert row[2] or row[3], f"claim {row[1]!r} names neither an experiment nor a reason"


def test_every_experiment_file_tests_a_claim_of_the_table():
    missing = set(experiment_files()) - _named_experiments()
    assert missing == set(), f"add these experiments to the claims table: {sorted(missing)}"


def test_every_experiment_the_table_names_is_a_file():
    unknown = _named_experiments() - set(experiment_files())
    assert unknown == set(), f"no specs/experiments/NAME.yaml for {sorted(unknown)}"
