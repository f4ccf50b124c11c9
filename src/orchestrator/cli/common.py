"""What every command group shares: the consoles, the output formats, one way to turn errors
into exit codes and one line on stderr, and the one choice between a local and an HTTP backend.

Exit codes: 0 success, 2 bad input (with file, field path and line), 3 another live run owns the
experiment (`run`/`resume`: nothing done; `--wait` waits for it), 1 anything else.
"""
from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import typer
from rich.console import Console

from .. import models  # noqa: F401  (installs the model variants as the manifest's catalog)
from ..app.defaults import FALLBACK_JOURNAL, JOURNAL_ENV, default_journal
from ..manifest import ManifestError, expand, load_experiment

if TYPE_CHECKING:
    from ..api.client import Head
    from ..app.backend import Backend

# soft_wrap: a line printed to a pipe stays one line (a long path must not split
# where scripts grep it); tables still fit the terminal width.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

BLOBS_HELP = "Blob store URI: file://DIR, a path, or az://container/prefix."
JOURNAL_HELP = f"Journal URL (default: ${JOURNAL_ENV} or {FALLBACK_JOURNAL})."
API_HELP = "The head's HTTP API, e.g. http://head:8470 (token from $ORCH_API_TOKEN); no Ray client needed."


def section_flags(section: type, names: Sequence[str], *, flag: Callable[[str], Sequence[str]],
                  param: Callable[[str], str] = lambda name: name) -> list[inspect.Parameter]:
    """Command-line options derived from a manifest section's fields (pydantic), so a flag and the
    manifest key it mirrors cannot drift: each field gives its default, its help (the field's
    description), its choices (a Literal) and its bounds (Field ge/gt/le). `flag(name)` spells the
    option ("--samples", and any older spelling kept beside it); `param(name)` names the keyword
    the command receives. A list field is taken comma-separated; the command validates the values
    through the section itself (a choice arrives as a str Enum member: its .value)."""
    params = []
    for name in names:
        info = section.model_fields[name]
        kind = _field_type(info.annotation)
        bounds = _bounds(info.metadata, kind)
        default = None if info.is_required() else info.default
        annotation: Any = str if kind is list else kind
        choices = _choices(info.annotation)
        if choices:  # a str Enum, as typer lists them
            annotation = Enum(f"{name}_choice", {c: c for c in choices}, type=str)
            default = None if default is None else annotation(default)
        help_ = f"{info.description} (comma-separated)" if kind is list else info.description
        option = typer.Option(default, *flag(name), help=help_, **bounds)
        params.append(inspect.Parameter(param(name), inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))
    return params


def _field_type(annotation: Any) -> type:
    """int / float / str / bool / list of a field's annotation, through Optional and Annotated."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return _field_type(args[0])
    origin = get_origin(annotation)
    if origin is list:
        return list
    if origin is Literal:
        return str
    return annotation if annotation in (int, float, str, bool) else str


def _choices(annotation: Any) -> tuple[str, ...]:
    """A Literal's values, through Optional; () for anything else."""
    if get_origin(annotation) in (Union, UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _bounds(metadata: list, kind: type) -> dict[str, Any]:
    """Field(ge=, gt=, le=) as typer's min/max (gt on an int: the next int)."""
    out: dict[str, Any] = {}
    for m in metadata:
        if getattr(m, "ge", None) is not None:
            out["min"] = m.ge
        if getattr(m, "gt", None) is not None and kind is int:
            out["min"] = m.gt + 1
        if getattr(m, "le", None) is not None:
            out["max"] = m.le
    return out


class TextFormat(str, Enum):
    text = "text"
    json = "json"


class PlanFormat(str, Enum):
    table = "table"
    json = "json"


class SamplerName(str, Enum):
    ddim = "ddim"
    ddpm = "ddpm"


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def bad_manifest(exc: ManifestError, fmt: str, file: Path) -> NoReturn:
    if fmt == "json":
        emit_json({"file": str(file), "valid": False, "errors": [i.as_dict() for i in exc.issues]})
    else:
        err.print(f"[bold red]{len(exc.issues)} problem(s)[/] in {file}:")
        for issue in exc.issues:
            err.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load_or_exit(file: Path, fmt: str):
    """The manifest and its trials, or exit 2 listing every problem."""
    try:
        loaded = load_experiment(file)
        return loaded, expand(loaded)
    except ManifestError as exc:
        bad_manifest(exc, fmt, file)


@contextmanager
def run_errors(command: str) -> Iterator[None]:
    """Map the runtime's bad-input errors to exit 2 with one clear line, journal faults to 1."""
    from ..app.signals import Preempted
    from ..journal import JournalError, LeaseHeld, LeaseLost, UnknownExperiment
    from ..storage import StorageError

    try:
        yield
    except Preempted as exc:  # SIGTERM/SIGINT: checkpointed and shut down; the shell's 128 + signal
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(128 + exc.signum) from None
    except LeaseHeld as exc:  # another live run owns the experiment: nothing was done
        err.print(f"orch {command}: {exc}; not started (--wait runs it after that run ends)", markup=False,
                  soft_wrap=True)
        raise typer.Exit(3) from None
    except LeaseLost as exc:  # another run took it over: this one stopped writing
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(3) from None
    except (UnknownExperiment, LookupError, ValueError, FileNotFoundError) as exc:
        err.print(f"orch {command}: {exc.args[0] if exc.args else exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (JournalError, StorageError) as exc:  # unreachable, full: nothing wrong with the input
        err.print(f"orch {command}: {error_line(exc)}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # name the path it failed on
        err.print(f"orch {command}: {exc.strerror or exc}: {exc.filename or ''}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def error_line(exc: BaseException) -> str:
    """An error as one line: a StorageError's message names store, key and cause; an error a Ray
    actor raised is shown as itself (`cause`), not as Ray's wrapper with the remote traceback."""
    inner = getattr(exc, "cause", None)
    shown = inner if isinstance(inner, BaseException) else exc
    lines = [ln.strip() for ln in str(shown).splitlines() if ln.strip()]
    return lines[0] if lines else type(shown).__name__


@contextmanager
def api_errors(command: str) -> Iterator[None]:
    """The head's answers as exit codes: refused (4xx) 2, unreachable or failing 1."""
    from ..api.client import ApiError

    try:
        yield
    except ApiError as exc:
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2 if exc.bad_input else 1) from None


@dataclass(frozen=True)
class BackendChoice:
    """Where a command's request goes, and how that place's failures read as exit codes."""
    backend: Backend
    errors: Callable[[str], AbstractContextManager[None]]


def choose_backend(api_url: str | None, journal: str | None = None, address: str | None = None) -> BackendChoice:
    """The one choice between the head's HTTP API (`--api`) and this machine's journal (`--journal`,
    else the default one) with a Ray cluster for submissions (`--address`)."""
    if api_url is not None:
        return BackendChoice(head(api_url), api_errors)
    from ..app.backend import LocalBackend

    return BackendChoice(LocalBackend(journal, address), run_errors)


def head(url: str) -> Head:
    """The head's client (`--api URL`); a URL that is not http(s) is exit 2."""
    from ..api.client import Head

    with api_errors("--api"):
        return Head(url)


def journal_or_default(journal: str | None) -> str:
    """`--journal`, else the default journal."""
    return journal or default_journal()
