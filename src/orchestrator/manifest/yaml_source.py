"""YAML loading that remembers the line of every key and list item, and refuses hostile input.

PyYAML's composer keeps a start mark on every node; we walk the node tree once to map
each dotted path to its line, so schema errors can name where to look.

A manifest is a small document, so anything far beyond one is refused before it is built into
Python objects, each with its line: files over MAX_BYTES, aliases that refer to themselves,
nesting deeper than MAX_DEPTH, and alias "bombs" (a few aliased lists that would expand to
millions of nodes: the composer shares them, our walk counts every expanded node up to
MAX_NODES). Values that YAML can spell but no setting means — NaN, ±inf, or 1e400, which
overflows to inf — are refused wherever they appear.
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


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.2 style), as researchers write it."""


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


def _walk(node: yaml.Node, path: Path_, lines: dict, issues: list, name: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            dotted = ".".join(str(p) for p in (*path, key))
            if key in seen:
                issues.append(ManifestIssue(name, dotted, line, f"duplicate key (first defined on line {seen[key]})"))
                continue
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, issues, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, issues, name)
