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

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

from orchestrator.storage.location import LocationError, confine, is_remote, local_path


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
