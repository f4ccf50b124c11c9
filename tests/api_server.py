"""A real `orch serve` for the API tests and the benchmark: a subprocess on a free loopback port,
over an embedded Ray and a real journal, stopped with SIGINT and its process session reaped."""
from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    root: Path
    port: int
    token: str
    tokens_file: Path
    state_dir: Path
    data_root: Path
    journal_url: str
    proc: subprocess.Popen | None = None
    log: Path = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: bytes | None = None, token: str | None = "default",
             headers: dict | None = None, timeout: float = 180) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        try:
            try:
                conn.request(method, path, body=body, headers=h)
            except BrokenPipeError:
                pass  # the head answered (413) and closed before the body was sent: its answer is read below
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: bytes | None = None, **kw):
        status, _, data = self.call(method, path, body, **kw)
        return status, json.loads(data) if data else None


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("ORCH_API_TOKENS", "ORCH_API_TOKEN")}
    return {**e, "PYTHONPATH": str(SRC), "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0", **extra}


def start_head(root: Path, journal: str | None = None, cpus: int = 1, wait_s: float = 120,
               args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> Head:
    """`args`: more `orch serve` options (e.g. shorter timeouts); `extra_env`: added to its
    environment (which its Ray workers inherit)."""
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    tokens_file = root / "tokens"
    tokens_file.write_text(f"# the test's token\n{token}\n")
    state_dir, data_root = root / "state", root / "data"
    data_root.mkdir(exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port), "--state-dir", str(state_dir),
           "--data-root", str(data_root), "--tokens", str(tokens_file), "--cpus", str(cpus)]
    if journal:
        cmd += ["--journal", journal]
    cmd += list(args)
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env(**(extra_env or {})),
                                start_new_session=True)
    journal_url = journal or f"sqlite:///{state_dir.resolve()}/runs/journal.db"
    head = Head(root, port, token, tokens_file, state_dir, data_root, journal_url, proc, log)
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"orch serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if head.call("GET", "/healthz", token=None, timeout=2)[0] == 200:
                return head
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_head(head)
            raise RuntimeError(f"orch serve did not answer within {wait_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_head(head: Head) -> None:
    """SIGINT (uvicorn and the embedded Ray shut down), then whatever is left of its session."""
    import psutil

    proc = head.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 20  # Ray's own processes leave by themselves within seconds
    while True:
        left = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == proc.pid and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p.pid)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        time.sleep(0.2)
