"""Trainer actor (`TrialWorker`, remote as `TrainerActor`): runs one trial with the ML core's
`train_resolved` and forwards what it reports.

A trainer receives its trial by value (`ResolvedTrial.to_json()`: the trial's own manifest and the
folder its relative paths are read from), never a manifest path: its node needs no copy of the file.

Thin by design: the core trains, checkpoints to the blob store and resumes from the newest
verified checkpoint; this actor only relays metrics and landed checkpoints to the coordinator,
and waits at each checkpoint until the coordinator has journaled it (`_on_metrics`).
Ray restarts the actor after its process dies and retries the in-flight `train` call, which
then resumes from the last checkpoint (the core's exact-resume makes the result identical).

GPUs come from Ray: a one-GPU trial's actor asks for `num_gpus=1` (so a node runs one such trial
per GPU and further trials wait), and trains on the GPU Ray assigned it (`where`, which every
start journals as `placed`, with the node). Where the process cannot use CUDA it trains on the
CPU and says so (a log line and a `gpu_unavailable` notice).

A data-parallel trial is a `TrainerGroup`: one actor per rank, gang-scheduled, with a
ShardPlanner that records which actor holds which rank (and so which shards). When a rank's
process dies, the group replaces it: the planner hands the dead actor's rank and its unfinished
shards to the new actor, and every rank resumes from the group's newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import traceback
from typing import TYPE_CHECKING

import ray
from ray.exceptions import RayActorError

from orchestrator.experiment.admission import Need
from orchestrator.journal.ownership import Ownership, OwnerWatch
from orchestrator.journal.retry import JournalUnavailable
from orchestrator.storage import open_store
from orchestrator.telemetry.sink import install_from_env

from .cluster import node_placement

if TYPE_CHECKING:  # the ML core (torch, diffusers) loads in the trainer's process when it trains: the
    # coordinator imports this module for the actor class and stays light
    from orchestrator.training import StepMetrics
    from orchestrator.training.distributed import DistContext

log = logging.getLogger(__name__)
REPORT_EVERY_S = 0.25  # live metrics are throttled; checkpoints and the last step are always sent, and awaited
RUNG_POLL_S = 0.2  # how often a trainer waiting at an early-stopping rung asks for its decision
PEER_GRACE_S = 15.0    # after one rank fails or dies, how long the others get to notice and return


class TrialWorker:
    """One trial's trainer process (or one rank of a data-parallel trial): trains it and relays what
    the run reports to the coordinator (`reporter`) and the ShardPlanner (`planner`)."""

    def __init__(self, trial: dict, blobs_uri: str, reporter=None, num_threads: int = 1,
                 planner=None, telemetry: dict[str, str] | None = None, ownership: Ownership | None = None):
        self.trial, self.trial_id, self.reporter = trial, trial["id"], reporter
        self.blobs_uri, self.num_threads, self.planner = blobs_uri, num_threads, planner
        self._last_report = self._last_shard_report = 0.0
        self._history: list[list[float]] = []  # [step, loss, lr] of every step since the last report
        self._stop = threading.Event()  # set by `preempt` (another actor thread: max_concurrency=2)
        self._halted: str | None = None  # set by `halt`: the journal cannot record this run any more
        # The run that owns this trial: once it is gone, nothing more is written (no checkpoint,
        # no report) and training stops at the next step boundary.
        self.owner = OwnerWatch(ownership) if ownership is not None else None
        if telemetry is not None:  # the trial's labels (experiment, trial, variant): its metrics carry them
            rec = install_from_env()
            rec.bind(**telemetry)
            if _reconstructed():
                rec.trainer_restarted()

    def preempt(self) -> None:
        """Checkpoint at the next step boundary and return from `train` (preempted)."""
        self._stop.set()

    def pid(self) -> int:
        return os.getpid()

    def _on_metrics(self, m: StepMetrics) -> None:
        """Live progress is sent unawaited (throttled). At a checkpoint boundary (a checkpoint
        landed, or the last step) the loss curve since the last boundary and each landed
        checkpoint's row are journaled and acknowledged before training goes on: a checkpoint
        counts as saved only once the journal has it, and the loop prunes old checkpoints only
        when it writes the next one, so the newest journaled checkpoint is never pruned. A journal
        down past its outage bound raises here: training stops at this step boundary."""
        if self.reporter is None or (self.owner is not None and self.owner.gone):
            return
        now = time.monotonic()
        self._history.append([m.step, m.loss, m.lr])  # every step: reports are throttled, curves are not
        report = {**m.as_dict(), "pid": os.getpid()}
        if m.checkpoints or m.step == m.total_steps:
            self._last_report = now
            history, self._history = self._history, []
            _acknowledged(self.reporter.on_metrics.remote(self.trial_id, {**report, "history": history}))
            for step, key in m.checkpoints:  # landed in the store: safe to journal
                info = open_store(self.blobs_uri).info(key)
                answer = _acknowledged(self.reporter.on_checkpoint.remote(self.trial_id, step, key, info.sha256,
                                                                          info.size))
                if isinstance(answer, dict) and answer.get("rung"):
                    self._await_rung(step)
        elif now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self.reporter.on_metrics.remote(self.trial_id, report)  # the bar's step and loss: nothing journaled

    def _await_rung(self, step: int) -> None:
        """Train no further than an early-stopping rung until the coordinator has journaled its
        decision (sweep.early_stop): to stop, it kills this actor; until then this polls. A halted
        run or a lost owner ends the wait (the loop stops at its next step boundary)."""
        while not self._halted and not (self.owner is not None and self.owner.gone):
            answer = _acknowledged(self.reporter.rung_decision.remote(self.trial_id, step))
            if answer is not None:
                if answer["stop"]:
                    self._stop.set()  # the kill may lag: stop at the next boundary meanwhile
                return
            time.sleep(RUNG_POLL_S)

    def halt(self, reason: str) -> None:
        """Stop at the next step boundary without writing anything more (the journal is gone)."""
        self._halted = reason

    def _guard(self) -> None:
        """Asked by the loop before each step's checkpoint: raises once the run must stop writing."""
        if self._halted:
            raise JournalUnavailable(self._halted)
        if self.owner is not None:
            self.owner.check()

    def _rank_metrics(self, rank: int, is_main: bool):
        """A data-parallel rank's callback: rank 0 reports to the coordinator, every rank reports
        its progress (and rank 0 its checkpoints) to the ShardPlanner."""
        def on_metrics(m: StepMetrics) -> None:
            if is_main:
                self._on_metrics(m)
            if self.planner is None:
                return
            now = time.monotonic()
            if m.checkpoint or m.step == m.total_steps or now - self._last_shard_report >= REPORT_EVERY_S:
                self._last_shard_report = now
                self.planner.report.remote(rank, m.step)
            for step, _ in m.checkpoints:
                self.planner.checkpointed.remote(step)
        return on_metrics

    def where(self, rank: int = 0) -> dict:
        """This process's node, the GPUs Ray assigned it and the device it trains on (what a
        `placed` event journals): see training/device.py for the choice."""
        from orchestrator.training.device import choose_device

        return {**node_placement(), "rank": rank, **choose_device(ray.get_gpu_ids()).as_dict()}

    def _placed(self, rank: int, is_main: bool) -> str:
        """Report where this process trains (and a fallback to the CPU, never silently); its device."""
        where = self.where(rank)
        if where["fallback"]:
            log.warning("trial %s rank %d: %s", self.trial_id, rank, where["fallback"])
        if self.reporter is not None and not (self.owner is not None and self.owner.gone):
            _acknowledged(self.reporter.on_placed.remote(self.trial_id, where))  # journaled: awaited
            if where["fallback"] and is_main:
                self._on_notice("gpu_unavailable", {"gpu_ids": where["gpu_ids"], "device": where["device"],
                                                    "reason": where["fallback"]})
        return where["device"]

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a port free on it: rank 0 hosts the process group."""
        from .cluster import free_port

        return ray.util.get_node_ip_address(), free_port()

    def _on_notice(self, kind: str, details: dict) -> None:
        if self.reporter is not None:
            _acknowledged(self.reporter.on_notice.remote(self.trial_id, kind, details))  # journaled: awaited

    def train(self, max_steps: int | None = None, distributed: DistContext | None = None,
              expect_checkpoint: int | None = None, restart_missing: bool = False,
              rungs: tuple[int, ...] = ()) -> dict:
        """The TrainResult as a dict, or {"error", "traceback"} when the trial raised: the
        traceback is formatted here, where it is still whole. Fallbacks resume takes are
        reported (`on_notice`) as they happen; `expect_checkpoint` and `restart_missing` are the
        journal's side of resume (RunControl, training/control.py); `rungs`: early-stopping rung
        steps, whose checkpoints land (and are decided on) before training goes past them."""
        from orchestrator.manifest.record import ResolvedTrial
        from orchestrator.training.control import LoopConfig, RunControl
        from orchestrator.training.trial import train_resolved

        is_main = distributed is None or distributed.is_main
        if distributed is None:
            callback = self._on_metrics if self.reporter is not None else None
        else:
            callback = self._rank_metrics(distributed.rank, distributed.is_main)
        control = RunControl(stop=self._stop.is_set, guard=self._guard, on_metrics=callback,
                             on_notice=self._on_notice if is_main else None,
                             expect_checkpoint=expect_checkpoint, restart_missing=restart_missing,
                             land_at=frozenset(rungs))
        try:
            device = self._placed(0 if distributed is None else distributed.rank, is_main)
            result = train_resolved(ResolvedTrial.from_json(self.trial), control,
                                    LoopConfig(device=device, num_threads=self.num_threads),
                                    max_steps=max_steps, distributed=distributed)
        except Exception as exc:  # noqa: BLE001 - a failing trial is data for the journal
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        return dataclasses.asdict(result)


def _acknowledged(answer):
    """Wait for a reporter's answer: a Ray call's result (raising what the coordinator raised), or
    the value itself from an in-process reporter."""
    return ray.get(answer) if isinstance(answer, ray.ObjectRef) else answer


def _reconstructed() -> bool:
    """Whether Ray restarted this actor after its process died (False outside an actor)."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - not an actor (tests construct TrialWorker directly)
        return False


# max_concurrency=2: `pid` answers while `train` runs. Restarts + task retries: a killed
# trainer process comes back and its `train` call runs again, resuming from its checkpoint.
TrainerActor = ray.remote(max_restarts=3, max_task_retries=3, max_concurrency=2)(TrialWorker)


def trial_resources(gpus_per_trial: int, cpus_per_trial: float) -> dict[str, float]:
    """Ray options of a one-process trial's trainer actor: one GPU when the trial has GPUs (a trial
    with more is a TrainerGroup, one GPU per rank), and its CPU slots."""
    if gpus_per_trial > 0:
        return {"num_gpus": 1, "num_cpus": cpus_per_trial}
    return {"num_cpus": cpus_per_trial}


def trial_need(gpus_per_trial: int, cpus_per_trial: float) -> Need:
    """What one trial holds while it trains, as the admission book counts it: a one-process trial
    its `trial_resources`, a data-parallel group one GPU and one CPU per rank."""
    if gpus_per_trial > 1:
        return Need(gpus=gpus_per_trial, cpus=gpus_per_trial)
    return Need(gpus=gpus_per_trial, cpus=cpus_per_trial)


def worker_id(actor) -> str:
    return actor._actor_id.hex()


def planner_spec(trial: dict) -> dict:
    """What the ShardPlanner of a trial (by value, `ResolvedTrial.to_json()`) needs: its data
    size, batch, seed and length."""
    from orchestrator.manifest.record import ResolvedTrial

    resolved = ResolvedTrial.from_json(trial)
    m, base_dir = resolved.manifest, resolved.base_dir
    src = m.data.train
    if src is None:
        raise ValueError(f"trial {resolved.id} has no data.train source to shard")
    if src.kind == "shapes":
        n = src.n  # generated: exactly n scenes
    else:  # files: n is at most the first n, and skips may drop some; count what the ranks will read
        from orchestrator.models.registry import get_variant
        from orchestrator.storage.location import open_blob_store
        from orchestrator.training.trial import load_train_data

        n = len(load_train_data(src, m.model.resolution, base_dir, open_blob_store(m.storage.blobs, base_dir),
                                get_variant(m.model.variant).train_data))
    return {"n": n, "batch_size": m.train.batch_size, "seed": m.train.seed,
            "grad_accum": m.train.grad_accum, "total_steps": m.train.steps}


class TrainerGroup:
    """A data-parallel trial: `world_size` trainer actors gang-scheduled in one placement group
    (all start or none does; PACK: on one node where they fit, across nodes where not), one GPU
    each or one CPU slot each, and a ShardPlanner that holds the record of which actor holds which
    rank's shards. `backend` None: each rank takes its device's (NCCL on CUDA, gloo on CPU)."""

    def __init__(self, trial: dict, blobs_uri: str, reporter, world_size: int,
                 use_gpus: bool, num_threads: int = 1, backend: str | None = None, max_recoveries: int = 3,
                 telemetry: dict[str, str] | None = None, ownership: Ownership | None = None):
        from ray.util.placement_group import placement_group

        from .shard_planner import ShardPlannerActor

        bundle = {"GPU": 1, "CPU": 1} if use_gpus else {"CPU": 1}
        self.pg = placement_group([bundle] * world_size, strategy="PACK")
        ray.get(self.pg.ready())
        self.args, self.trial_id = (trial, blobs_uri), trial["id"]
        self.reporter, self.use_gpus, self.num_threads = reporter, use_gpus, num_threads
        self.telemetry, self.ownership = telemetry, ownership
        self.world_size, self.backend = world_size, backend
        self.max_recoveries, self.recoveries, self.closed = max_recoveries, 0, False
        self.planner = ShardPlannerActor.remote(world_size=world_size, **planner_spec(trial))
        self.actors = [self._start(rank) for rank in range(world_size)]  # index: the rank it holds
        ray.get([self.planner.join.remote(worker_id(a), r) for r, a in enumerate(self.actors)])

    def _start(self, rank: int):
        """A trainer actor in the placement group's bundle `rank` (a dead rank's bundle is free again)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return TrainerActor.options(
            num_cpus=1, num_gpus=1 if self.use_gpus else 0, max_restarts=0, max_task_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, rank)).remote(
            *self.args, self.reporter, self.num_threads, self.planner, self.telemetry, self.ownership)

    def train(self, max_steps: int | None = None):
        """Refs of every rank's result, in rank order; rank 0's is the trial's (it wrote the
        checkpoints). Each actor trains the rank the ShardPlanner records it as holding."""
        from orchestrator.training.distributed import DistContext

        holders = ray.get(self.planner.assignment.remote())
        by_worker = {worker_id(a): a for a in self.actors}
        ranked = [by_worker[holders[r]] for r in range(self.world_size)]
        addr, port = ray.get(ranked[0].rendezvous.remote())
        return [a.train.remote(max_steps, DistContext(r, self.world_size, addr, port, self.backend))
                for r, a in enumerate(ranked)]

    def run(self, max_steps: int | None = None) -> dict:
        """Train to the end, replacing ranks whose process dies (up to `max_recoveries` times);
        rank 0's result, or {"error", "traceback"} when the trial itself fails."""
        while True:
            refs = self.train(max_steps)
            results, lost = self._wait(refs)
            if self.closed:
                return {"error": "the trainer group was shut down", "traceback": None}
            if not lost:
                failed = [r for r in results if r is not None and "error" in r]
                return failed[0] if failed else results[0]
            if self.recoveries >= self.max_recoveries:
                return {"error": f"ranks {lost} lost after {self.recoveries} recoveries", "traceback": None}
            self.recover(lost)

    def _wait(self, refs) -> tuple[list[dict | None], list[int]]:
        """Every rank's result, and the ranks to replace: those whose process died, and those
        still stuck (in a collective with a dead peer) a grace period after another rank failed."""
        results: list[dict | None] = [None] * len(refs)
        dead: list[int] = []
        pending = list(refs)
        grace_until = None
        while pending:
            timeout = None if grace_until is None else max(0.0, grace_until - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            if not ready:  # grace period over
                break
            for ref in ready:
                rank = refs.index(ref)
                try:
                    results[rank] = ray.get(ref)
                except RayActorError:
                    dead.append(rank)
                if (rank in dead or "error" in (results[rank] or {})) and grace_until is None:
                    grace_until = time.monotonic() + PEER_GRACE_S
        if not dead:
            return results, []  # no process was lost: any error is the trial's own
        stuck = [refs.index(ref) for ref in pending]
        return results, sorted(dead + stuck)

    def recover(self, ranks: list[int]) -> None:
        """Replace the actors of `ranks`: the ShardPlanner hands each dead actor's rank and
        unfinished shards to its replacement; every rank then resumes from the newest checkpoint."""
        self.recoveries += 1
        for rank in ranks:
            old = self.actors[rank]
            ray.kill(old, no_restart=True)
            new = self._start(rank)
            handover = ray.get(self.planner.reassign.remote(worker_id(old), worker_id(new), 0))
            log.warning("trial %s: rank %d lost; replacement %s resumes from batch %s", self.trial_id, rank,
                        worker_id(new)[:8], handover["cursor"])
            self.actors[rank] = new

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors])

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self.closed = True
        for a in self.actors:
            ray.kill(a, no_restart=True)
        ray.kill(self.planner, no_restart=True)
        remove_placement_group(self.pg)
