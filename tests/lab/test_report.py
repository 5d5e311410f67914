"""`nnspec report`: a self-contained HTML page, checked as text and in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from nnspec.compiler import load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.lab.hessian import estimate_spectrum
from nnspec.runtime.lab.init_stats import compare_inits
from nnspec.runtime.lab.sweep import (
    SweepSettings,
    collect_rows,
    grid_points,
    parse_grid,
    plan_runs,
    run_sweep,
    summarise,
    write_plan,
    write_results,
)

ARTIFACTS = Path(__file__).parent / "artifacts"
SPEC_YAML = """\
nnspec: 1
name: tiny_cnn
input: {shape: [1, 8, 8]}
normalize: auto
network:
  - conv: {out: 4, kernel: 3, padding: 1, bias: false}
  - batchnorm
  - relu
  - global_avg_pool
  - linear: {out: 10}
"""
IMG = re.compile(r'<img src="data:image/(png|svg\+xml);base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def _metrics(epochs: int, offset: float = 0.0) -> str:
    return "".join(
        json.dumps({"epoch": e, "step": 20 * e, "train_loss": 2.0 / e + offset,
                    "train_accuracy": 0.5 + e / 20, "val_loss": 2.2 / e, "val_accuracy":
                    0.45 + e / 20 - offset, "lr": 0.1 / e, "momentum": 0.5 + e / 20}) + "\n"
        for e in range(1, epochs + 1)
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_and_sweep(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    run = root / "run<1>"
    run.mkdir()
    (run / "spec.yaml").write_text(SPEC_YAML)
    (run / "metrics.jsonl").write_text(_metrics(4))
    (run / "final.json").write_text(json.dumps({"test_accuracy": 0.9312, "note": "<b>x</b>"}))
    series = compare_inits(load_spec(run / "spec.yaml"), batch=16)
    (run / "init_stats.json").write_text(
        json.dumps({"series": {k: [s.to_dict() for s in v] for k, v in series.items()}})
    )
    diagonal = torch.tensor([5.0, 1.0, 0.01, -0.2], dtype=torch.float64)
    spectrum = estimate_spectrum(lambda v: diagonal * v, 4, top_k=2, lanczos_steps=4)
    (run / "hessian.json").write_text(json.dumps(spectrum.to_dict()))

    sweep_dir = root / "sweep"
    runs = plan_runs(grid_points(parse_grid(["optimizer.momentum=0,0.9"])), [0, 1, 2])

    def fake_train(planned, run_dir):
        run_dir.mkdir(parents=True)
        momentum = float(planned.point.values[0][1])
        (run_dir / "metrics.jsonl").write_text(_metrics(3, offset=0.1 - momentum / 10))
        accuracy = [0.90, 0.92, 0.97][planned.seed] - (0.1 if momentum == 0 else 0)
        (run_dir / "final.json").write_text(json.dumps({"test_accuracy": accuracy}))
        return 0

    write_plan(sweep_dir, SweepSettings(spec="tiny.yaml"), runs)
    run_sweep(runs, sweep_dir, fake_train)
    rows = collect_rows(sweep_dir, runs)
    write_results(sweep_dir, rows, summarise(rows))
    # stored by an older rule: the report judges the sweep's summary again
    verdict = {"better": "momentum=0.9", "worse": "momentum=0", "metric": "test_accuracy",
               "outcome": "inconclusive"}  # fmt: skip
    (sweep_dir / "outcome.json").write_text(
        json.dumps({"claim": "momentum  helps", "verdicts": [verdict]})
    )
    return run, sweep_dir


@pytest.fixture(scope="module")
def report(run_and_sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", *map(str, run_and_sweep), "-o", str(out)]) == 0
    return out


def test_report_inlines_every_figure(report):
    html = report.read_text()
    images = IMG.findall(html)
    titles = [alt for _, _, alt in images if alt != "network graph"]  # needs Graphviz: below
    assert titles == [
        "accuracy per epoch, mean over seeds",
        "loss and accuracy per epoch",
        "learning rate and momentum",
        "activation and gradient std per depth at init",
        "Hessian Ritz values of the training loss",
    ]
    for kind, data, _ in images:
        raw = base64.b64decode(data)
        assert raw.startswith(b"\x89PNG") if kind == "png" else b"<svg" in raw
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html


@pytest.mark.needs_tool("dot")
def test_report_draws_the_network_with_graphviz(report):
    images = IMG.findall(report.read_text())
    kind, data, title = images[-1]
    assert (kind, title) == ("svg+xml", "network graph")
    assert b"<svg" in base64.b64decode(data)


def test_report_tables_and_escaping(report):
    html = report.read_text()
    assert "0.93 ± 0.036" in html  # momentum=0.9: 0.90, 0.92, 0.97
    assert "0.83 ± 0.036" in html  # momentum=0: 0.80, 0.82, 0.87
    assert "<strong>Claim:</strong> momentum helps</p>" in html
    from scipy import stats

    p = stats.ttest_ind([0.90, 0.92, 0.97], [0.80, 0.82, 0.87], equal_var=False,
                        alternative="greater").pvalue  # fmt: skip
    assert 0.01 < p < 0.05  # printed with three decimals
    assert (f"<li>momentum=0.9 better than momentum=0 on test_accuracy: holds (Welch one-sided "
            f"p = {p:.3f}, opposite p = {1 - p:.3f}); rule: Welch t-test, one-sided in the "
            "predicted direction, alpha 0.05</li>") in html  # fmt: skip
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "Run: run&lt;1&gt;" in html
    assert "<td>conv1</td><td>conv</td><td>4×8×8</td><td>36</td>" in html
    assert "Network (94 parameters)" in html  # 36 conv + 8 batchnorm + 40 + 10 linear


def test_directory_that_is_neither_run_nor_sweep_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "neither a run directory" in capsys.readouterr().err


@pytest.mark.needs_tool("chromium", "chromedriver")
def test_report_opens_in_headless_chromium_without_errors(report):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1200,900"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(report.resolve().as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => "
            "[i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect().width, "
            "i.getBoundingClientRect().height]);"
        )
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        driver.quit()
    assert errors == []
    assert len(sizes) == 6
    for alt, complete, natural_width, width, height in sizes:
        assert complete and natural_width > 0 and width > 0 and height > 0, alt
    assert (ARTIFACTS / "report.png").read_bytes()[:4] == b"\x89PNG"
