"""`orch serve`: the head's API on uvicorn, over an embedded local Ray or a running cluster."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.actors.plan import resolve_journal_url
from orchestrator.journal.engine import masked

from .auth import TokenSource
from .submissions import head_journal_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8470
    address: str | None = None        # a running Ray cluster; None: an embedded local one
    cpus: int | None = None           # CPU slots of the embedded Ray (default: all)
    tokens_file: Path | None = None
    data_roots: tuple[Path, ...] = ()
    state_dir: Path = Path("orch-state")
    journal: str | None = None        # default: sqlite in the state dir (runs/journal.db)
    sse_max_s: float = 300.0


def check_options(opts: ServeOptions) -> list[str]:
    """Bad input, before anything starts: each problem one line."""
    problems = [f"--data-root {r}: not a directory" for r in opts.data_roots if not Path(r).is_dir()]
    if opts.state_dir.exists() and not opts.state_dir.is_dir():
        problems.append(f"--state-dir {opts.state_dir}: not a directory")
    return problems


def serve(opts: ServeOptions) -> None:
    """Blocks until SIGINT/SIGTERM; an embedded Ray (and every coordinator on it) stops with it."""
    import uvicorn

    from orchestrator.actors.cluster import connect, shutdown, start_local

    from .app import HeadSettings, create_app

    tokens = TokenSource(opts.tokens_file)  # TokenError before Ray starts
    state_dir = opts.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    journal_url = (resolve_journal_url(opts.journal, Path.cwd()) if opts.journal
                   else head_journal_url(state_dir, None))
    info = connect(opts.address) if opts.address else start_local(num_cpus=opts.cpus)
    try:
        app = create_app(HeadSettings(state_dir=state_dir, journal_url=journal_url, ray_address=info.address,
                                      tokens=tokens, data_roots=[Path(r).resolve() for r in opts.data_roots],
                                      sse_max_s=opts.sse_max_s))
        log.info("head API: state %s, journal %s, Ray %s%s", state_dir, masked(journal_url), info.address,
                 " (embedded)" if info.embedded else "")
        uvicorn.Server(uvicorn.Config(app, host=opts.host, port=opts.port, log_level="info",
                                      timeout_graceful_shutdown=5)).run()
    finally:
        shutdown(info)
