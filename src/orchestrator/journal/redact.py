"""What an error may show: bounded, escaped, and without credentials.

Error texts travel far: a trial's `failed` event is returned by the head API and its event
stream, printed by `orch status`/`orch report`, and logged. An exception may quote what it read
(a file line, `/proc/self/environ`) or what it was given (a URL with a password), so every text
that leaves as an error goes through `excerpt` (at most LIMIT characters, control characters
escaped, secrets replaced by `***`); data quoted from input files goes through `quote` (a short
repr). The journal applies `bound_payload` to every event it is given, so no writer can forget.

Secrets are found by shape (URL passwords, Azure `AccountKey=`/`SharedAccessSignature=`/`sig=`,
`Bearer`/`Basic` credentials, `password=`/`token=` pairs, flags like `--password X`) and by value:
the exact values of this process's environment variables whose names look secret (KEY, TOKEN,
SECRET, PASSWORD, CONNECTION_STRING, CREDENTIAL), and their parts (ORCH_API_TOKENS entries,
a connection string's AccountKey), when at least MIN_SECRET characters long.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

LIMIT = 300            # characters of an error message
QUOTE_LIMIT = 80       # characters of input data quoted in a message
TRACEBACK_LINES = 60   # the last lines of a traceback that are kept
MIN_SECRET = 8         # shorter environment values are too likely to be ordinary words
MASK = "***"

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CONNECTION_STRING|CREDENTIAL", re.I)
_NOT_SECRET_NAME = re.compile(r"_(FILE|PATH|DIR)$", re.I)  # where a secret lies is not the secret
_SECRET_PART_KEY = re.compile(r"^(account_?key|shared_?access_?signature|sig|password|pwd|secret|token|"
                              r"api_?key|access_?key|client_?secret)$", re.I)

# Shapes of credentials in free text; each keeps what names the secret and masks its value.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:PASSWORD@host (also a bare scheme://:PASSWORD@host)
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):[^\s@/'\"]+@"), r"\1:" + MASK + "@"),
    # Azure connection strings and SAS query strings
    (re.compile(r"\b(SharedAccessSignature)=[^;\s'\"]+", re.I), r"\1=" + MASK),
    (re.compile(r"\b(AccountKey|sig|password|pwd|passwd|secret|token|api_?key|access_?key|client_?secret)"
                r"=[^;&\s'\",]+", re.I), r"\1=" + MASK),
    # HTTP credentials ("Basic" only after Authorization: it is an ordinary word too)
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.I), r"\1 " + MASK),
    (re.compile(r"\b(Authorization:\s*\w+)\s+[^\s'\"]+", re.I), r"\1 " + MASK),
    # JSON/YAML-ish "password": "x"
    (re.compile(r"""(["']?\b(?:password|passwd|secret|token|api_?key|account_?key)["']?\s*:\s*["'])[^"']+""", re.I),
     r"\1" + MASK),
)

# Command-line flags whose value is a credential, and flags whose value is a URL to mask.
_SECRET_FLAGS = re.compile(r"^--?[\w-]*(password|passwd|token|secret|key|credential)s?$", re.I)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values (and parts of values) of secret-named environment variables, longest first."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not value or not _SECRET_NAME.search(name) or _NOT_SECRET_NAME.search(name):
            continue
        found.add(value.strip())
        for part in re.split(r"[,;\s]+", value):
            key, eq, val = part.partition("=")
            if not eq:
                found.add(part)  # a list of tokens (ORCH_API_TOKENS)
            elif _SECRET_PART_KEY.match(key.strip()):
                found.add(val)
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """`text` with every credential it shows replaced by ***; nothing else changes. `secrets`:
    the values to mask (default: this process's `env_secrets()`)."""
    for secret in env_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, keep in _SHAPES:
        text = pattern.sub(keep, text)
    return text


def _escaped(ch: str) -> str:
    if ch.isprintable() or ch == " ":
        return ch
    return repr(ch)[1:-1]  # \n, \x00, \u202e: visible, and no terminal control or bidi trick


def escape(text: str, keep_newlines: bool = False) -> str:
    """Control and other non-printable characters as Python escapes."""
    if keep_newlines:
        return "\n".join(escape(line) for line in text.split("\n"))
    return "".join(_escaped(ch) for ch in text)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    more = f"… (+{len(text) - limit} chars)"
    return text[: max(0, limit - len(more))] + more


def excerpt(text: Any, limit: int = LIMIT, secrets: Sequence[str] | None = None) -> str:
    """The one bound on an error text: redacted first (a secret is never cut in half and half
    shown), then escaped, then cut to `limit` characters."""
    return _cut(escape(redact(str(text), secrets)), limit)


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """Input data quoted in a message: a repr of at most about `limit` characters, redacted."""
    text = redact(value if isinstance(value, str) else repr(value))
    shown = repr(text[:limit])
    return shown if len(text) <= limit else f"{shown}… (+{len(text) - limit} chars)"


def bound_traceback(text: str, limit_lines: int = TRACEBACK_LINES, line_limit: int = LIMIT,
                    secrets: Sequence[str] | None = None) -> str:
    """A traceback kept readable (one frame a line) but bounded: its last `limit_lines` lines,
    each redacted, escaped and cut like an error."""
    lines = redact(text, secrets).rstrip("\n").split("\n")
    dropped = len(lines) - limit_lines
    kept = [_cut(escape(line), line_limit) for line in lines[-limit_lines:]]
    return "\n".join(([f"… ({dropped} earlier lines)"] if dropped > 0 else []) + kept)


# Payload fields that carry an error's text, in any event.
ERROR_FIELDS = ("error", "reason", "detail", "message", "lease_lost")
TRACEBACK_FIELDS = ("traceback",)


def bound_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An event payload as it may be stored and shown: error fields bounded (`excerpt`),
    tracebacks bounded (`bound_traceback`), credentials redacted from every other string."""
    secrets = _Secrets()
    return {k: _bound_value(k, v, secrets) for k, v in payload.items()}


class _Secrets:
    """`env_secrets()`, read once and only when a string is met: most payloads (metrics, steps)
    hold none, and reading the environment is most of what bounding them would cost."""

    def __init__(self) -> None:
        self._values: list[str] | None = None

    def __call__(self) -> list[str]:
        if self._values is None:
            self._values = env_secrets()
        return self._values


def _bound_value(key: str, value: Any, secrets: _Secrets) -> Any:
    if isinstance(value, str):
        if key in ERROR_FIELDS:
            return excerpt(value, secrets=secrets())
        if key in TRACEBACK_FIELDS:
            return bound_traceback(value, secrets=secrets())
        return redact(value, secrets())
    if isinstance(value, dict):
        return {k: _bound_value(k, v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_bound_value(key, v, secrets) for v in value]
    return value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be shown: the value of a credential flag (`--token X`,
    `--password=X`) masked, a journal URL through `engine.masked` (the home of URL masking),
    every other argument redacted like an error text."""
    from .engine import masked

    secrets = env_secrets()
    out: list[str] = []
    after = ""  # the flag the previous argument was, when it takes a value
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if after and _SECRET_FLAGS.match(after):
            out.append(MASK)
        elif after in _URL_FLAGS and "://" in arg:
            out.append(masked(arg))
        elif flag.startswith("-") and eq and _SECRET_FLAGS.match(flag):
            out.append(f"{flag}={MASK}")
        elif flag in _URL_FLAGS and eq and "://" in value:
            out.append(f"{flag}={masked(value)}")
        else:
            out.append(redact(arg, secrets))
        after = arg if arg.startswith("-") and not eq else ""
    return out


_URL_FLAGS = ("--journal", "--journal-url")


class RedactingFilter:
    """A logging filter for a server's handlers: every record's message and traceback with its
    credentials masked (not cut: an operator needs the whole traceback, not the secrets in it)."""

    def filter(self, record) -> bool:
        import logging

        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_logs(logger_names: Sequence[str] = ("", "uvicorn", "uvicorn.error", "uvicorn.access")) -> None:
    """Put a RedactingFilter on every handler of these loggers (call after logging is configured)."""
    import logging

    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
