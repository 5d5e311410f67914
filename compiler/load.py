"""Reading spec files: safe YAML/JSON that keeps line/column marks, jinja2 families, overrides.

Everything here is defensive: a spec is data from anywhere. YAML is parsed with PyYAML's safe
composer (no tags that construct objects), aliases are expanded under a node budget (a
"billion laughs" file ends in an error, not in memory exhaustion), nesting depth and file size are
bounded, and templates render in jinja2's SandboxedEnvironment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nnspec.compiler.errors import Mark, Problem, SpecError

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]

# libyaml's loader when PyYAML was built with it: same nodes and marks, several times faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
_STR = "tag:yaml.org,2002:str"
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def format_path(path: PathKey) -> str:
    """('network', 3, 'conv', 'kernel') -> 'network[3].conv.kernel'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Marks of every value in a loaded document, by spec path."""

    file: str
    marks: dict[PathKey, Mark] = field(default_factory=dict)

    def mark(self, path: PathKey) -> Mark | None:
        """The mark of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get(())


class _Builder:
    """Turns a composed YAML node tree into plain data while recording marks."""

    def __init__(self, file: str):
        self.source = SourceMap(file)
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def mark_of(self, node: yaml.Node) -> Mark:
        m = node.start_mark
        return Mark(self.source.file, m.line + 1, m.column + 1)

    def build(self, node: yaml.Node, path: PathKey, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(Problem(
                f"the document expands to more than {MAX_NODES} values",
                mark=self.mark_of(node),
                hint="YAML aliases (*name) that repeat large anchors multiply the size",
            ))
        if depth > MAX_DEPTH:
            raise SpecError(Problem(f"exceeded maximum nesting depth ({MAX_DEPTH} levels)", mark=self.mark_of(node)))
        self.source.marks[path] = self.mark_of(node)
        if node.tag not in _SAFE_TAGS:
            raise SpecError(Problem(f"YAML tag {node.tag!r} is not allowed in a spec",
                                    mark=self.mark_of(node), path=format_path(path),
                                    hint="specs are plain data: no tags that construct objects"))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise SpecError(Problem("YAML merge keys (<<) are not supported",
                                            mark=self.mark_of(key_node)))
                key = self.build(key_node, path + ("<key>",), depth + 1)
                if not isinstance(key, str | int | float | bool) or key is None:
                    raise SpecError(Problem("mapping keys must be plain scalars",
                                            mark=self.mark_of(key_node)))
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    raise SpecError(Problem(f"duplicate key {key!r}", path=format_path(path),
                                            mark=self.mark_of(key_node)))
                out[key] = self.build(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, path + (i,), depth + 1) for i, v in enumerate(node.value)]
        if node.tag == _STR:  # most scalars: the text is the value (no constructor needed)
            # YAML 1.1 reads `1e-4` (no dot) as a string; people mean a number.
            if not node.style and _FLOAT.match(node.value):
                return float(node.value)
            return node.value
        try:
            return self.constructor.construct_object(node)
        except ValueError as e:  # an integer of over 4300 digits (Python's int(str) limit)
            raise SpecError(Problem(
                f"the number {node.value[:20]}... is too long ({len(node.value)} characters)",
                mark=self.mark_of(node), path=format_path(path),
                hint="numbers in a spec are sizes and rates")) from e


def parse_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML (or JSON, a YAML subset) text into plain data and its source map."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise SpecError(Problem(f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB",
                                mark=Mark(file, 1, 1)))
    builder = _Builder(file)
    try:
        node = yaml.compose(text, Loader=_LOADER)
        if node is None:
            raise SpecError(Problem("the file is empty", mark=Mark(file, 1, 1)))
        return builder.build(node, ()), builder.source
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        mark = Mark(file, m.line + 1, m.column + 1) if m else Mark(file, 1, 1)
        raise SpecError(Problem(f"invalid YAML: {e.problem or e.context}", mark=mark)) from None
    except yaml.YAMLError as e:
        raise SpecError(Problem(f"invalid YAML: {e}", mark=Mark(file, 1, 1))) from None
    except RecursionError:
        raise SpecError(Problem("nesting is too deep to parse", mark=Mark(file, 1, 1))) from None


def render_template(text: str, file: str, variables: dict[str, Any]) -> str:
    """Render a *.yaml.j2 spec family in the budgeted sandbox; undefined variables are errors."""
    import jinja2

    from nnspec.compiler.budget import LIMITS_HINT, BudgetExceeded, budget

    try:
        with budget() as active, active.running():
            return _template_sandbox().from_string(text).render(**variables)
    except jinja2.TemplateSyntaxError as e:
        raise SpecError(Problem(f"template error: {e.message}",
                                mark=Mark(file, e.lineno or 1, 1))) from None
    except jinja2.UndefinedError as e:
        raise SpecError(Problem(
            f"template variable missing: {e.message}", mark=Mark(file, _template_line(e), 1),
            hint="pass it with --var NAME=VALUE",
        )) from None
    except jinja2.exceptions.SecurityError as e:
        raise SpecError(Problem(f"template tried an unsafe operation: {e}",
                                mark=Mark(file, _template_line(e), 1))) from None
    except BudgetExceeded as e:
        raise SpecError(Problem(f"template {e}", mark=Mark(file, _template_line(e), 1),
                                hint=LIMITS_HINT)) from None
    except (RecursionError, MemoryError) as e:
        what = "nests calls too deeply" if isinstance(e, RecursionError) else "ran out of memory"
        raise SpecError(Problem(f"template {what}", mark=Mark(file, _template_line(e), 1),
                                hint="a macro that calls itself needs a condition that ends it"))\
            from None
    except Exception as e:  # errors raised by template expressions (e.g. int('x'))
        raise SpecError(Problem(f"template failed: {e}", mark=Mark(file, _template_line(e), 1),
                                hint="check the --var values")) from None


_TEMPLATES = None


def _template_sandbox():
    global _TEMPLATES
    if _TEMPLATES is None:
        from nnspec.compiler.sandbox import SpecSandbox

        _TEMPLATES = SpecSandbox(keep_trailing_newline=True)
    return _TEMPLATES


def _template_line(error: BaseException) -> int:
    """Best-effort template line number from the traceback of an error raised while rendering."""
    tb, line = error.__traceback__, 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def read_source(path: Path, variables: dict[str, Any] | None = None) -> tuple[Any, SourceMap]:
    """Read a .yaml/.yml/.json file, or render a .j2 family first.

    The file must be a regular file of at most MAX_FILE_BYTES, checked before it is read
    (a link to /dev/zero or a FIFO is refused at once, see compiler/files.py).
    """
    from nnspec.compiler.files import UnreadableFile, read_text_capped

    name = str(path)
    try:
        text = read_text_capped(path, MAX_FILE_BYTES)
    except UnreadableFile as e:
        raise SpecError(Problem(f"cannot read this spec: {e}", mark=Mark(name, 0, 0))) from None
    if path.suffix == ".j2":
        text = render_template(text, name, variables or {})
    elif variables:
        raise SpecError(Problem("--var only applies to *.yaml.j2 spec families", path=name))
    return parse_text(text, name)


# ---------------------------------------------------------------------------------- overrides

_PATH_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]|(\.)")


def parse_override_path(text: str) -> PathKey:
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _PATH_TOKEN.match(text, pos)
        if not m:
            raise SpecError(Problem(f"cannot parse override path {text!r} at {text[pos:]!r}",
                                    hint="paths look like optimizer.lr or network[3].conv.out"))
        if m.group(1):
            parts.append(m.group(1))
        elif m.group(2):
            parts.append(int(m.group(2)))
        pos = m.end()
    if not parts:
        raise SpecError(Problem(f"empty override path in {text!r}"))
    return tuple(parts)


def apply_overrides(data: Any, source: SourceMap, overrides: list[str]) -> None:
    """Apply `path=value` overrides in place; the value is parsed as YAML."""
    problems: list[Problem] = []
    for item in overrides:
        path_text, sep, value_text = item.partition("=")
        shown = item if len(item) <= 80 else item[:77] + "..."
        if not sep:
            problems.append(Problem(f"override {shown!r} needs the form PATH=VALUE"))
            continue
        marker = Mark(f"--set {shown}", 0, 0)
        try:
            path = parse_override_path(path_text.strip())
            value, _ = parse_text(value_text, f"--set {shown}") if value_text.strip() \
                else (None, None)
        except SpecError as e:
            problems.extend(replace(p, mark=marker) for p in e.problems)
            continue
        problem = _set_path(data, path, value)
        if problem:
            problems.append(Problem(problem, path=format_path(path), mark=marker))
        else:
            for key in [k for k in source.marks if k[: len(path)] == path]:
                del source.marks[key]
            source.marks[path] = marker
    if problems:
        raise SpecError(problems)


def _set_path(data: Any, path: PathKey, value: Any) -> str | None:
    node = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = format_path(path[:i]) or "the spec"
        if isinstance(part, int):
            if not isinstance(node, list):
                return f"{where} is not a list, so [{part}] does not exist"
            if not -len(node) <= part < len(node):
                return f"index {part} is out of range: {where} has {len(node)} items"
        else:
            if not isinstance(node, dict):
                # `network[3].conv.out` where network[3] is the bare name `conv`
                return f"{where} is not a mapping, so .{part} does not exist"
            if part not in node and not last:
                # an absent optional section (`--set loss.label_smoothing=0.1`): create it; a
                # misspelt key is then refused by validation with a did-you-mean
                node[part] = {}
        if last:
            node[part] = value
            return None
        node = node[part]
    return None
