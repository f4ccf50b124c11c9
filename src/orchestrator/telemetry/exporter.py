"""One metrics endpoint per node: sums what every process of the node wrote (sink.py) and serves
it over HTTP for Prometheus, with the catalogue's help text.

`orch run` serves its embedded cluster's directory from the driver and can list itself in a
Prometheus file_sd file; on a cluster, `orch metrics serve` runs beside `ray start` on each node.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .catalogue import BY_NAME
from .sink import DIR_ENV

DEFAULT_PORT = 9464


class _Collector:
    """prometheus-client's multiprocess collector, limited to the catalogue's families (Ray's own
    processes inherit the directory and write theirs there too) with their own help text (it
    writes 'Multiprocess metric'), noting when each scrape came."""

    def __init__(self, directory: str, server: "MetricsServer"):
        from prometheus_client.multiprocess import MultiProcessCollector

        self.inner, self.server = MultiProcessCollector(None, path=directory), server

    def collect(self):
        self.server.scraped()
        for family in self.inner.collect():
            known = BY_NAME.get(family.name) or BY_NAME.get(family.name + "_total")
            if known is not None:
                family.documentation = known.help
                yield family


class MetricsServer:
    """Serve `directory` on `port` (0: any free port) at `host`."""

    def __init__(self, directory: str | os.PathLike, port: int = DEFAULT_PORT, host: str = "0.0.0.0"):
        from prometheus_client import CollectorRegistry, start_http_server

        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Condition()
        self.scrapes: list[float] = []  # monotonic times of the recent scrapes
        registry = CollectorRegistry()
        registry.register(_Collector(self.directory, self))
        self.httpd, self.thread = start_http_server(port, addr=host, registry=registry)
        self.port = self.httpd.server_address[1]

    def scraped(self) -> None:
        with self._lock:
            self.scrapes = (self.scrapes + [time.monotonic()])[-8:]
            self._lock.notify_all()

    def wait_for_scrape(self, after: float | None = None, max_wait_s: float = 30.0) -> bool:
        """Block until a scrape has started after `after` (monotonic; default now), so Prometheus
        has the final values before the process exits; returns at once when nothing has scraped
        this endpoint yet. Waits at most two observed scrape intervals (and `max_wait_s`)."""
        with self._lock:
            if not self.scrapes:
                return False
            gaps = [b - a for a, b in zip(self.scrapes, self.scrapes[1:])]
            limit = min(max_wait_s, 2 * max(gaps) + 1.0 if gaps else max_wait_s)
            start = time.monotonic() if after is None else after
            while self.scrapes[-1] <= start:
                left = start + limit - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_targets(path: str | os.PathLike, targets: list[str], labels: dict[str, str] | None = None) -> None:
    """A Prometheus file_sd list, replaced atomically (Prometheus may read it at any moment)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [{"targets": targets, "labels": labels or {}}] if targets else []
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(groups, f, indent=1)
    os.replace(tmp, path)


class EmbeddedMetrics:
    """The metrics of an embedded `orch run`: a fresh directory for the run's processes (set in
    this process's environment before Ray starts, so every worker inherits it), served from this
    process; the file_sd entry (if asked) lists it while the run lasts."""

    def __init__(self, port: int = DEFAULT_PORT, sd_file: str | os.PathLike | None = None, host: str = "127.0.0.1"):
        self.port, self.sd_file, self.host = port, sd_file, host
        self.server: MetricsServer | None = None
        self.note: str | None = None  # said on the console when the asked port was taken
        self.ended: float | None = None

    def __enter__(self) -> "EmbeddedMetrics":
        self.directory = tempfile.mkdtemp(prefix="orch-metrics-")
        self._previous = os.environ.get(DIR_ENV)
        os.environ[DIR_ENV] = self.directory
        try:
            self.server = MetricsServer(self.directory, self.port, self.host)
        except OSError as exc:  # the port is taken (another run): any free one, said
            self.server = MetricsServer(self.directory, 0, self.host)
            self.note = f"metrics port {self.port} is unavailable ({exc.strerror}); serving on {self.server.port}"
        if self.sd_file is not None:
            write_targets(self.sd_file, [f"{self.host}:{self.server.port}"], {"orch_mode": "embedded"})
        return self

    def mark_done(self) -> None:
        """The sweep has ended: every value it will write is written."""
        self.ended = time.monotonic()

    def finish(self) -> None:
        """Let Prometheus take the final values (a scrape after `mark_done`) before the endpoint goes."""
        if self.server is not None:
            self.server.wait_for_scrape(after=self.ended)

    def __exit__(self, *exc) -> None:
        if self.sd_file is not None:
            write_targets(self.sd_file, [])
        if self.server is not None:
            self.server.close()
        if self._previous is None:
            os.environ.pop(DIR_ENV, None)
        else:
            os.environ[DIR_ENV] = self._previous
        shutil.rmtree(self.directory, ignore_errors=True)
