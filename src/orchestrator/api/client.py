"""The CLI's side of the head's API (`orch submit/status/results/cancel --api URL`): the standard
library's urllib only, so a researcher's laptop needs neither Ray nor an HTTP package. `Head` is
the HTTP implementation of the CLI's Backend (orchestrator.app.backend).

The token comes from $ORCH_API_TOKEN. Every failure is an ApiError: `status` is the HTTP status
(0 when the head could not be reached), `body` the decoded JSON answer when there was one.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.app.backend import SubmitOutcome

TOKEN_ENV = "ORCH_API_TOKEN"


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: Any = None, bad_input: bool | None = None):
        self.status, self.body = status, body
        # refused, or not sendable at all (exit 2), as opposed to the head unreachable or failing (exit 1)
        self.bad_input = 400 <= status < 500 if bad_input is None else bad_input
        super().__init__(message)


class Head:
    """The head at `url`, as a Backend: submit, status, results, cancel, and its live events."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        if not url.startswith(("http://", "https://")):
            raise ApiError(0, f"--api {url!r}: an http:// or https:// URL, e.g. http://head:8470", bad_input=True)
        self.url_given = url  # as the user wrote it: the commands we print repeat it
        self.url, self.timeout = url.rstrip("/"), timeout
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)

    def _open(self, method: str, path: str, body: bytes | None = None, query: dict | None = None,
              timeout: float | None = None):
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + ("?" + urllib.parse.urlencode(q) if q else "")
        headers = {"content-type": "application/yaml"} if body is not None else {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            detail = payload.get("detail") if isinstance(payload, dict) else None
            if exc.code == 401 and not self.token:
                detail = f"{detail or 'unauthorized'} (set ${TOKEN_ENV})"
            raise ApiError(exc.code, f"{method} {path}: {exc.code} {detail or exc.reason}", payload) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach the head at {self.url}: {reason}") from None

    def _json(self, method: str, path: str, **kw) -> Any:
        with self._open(method, path, **kw) as resp:
            return json.loads(resp.read())

    def submit(self, manifest: Path) -> SubmitOutcome:
        """The head validates the file's content (against its data roots); the issues it finds are
        raised as a ManifestError against the local file, as `orch validate` would list them."""
        from orchestrator.manifest import ManifestError, ManifestIssue

        try:
            body = manifest.read_bytes()
        except OSError as exc:
            raise ApiError(0, f"{manifest}: {exc.strerror or exc}", bad_input=True) from None
        try:
            created, answer = self.post_manifest(body)
        except ApiError as exc:
            rows = exc.body.get("errors") if exc.status == 422 and isinstance(exc.body, dict) else None
            if rows:
                raise ManifestError([ManifestIssue(str(manifest), r["path"], r["line"], r["message"])
                                     for r in rows]) from None
            raise
        eid = answer["experiment_id"]
        return SubmitOutcome(eid, follow=f"orch status {eid} --api {self.url_given} --follow", created=created,
                          trials=answer["trials"])

    def post_manifest(self, manifest: bytes) -> tuple[bool, dict]:
        """(created, answer); a bad manifest raises ApiError 422 whose body lists the issues."""
        with self._open("POST", "/v1/experiments", body=manifest) as resp:
            return resp.status == 201, json.loads(resp.read())

    def status(self, experiment_id: str | None = None) -> list[dict]:
        if experiment_id is None:
            return self._json("GET", "/v1/experiments")
        return [self._json("GET", f"/v1/experiments/{_seg(experiment_id)}")]

    def results(self, experiment_id: str, fmt: str = "json", metrics: str | None = None,
                paired: str | None = None) -> str:
        query = {"format": fmt, "metrics": metrics, "paired": paired}
        with self._open("GET", f"/v1/experiments/{_seg(experiment_id)}/results", query=query) as resp:
            return resp.read().decode()

    def cancel(self, experiment_id: str) -> dict[str, int]:
        return self._json("POST", f"/v1/experiments/{_seg(experiment_id)}/cancel")["counts"]

    def quotas(self) -> list[dict]:
        return self._json("GET", "/v1/quotas")

    def events(self, experiment_id: str, after: int | None = None) -> Iterator[dict]:
        """The experiment's journal events, live, until it is settled (reconnecting from the last
        seq when the head closes a long stream)."""
        while True:
            with self._open("GET", f"/v1/experiments/{_seg(experiment_id)}/events", query={"after": after},
                            timeout=3600) as resp:
                for kind, data, seq in _sse(resp):
                    if kind == "end":
                        return
                    after = seq if seq is not None else after
                    yield json.loads(data)


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _sse(lines) -> Iterator[tuple[str, str, int | None]]:
    """(event, data, id) of each message of a server-sent event stream."""
    kind, data, seq = "message", [], None
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data), seq
            kind, data, seq = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                seq = int(value)
