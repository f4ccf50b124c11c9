"""`orch serve`: the head's API on uvicorn, over an embedded local Ray or a running cluster.

Every server here (`orch serve`, `orch grade serve`) runs through `run_http`, which bounds what a
client can hold: its request line and headers within `header_timeout_s` (protocol.py), its body
within `body_timeout_s` (limits.BodyDeadline: 408), idle keep-alive `keepalive_s`, at most
`max_connections` open connections (uvicorn's limit_concurrency: 503 past it); and puts the
security headers on every answer (headers.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.experiment.plan import resolve_journal_url
from orchestrator.journal.engine import masked

from .auth import TokenSource
from .submissions import head_journal_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0    # connection open (or next keep-alive request begun) -> headers complete
    body_timeout_s: float = 10.0      # headers complete -> the whole body received (a manifest is <= 1 MiB)
    keepalive_s: float = 5.0          # an idle kept-alive connection is closed after this
    max_connections: int = 256        # open connections (or requests in progress); past it 503

    def problems(self) -> list[str]:
        out = [f"--{flag} {v:g}: must be above 0 seconds" for flag, v in
               (("header-timeout", self.header_timeout_s), ("body-timeout", self.body_timeout_s),
                ("keepalive", self.keepalive_s)) if not v > 0]
        return out + ([f"--max-connections {self.max_connections}: must be at least 1"]
                      if self.max_connections < 1 else [])


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8470
    address: str | None = None        # a running Ray cluster; None: an embedded local one
    cpus: int | None = None           # CPU slots of the embedded Ray (default: all)
    gpus: int | None = None           # GPUs the embedded Ray schedules (default: what Ray detects)
    tokens_file: Path | None = None
    data_roots: tuple[Path, ...] = ()
    state_dir: Path = Path("orch-state")
    journal: str | None = None        # default: sqlite in the state dir (runs/journal.db)
    sse_max_s: float = 300.0
    sse_per_token: int = 8            # concurrent event streams one token may hold open; past it 429
    limits: HttpLimits = HttpLimits()


def check_options(opts: ServeOptions) -> list[str]:
    """Bad input, before anything starts: each problem one line."""
    problems = [f"--data-root {r}: not a directory" for r in opts.data_roots if not Path(r).is_dir()]
    if opts.state_dir.exists() and not opts.state_dir.is_dir():
        problems.append(f"--state-dir {opts.state_dir}: not a directory")
    if opts.gpus is not None and opts.address:
        problems.append("--gpus: sizes the embedded Ray; the cluster at --address declares its own GPUs")
    if opts.sse_per_token < 1:
        problems.append(f"--sse-per-token {opts.sse_per_token}: must be at least 1")
    return problems + opts.limits.problems()


def hardened(app, limits: HttpLimits):
    """The ASGI layers every server here puts outside its app: security headers, body deadline."""
    from .grading import PAGE
    from .headers import SecurityHeaders, page_csp
    from .limits import BodyDeadline

    return SecurityHeaders(BodyDeadline(app, limits.body_timeout_s), page_csp(PAGE.read_text()))


def run_http(app, host: str, port: int, limits: HttpLimits = HttpLimits(), log_level: str = "info") -> None:
    """Serve `app` (hardened) with uvicorn's h11 under `limits` until SIGINT/SIGTERM."""
    import uvicorn

    from orchestrator.journal.redact import redact_logs

    from .protocol import header_deadline_protocol

    config = uvicorn.Config(hardened(app, limits), host=host, port=port, log_level=log_level,
                            http=header_deadline_protocol(limits.header_timeout_s), ws="none",
                            timeout_keep_alive=limits.keepalive_s, limit_concurrency=limits.max_connections,
                            timeout_graceful_shutdown=5)
    redact_logs()  # uvicorn's handlers exist now: no log line shows a credential, tracebacks included
    uvicorn.Server(config).run()


def serve(opts: ServeOptions) -> None:
    """Blocks until SIGINT/SIGTERM; an embedded Ray (and every coordinator on it) stops with it."""
    from orchestrator.actors.cluster import connect, shutdown, start_local

    from .app import HeadSettings, create_app

    tokens = TokenSource(opts.tokens_file)  # TokenError before Ray starts
    state_dir = opts.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    journal_url = (resolve_journal_url(opts.journal, Path.cwd()) if opts.journal
                   else head_journal_url(state_dir, None))
    info = connect(opts.address) if opts.address else start_local(num_cpus=opts.cpus, num_gpus=opts.gpus)
    try:
        app = create_app(HeadSettings(state_dir=state_dir, journal_url=journal_url, ray_address=info.address,
                                      tokens=tokens, data_roots=[Path(r).resolve() for r in opts.data_roots],
                                      sse_max_s=opts.sse_max_s, sse_per_token=opts.sse_per_token))
        log.info("head API: state %s, journal %s, Ray %s%s", state_dir, masked(journal_url), info.address,
                 " (embedded)" if info.embedded else "")
        run_http(app, opts.host, opts.port, opts.limits)
    finally:
        shutdown(info)
