"""api/confine.py's list of path fields keeps step with the schema: every field the schema checks
with `_check_exists` (a local path) is confined, wherever its section appears in a manifest."""
from __future__ import annotations

import ast
import inspect
import typing

from pydantic import BaseModel

from orchestrator.api.confine import PATH_FIELDS
from orchestrator.manifest import schema


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _where(model: type[BaseModel], prefix: str = "") -> dict[type, list[str]]:
    """Each section class -> the dotted paths it sits at in a manifest."""
    out: dict[type, list[str]] = {model: [prefix]}
    for name, f in model.model_fields.items():
        for sub in _models(f.annotation):
            for cls, paths in _where(sub, f"{prefix}{name}.").items():
                out.setdefault(cls, []).extend(paths)
    return out


def _checked_fields() -> dict[str, list[str]]:
    """Class name -> fields whose validator calls _check_exists (read from schema.py's source)."""
    tree = ast.parse(inspect.getsource(schema))
    found: dict[str, list[str]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            calls = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            if "_check_exists" not in calls:
                continue
            for dec in fn.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "field_validator":
                    found.setdefault(cls.name, []).extend(a.value for a in dec.args if isinstance(a, ast.Constant))
    return found


def test_every_path_field_of_the_schema_is_confined():
    where = {cls.__name__: paths for cls, paths in _where(schema.Manifest).items()}
    expected = {f"{p}{field}" for cls, fields in _checked_fields().items() for p in where[cls] for field in fields}
    assert expected, "no _check_exists validators found: has the schema changed how it checks paths?"
    assert expected | {"storage.blobs"} == set(PATH_FIELDS)
