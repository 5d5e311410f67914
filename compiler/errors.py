"""One exception type per layer of the system, each carrying the exit code the CLI uses.

The CLI catches :class:`NnspecError` once and prints ``str(error)``; nothing a user can cause
should surface as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mark:
    """A place in a source file (1-based line and column; line 0 names a whole source, such
    as one `--set` argument)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where it is, what is wrong, and a hint."""

    message: str
    path: str = ""
    mark: Mark | None = None
    hint: str = ""
    context: str = ""

    def __str__(self) -> str:
        where = f"{self.mark}: " if self.mark else ""
        path = f"{self.path}: " if self.path else ""
        text = f"{where}{path}{self.message}"
        if self.context:
            text += f"\n    {self.context}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class NnspecError(Exception):
    """Base class of every error a user can cause. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class SpecError(NnspecError):
    """A spec (or an override of it) is invalid. Holds every problem found, not only the first.

    `follow_on` counts the problems left out because they follow from those reported (a block
    that fails at every call, the layers after one whose shape is unknown).
    """

    def __init__(self, problems: list[Problem] | Problem | str, follow_on: int = 0):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.follow_on = follow_on
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [str(p) for p in self.problems]
        them = "it" if len(lines) == 1 else "them"
        more = self.follow_on
        follow = f"{more} problem{'s' if more != 1 else ''} that follow{'s' if more == 1 else ''}"
        if len(lines) > 1:
            lines.append(f"{len(lines)} problems found" + (f", and {follow} from {them}"
                                                            if more else ""))
        elif more:
            lines.append(f"and {follow} from {them}")
        return "\n".join(lines)


class UsageError(NnspecError):
    """Bad command-line arguments (beyond what argparse itself catches)."""


class DataError(NnspecError):
    """A data source is missing, unreadable or does not fit the spec."""


class TrainingError(NnspecError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""

    exit_code = 1


class ExportError(NnspecError):
    """Export failed or the exported model disagrees with PyTorch."""

    exit_code = 1


class ServeError(NnspecError):
    """The server cannot start with the given model or settings."""
