"""Runs `nnspec` command lines for the hostile-input corpus, one per line of stdin, in one
process that imports nnspec and torch once; answers one JSON line per command.

The parent (test_corpus.py) kills this process when a command outlives its time cap and starts
a new one; the memory cap is set here, once the imports are done: the address space may grow
by MEMORY_HEADROOM beyond what the warm process holds, so a case that tries to allocate
gigabytes ends in MemoryError (reported as a traceback, which fails the case) instead of
taking the machine down.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import traceback

MEMORY_HEADROOM = 2 * 2**30


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _cap_memory() -> None:
    used = _address_space()
    if not used:
        return  # not Linux: no cap, the time cap still holds
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main() -> None:
    from nnspec.compiler import compile_graph
    from nnspec.runtime.cli import main as nnspec

    compile_graph("digits_cnn")  # warm: layers, pydantic models, jinja2
    _cap_memory()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        argv = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = nnspec(argv)
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code
            except BaseException:  # noqa: BLE001 - what the case must never show
                traceback.print_exc()
                code = "traceback"
        print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}),
              flush=True)


if __name__ == "__main__":
    main()
