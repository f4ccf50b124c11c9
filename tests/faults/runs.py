"""What the fault cases share: a tiny manifest, `orch` as a subprocess in its own session, and
reading the journal back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from orchestrator.journal import open_journal
from tests.test_actors_cli import ORCH, _env, reap_session

# One trial of a few steps on the random tiny base; the spatial suite on a few prompts is the
# cheapest final evaluation (the untrained base is not evaluated).
MANIFEST = """\
name: {name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: {steps}, batch_size: 4, lr: 1.0e-3, checkpoint_every: {every}, seed: 0}}
{eval}resources: {{cpus_per_trial: 1}}
storage: {{blobs: ./blobs, journal: "{journal}"}}
"""
EVAL = "eval: {suites: [spatial], samples: 8, evaluate_base: false}\n"


def write_manifest(folder: Path, *, name: str = "fault", steps: int = 6, every: int = 2, evaluate: bool = False,
                   journal: str = "sqlite:///./journal.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.yaml"
    path.write_text(MANIFEST.format(name=name, steps=steps, every=every, eval=EVAL if evaluate else "",
                                    journal=journal))
    return path


def env(**extra: str) -> dict[str, str]:
    return {**_env(), "OPENBLAS_NUM_THREADS": "1", **extra}


def orch(*args: str, cwd: Path, timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ORCH, *args], cwd=cwd, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str, cwd: Path, log: Path, **extra_env: str) -> subprocess.Popen:
    """`orch ARGS` in a session of its own (to kill it whole), its output to `log`."""
    return subprocess.Popen([*ORCH, *args], cwd=cwd, env=env(**extra_env), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the run and everything it started (Ray's processes included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    reap_session(proc.pid)


def events(url: str, eid: str, kinds: list[str] | None = None) -> list:
    """The experiment's events ([] while the journal does not exist yet or is being created)."""
    try:
        with open_journal(url, create=False) as j:
            return j.events(eid, kinds=kinds)
    except Exception:  # noqa: BLE001 - not there yet
        return []


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 180, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"the run ended first:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(poll)


def results_json(url: str, eid: str, cwd: Path) -> dict:
    r = orch("results", eid, "--journal", url, "--format", "json", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def loss_curve(url: str, eid: str) -> dict[int, tuple]:
    """Step -> (loss, lr), as the report reads it (a step journaled twice keeps its latest value)."""
    curve: dict[int, tuple] = {}
    for e in events(url, eid, ["step_metrics"]):
        for s, loss, lr in zip(e.payload["steps"], e.payload["loss"], e.payload["lr"]):
            curve[int(s)] = (loss, lr)
    return curve
