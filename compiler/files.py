"""Reading a file a user named, safely: checked before it is read, read with a cap.

`nnspec check link` where `link -> /dev/zero` used to read until memory ran out, and a FIFO
blocked forever waiting for a writer. The file is opened without blocking (O_NONBLOCK: a FIFO
opens at once), checked on the open descriptor (a regular file, not a device, FIFO, socket
or directory; no larger than the cap), and then read with the cap, so that a file that grows
while it is read cannot get past it either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableFile(Exception):
    """The file cannot be read as a spec or record; the message says why, for people."""


def read_bytes_capped(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    Raises:
        UnreadableFile: missing, not permitted, not a regular file, or larger than `limit`.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise UnreadableFile(f"cannot open it: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"it is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"it is larger than {_size(limit)} ({info.st_size:,} bytes)")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnreadableFile(f"it is larger than {_size(limit)} (it grew while read)")
        return b"".join(chunks)
    except OSError as e:
        raise UnreadableFile(f"cannot read it: {e.strerror or e}") from None
    finally:
        os.close(fd)


def not_a_regular_file(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file ("does not exist", "is a FIFO (named pipe), not a
    regular file", ...), or None when it is a regular file. Checked without opening it, so a
    FIFO or a device named as data never blocks and is never read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else f"is {_kind(mode)}, not a regular file"


def read_text_capped(path: str | Path, limit: int) -> str:
    """`read_bytes_capped` decoded as UTF-8."""
    data = read_bytes_capped(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableFile(f"it is not UTF-8 text (byte {e.start} is {data[e.start]:#04x})") \
            from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"
