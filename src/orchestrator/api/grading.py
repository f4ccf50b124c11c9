"""Human grading over HTTP: the grading page and its JSON API, mounted on the head (`orch serve`)
and served alone by `orch grade serve TASK` (a laptop: uvicorn, a SQLite journal).

    GET /grade                                       the page (HTML + JS, no data: open, see below)
    GET /v1/grading/tasks                            every task: id, experiments, items, models
    GET /v1/grading/tasks/{id}?grader=G              G's progress: items graded, the first ungraded
    GET /v1/grading/tasks/{id}/items/{i}?grader=G    the prompt, the images in G's blind order, G's grade
    PUT /v1/grading/tasks/{id}/items/{i}?grader=G    G's grade: match per image, ranking, and the
                                                     revision it replaces (0: none yet); stale: 409
    GET /v1/grading/tasks/{id}/results?format=       `orch grade results`

Auth: the JSON API sits behind the bearer-token gate like every other route, and every route that
names a grader (`?grader=G`) checks that the request's token may act as G (auth.py: a grader's
token acts only as that grader; a plain API token as nobody; 403 otherwise), so one grader's
token can neither read another's blind order nor write their grades. The task list and the
results (which name the models) need an API token. The page's shell is the one more open path: it
holds no data, and gets the token from the link's fragment (`/grade?task=ID&grader=NAME#token=T`,
never sent to the server nor logged), keeps it in the tab's sessionStorage and sends it as
`Authorization: Bearer` on each call; without one it asks.
The API speaks in slots (the positions a grader sees); models are named only in results.
"""
from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from orchestrator.app.grading import results_text
from orchestrator.eval.grading_task import blind_order
from orchestrator.journal import Grade, UnknownGradingTask, open_journal
from orchestrator.journal.grading import StaleGrade
from orchestrator.journal.redact import excerpt

from .auth import GRADER_PATTERN, principal_of
from .errors import Detail

PAGE = Path(__file__).with_name("grading_page.html")
GRADER = Query(..., pattern=GRADER_PATTERN, description="The grader's name (letters, digits, _.@-); the "
                                                        "token must be allowed to act as this grader")


def acting_grader(request: Request, grader: str = GRADER) -> str:
    """The `?grader=` of a request whose token may act as that grader; 403 otherwise."""
    who = principal_of(request.scope)
    if who is None or not who.may_grade_as(grader):
        raise HTTPException(403, f"this token may not grade as {grader!r}: a grader's link carries a token "
                                 f"for that grader only")
    return grader


def api_token(request: Request) -> None:
    """The task list and the results name tasks and models: an API token's, not a grader's."""
    who = principal_of(request.scope)
    if who is None or not who.api:
        raise HTTPException(403, "the task list and results need an API token, not a grader's")


class TaskSummary(BaseModel):
    task_id: str
    experiments: list[str]
    items: int
    models: int


class Progress(BaseModel):
    task_id: str
    items: int
    models: int
    graded: list[int]
    next: int | None = Field(description="the first item this grader has not graded (None: all graded)")


class SlotGrade(BaseModel):
    match: list[bool] = Field(description="per slot (image position as shown): matches the prompt")
    ranking: list[int] = Field(description="slots, best first: every slot once")


class ShownGrade(SlotGrade):
    revision: int = Field(ge=1, description="send it back as `replaces` to replace this grade")


class NewGrade(SlotGrade):
    replaces: int = Field(ge=0, description="the revision this grade replaces, as shown (0: the item showed no "
                                            "grade); required, so a stale page cannot overwrite: a newer "
                                            "grade is 409")


class Stale(BaseModel):
    detail: str
    revision: int = Field(description="the grader's current revision of the item (0: none)")


class ItemView(BaseModel):
    task_id: str
    index: int
    items: int
    prompt: str
    images: list[str] = Field(description="data: URIs, in this grader's blind order")
    grade: ShownGrade | None
    graded: int


class Stored(BaseModel):
    revision: int
    stored: bool
    next: int | None


class _NoItem(LookupError):
    """The task has no item with that index."""


def _404(task_id: str, index: int | None = None) -> dict:
    return {"detail": f"no grading task {task_id!r}" if index is None else f"task {task_id!r} has no item {index}"}


def grading_link(base_url: str, task_id: str, grader: str, token: str) -> str:
    """A grader's link: the token rides in the fragment, which browsers never send to the server."""
    return f"{base_url}/grade?task={quote(task_id)}&grader={quote(grader)}#token={token}"


def grading_router(journal: Any, store_override: Any = None) -> APIRouter:
    """The routes over an open journal; images from the store each task names (or `store_override`)."""
    router = APIRouter()
    described = {401: {"model": Detail, "description": "no valid bearer token"},
                 403: {"model": Detail, "description": "this token may not act as this grader (or is a "
                                                        "grader's, where an API token is needed)"},
                 404: {"model": Detail, "description": "no such task or item"}}

    @lru_cache(maxsize=16)
    def store_of(uri: str) -> Any:
        from orchestrator.storage import open_store

        return open_store(uri)

    def task(task_id: str) -> dict:
        return journal.grading_task(task_id)

    def progress(task_id: str, grader: str) -> dict:
        doc = task(task_id)
        graded = sorted(g.item for g in journal.grades(task_id, grader))
        todo = [i for i in range(len(doc["items"])) if i not in set(graded)]
        return {"task_id": task_id, "items": len(doc["items"]), "models": len(doc["models"]), "graded": graded,
                "next": todo[0] if todo else None}

    def item_view(task_id: str, index: int, grader: str) -> dict | None:
        doc = task(task_id)
        if index >= len(doc["items"]):
            return None
        item, models = doc["items"][index], doc["models"]
        order = blind_order(task_id, grader, index, len(models))
        store = store_override or store_of(doc["blobs"])
        images = ["data:image/png;base64," + base64.b64encode(store.get(item["images"][models[m]])).decode()
                  for m in order]
        mine = {g.item: g for g in journal.grades(task_id, grader)}
        g = mine.get(index)
        shown = None if g is None else {"match": [bool(g.match[models[m]]) for m in order],
                                        "ranking": [order.index(models.index(m)) for m in g.ranking],
                                        "revision": g.revision}
        return {"task_id": task_id, "index": index, "items": len(doc["items"]), "prompt": item["prompt"],
                "images": images, "grade": shown, "graded": len(mine)}

    def submit(task_id: str, index: int, grader: str, body: NewGrade) -> dict:
        doc = task(task_id)
        n, models = len(doc["models"]), doc["models"]
        if index >= len(doc["items"]):
            raise _NoItem(index)
        if len(body.match) != n or sorted(body.ranking) != list(range(n)):
            raise ValueError(f"a grade has {n} match labels and ranks each of the {n} slots once")
        order = blind_order(task_id, grader, index, n)  # slot s shows model order[s]
        grade = Grade(task_id, grader, index, 0, {models[order[s]]: body.match[s] for s in range(n)},
                      [models[order[s]] for s in body.ranking])
        revision, stored = journal.record_grade(grade, body.replaces)
        return {"revision": revision, "stored": stored, "next": progress(task_id, grader)["next"]}

    @router.get("/grade", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(), headers={"cache-control": "no-store"})

    @router.get("/v1/grading/tasks", response_model=list[TaskSummary], tags=["grading"],
                responses={401: described[401], 403: described[403]}, dependencies=[Depends(api_token)])
    async def list_tasks() -> list[dict]:
        def run():
            docs = [journal.grading_task(t) for t in journal.grading_task_ids()]
            return [{"task_id": d["task_id"], "experiments": d["experiments"], "items": len(d["items"]),
                     "models": len(d["models"])} for d in docs]
        return await anyio.to_thread.run_sync(run)

    @router.get("/v1/grading/tasks/{task_id}", response_model=Progress, tags=["grading"], responses=described)
    async def get_progress(task_id: str, grader: str = Depends(acting_grader)) -> Any:
        try:
            return await anyio.to_thread.run_sync(progress, task_id, grader)
        except UnknownGradingTask:
            return JSONResponse(_404(task_id), status_code=404)

    @router.get("/v1/grading/tasks/{task_id}/items/{index}", response_model=ItemView, tags=["grading"],
                responses=described)
    async def get_item(task_id: str, index: int, grader: str = Depends(acting_grader)) -> Any:
        try:
            view = await anyio.to_thread.run_sync(item_view, task_id, max(index, 0), grader) if index >= 0 else None
        except UnknownGradingTask:
            return JSONResponse(_404(task_id), status_code=404)
        return view if view is not None else JSONResponse(_404(task_id, index), status_code=404)

    @router.put("/v1/grading/tasks/{task_id}/items/{index}", response_model=Stored, tags=["grading"],
                responses={**described, 400: {"model": Detail, "description": "match labels or ranking do not "
                                                                          "fit the item"},
                           409: {"model": Stale, "description": "stale: `replaces` is not the current "
                                                                 "revision (graded since it was shown)"}})
    async def put_grade(task_id: str, index: int, body: NewGrade, grader: str = Depends(acting_grader)) -> Any:
        if index < 0:
            return JSONResponse(_404(task_id, index), status_code=404)
        try:
            return await anyio.to_thread.run_sync(submit, task_id, index, grader, body)
        except UnknownGradingTask:
            return JSONResponse(_404(task_id), status_code=404)
        except _NoItem:
            return JSONResponse(_404(task_id, index), status_code=404)
        except StaleGrade as exc:
            return JSONResponse({"detail": excerpt(str(exc)), "revision": exc.current}, status_code=409)
        except ValueError as exc:
            return JSONResponse({"detail": excerpt(str(exc))}, status_code=400)

    @router.get("/v1/grading/tasks/{task_id}/results", tags=["grading"], responses={
        200: {"description": "the tallies", "content": {"application/json": {"schema": {"type": "object"}},
                                                         "text/csv": {"schema": {"type": "string"}},
                                                         "text/plain": {"schema": {"type": "string"}}}},
        **described}, dependencies=[Depends(api_token)])
    async def results(task_id: str, format: str = Query("json", pattern="^(json|csv|table)$")) -> Response:
        try:
            text = await anyio.to_thread.run_sync(results_text, journal, task_id, format)
        except UnknownGradingTask:
            return JSONResponse(_404(task_id), status_code=404)
        media = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}[format]
        return Response(text, media_type=media)

    return router


def create_grading_app(journal_url: str, tokens: Any, store: Any = None) -> Any:
    """`orch grade serve`: the grading routes alone, behind the same token gate as the head."""
    from .auth import BearerGate

    app = FastAPI(title="orch grading", version="1", docs_url=None, redoc_url=None)
    journal = open_journal(journal_url, create=False)
    app.include_router(grading_router(journal, store))
    return BearerGate(app, tokens)
