"""Run a local Azurite blob emulator: for the test suite, benchmarks and development.

It listens on 127.0.0.1 only, keeps its data in `location`, and can be stopped and started
again on the same port and data directory, which is how tests simulate an outage.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteNotFound(RuntimeError):
    pass


def find_azurite(project_root: str | os.PathLike[str] | None = None) -> Path:
    """`$AZURITE_BLOB_BIN`, else `<project_root>/node_modules/.bin/azurite-blob`, else PATH."""
    candidates = []
    if os.environ.get("AZURITE_BLOB_BIN"):
        candidates.append(Path(os.environ["AZURITE_BLOB_BIN"]))
    if project_root is not None:
        candidates.append(Path(project_root) / "node_modules" / ".bin" / "azurite-blob")
    on_path = shutil.which("azurite-blob")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    looked = ", ".join(str(c) for c in candidates) or "PATH"
    raise AzuriteNotFound(f"azurite-blob not found (looked at {looked}): run `make install`, "
                          f"which installs Azurite from package.json with npm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    def __init__(self, location: str | os.PathLike[str], *, binary: str | os.PathLike[str],
                 port: int | None = None) -> None:
        self.location = Path(location)
        self.binary = Path(binary)
        self.port = port or free_port()
        self.log_path = self.location / "azurite.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.endpoint};")

    @property
    def env(self) -> dict[str, str]:
        """The variables `open_store("az://...")` reads."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 120.0) -> None:  # node starts slowly on a loaded 2-core machine
        if self.running:
            return
        self.location.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--location", str(self.location), "--silent", "--skipApiVersionCheck", "--loose",
                "--disableTelemetry"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port} within {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Azurite saves its metadata on the way out), SIGKILL if it hangs; waits."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "Azurite":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
