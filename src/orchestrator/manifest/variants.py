"""The model variants as the manifest sees them: through a catalog that models/ installs.

manifest/ sits below models/ in the house, so it names no variant and imports nothing of models/.
Importing `orchestrator.models` installs its registry here (`set_catalog`); every entry point (the
CLI, the head's API, the actors, `orch train`) imports it before it reads a manifest. What the
manifest asks of the catalog: which variants exist, and for each its spec's facts below (its
options section validates `model.<variant>`; the rest feeds the capability check, experiment.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .section import VariantOptions

# A name a manifest can write as `model.variant`, and as the key of its options section.
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class UnknownVariant(ValueError):
    """A variant name nobody registered."""


class NoCatalog(RuntimeError):
    """A manifest read before any variant catalog was installed."""


class VariantFacts(Protocol):
    """What the manifest reads of a variant's spec (models/spec.py VariantSpec has them all)."""
    name: str
    kind: str
    trains_on: tuple[str, ...]
    suites: tuple[str, ...]
    options: type[VariantOptions] | None
    conditioning_clip_source: Callable[[Any], str | None] | None
    oracle_conditioning: Callable[..., Any] | None


@dataclass(frozen=True)
class Catalog:
    get: Callable[[str], VariantFacts]   # the spec by name; UnknownVariant, or NotImplementedError (planned)
    names: Callable[[], list[str]]       # every name, in the order messages list them


_installed: list[Catalog] = []


def set_catalog(catalog: Catalog) -> None:
    _installed[:] = [catalog]


def catalog() -> Catalog:
    if not _installed:
        raise NoCatalog("no model variants are known: import orchestrator.models (it installs its registry as "
                        "the manifest's variant catalog) before reading a manifest")
    return _installed[0]


def sections() -> dict[str, type[VariantOptions]]:
    """Each known variant's options section by variant name, in the catalog's order (a planned
    variant, not built yet, has none)."""
    found, cat = {}, catalog()
    for name in cat.names():
        try:
            options = cat.get(name).options
        except (UnknownVariant, NotImplementedError):
            continue
        if options is not None:
            found[name] = options
    return found


def options_of(name: str) -> type[VariantOptions] | None:
    """The options section of variant `name`; None for a variant without one, or unknown."""
    try:
        return catalog().get(name).options
    except (UnknownVariant, NotImplementedError):
        return None
