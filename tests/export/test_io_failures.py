"""Export never leaves a truncated model and never writes outside its folder: a full disk is
one message and exit 1; a spec named `..` cannot reach the parent of a Triton repository."""

from __future__ import annotations

import errno

import pytest
import torch

from nnspec.compiler import UsageError
from nnspec.runtime.cli import main
from nnspec.runtime.export.triton_repo import write_triton_repository

TINY = "nnspec: 1\nname: tiny\ninput: {shape: [4]}\nnetwork: [{linear: {out: 3}}]\n"


def test_a_full_disk_during_export_is_one_message_and_no_partial_file(tmp_path, monkeypatch,
                                                                       capsys):
    def save_until_the_disk_is_full(self, destination, **_):
        with open(destination, "wb") as handle:
            handle.write(b"\x08\x07")  # the first bytes made it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", save_until_the_disk_is_full)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "out" / "tiny.onnx"
    assert main(["export", str(spec), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: export stopped: No space left on device: {out}\n"
    assert not out.exists()


def test_triton_repository_stays_inside_its_folder(tmp_path):
    with pytest.raises(UsageError, match="the model name '..' cannot name a folder"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path / "repo", "..")
    assert list(tmp_path.iterdir()) == []
