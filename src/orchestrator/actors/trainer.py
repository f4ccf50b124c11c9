"""Trainer actor: runs one trial with the ML core's `train_trial` and forwards what it reports.

Thin by design: the core trains, checkpoints to the blob store and resumes from the newest
verified checkpoint; this actor only relays metrics and landed checkpoints to the coordinator.
Ray restarts the actor after its process dies and retries the in-flight `train` call, which
then resumes from the last checkpoint (the core's exact-resume makes the result identical).
"""
from __future__ import annotations

import dataclasses
import os
import time
import traceback

import ray

from orchestrator.storage import open_store
from orchestrator.training import StepMetrics, train_trial
from orchestrator.training.distributed import DistContext

REPORT_EVERY_S = 0.25  # metrics are throttled; checkpoints and the last step are always sent


class Trainer:
    def __init__(self, manifest_path: str, trial_id: str, blobs_uri: str, reporter=None, num_threads: int = 1):
        self.manifest_path, self.trial_id, self.reporter = manifest_path, trial_id, reporter
        self.blobs_uri, self.num_threads = blobs_uri, num_threads
        self._last_report = 0.0

    def pid(self) -> int:
        return os.getpid()

    def _on_metrics(self, m: StepMetrics) -> None:
        if self.reporter is None:
            return
        now = time.monotonic()
        if m.checkpoint or m.step == m.total_steps or now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self.reporter.on_metrics.remote(self.trial_id, {**m.as_dict(), "pid": os.getpid()})
        if m.checkpoint:
            info = open_store(self.blobs_uri).info(m.checkpoint)
            self.reporter.on_checkpoint.remote(self.trial_id, m.step, m.checkpoint, info.sha256, info.size)

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a port free on it: rank 0 hosts the process group."""
        from .cluster import free_port

        return ray.util.get_node_ip_address(), free_port()

    def train(self, max_steps: int | None = None, distributed: DistContext | None = None) -> dict:
        """The TrainResult as a dict, or {"error", "traceback"} when the trial raised: the
        traceback is formatted here, where it is still whole."""
        try:
            result = train_trial(self.manifest_path, self.trial_id, max_steps=max_steps, progress=False,
                                 on_metrics=self._on_metrics if distributed is None or distributed.is_main else None,
                                 num_threads=self.num_threads, distributed=distributed)
        except Exception as exc:  # noqa: BLE001 - a failing trial is data for the journal
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        return dataclasses.asdict(result)


# max_concurrency=2: `pid` answers while `train` runs. Restarts + task retries: a killed
# trainer process comes back and its `train` call runs again, resuming from its checkpoint.
TrainerActor = ray.remote(max_restarts=3, max_task_retries=3, max_concurrency=2)(Trainer)


class TrainerGroup:
    """A data-parallel trial: `world_size` trainer actors gang-scheduled in one placement group
    (all start or none does), one GPU each (NCCL) or one CPU slot each (gloo)."""

    def __init__(self, manifest_path: str, trial_id: str, blobs_uri: str, reporter, world_size: int,
                 use_gpus: bool, num_threads: int = 1, backend: str | None = None):
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"GPU": 1, "CPU": 1} if use_gpus else {"CPU": 1}
        self.pg = placement_group([bundle] * world_size, strategy="PACK")
        ray.get(self.pg.ready())
        self.world_size, self.backend = world_size, backend or ("nccl" if use_gpus else "gloo")
        self.actors = [
            TrainerActor.options(num_cpus=1, num_gpus=1 if use_gpus else 0, max_restarts=0, max_task_retries=0,
                                 scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i)).remote(
                manifest_path, trial_id, blobs_uri, reporter if i == 0 else None, num_threads)
            for i in range(world_size)]

    def train(self, max_steps: int | None = None):
        """Refs of every rank's result; rank 0's is the trial's (it wrote the checkpoints)."""
        addr, port = ray.get(self.actors[0].rendezvous.remote())
        return [a.train.remote(max_steps, DistContext(r, self.world_size, addr, port, self.backend))
                for r, a in enumerate(self.actors)]

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors])

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a, no_restart=True)
        remove_placement_group(self.pg)
