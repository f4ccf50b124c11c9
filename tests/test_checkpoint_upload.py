"""Checkpoints upload behind the training steps: training goes on while one uploads, at most one
is in flight, a checkpoint is reported only once it is in the store, a failed upload is retried
and a second failure fails the run loudly, and a run stopped early resumes to the same weights
as the uninterrupted run. A full store fails `orch run` with one line naming store and key, and
the temp files killed uploads left are swept when the next run starts."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage import open_store
from orchestrator.storage.local import LocalBlobStore
from orchestrator.training.checkpoint import CheckpointStore
from orchestrator.training.control import LoopConfig, RunControl
from orchestrator.training.loop import Trainer
from orchestrator.training.uploader import CheckpointUploader

SPEC = TrainSpec(steps=8, batch_size=4, lr=1e-3, checkpoint_every=2, seed=0)


class SlowStore(LocalBlobStore):
    """A real local store whose checkpoint writes take `delay` seconds (upload latency), and
    whose first `failures` checkpoint writes fail after it."""

    def __init__(self, root, delay: float = 0.0, failures: int = 0):
        super().__init__(root)
        self.delay, self.failures, self.in_flight, self.most_in_flight = delay, failures, 0, 0
        self._lock = threading.Lock()

    def put(self, key, data, **kw):
        if "/checkpoints/" not in key or not key.endswith(".pt"):
            return super().put(key, data, **kw)
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.failures:
                self.failures -= 1
                raise OSError(f"injected upload failure of {key}")
            return super().put(key, data, **kw)
        finally:
            with self._lock:
                self.in_flight -= 1


def trainer(store, prefix="run", **control):
    return Trainer(get_variant("sd"), build_tiny(seed=0), shapes_data(n=8, seed=0), SPEC, store, prefix,
                   config=LoopConfig(export_model=False), control=RunControl(**control))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_steps_train_while_a_checkpoint_uploads_and_only_landed_ones_are_reported(tmp_path):
    store = SlowStore(tmp_path / "blobs", delay=1.0)
    log: list = []

    def on_metrics(m):
        log.append((m.step, m.checkpoints))
        for _, key in m.checkpoints:
            assert store.exists(key), f"{key} reported before it was in the store"

    result = trainer(store, on_metrics=on_metrics).run()
    assert result.step == 8 and result.checkpoint == "run/checkpoints/step-00000008.pt"
    reported = [c for _, cs in log for c in cs]
    assert [s for s, _ in reported] == [2, 4, 6, 8]  # every checkpoint reported once, in order
    first = next(step for step, cs in log if cs)
    assert first > 2  # step 2's checkpoint landed while later steps trained
    assert store.most_in_flight == 1
    assert [r.step for r in CheckpointStore(store, "run/checkpoints").refs()] == [8, 6, 4]


def test_a_failed_upload_is_retried_and_a_second_failure_fails_the_run(tmp_path):
    store = SlowStore(tmp_path / "a", failures=1)
    trainer(store).run()  # the first checkpoint's upload fails once, then goes through
    assert [r.step for r in CheckpointStore(store, "run/checkpoints").refs()] == [8, 6, 4]
    assert store.failures == 0

    failing = SlowStore(tmp_path / "b", failures=2)
    with pytest.raises(OSError, match="injected upload failure of run/checkpoints/step-00000002.pt"):
        trainer(failing).run()


def test_background_uploads_resume_exactly(tmp_path):
    store = open_store(tmp_path / "blobs")
    full = trainer(store, "full")
    full.run()
    stopped = trainer(store, "part")
    assert stopped.run(max_steps=5).checkpoint == "part/checkpoints/step-00000005.pt"
    resumed = trainer(store, "part")
    assert resumed.run().resumed_from == 5
    for a, b in zip(full.trained.parameters(), resumed.trained.parameters()):
        assert torch.equal(a, b)


def test_the_uploader_keeps_one_upload_in_flight_and_loses_none(tmp_path):
    started, release = [], threading.Event()

    def write(step, data):
        started.append(step)
        release.wait(5)
        return CheckpointStore(open_store(tmp_path / "u"), "x").write(step, data)

    up = CheckpointUploader(write)
    up.submit(1, b"one")
    assert started == [1] and up.landed() == []  # submitted: the caller is not held
    blocked = threading.Thread(target=up.submit, args=(2, b"two"))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive() and started == [1]  # the second waits for the first
    release.set()
    blocked.join(5)
    assert [r.step for r in up.flush()] == [1, 2]


# ---- a full blob store under `orch run`: one clear line, exit 1; stale temp files swept ----

from tests.test_storage import UNSHARE as _UNSHARE  # noqa: E402
from tests.test_storage import mount_namespace_ok as _can_mount_tmpfs  # noqa: E402

FULL_MANIFEST = """\
name: full-store
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 12}}
train: {steps: 4, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 1}
resources: {cpus_per_trial: 1}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


@pytest.mark.faults
@pytest.mark.timeout(300)
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace here")
def test_orch_run_on_a_full_store_says_which_store_and_key_in_one_line_and_sweeps_stale_temps(tmp_path):
    """The blob store is a real 64 KiB tmpfs (a private mount namespace): the first sizeable write
    fails with ENOSPC. Before the run, a 0-byte temp file as a killed upload leaves it (an hour
    old) and a concurrent writer's fresh one are put in the store; the run's start removes only
    the stale one, and the failed write removes its own."""
    (tmp_path / "m.yaml").write_text(FULL_MANIFEST)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    ckpt = blobs / "experiments" / "old" / "checkpoints"
    stale, fresh = ckpt / ".~step-00000004.pt.0123456789abcdef.tmp", ckpt / ".~step-00000006.pt.00112233445566ff.tmp"
    left = tmp_path / "left.txt"
    setup = (f"mount -t tmpfs -o size=64k orchfull {blobs} && mkdir -p {ckpt} && : > {stale} && "
             f"touch -d @{int(time.time()) - 3600} {stale} && : > {fresh} && "
             f'"$@"; rc=$?; find {blobs} -name ".~*" > {left}; exit $rc')
    orch = str(Path(sys.executable).with_name("orch"))
    run = subprocess.run([*_UNSHARE, "sh", "-c", setup, "sh", orch, "run", "m.yaml", "--no-progress", "--cpus", "1",
                          "--no-metrics"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-4000:]
    [line] = [ln for ln in run.stderr.splitlines() if "ENOSPC" in ln]
    assert f"cannot write to the blob store {blobs.as_uri()}: no space left on the device (ENOSPC); key '" in line
    key = line.split("; key '")[1].rstrip("'")
    assert key.endswith(".pt") and "/" in key  # the object it was writing, whole
    assert left.read_text().split() == [str(fresh)]  # stale one swept, fresh kept, no temp of the failed put
