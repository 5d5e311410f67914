"""Files a user names are checked before they are read and read with a cap; names that become
folders stay inside their folder."""

from __future__ import annotations

import os

import pytest

from nnspec.compiler import load_spec
from nnspec.compiler.errors import SpecError, UsageError
from nnspec.compiler.files import UnreadableFile, read_bytes_capped
from nnspec.compiler.load import MAX_FILE_BYTES
from nnspec.compiler.paths import child_path


def load_error(path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero (POSIX)")
def test_a_link_to_a_device_is_refused_before_reading(tmp_path):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    assert load_error(link) == f"{link}: cannot read this spec: it is a character device, " \
                               "not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert "it is a FIFO (named pipe), not a regular file" in load_error(fifo)


def test_a_file_over_the_cap_is_refused_from_its_size(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:  # sparse: no 4 MiB written
        handle.truncate(MAX_FILE_BYTES + 1)
    assert "cannot read this spec: it is larger than 4 MiB (4,194,305 bytes)" in load_error(big)


def test_reading_stops_at_the_cap(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bytes_capped(path, 100) == b"x" * 100
    with pytest.raises(UnreadableFile, match="larger than 99 bytes"):
        read_bytes_capped(path, 99)
    with pytest.raises(UnreadableFile, match="cannot open it: No such file or directory"):
        read_bytes_capped(tmp_path / "missing", 10)
    with pytest.raises(UnreadableFile, match="it is a directory"):
        read_bytes_capped(tmp_path, 10)


def test_a_binary_file_is_named_as_such(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"nnspec: 1\nname: \xff\n")
    assert "it is not UTF-8 text (byte 16 is 0xff)" in load_error(path)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "a\\b", "a\0b"])
def test_child_path_refuses_anything_but_one_plain_component(tmp_path, name):
    with pytest.raises(UsageError, match="cannot name a folder inside"):
        child_path(tmp_path, name, "the model name")


def test_child_path_keeps_plain_names(tmp_path):
    assert child_path(tmp_path, "resnet50.v2-b", "the model name") == tmp_path / "resnet50.v2-b"


@pytest.mark.parametrize("name", ["..", "."])
def test_a_spec_named_like_a_folder_reference_is_refused(tmp_path, name):
    path = tmp_path / "spec.yaml"
    path.write_text(f"nnspec: 1\nname: {name!r}\ninput: {{shape: [4]}}\n"
                    "network: [{linear: {out: 2}}]\n")
    assert f"name: a spec name cannot be '{name}'" in load_error(path)
