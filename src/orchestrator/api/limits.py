"""The head's request limits as ASGI layers (and the plain JSON answer the layers send).

    BodyLimit     413 for a body over the manifest size
    BodyDeadline  408 for a body not received within its time; an answer given before the body was
                  read closes the connection (a trickling client cannot keep it)
    FollowerCap   429 past N concurrent event streams per token

The time to send a request's line and headers is bounded below ASGI, in the HTTP protocol
(protocol.py): an ASGI app is only called once the headers are complete.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import anyio


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


CLOSE = (b"connection", b"close")


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes (by Content-Length before any
    byte is read, or counted while reading a chunked body), so no handler sees a partial body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = {"detail": f"request body over {self.limit:,} bytes (a manifest is at most that)"}
        for name, value in scope["headers"]:
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await send_json(send, 400, {"detail": "bad Content-Length"})
                if declared > self.limit:
                    return await send_json(send, 413, too_big)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:  # read it all here (at most `limit` bytes), then replay it to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            size += len(message.get("body", b""))
            if size > self.limit:
                return await send_json(send, 413, too_big)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request says a body follows (a Content-Length above 0, or chunked)."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip().lstrip(b"0")):
            return True
    return False


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `timeout_s` of the headers.

    Past that, the app's pending read returns `http.disconnect` and the client gets 408 with
    `Connection: close` (or, if an answer had started, the connection simply ends). Any answer
    started before the request's body was fully read (a 401 before the body, a 413, a GET whose
    handler ignores a body) carries `Connection: close`, so the unread rest cannot hold the
    connection open."""

    def __init__(self, app, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = anyio.current_time() + self.timeout_s
        body_done, started, timed_out = not declares_body(scope["headers"]), False, False

        async def timed_receive():
            nonlocal body_done, started, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:  # waiting for a disconnect (a stream's listener) is not bounded
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                timed_out = True
                if not started:
                    started = True
                    await send_json(send, 408, {"detail": f"request body not received within {self.timeout_s:g} s"},
                                    [CLOSE])
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message):
            nonlocal started
            if timed_out:
                return  # the 408 was the answer
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        return await self.app(scope, timed_receive, closing_send)


EVENTS_PATH = re.compile(r"^/v1/experiments/[^/]+/events$")


class FollowerCap:
    """ASGI middleware: at most `per_token` concurrent event streams (`GET .../events`) per bearer
    token; the next is 429 until one ends. A stream holds its slot while the app runs, i.e. until
    it ends or its client goes away. One event loop serves every request: no lock needed."""

    def __init__(self, app, per_token: int):
        self.app, self.per_token = app, per_token
        self.open: Counter[bytes] = Counter()  # sha256(token) -> streams open; the token itself is not kept

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not EVENTS_PATH.match(scope["path"]):
            return await self.app(scope, receive, send)
        key = _token_key(scope["headers"])
        if self.open[key] >= self.per_token:
            return await send_json(send, 429, {"detail": f"this token already follows {self.per_token} event "
                                                         "streams, the most allowed at once (orch serve "
                                                         "--sse-per-token); close one and retry"},
                                   [(b"retry-after", b"5")])
        self.open[key] += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.open[key] -= 1
            if not self.open[key]:
                del self.open[key]


def _token_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The bearer token as BearerGate reads it (so spelling the header differently is the same
    token), hashed. Parsed here rather than imported: auth.py imports this module."""
    for name, value in headers:
        if name.lower() == b"authorization":
            return hashlib.sha256(value.partition(b" ")[2].strip()).digest()
    return hashlib.sha256(b"").digest()
