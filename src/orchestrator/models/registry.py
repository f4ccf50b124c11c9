"""The model variants, found by the manifest's `model.variant`.

Each variant is a package under models/ that exports one typed spec, `SPEC` (spec.py: what it is,
its options section, its functions and optional hooks); the table below has one line per variant
of the tree, and `register` plugs in one that lives elsewhere. Packages are imported when first
asked for, and a spec module loads no torch, so checking a manifest never does.

Importing `orchestrator.models` installs this registry as the manifest's variant catalog
(manifest/variants.py): that is how `model.<variant>` sections validate and the capability check
(manifest/experiment.py) learns what each variant can do, with manifest/ naming none of them.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from orchestrator.manifest.experiment import declared_conditioning_clip, load_experiment
from orchestrator.manifest.variants import Catalog, UnknownVariant

from .spec import GENERATING_KINDS, Kind, VariantSpec

__all__ = ["CATALOG", "GENERATING_KINDS", "INDEX_KEY", "UnknownVariant", "Variant", "VariantSpec",
           "declared_conditioning_clip", "get_variant", "names", "register", "specs", "unregister",
           "variant_of_index"]

INDEX_KEY = "_orch_variant"  # model_index.json key naming the variant (diffusers ignores "_" keys)
Variant = VariantSpec  # what the training loop, the loader and the evaluator hold


@dataclass(frozen=True)
class _Entry:
    module: str | None                    # the variant's package (it exports SPEC); None: not built yet
    planned: str = ""                     # what it is and where it comes from, for the error
    kind: Kind | None = None              # declared here only for planned variants


# One line per variant of the tree.
_VARIANTS: dict[str, _Entry] = {
    "sd": _Entry("orchestrator.models.sd"),
    "glide_mini": _Entry("orchestrator.models.glide_mini"),
    "discffusion": _Entry("orchestrator.models.discffusion"),
    "vcdm": _Entry("orchestrator.models.vcdm"),
    "sd3": _Entry("orchestrator.models.sd3"),
}
_plugged: dict[str, VariantSpec] = {}


def names() -> list[str]:
    return [*_VARIANTS, *_plugged]


def specs() -> list[VariantSpec]:
    """Every built variant's spec, in `names()` order (a planned variant has none yet)."""
    found = []
    for name in names():
        try:
            found.append(get_variant(name))
        except NotImplementedError:
            continue
    return found


def register(spec: VariantSpec) -> None:
    """Plug in a variant that lives outside this package. Refuses a name already known."""
    if not isinstance(spec, VariantSpec):
        raise TypeError(f"register() takes a VariantSpec, not {type(spec).__name__}")
    if spec.name in _VARIANTS or spec.name in _plugged:
        raise ValueError(f"model variant {spec.name!r} is already registered")
    _plugged[spec.name] = spec


PLUGINS_ENV = "ORCH_VARIANT_PLUGINS"


def load_plugins() -> None:
    """Register the variants named in ORCH_VARIANT_PLUGINS (comma-separated modules, each exporting
    `SPEC`): an environment variable, so every process of a run (the driver, Ray's trainers and
    evaluator, which inherit it) knows them. A module already registered is left as it is."""
    for module in (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",")):
        if not module:
            continue
        try:
            spec = importlib.import_module(module).SPEC
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"{PLUGINS_ENV}: cannot load a variant SPEC from module {module!r}: {exc}") from exc
        if _plugged.get(spec.name) is not spec:
            register(spec)


def unregister(name: str) -> None:
    _plugged.pop(name, None)


def get_variant(name: str) -> VariantSpec:
    """The variant's spec; UnknownVariant for a name nobody registered, NotImplementedError for a
    variant that is planned but not built."""
    if name in _plugged:
        return _plugged[name]
    entry = _VARIANTS.get(name)
    if entry is None:
        raise UnknownVariant(f"unknown model variant {name!r}; known: {', '.join(names())}")
    if entry.module is None:
        raise NotImplementedError(f"model variant {name!r} ({entry.planned}) is not implemented yet")
    spec = getattr(importlib.import_module(entry.module), "SPEC", None)
    if not isinstance(spec, VariantSpec) or spec.name != name:
        raise TypeError(f"{entry.module} must export SPEC = VariantSpec(name={name!r}, ...)")
    return spec


CATALOG = Catalog(get=get_variant, names=names)


def variant_of_index(index: dict, where: str) -> str:
    """The variant a model directory's model_index.json names: our own key, or a pipeline class
    a variant declares it loads."""
    name = index.get(INDEX_KEY)
    if name:
        return name
    cls = index.get("_class_name")
    for spec in specs():
        if cls in spec.pipeline_classes:
            return spec.name
    raise ValueError(f"{where}: model_index.json names no variant ({INDEX_KEY}) and its _class_name "
                     f"{cls!r} is no pipeline a variant loads")


def load_checked_manifest(path: Any, **kwargs: Any):
    """manifest.load_experiment under its older name, for tests written before it; entry points
    call load_experiment."""
    return load_experiment(path, **kwargs)
