"""The README's five-minute tour runs as written: each shell line of its steps, in order, in a
fresh folder, as a new user would paste them; the server step is started in the background and
asked the tour's own `curl` request."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _tour_section() -> str:
    text = README.read_text()
    start = text.index("## A five-minute tour")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _shell_lines(section: str) -> list[str]:
    """Each command of the section's bash blocks; a `curl` block (its JSON body spans lines)
    is one command."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        if block.lstrip().startswith("curl"):
            lines.append(" ".join(block.split()))
            continue
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _curl_request(line: str) -> tuple[str, dict]:
    """The path and JSON body of the tour's `curl ... -d '{...}'` line (the body's elided
    `...` data is filled in by the caller)."""
    words = shlex.split(line)
    url = next(w for w in words if "/v2/" in w)
    body = words[words.index("-d") + 1]
    return url[url.index("/v2/"):], body


def _start_server(words: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, str]:
    command = [*words, "--port", "0"]
    server = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        found = re.search(r"on (http://[\d.]+:\d+)", line)
        if found:
            return server, found.group(1)
        if not line and server.poll() is not None:
            break
    server.kill()
    pytest.fail(f"`{shlex.join(command)}` did not start")


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    section = _tour_section()
    lines = _shell_lines(section)
    assert any(line.startswith("nnspec train") for line in lines)
    (tmp_path / "specs").symlink_to(ROOT / "specs")  # a clone's specs/, as in the README
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    server = None
    try:
        for line in lines:
            if line.startswith("curl"):
                continue  # asked below, with the server the tour started
            if line.startswith("nnspec serve"):
                if server is None:  # the tour's alternatives name other model folders
                    server, base = _start_server(shlex.split(line), tmp_path, env)
                continue
            result = subprocess.run(line, shell=True, cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=600)  # fmt: skip
            assert result.returncode == 0, f"$ {line}\n{result.stdout}\n{result.stderr}"
        assert server is not None, "the tour serves the model it exported"
        curl = next(line for line in lines if line.startswith("curl"))
        path, body_text = _curl_request(curl)
        sample = np.load(tmp_path / "three_digits.npy")[0].reshape(-1)
        body = json.loads(body_text.replace(", ...]", "]").replace("...", ""))
        shown = body["inputs"][0]["data"]
        assert shown == sample[: len(shown)].tolist(), "the README shows the first digit's values"
        body["inputs"][0]["data"] = sample.tolist()
        reply = httpx.post(base + path, json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        top = reply.json()["outputs"][0]["data"]
        assert len(top) == body["outputs"][0]["parameters"]["classification"]
        value, index, label = top[0].split(":")
        predicted = subprocess.run(
            ["nnspec", "predict", "digits_cnn.onnx", "three_digits.npy", "--top-k", "1", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        offline = json.loads(predicted.stdout)
        first = offline[0] if isinstance(offline, list) else offline["predictions"][0]
        assert int(index) == first["top"][0]["index"] and label == first["top"][0]["label"]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

