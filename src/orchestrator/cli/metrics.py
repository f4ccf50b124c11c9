"""`orch metrics`: a cluster node's Prometheus endpoint."""
from __future__ import annotations

from pathlib import Path

import typer

from .common import out

group = typer.Typer(help="Prometheus metrics of a cluster node.", no_args_is_help=True)


@group.command("serve")
def metrics_serve(
    port: int = typer.Option(9464, "--port", envvar="ORCH_METRICS_PORT", min=0, help="Port to serve /metrics on."),
    directory: Path = typer.Option(Path("/tmp/orch-metrics"), "--dir", envvar="ORCH_METRICS_DIR",
                                   help="Where this node's orch processes write their metrics."),
    host: str = typer.Option("0.0.0.0", "--host"),
) -> None:
    """Serve this node's orch metrics (run beside `ray start` on every node; Ctrl-C stops)."""
    import threading

    from ..telemetry.exporter import MetricsServer

    server = MetricsServer(directory, port, host)
    out.print(f"serving {directory} on http://{host}:{server.port}/metrics")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()
