"""`orch run` stops every Ray process its embedded head started when it ends, by itself or by
SIGKILL: gcs_server, raylet, log monitor, the raylet's dashboard and runtime-env agents, workers.
Other sessions on this machine run Ray too, so only processes that descended from our driver count."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

ORCH = [str(Path(sys.executable).with_name("orch"))]
MANIFEST = """\
name: ray-cleanup
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: %d, batch_size: 4, lr: 1.0e-3, checkpoint_every: 4, seed: 1}
resources: {cpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""
GONE_WITHIN_S = 10.0


def is_ray(cmdline: list[str]) -> bool:
    line = " ".join(cmdline)
    return line.startswith("ray::") or any(k in line for k in ("raylet", "gcs_server", "dashboard", "log_monitor"))


def record_ray_descendants(root: int, seen: dict[int, tuple[float, str]]) -> None:
    """Add the Ray processes now descended from `root`: pid -> (start time, command line)."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in children:
        try:
            cmd = p.cmdline()
            if is_ray(cmd):  # the latest title: a worker starts as ray::IDLE, then names its task
                seen[p.pid] = (p.create_time(), " ".join(cmd)[:100])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def still_alive(seen: dict[int, tuple[float, str]]) -> list[str]:
    alive = []
    for pid, (start, cmd) in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == start and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {cmd}")
        except psutil.NoSuchProcess:
            continue
    return alive


def wait_gone(seen: dict[int, tuple[float, str]], timeout: float) -> list[str]:
    end = time.monotonic() + timeout
    while (alive := still_alive(seen)) and time.monotonic() < end:
        time.sleep(0.2)
    return alive


def kill_leftovers(seen: dict[int, tuple[float, str]]) -> None:
    for line in still_alive(seen):  # so a failing test leaves nothing behind either
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_run(tmp_path: Path, steps: int) -> subprocess.Popen:
    (tmp_path / "m.yaml").write_text(MANIFEST % steps)
    return subprocess.Popen([*ORCH, "run", "m.yaml", "--no-progress", "--cpus", "1", "--no-metrics"], cwd=tmp_path,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"},
                            stdout=(tmp_path / "run.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def log_tail(tmp_path: Path) -> str:
    return (tmp_path / "run.log").read_text()[-3000:]


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_a_sigkilled_orch_run_leaves_no_ray_process(tmp_path):
    run = start_run(tmp_path, steps=200)
    seen: dict[int, tuple[float, str]] = {}
    try:
        deadline = time.monotonic() + 180
        while not any(cmd.startswith("ray::TrialWorker") for _, cmd in seen.values()):  # training has started
            assert run.poll() is None, f"orch run ended early:\n{log_tail(tmp_path)}"
            assert time.monotonic() < deadline, f"no trainer after 180 s:\n{log_tail(tmp_path)}"
            record_ray_descendants(run.pid, seen)
            time.sleep(0.2)
        time.sleep(1.0)
        record_ray_descendants(run.pid, seen)
        names = " ".join(cmd for _, cmd in seen.values())
        assert "raylet" in names and "gcs_server" in names and "ray::DashboardAgent" in names, names
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        left = wait_gone(seen, GONE_WITHIN_S)
        assert not left, f"Ray processes outlived the SIGKILLed driver by {GONE_WITHIN_S} s: {left}"
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(seen)


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_an_orch_run_that_finishes_leaves_no_ray_process(tmp_path):
    run = start_run(tmp_path, steps=4)
    seen: dict[int, tuple[float, str]] = {}
    try:
        deadline = time.monotonic() + 240
        while run.poll() is None:
            assert time.monotonic() < deadline, log_tail(tmp_path)
            record_ray_descendants(run.pid, seen)
            time.sleep(0.2)
        assert run.returncode == 0, log_tail(tmp_path)
        names = " ".join(cmd for _, cmd in seen.values())
        assert "raylet" in names and "ray::DashboardAgent" in names and "ray::RuntimeEnvAgent" in names, names
        left = wait_gone(seen, GONE_WITHIN_S)
        assert not left, f"Ray processes outlived the finished run by {GONE_WITHIN_S} s: {left}"
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(seen)
