"""`orch serve`: the head's HTTP API."""
from __future__ import annotations

from pathlib import Path

import typer

from .common import err, run_errors


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8470, "--port", min=0, max=65535),
    address: str = typer.Option(None, "--address", help="A running Ray cluster (default: an embedded local Ray, "
                                "stopped with the server)."),
    cpus: int = typer.Option(None, "--cpus", min=1, help="CPU slots of the embedded Ray (default: all)."),
    gpus: int = typer.Option(None, "--gpus", min=0, help="GPUs the embedded Ray schedules (default: those Ray "
                             "detects); more than the machine has are scheduled but not there (tests, rehearsals)."),
    tokens: Path = typer.Option(None, "--tokens", help="Bearer tokens, one per line (# comments); re-read when "
                                "it changes, so deleting a line revokes. Also (or instead): $ORCH_API_TOKENS."),
    data_root: list[Path] = typer.Option([], "--data-root", help="A directory submitted manifests may name "
                                         "paths under (repeatable); the state dir always may."),
    state_dir: Path = typer.Option(Path("orch-state"), "--state-dir", help="Where accepted manifests are stored "
                                   "(content-addressed) and their relative paths resolve; the default journal "
                                   "and blob store live under it (runs/)."),
    journal: str = typer.Option(None, "--journal", help="The head's journal (default: sqlite in the state dir; "
                                "PostgreSQL for a cluster)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds a client has to send a request's "
                                         "line and headers (from connecting, or from the next request's first "
                                         "byte on a kept-alive connection); then 408 and the connection closed."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", help="Seconds a client has to send the whole "
                                       "request body once its headers are in; then 408 and the connection closed."),
    keepalive: float = typer.Option(5.0, "--keepalive", help="Seconds an idle kept-alive connection stays open."),
    max_connections: int = typer.Option(256, "--max-connections", help="Open connections (or requests in "
                                        "progress) beyond which a request is answered 503."),
    sse_per_token: int = typer.Option(8, "--sse-per-token", help="Event streams (status --follow) one token may "
                                      "hold open at once; one more is answered 429."),
) -> None:
    """Serve the head's HTTP API (submit, status, results, cancel, events) until Ctrl-C."""
    from ..api.server import HttpLimits, ServeOptions, check_options
    from ..api.server import serve as run_server

    limits = HttpLimits(header_timeout_s=header_timeout, body_timeout_s=body_timeout, keepalive_s=keepalive,
                        max_connections=max_connections)
    opts = ServeOptions(host=host, port=port, address=address, cpus=cpus, gpus=gpus, tokens_file=tokens,
                        data_roots=tuple(data_root), state_dir=state_dir, journal=journal,
                        sse_per_token=sse_per_token, limits=limits)
    problems = check_options(opts)
    if problems:
        for line in problems:
            err.print(f"orch serve: {line}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    with run_errors("serve"):  # TokenError is a ValueError: exit 2, one line
        run_server(opts)


def register(app: typer.Typer) -> None:
    app.command()(serve)
