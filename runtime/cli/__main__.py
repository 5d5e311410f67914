"""`python -m nnspec.runtime.cli ...` runs the `nnspec` command (used by sweeps' subprocesses)."""

import sys

from nnspec.runtime.cli import main

sys.exit(main())
