"""The head's HTTP API: a FastAPI app over the application layer (orchestrator.app) and the journal.

    POST /v1/experiments                  manifest YAML as the body -> 201 created / 200 existing
    GET  /v1/experiments                  every experiment: status, trial counts, owner
    GET  /v1/experiments/{id}             one experiment with its trials (states, metrics, errors)
    GET  /v1/experiments/{id}/results     ?format=json|csv: `orch results`' table
    POST /v1/experiments/{id}/cancel      `orch cancel`
    GET  /v1/experiments/{id}/events      ?after=SEQ: the journal's events as server-sent events
    GET  /healthz                         open (no token): "ok"
    GET  /grade, /v1/grading/...          human grading: the page (open shell) and its API (grading.py)
    GET  /openapi.json                    this document

Every path but /healthz needs `Authorization: Bearer <token>` (auth.py); bodies are limited to a
manifest's size and a token to `sse_per_token` concurrent event streams (limits.py); the server
adds header/body deadlines and security headers around it all (server.run_http). Handlers that
touch the journal or Ray run in worker threads.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray.exceptions import RayError

from orchestrator.app import queries
from orchestrator.app.quotas import TenantPublisher, quota_table
from orchestrator.journal import JournalError, UnknownExperiment, open_journal
from orchestrator.journal.redact import excerpt
from orchestrator.manifest import ManifestError
from orchestrator.manifest.yaml_source import MAX_BYTES
from orchestrator.results import ResultsFormat
from orchestrator.storage import StorageError

from . import events
from .auth import BearerGate, TokenSource, principal_of
from .errors import Detail
from .grading import grading_router
from .limits import BodyLimit, FollowerCap
from .submissions import SHOWN_FILE, Submissions

log = logging.getLogger(__name__)


@dataclass
class HeadSettings:
    state_dir: Path
    journal_url: str
    ray_address: str
    tokens: TokenSource
    data_roots: list[Path] = field(default_factory=list)
    body_limit: int = MAX_BYTES
    sse_max_s: float = 300.0
    sse_per_token: int = 8


# ------------------------------------------------------------------ schemas
class Issue(BaseModel):
    file: str
    path: str
    line: int | None
    message: str


class ManifestProblems(BaseModel):
    """As `orch validate --format json` prints them."""
    file: str
    valid: bool
    errors: list[Issue]


class Submitted(BaseModel):
    experiment_id: str
    name: str
    trials: int
    created: bool
    scheduled: bool
    start_error: str | None = None


class ExperimentSummary(BaseModel):
    experiment_id: str
    name: str
    status: str
    counts: dict[str, int]
    updated_at: str | None
    owner: str | None


class QuotaLimits(BaseModel):
    gpus: float | None
    cpus: float | None


class TenantRecord(BaseModel):
    """Whom an experiment runs for: its token's name (never the token), priority and quota."""
    name: str
    priority: int
    quota: QuotaLimits


class Holding(BaseModel):
    gpus: float
    cpus: float
    trials: int


class TenantExperiment(BaseModel):
    experiment_id: str
    running_trials: int
    waiting_trials: int


class TenantUsage(TenantRecord):
    """A tenant on the cluster now: what its running trials hold and how many trials wait."""
    running: Holding
    waiting_trials: int
    experiments: list[TenantExperiment]


class TrialRecord(BaseModel):
    trial_id: str
    status: str
    attempts: int
    checkpoint_step: int | None
    metrics: dict[str, Any] | None
    error: str | None


class ExperimentDetail(ExperimentSummary):
    tenant: TenantRecord | None  # None: not submitted through a head
    trials: list[TrialRecord]


class Cancelled(BaseModel):
    experiment_id: str
    counts: dict[str, int]


MEDIA = {ResultsFormat.json: "application/json", ResultsFormat.csv: "text/csv", ResultsFormat.table: "text/plain"}


# One message of the stream (OpenAPI 3.2's itemSchema convention for text/event-stream): `id` the
# journal seq, `event` the kind (`end` last, once the experiment is settled), `data` the event as JSON.
SSE_MESSAGE = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"},
                                                "event": {"type": "string"}, "data": {"type": "string"}},
               "required": ["event", "data"]}


def _r(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {401: "no valid bearer token (nothing was read or written)", 404: "no such experiment",
                 429: "this token already holds the most concurrent event streams allowed",
                 413: "body over the manifest size limit", 503: "the journal, blob store or Ray is unreachable"}
    return {c: {"model": Detail, "description": described[c]} for c in codes}


def create_app(settings: HeadSettings) -> BearerGate:
    """The ASGI app: token gate -> event-stream cap -> body limit -> FastAPI (its journal opened now)."""
    journal = open_journal(settings.journal_url)
    subs = Submissions(settings.state_dir, settings.data_roots, journal, settings.journal_url, settings.ray_address)
    settings.tokens.listen(TenantPublisher(settings.ray_address))  # quotas and priorities, kept current
    app = FastAPI(title="orch head API", version="1", docs_url=None, redoc_url=None,
                  description="Submit experiment manifests and follow them. Every path but /healthz needs "
                              "`Authorization: Bearer <token>`.")
    app.state.settings, app.state.journal = settings, journal

    async def threaded(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args)

    @app.exception_handler(UnknownExperiment)
    async def _unknown(_req, exc):
        return JSONResponse({"detail": excerpt(exc.args[0] if exc.args else exc)}, status_code=404)

    @app.exception_handler(JournalError)
    @app.exception_handler(StorageError)
    @app.exception_handler(RayError)
    async def _unavailable(_req, exc):
        log.error("503: %s", excerpt(exc))
        return JSONResponse({"detail": excerpt(exc)}, status_code=503)

    @app.get("/healthz", tags=["head"], openapi_extra={"security": []})
    def healthz() -> dict[str, str]:
        """Liveness probe; open (no token), says nothing about experiments."""
        return {"status": "ok"}

    @app.post("/v1/experiments", status_code=201, response_model=Submitted, tags=["experiments"],
              responses={200: {"model": Submitted, "description": "already there: the same experiment, not run again"},
                         422: {"model": ManifestProblems, "description": "a bad manifest: every problem with "
                               "its field path and line"}, **_r(401, 413, 503)},
              openapi_extra={"requestBody": {"required": True, "description": "The manifest (YAML).",
                                             "content": {"application/yaml": {"schema": {"type": "string"}}}}})
    async def submit(request: Request) -> Response:
        """Validate, journal and schedule a manifest. The same manifest again answers 200 with the same id."""
        body = await request.body()
        principal = principal_of(request.scope)
        try:
            accepted = await threaded(subs.submit, body, principal.tenant if principal else None)
        except ManifestError as exc:
            return JSONResponse(_problems(exc.issues), status_code=422)
        except (ValueError, FileNotFoundError) as exc:  # refused at scheduling (e.g. a conflicting tiny base)
            return JSONResponse(_problems([_issue(excerpt(exc))]), status_code=422)
        return JSONResponse(Submitted(**accepted.__dict__).model_dump(), status_code=201 if accepted.created else 200,
                            headers={"location": f"/v1/experiments/{accepted.experiment_id}"})

    @app.get("/v1/experiments", response_model=list[ExperimentSummary], tags=["experiments"], responses=_r(401, 503))
    async def list_experiments() -> list[dict]:
        return await threaded(queries.status, journal)

    @app.get("/v1/experiments/{experiment_id}", response_model=ExperimentDetail, tags=["experiments"],
             responses=_r(401, 404, 503))
    async def get_experiment(experiment_id: str) -> dict:
        """Trials with their states, attempts, last checkpoint, latest metrics and error; the owner."""
        return (await threaded(queries.status, journal, experiment_id))[0]

    @app.get("/v1/experiments/{experiment_id}/results", tags=["experiments"], responses={
        200: {"description": "the results table", "content": {"application/json": {"schema": {"type": "object"}},
                                                               "text/csv": {"schema": {"type": "string"}},
                                                               "text/plain": {"schema": {"type": "string"}}}},
        422: {"model": Detail, "description": "a metric pattern, paired field or format that does not apply"},
        **_r(401, 404, 503)})
    async def results(experiment_id: str, format: ResultsFormat = Query(ResultsFormat.json),
                      metrics: str = Query(None, max_length=1000, description="Comma-separated globs of "
                                                  "metric columns (default: all; a table: the headline ones)"),
                      paired: str = Query(None, max_length=200, description="A swept field: McNemar's "
                                                 "test between trials that differ only in it")) -> Response:
        """Rows are trials, columns swept fields and metrics, as `orch results` prints them."""
        patterns = [p.strip() for p in metrics.split(",") if p.strip()] if metrics else None
        try:
            text = await threaded(queries.results, journal, experiment_id, format.value, patterns, paired)
        except ValueError as exc:
            return JSONResponse({"detail": excerpt(exc)}, status_code=422)
        return Response(text, media_type=MEDIA[format])

    @app.post("/v1/experiments/{experiment_id}/cancel", response_model=Cancelled, tags=["experiments"],
              responses=_r(401, 404, 503))
    async def cancel(experiment_id: str) -> dict:
        """Queued trials are cancelled now, running ones as their coordinator sees it (seconds)."""
        return {"experiment_id": experiment_id, "counts": await threaded(queries.cancel, journal, experiment_id)}

    @app.get("/v1/experiments/{experiment_id}/events", tags=["experiments"], responses={
        200: {"description": "server-sent events: id = journal seq, event = kind, data = the event as JSON",
              "content": {"text/event-stream": {"schema": SSE_MESSAGE}}}, **_r(401, 404, 429, 503)})
    # Optional parameters are typed without `| None`: the document then has no "null" a client could send.
    async def follow(experiment_id: str, after: int = Query(None, ge=0, le=2**62, description="Send events "
                     "with a larger seq only (default: from the first)"),
                     last_event_id: int = Header(None, ge=0, le=2**62)) -> StreamingResponse:
        """The experiment's journal events from `after` (or Last-Event-ID), live until it is settled."""
        await threaded(journal.experiment_state, experiment_id)  # 404 before the stream starts
        start = after if after is not None else last_event_id
        return StreamingResponse(events.stream(journal, experiment_id, start, max_s=settings.sse_max_s),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @app.get("/v1/quotas", response_model=list[TenantUsage], tags=["head"], responses=_r(401, 503))
    async def quotas() -> list[dict]:
        """Each tenant's quota and priority, the GPUs and CPUs its running trials hold and how many of
        its trials wait; highest priority first. Tenants come from the tokens file (`name=`,
        `quota=`, `priority=`) and from the experiments running on the cluster."""
        return await threaded(quota_table, settings.ray_address)

    app.include_router(grading_router(journal))  # human grading: the page and its JSON API (grading.py)
    _document_security(app)
    gated = FollowerCap(BodyLimit(app, settings.body_limit), settings.sse_per_token)
    return BearerGate(gated, settings.tokens)


def _issue(message: str) -> Issue:
    return Issue(file=SHOWN_FILE, path="", line=None, message=message)


def _problems(issues) -> dict:
    rows = [i if isinstance(i, Issue) else Issue(**i.as_dict()) for i in issues]
    # A file check's message may quote the file it read: bounded and redacted like any error.
    rows = [r.model_copy(update={"message": excerpt(r.message)}) for r in rows]
    return ManifestProblems(file=SHOWN_FILE, valid=False, errors=rows).model_dump()


def _document_security(app: FastAPI) -> None:
    """Bearer auth in the OpenAPI document (enforced by BearerGate, outside FastAPI)."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            doc["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
