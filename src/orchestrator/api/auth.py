"""Who may call the head's API, and as whom they may grade: bearer tokens, checked before anything runs.

Tokens come from a file and/or the environment variable ORCH_API_TOKENS (separated by commas or
whitespace). A file line (blank lines and `#` comments ignored) is one of

    TOKEN                       an API token: every route; grades as nobody
    TOKEN graders=alice,bob     a grading token: the grading routes only, as alice or bob
    TOKEN graders=*             an operator's token: every route, and grades as anyone

An API or operator token may also say who it submits for on a shared cluster (its tenant,
experiment/admission.py), each option once, in any order:

    TOKEN name=vision quota=gpus:8,cpus:32 priority=10

`name` (default `token-` and the first 8 hex digits of the token's sha256; tokens may share one,
and then share its quota) is what `orch status` and GET /v1/quotas show, never the token;
`quota` caps the GPUs and CPUs its running trials hold (default: none); `priority` (an integer,
default 0) puts its pending trials ahead of lower ones'. Tokens sharing a name must agree on
its quota and priority.

Why bind graders to tokens: a grade is stored under the grader the request names, so a token that
could name anyone could forge or overwrite anyone's grades. A grader's link carries a token that
acts as that grader only (`orch grade serve --grader NAME` mints one per grader; `orch grade link`
appends `TOKEN graders=NAME` to the head's file), and such a token reaches nothing but grading:
it cannot submit or cancel experiments. Tokens in ORCH_API_TOKENS are API tokens (the form
cannot carry options), so the non-grading API works with them as before.

The file is read (one small read) and hashed (sha256) on every request, and re-parsed when the
hash changes. Comparing content rather than (mtime, size, inode) means any edit
revokes at the next request, also a same-size in-place edit whose mtime was put back. A presented
token is compared with every known token with `hmac.compare_digest` (no early exit), so timing
does not tell how much of a guess was right.

`BearerGate` is a plain ASGI layer, outermost: a request without a valid token is answered 401
before its body is read, before routing, before the journal is opened; a grading token outside
the grading routes is 403. It leaves the token's `Principal` in the ASGI scope, where the grading
routes check the grader they are asked to act as (`principal_of`). `/healthz` (a load balancer's
probe carries no token; it says nothing but "up") and `/grade` (the grading page's static shell)
are the only open paths.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.experiment.admission import Quota, Tenant

from .limits import send_json

log = logging.getLogger(__name__)
ENV_TOKENS = "ORCH_API_TOKENS"
# /grade is the grading page's shell (HTML + JS, no data); it takes the token from its link's
# fragment and calls the gated JSON API with it (api/grading.py)
OPEN_PATHS = frozenset({"/healthz", "/grade"})
GRADING_PREFIX = "/v1/grading/"  # the only routes a grading token reaches
MIN_TOKEN_CHARS = 16  # a token shorter than this is a typo or a password, not a secret
MAX_FILE_BYTES = 1 << 20  # read on every request: a tokens file is small
GRADER_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
SCOPE_KEY = "orch.principal"


class TokenError(ValueError):
    """The token configuration is unusable (no token at all, a short one, an unreadable file)."""


@dataclass(frozen=True)
class Principal:
    """What one token may do: the whole API or only grading, as which graders, and (an API token)
    for which tenant its experiments run."""

    api: bool
    graders: frozenset[str] | None  # None: any grader (graders=*)
    tenant: Tenant | None = None

    def may_grade_as(self, grader: str) -> bool:
        return self.graders is None or grader in self.graders


TENANT_NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
OPTIONS = ("graders", "name", "quota", "priority")


def grading_token(graders: list[str] | tuple[str, ...]) -> Principal:
    return Principal(api=False, graders=frozenset(graders))


def default_tenant_name(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def api_principal(token: str, graders: frozenset[str] | None = frozenset(), tenant: Tenant | None = None) -> Principal:
    return Principal(api=True, graders=graders, tenant=tenant or Tenant(default_tenant_name(token)))


def _options(fields: list[str], at: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for f in fields:
        key, sep, value = f.partition("=")
        if not sep or key not in OPTIONS:
            raise TokenError(f"{at}: options are {', '.join(o + '=' for o in OPTIONS)} after the token")
        if key in found:
            raise TokenError(f"{at}: {key}= is given twice")
        found[key] = value
    return found


def _tenant(token: str, options: dict[str, str], at: str) -> Tenant:
    name = options.get("name") or default_tenant_name(token)
    if not re.match(TENANT_NAME_PATTERN, name):
        raise TokenError(f"{at}: name= is 1-64 letters, digits or _.@-")
    try:
        quota = Quota.parse(options["quota"]) if "quota" in options else Quota()
    except ValueError as exc:
        raise TokenError(f"{at}: {exc}") from None
    try:
        priority = int(options.get("priority", "0"))
    except ValueError:
        raise TokenError(f"{at}: priority= is an integer") from None
    return Tenant(name, priority, quota)


def check_grader(name: str, where: str) -> str:
    if not re.match(GRADER_PATTERN, name):
        raise TokenError(f"{where}: a grader name is 1-64 letters, digits or _.@-")
    return name


def _check_token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"{where}: a token has at least {MIN_TOKEN_CHARS} characters")
    return token


def parse_tokens(text: str, where: str) -> dict[str, Principal]:
    """A tokens file's lines (format in the module docstring); errors name the line, never its text."""
    tokens: dict[str, Principal] = {}
    tenants: dict[str, tuple[Tenant, str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        at = f"{where}:{n}"
        token = _check_token(fields[0], at)
        options = _options(fields[1:], at)
        names = options.get("graders")
        if names is not None and names != "*":
            if set(options) != {"graders"}:
                raise TokenError(f"{at}: a grading token (graders=NAME,...) cannot submit: it takes no "
                                 f"name=, quota= or priority=")
            principal = grading_token([check_grader(g, f"{at}: graders=") for g in names.split(",")])
        else:
            tenant = _tenant(token, options, at)
            earlier = tenants.setdefault(tenant.name, (tenant, at))
            if earlier[0] != tenant:
                raise TokenError(f"{at}: name={tenant.name} has another quota or priority at {earlier[1]}")
            principal = api_principal(token, None if names == "*" else frozenset(), tenant)
        if token in tokens:
            raise TokenError(f"{at}: this token is already on an earlier line")
        tokens[token] = principal
    return tokens


def tenants_of(principals: list[Principal]) -> list[Tenant]:
    """The distinct tenants of these tokens, by name."""
    return list({p.tenant.name: p.tenant for p in principals if p.tenant is not None}.values())


def mint(graders: list[str], make: Callable[[], str]) -> dict[str, str]:
    """A fresh token per grader (grader -> token), for `orch grade serve/link`; see `grader_tokens`."""
    return {check_grader(g, "--grader"): make() for g in graders}


def grader_tokens(links: Mapping[str, str]) -> dict[str, Principal]:
    """Each grader's token acting as that grader only."""
    return {token: grading_token([grader]) for grader, token in links.items()}


class TokenSource:
    """The valid tokens: the file's (re-parsed when its content changes), the environment's (read once)
    and `extra` ones (tokens minted by `orch grade serve`, in memory only)."""

    def __init__(self, file: Path | None = None, env: str | None = None,
                 extra: Mapping[str, Principal] | None = None):
        self.file = Path(file) if file is not None else None
        env = os.environ.get(ENV_TOKENS, "") if env is None else env
        fixed = {_check_token(t, f"${ENV_TOKENS}"): api_principal(t) for t in re.split(r"[,\s]+", env) if t}
        fixed.update({_check_token(t, "a minted token"): p for t, p in (extra or {}).items()})
        self._fixed = [(t.encode(), p) for t, p in fixed.items()]
        self._lock = threading.Lock()
        self._digest: bytes | None = None
        self._file_tokens: list[tuple[bytes, Principal]] = []
        self._listeners: list[Callable[[list[Tenant]], None]] = []
        self._tenants: list[Tenant] = []
        if self.file is not None:
            self._read_file(first=True)  # a missing or bad file fails at start, not at the first request
        with self._lock:
            self._tell()
        if not self.current():
            raise TokenError(f"no API token: give --tokens FILE or set ${ENV_TOKENS}")

    def _read_file(self, first: bool = False) -> None:
        problem = ""
        try:
            with open(self.file, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            data, problem = b"", f"cannot read the token file {self.file}: {exc.strerror or exc}"
        # an unreadable file hashes as nothing any content hashes to: logged once, not per request
        digest = hashlib.sha256(data).digest() if not problem else b""
        with self._lock:
            if digest == self._digest:
                return
            try:
                if problem:
                    raise TokenError(problem)
                if len(data) > MAX_FILE_BYTES:
                    raise TokenError(f"{self.file}: larger than {MAX_FILE_BYTES} bytes; not a tokens file")
                parsed = parse_tokens(data.decode("utf-8"), str(self.file))
            except (UnicodeDecodeError, TokenError) as exc:
                msg = f"{self.file}: not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                if first:
                    raise TokenError(msg) from None
                log.error("%s: refusing the file's tokens until it is fixed", msg)
                parsed = {}
            self._file_tokens = [(t.encode(), p) for t, p in parsed.items()]
            self._digest = digest
            self._tell()

    def listen(self, fn: Callable[[list[Tenant]], None]) -> None:
        """Call `fn` with the tenants now, and again each time an edit of the file changes them."""
        with self._lock:
            self._listeners.append(fn)
            fn(self._tenants)

    def _tell(self) -> None:  # under self._lock
        tenants = tenants_of([p for _, p in self._file_tokens + self._fixed])
        if tenants != self._tenants:
            self._tenants = tenants
            for fn in self._listeners:
                fn(tenants)

    def current(self) -> list[tuple[bytes, Principal]]:
        if self.file is not None:
            self._read_file()
        with self._lock:
            return self._file_tokens + self._fixed

    def principal(self, presented: bytes) -> Principal | None:
        """The presented token's rights, or None when it is no valid token."""
        found = None
        for token, principal in self.current():  # every one compared: no early exit
            if hmac.compare_digest(presented, token):
                found = principal
        return found

    def valid(self, presented: bytes) -> bool:
        return self.principal(presented) is not None


def principal_of(scope: Mapping) -> Principal | None:
    """The rights BearerGate found for this request's token (None: not behind the gate)."""
    return scope.get(SCOPE_KEY)


def bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


class BearerGate:
    """ASGI middleware: 401 unless the request carries `Authorization: Bearer <valid token>`; 403 for
    a grading token outside the grading routes."""

    def __init__(self, app, tokens: TokenSource):
        self.app, self.tokens = app, tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        presented = bearer(scope["headers"])
        principal = None if presented is None else self.tokens.principal(presented)
        if principal is None:
            return await send_json(send, 401, {"detail": "missing or invalid bearer token"},
                                   [(b"www-authenticate", b'Bearer realm="orch"')])
        if not principal.api and not scope["path"].startswith(GRADING_PREFIX):
            return await send_json(send, 403, {"detail": "a grading token reaches only the grading API "
                                                         f"({GRADING_PREFIX}...); use an API token"})
        return await self.app(scope | {SCOPE_KEY: principal}, receive, send)
