"""What every manifest section is, and how a location in one is read.

Shared by the schema (schema.py) and by each model variant's own options section
(`models/<variant>/options.py`), which lives above manifest/ in the house and builds on these:

    Section          a section: unknown keys refused (a typo never falls back to a default), frozen
    VariantOptions   a variant's options section (`model.<variant>`), with its two optional checks
    PathOption       marks an option as a location: confined like every location of the manifest
    check_location   how a location field is read (parsed, confined under roots, checked to exist)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
)
from pydantic_core import core_schema

from orchestrator.storage.location import LocationError, confine, is_remote, local_path


class Section(BaseModel):
    """Unknown keys refused, frozen, and one canonical dump for every section.

    Trial and experiment ids hash the dump, so it follows one rule: a field holding its default
    is left out, except the fields named in the section's `ALWAYS_DUMPED`, which are the fields it
    had when ids were first hashed (frozen lists: those ids never move). So a field added with a
    default changes no id while it holds its default, and nobody has to remember to exclude it.
    `ONLY_WITH` leaves a field out while the field it qualifies is unset."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    ALWAYS_DUMPED: ClassVar[frozenset[str]] = frozenset()
    ONLY_WITH: ClassVar[dict[str, str]] = {}

    @model_serializer(mode="wrap")
    def _canonical(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        fields = type(self).model_fields
        for name in [n for n in data if n in fields]:
            qualified = self.ONLY_WITH.get(name)
            if qualified is not None and getattr(self, qualified) is None:
                del data[name]
            elif name not in self.ALWAYS_DUMPED and not fields[name].is_required() and \
                    getattr(self, name) == fields[name].get_default(call_default_factory=True):
                del data[name]
        data.update(self._dump_extra())
        return data

    def _dump_extra(self) -> dict[str, Any]:
        """Entries a section adds to its dump beyond its fields (ModelSpec: its variant's section)."""
        return {}


class VariantOptions(Section):
    """A variant's options section, validated where the manifest writes `model.<variant>`.

    REQUIRED: None when the defaults make a whole section; else the message for a manifest of the
    variant that leaves the section out (its defaults cannot stand alone)."""
    REQUIRED: ClassVar[str | None] = None

    def model_problem(self, model: Any) -> str | None:
        """What is wrong with these options together with the rest of the model section (`model`,
        a ModelSpec: its base, resolution), or None."""
        return None


def check_location(value: str | None, info: ValidationInfo, what: str) -> str | None:
    """A location field: parsed the one way (storage.location), confined when the context names
    roots (a manifest from an API client: the value becomes the resolved path the workers open),
    then, if asked, checked to exist. A refused path is never probed; no OS error escapes."""
    if value is None:
        return value
    context = info.context or {}
    base = context.get("base_dir")
    try:
        if context.get("roots") is not None:
            value = confine(value, base_dir=base, roots=context["roots"])
        if is_remote(value):
            return value
        path = local_path(value, base)
        if context.get("check_files", True) and not path.exists():
            raise ValueError(f"{what} not found: {_excerpt(str(path))}")
    except LocationError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:  # e.g. a directory that cannot be searched
        raise ValueError(f"{what} cannot be checked: {exc.strerror or type(exc).__name__}") from None
    return value


def _excerpt(text: str) -> str:
    return text if len(text) <= 120 else text[:80] + "..." + text[-24:]


@dataclass(frozen=True)
class PathOption:
    """Marks an option of a variant's section as a location (a path, file:// or az:// URI):

        clip: Annotated[str | None, PathOption("CLIP directory")] = None

    It is read by `check_location` like every location of the manifest, so the head confines it
    to its allowed roots and stores the resolved path, and `orch validate` checks that it exists
    (`what` names it in the messages). The variant's spec lists these (`VariantSpec.path_options`)."""
    what: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._read, handler(source))

    def _read(self, value: str | None, info: ValidationInfo) -> str | None:
        return check_location(value, info, self.what)


def path_options(section: type[BaseModel]) -> dict[str, str]:
    """{option: what it names} for every option of `section` marked PathOption."""
    return {name: mark.what for name, field in section.model_fields.items()
            for mark in field.metadata if isinstance(mark, PathOption)}
