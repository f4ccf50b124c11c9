"""A package's names imported on first use (PEP 562's module `__getattr__`): packages whose
`__init__` would otherwise pull in heavy modules (the journal's SQL stack, diffusers) that most of
their importers never touch."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` for `package`: each name in `exports` (name -> module, relative to the
    package) is imported from its module the first time it is asked for, then kept."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # found once
        return value

    return __getattr__
