"""YAML loading that remembers the line of every key and list item, and refuses hostile input.

PyYAML's composer keeps a start mark on every node; we walk the node tree once to map
each dotted path to its line, so schema errors can name where to look.

A manifest is a small document, so anything far beyond one is refused before it is built into
Python objects, each with its line: files over MAX_BYTES, aliases that refer to themselves,
nesting deeper than MAX_DEPTH, and alias "bombs" (a few aliased lists that would expand to
millions of nodes: the composer shares them, our walk counts every expanded node up to
MAX_NODES). Nesting is bounded while parsing: PyYAML's composer recurses once per level, so
a document 1,000 deep would otherwise die of RecursionError before any check saw its tree.
Values that YAML can spell but no setting means — NaN, ±inf, or 1e400, which overflows to
inf — are refused wherever they appear, and so are control and bidi-control characters in
any key or string, whether written raw or as a double-quoted escape (`"\\0"`, `"\\u202e"`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError, ManifestIssue

Path_ = tuple[str | int, ...]
MAX_BYTES = 1 << 20      # 1 MiB: the largest sweep anyone writes by hand is a few kB
MAX_DEPTH = 32           # mappings and lists nested deeper than this are no manifest
MAX_NODES = 100_000      # nodes after aliases are expanded


class _TooDeep(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark):
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.2 style), as researchers write it,
    and stops at the first node nested deeper than MAX_DEPTH instead of recursing into it."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = -1  # the root node is depth 0, as in _check_shape

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 - PyYAML's name
        # The scanner looks up to 1,024 characters ahead for a simple key, keeping one candidate
        # per open `[`/`{` and rescanning them all per token: cut it off here, where a collection
        # opened inside more than MAX_DEPTH flow levels is already too deep.
        if self.flow_level > MAX_DEPTH:
            raise _TooDeep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class YamlSource:
    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest existing prefix of `path` (a missing key points at its parent)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None


def load_yaml(path: str | Path) -> YamlSource:
    path = Path(path)
    name = _shown(str(path))
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ManifestError([ManifestIssue(name, "", None, f"{size:,} bytes: a manifest is at most "
                                                               f"{MAX_BYTES:,} bytes")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([ManifestIssue(name, "", None, "file not found")]) from None
    except OSError as exc:  # the path is in `name` already (shortened if it is absurdly long)
        raise ManifestError([ManifestIssue(name, "", None, f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ManifestError([ManifestIssue(name, "", line, f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) \
            from None
    return parse_yaml(text, name)


def _shown(name: str, limit: int = 160) -> str:
    """A file name as messages print it: whole, unless longer than any real path."""
    return name if len(name) <= limit else f"{name[:80]}…{name[-60:]} ({len(name)} characters)"


def parse_yaml(text: str, name: str) -> YamlSource:
    loader, node = None, None
    try:
        loader = _Loader(text)  # checks every character is printable
        node = loader.get_single_node()
        if node is not None:
            _check_shape(node, name)  # before construction: a bomb is never built
        data = loader.construct_document(node) if node is not None else None
    except _TooDeep as exc:
        raise ManifestError([ManifestIssue(name, "", exc.mark.line + 1, str(exc))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ManifestError([ManifestIssue(name, "", line, f"invalid YAML: {msg}")]) from None
    except yaml.reader.ReaderError as exc:  # e.g. a control character: PyYAML gives its offset
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ManifestError([ManifestIssue(name, "", line, f"invalid YAML: {exc.reason} (character "
                                                           f"{char!r} is not allowed)")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([ManifestIssue(name, "", None, f"invalid YAML: {exc}")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tag's constructor refused the value
        raise ManifestError([ManifestIssue(name, "", _bad_tag_line(node), f"invalid YAML value: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()

    source = YamlSource(name, data)
    issues: list[ManifestIssue] = []
    if node is not None:
        source.lines[()] = node.start_mark.line + 1
        _walk(node, (), source.lines, issues, name)
    for bad in _non_finite(data):
        issues.append(ManifestIssue(name, ".".join(map(str, bad)), source.line_of(bad),
                                    "not a finite number (NaN, inf, or too large for a float)"))
    if issues:
        raise ManifestError(issues)
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ManifestError([ManifestIssue(name, "", 1, f"a manifest is a mapping of sections, got {kind}")])
    return source


def _check_shape(root: yaml.Node, name: str) -> None:
    """Refuse self-referencing aliases, deep nesting and expansion bombs, with the line."""
    visits = 0
    stack: list[tuple[yaml.Node, int, frozenset[int]]] = [(root, 0, frozenset())]
    while stack:
        node, depth, ancestors = stack.pop()
        line = node.start_mark.line + 1
        visits += 1
        if visits > MAX_NODES:
            raise ManifestError([ManifestIssue(name, "", line, f"expands to more than {MAX_NODES:,} values "
                                                               f"(aliases repeated inside aliases?)")])
        if depth > MAX_DEPTH:
            raise ManifestError([ManifestIssue(name, "", line, f"nested deeper than {MAX_DEPTH} levels")])
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in ancestors:
                raise ManifestError([ManifestIssue(name, "", line, "an alias refers to a value that contains "
                                                                   "it (a recursive alias)")])
            inside = ancestors | {id(node)}
            children = ([v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode)
                        else node.value)
            stack.extend((child, depth + 1, inside) for child in children)


def _bad_tag_line(root: yaml.Node | None) -> int | None:
    """The line of the first explicitly tagged scalar (`!!float abc`): where a constructor fails."""
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode) and node.tag and node.style is None and \
                node.tag.startswith("tag:yaml.org,2002:") and node.tag != "tag:yaml.org,2002:str":
            try:
                yaml.safe_load(f"!!{node.tag.rsplit(':', 1)[1]} {node.value}")
            except Exception:  # noqa: BLE001 - this is the one that fails
                return node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            stack.extend(v for pair in reversed(node.value) for v in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return None


def _non_finite(data: Any, path: Path_ = ()) -> list[Path_]:
    """Paths of NaN / ±inf floats anywhere in the document."""
    if isinstance(data, float) and not math.isfinite(data):
        return [path]
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _non_finite(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _non_finite(v, (*path, i))]
    return []


# Control characters (tab and newline are text) and the Bidi_Control characters, which reorder
# what a terminal or a review shows (U+202E); lone surrogates cannot even be written out as UTF-8.
_REFUSED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff]")


def _refused_char(text: Any) -> str | None:
    """Why `text` is refused (its first bad character, named by code point), or None."""
    found = _REFUSED.search(text) if isinstance(text, str) else None
    if found is None:
        return None
    code = ord(found.group())
    kind = ("a lone surrogate" if 0xD800 <= code <= 0xDFFF else
            "a bidi control character" if code in (0x61C, 0x200E, 0x200F) or code >= 0x202A else
            "a control character")
    return f"U+{code:04X} ({kind}) is not allowed, raw or escaped"


def _shown_path(path: Path_) -> str:
    """A dotted path as messages print it: refused characters escaped, never echoed."""
    return _REFUSED.sub(lambda m: f"\\u{ord(m.group()):04x}", ".".join(str(p) for p in path))


def _walk(node: yaml.Node, path: Path_, lines: dict, issues: list, name: str,
          reported: set[int] | None = None) -> None:
    reported = set() if reported is None else reported  # scalars already refused: an alias repeats them
    if isinstance(node, yaml.ScalarNode):
        # A double-quoted scalar's value is already unescaped here, so `"\\x07"` is caught too.
        why = _refused_char(node.value)
        if why is not None and id(node) not in reported:
            reported.add(id(node))
            issues.append(ManifestIssue(name, _shown_path(path), node.start_mark.line + 1, why))
    elif isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            dotted = _shown_path((*path, key))
            why = _refused_char(key)
            if why is not None:
                if id(key_node) not in reported:
                    reported.add(id(key_node))
                    issues.append(ManifestIssue(name, dotted, line, f"key: {why}"))
                continue
            if key in seen:
                issues.append(ManifestIssue(name, dotted, line, f"duplicate key (first defined on line {seen[key]})"))
                continue
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, issues, name, reported)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, issues, name, reported)
