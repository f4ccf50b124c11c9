"""YAML loading that remembers the line of every key and list item.

PyYAML's composer keeps a start mark on every node; we walk the node tree once to map
each dotted path to its line, so schema errors can name where to look.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError, ManifestIssue

Path_ = tuple[str | int, ...]


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
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([ManifestIssue(name, "", None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([ManifestIssue(name, "", None, f"cannot read: {exc}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlSource:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ManifestError([ManifestIssue(name, "", line, f"invalid YAML: {msg}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([ManifestIssue(name, "", None, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    source = YamlSource(name, data)
    issues: list[ManifestIssue] = []
    if node is not None:
        source.lines[()] = node.start_mark.line + 1
        _walk(node, (), source.lines, issues, name)
    if issues:
        raise ManifestError(issues)
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ManifestError([ManifestIssue(name, "", 1, f"a manifest is a mapping of sections, got {kind}")])
    return source


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
