"""Who may call the head's API: bearer tokens, checked before anything else runs.

Tokens come from a file (one per line; blank lines and `#` comments ignored) and/or the
environment variable ORCH_API_TOKENS (separated by commas or whitespace). The file is re-read
whenever its modification time, size or inode changes, so deleting a line revokes that token for
the next request. A presented token is compared with every known token with
`hmac.compare_digest` (no early exit), so timing does not tell how much of a guess was right.

`BearerGate` is a plain ASGI layer, outermost: a request without a valid token is answered 401
before its body is read, before routing, before the journal is opened. `/healthz` (a load
balancer's probe carries no token; it says nothing but "up") and `/grade` (the grading page's
static shell) are the only open paths.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import threading
from pathlib import Path

from .limits import send_json

log = logging.getLogger(__name__)
ENV_TOKENS = "ORCH_API_TOKENS"
# /grade is the grading page's shell (HTML + JS, no data); it takes the token from its link's
# fragment and calls the gated JSON API with it (api/grading.py)
OPEN_PATHS = frozenset({"/healthz", "/grade"})
MIN_TOKEN_CHARS = 16  # a token shorter than this is a typo or a password, not a secret


class TokenError(ValueError):
    """The token configuration is unusable (no token at all, a short one, an unreadable file)."""


def parse_tokens(text: str, where: str) -> list[str]:
    tokens = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if re.search(r"\s", line):
            raise TokenError(f"{where}:{n}: one token per line (found whitespace inside {line[:4]}...)")
        if len(line) < MIN_TOKEN_CHARS:
            raise TokenError(f"{where}:{n}: a token has at least {MIN_TOKEN_CHARS} characters")
        tokens.append(line)
    return tokens


class TokenSource:
    """The valid tokens: the file's (re-read when it changes) plus the environment's (read once)."""

    def __init__(self, file: Path | None = None, env: str | None = None):
        self.file = Path(file) if file is not None else None
        env = os.environ.get(ENV_TOKENS, "") if env is None else env
        self._env = parse_tokens("\n".join(t for t in re.split(r"[,\s]+", env) if t), f"${ENV_TOKENS}")
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._file_tokens: list[bytes] = []
        self.current()  # a missing or bad file fails at start, not at the first request
        if not self.current():
            raise TokenError(f"no API token: give --tokens FILE or set ${ENV_TOKENS}")

    def current(self) -> list[bytes]:
        if self.file is None:
            return [t.encode() for t in self._env]
        try:
            st = self.file.stat()
        except OSError as exc:
            if self._stamp is None:
                raise TokenError(f"cannot read the token file {self.file}: {exc.strerror or exc}") from None
            log.error("token file %s is gone (%s): refusing every token until it is back", self.file, exc)
            return [t.encode() for t in self._env]
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._file_tokens = [t.encode() for t in parse_tokens(self.file.read_text(), str(self.file))]
                except (OSError, TokenError) as exc:
                    if self._stamp is None:
                        raise TokenError(str(exc)) from None
                    log.error("token file %s unusable (%s): refusing its tokens until fixed", self.file, exc)
                    self._file_tokens = []
                self._stamp = stamp
            return self._file_tokens + [t.encode() for t in self._env]

    def valid(self, presented: bytes) -> bool:
        ok = False
        for token in self.current():  # every one compared: no early exit
            ok |= hmac.compare_digest(presented, token)
        return ok


def bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


class BearerGate:
    """ASGI middleware: 401 unless the request carries `Authorization: Bearer <valid token>`."""

    def __init__(self, app, tokens: TokenSource):
        self.app, self.tokens = app, tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        presented = bearer(scope["headers"])
        if presented is None or not self.tokens.valid(presented):
            return await send_json(send, 401, {"detail": "missing or invalid bearer token"},
                                   [(b"www-authenticate", b'Bearer realm="orch"')])
        return await self.app(scope, receive, send)
