"""ExperimentCoordinator: one per experiment. Expands the sweep, schedules trials on trainer actors
within the cluster's resources, journals every transition, and rebuilds itself from the journal.

Everything it knows on start comes from the journal: done trials are skipped, trials the journal
shows running (their worker was lost with the previous coordinator) are requeued and resume from
their last checkpoint. It runs as a threaded actor: `run` drives the schedule while trainers call
`on_metrics` / `on_checkpoint` and the driver polls `progress`.

Nothing a results table shows lives only here: a trial's training summary (final loss, model,
step) is journaled with its `evaluating` transition the moment training ends, and the loss curve
and checkpoint rows before the trainer goes on (it awaits them). A journal that cannot be used
any more (JournalUnavailable: down past its outage bound, its file deleted or read-only) stops
the run: trainers halt at their next step boundary and `run` returns `journal_unavailable`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray

from orchestrator.experiment.early_stop import Decision, Ladder, undecided_rung_evaluations
from orchestrator.experiment.journaling import RunJournal
from orchestrator.experiment.plan import SweepPlan
from orchestrator.journal import EventKind, ExperimentStatus, IllegalTransition, LeaseLost, TrialStatus, open_journal
from orchestrator.journal.ownership import Ownership, adopt, kept
from orchestrator.journal.redact import bound_traceback, excerpt
from orchestrator.journal.retry import JournalUnavailable
from orchestrator.storage import open_store
from orchestrator.telemetry.sink import install_from_env

from .admission import Admission
from .cluster import cluster_slots
from .evaluator import EvaluatorActor
from .trainer import (  # all light: the ML core loads in their own processes
    TrainerActor,
    TrainerGroup,
    trial_need,
    trial_resources,
)

log = logging.getLogger(__name__)
JOURNAL_POLL_S = 2.0  # how often a running sweep checks the journal for an external cancel (and the cluster's size)
HALT_GRACE_S = 10.0   # how long halted trainers get to reach a step boundary before they are killed
ADMISSION_POLL_S = 0.5       # how often a sweep with room and a tenant asks the admission book
ADMISSION_HEARTBEAT_S = 5.0  # ... and, without room, tells it what still runs (its STALE_S is far above)


@dataclass
class Task:
    trial_id: str
    phase: str            # "train" | "final_eval" | "interim_eval" | "base_eval"
    step: int = 0


class Coordinator:
    def __init__(self, plan: dict, journal_url: str | None = None, *, retry_failed: bool = False,
                 restart_missing: bool = False, ownership: Ownership | None = None, adopt: bool = False):
        """`plan`: the checked plan by value (`SweepPlan.to_json()`); no file is read."""
        self.plan: SweepPlan = SweepPlan.from_json(plan)
        self.plan_json = plan
        # Every write goes through the run's lease (ownership.py): a run whose driver died, or
        # that another run took over, writes nothing more. A detached coordinator adopts it in `run`.
        self.ownership, self.adopt = ownership, adopt
        self.journal = open_journal(journal_url or self.plan.journal_url)
        if ownership is not None:
            self.journal = self.journal.fenced(ownership.experiment_id, ownership.owner, ownership.holder)
        self.rj = RunJournal(self.journal, self.plan.experiment_id)
        self.retry_failed, self.restart_missing = retry_failed, restart_missing
        self.notice_log: list[dict] = []  # fallbacks trainers took, for the driver to print
        self.trials = {t.id: t for t in self.plan.trials}
        m = self.plan.manifest
        # Each trial is evaluated with its own manifest: a sweep may vary the model (variant, base)
        # or the eval section, and a checkpoint is rebuilt on its own trial's base.
        self.resolved = {tid: self.plan.trial(tid).to_json() for tid in self.trials}  # what a trainer receives
        self.trial_json = {tid: r["manifest"] for tid, r in self.resolved.items()}
        self.suites = list(m.eval.suites)
        self.eval_every = m.eval.every
        self.live: dict[str, dict[str, Any]] = {}      # trial -> latest metrics and status
        self.journal_down: str | None = None           # why the journal cannot record this run any more
        self.active: dict[Any, Task] = {}              # the run loop's refs in flight
        self.trainers: dict[str, Any] = {}             # trial -> trainer actor handle
        self.evaluator = None
        # The untrained base, evaluated once per distinct (model, eval) section among the trials.
        self.base_refs: dict[str, Any] = {}
        self.base_metrics: dict[str, dict] = {}
        self.done_summary: dict[str, dict] = {}          # trial -> its `done` payload (journaled with `evaluating`)
        self.checkpoints: queue.SimpleQueue = queue.SimpleQueue()  # (trial, step, key) for interim evals
        self.cancel_requested = threading.Event()
        self.preempt_requested = threading.Event()
        self.lock = threading.Lock()
        self.telemetry = install_from_env()
        self.queued = 0  # trials not yet handed to a trainer (the run loop's queue)
        # Early stopping (sweep.early_stop): the rungs, restored from the journal in `_register`; a
        # trainer that reports a rung checkpoint waits for its decision (`rung_decision`).
        es = m.sweep.early_stop
        self.ladder = Ladder(es, [(t.id, t.manifest.train.steps) for t in self.plan.trials]) if es else None
        self.rung_queued: set[tuple[str, int]] = set()     # rung evaluations asked for
        self.rung_answers: dict[tuple[str, int], bool] = {}  # journaled decisions: stop?
        self.stopping: set[str] = set()  # stopped trials whose trainer is still on its way out
        # A tenant's sweep (submitted through the head) starts a trial only with the cluster's
        # admission book's grant (quotas and priorities, experiment/admission.py).
        self.admission: Admission | None = None
        self._asked_at = -ADMISSION_HEARTBEAT_S

    # ------------------------------------------------------------- called by others
    def experiment_id(self) -> str:
        return self.plan.experiment_id

    def on_metrics(self, trial_id: str, metrics: dict) -> None:
        """Live progress; with `history` (a checkpoint boundary: [step, loss, lr] of every step since
        the last one) the loss curve is journaled before this returns, which the trainer awaits."""
        history = metrics.pop("history", None)
        with self.lock:
            self.live.setdefault(trial_id, {}).update(metrics)
        if history:
            self._journaled(self.rj.step_metrics, trial_id, history)

    def _journaled(self, write, *args: Any) -> Any:
        """A write asked for by a trainer: a journal found unusable stops the whole run (the
        trainer hears it too, as the error of its awaited call)."""
        if self.journal_down:
            raise JournalUnavailable(self.journal_down)
        try:
            return write(*args)
        except JournalUnavailable as exc:
            self.journal_down = self.journal_down or str(exc)
            raise

    def on_notice(self, trial_id: str, kind: str, details: dict) -> None:
        """A fallback a trainer took: journaled (`warned`) and kept for the driver to print."""
        self._journaled(self.rj.warned, trial_id, kind, details)
        with self.lock:
            self.notice_log.append({"trial_id": trial_id, "kind": kind, **details})

    def on_placed(self, trial_id: str, where: dict) -> None:
        """A trainer process of the trial started (node, GPUs, device): journaled (`placed`)."""
        self._journaled(self.rj.placed, trial_id, where)
        with self.lock:
            self.live.setdefault(trial_id, {}).update(node=where["node_id"], device=where["device"])

    def notices(self, since: int = 0) -> list[dict]:
        with self.lock:
            return list(self.notice_log[since:])

    def on_checkpoint(self, trial_id: str, step: int, key: str, sha256: str, size: int) -> dict:
        """Journal a landed checkpoint; the trainer awaits this before it counts the checkpoint saved.
        `{"rung": True}`: the step is an undecided early-stopping rung, and the trainer waits for
        `rung_decision` before it trains on (the rung's evaluation is queued, once, even for a
        checkpoint journaled before: a resumed trial reports its last one again)."""
        new = self._journaled(self.rj.checkpointed, trial_id, step, key, sha256, size)
        if trial_id in self.stopping:  # stopped early: its trainer is on its way out
            return {"rung": False}
        if self.ladder is not None and self.ladder.is_rung(trial_id, step):
            with self.lock:
                if (trial_id, step) in self.rung_answers:
                    return {"rung": False}
                if (trial_id, step) not in self.rung_queued:
                    self.rung_queued.add((trial_id, step))
                    self.checkpoints.put((trial_id, step, key))
            return {"rung": True}
        total = self.trials[trial_id].manifest.train.steps
        if new and self.suites and self.eval_every and step % self.eval_every == 0 and step < total:
            self.checkpoints.put((trial_id, step, key))
        return {"rung": False}

    def rung_decision(self, trial_id: str, step: int) -> dict | None:
        """The journaled early-stopping decision at a rung, once there is one: {"stop": bool}."""
        with self.lock:
            answer = self.rung_answers.get((trial_id, step))
        return None if answer is None else {"stop": answer}

    def progress(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {tid: dict(v) for tid, v in self.live.items()}

    def trainer_pid(self, trial_id: str) -> int | None:
        handle = self.trainers.get(trial_id)
        if isinstance(handle, TrainerGroup):
            return handle.pids()[0]
        return None if handle is None else ray.get(handle.pid.remote())

    def cancel(self) -> None:
        self.cancel_requested.set()

    def preempt(self) -> None:
        """Stop soon, losing nothing: running trainers checkpoint at their next step boundary and
        return; no new trial starts; `run` returns once no trainer is left (queued trials stay
        queued, preempted ones are journaled and resumed by `orch resume`)."""
        self.preempt_requested.set()
        for handle in list(self.trainers.values()):
            if not isinstance(handle, TrainerGroup):  # a data-parallel group runs to its end
                handle.preempt.remote()

    def run_group(self, trial_id: str) -> dict:
        """Drive a data-parallel trial to its end (runs in its own actor thread: it blocks while
        the group trains and replaces ranks that die)."""
        group = self.trainers.get(trial_id)
        if not isinstance(group, TrainerGroup):
            return {"error": f"trial {trial_id} has no trainer group", "traceback": None}
        return group.run()

    # ------------------------------------------------------------------- the run
    def _set(self, trial_id: str, status: TrialStatus, **extra: Any) -> None:
        with self.lock:
            self.live.setdefault(trial_id, {}).update(status=status.value, **extra)
            if self.telemetry.enabled:
                self._publish()

    def _publish(self) -> None:
        """The sweep's gauges: trials by state (every state, zeros included), size and queue."""
        by_state = dict.fromkeys((s.value for s in TrialStatus), 0)
        for v in self.live.values():
            by_state[v["status"]] += 1
        self.telemetry.sweep(experiment=self.plan.experiment_id, total=len(self.trials), by_state=by_state,
                             queued=self.queued)

    def _labels(self, trial_id: str) -> dict[str, str]:
        return {"experiment": self.plan.experiment_id, "trial": trial_id,
                "variant": self.trials[trial_id].manifest.model.variant}

    def _count(self, event: str) -> None:
        self.telemetry.trial_event(experiment=self.plan.experiment_id, event=event)

    def _register(self) -> list[str]:
        """Register (idempotently) and return the trials to run, oldest first."""
        p = self.plan
        self.journal.register_experiment(p.experiment_id, p.name, p.record())
        self.journal.register_trials(p.experiment_id, {t.id: t.config for t in p.trials})
        state = self.journal.experiment_state(p.experiment_id)
        # The plan by value (orch resume reads it back from here) and, for people, the file it came from.
        recorded = {"source": str(p.source) if p.source else None,
                    "plan": {k: v for k, v in self.plan_json.items() if k not in ("experiment_id", "source")}}
        if state.status is ExperimentStatus.PENDING:
            self.rj.experiment(EventKind.SUBMITTED, **recorded)
        elif state.status is not ExperimentStatus.DONE:
            self.rj.experiment(EventKind.RESUMED, f"/after-{state.last_seq}", **recorded)
        if self.ladder is not None:
            self._restore_decisions()
            state = self.journal.experiment_state(p.experiment_id)
        todo, requeue = [], {}
        for t in p.trials:
            st = state.trials[t.id]
            self._set(t.id, st.status, label=t.label, total_steps=t.manifest.train.steps,
                      step=st.last_checkpoint_step or 0)
            if st.status in (TrialStatus.DONE, TrialStatus.STOPPED) or \
                    (st.status is TrialStatus.FAILED and not self.retry_failed):
                continue
            if st.status is not TrialStatus.QUEUED:  # pending, lost (running/evaluating), cancelled, retry
                requeue[t.id] = st.last_seq
            todo.append(t.id)
        if self.ladder is not None:  # early stopping: start them in the rule's order (schema.EarlyStopSpec)
            rank = {p.trials[i].id: r for r, i in enumerate(self.ladder.spec.start_order(len(p.trials)))}
            todo.sort(key=rank.__getitem__)
        if requeue:  # one transaction for the whole sweep (a 1,000-trial sweep queues in milliseconds)
            self.rj.transition_all(requeue, EventKind.QUEUED)
            for tid in requeue:
                self._set(tid, TrialStatus.QUEUED)
        return todo

    def _restore_decisions(self) -> None:
        """Rebuild the rungs from the journal: every rung evaluation in journal order, with its
        journaled decision, or decided now if the run that evaluated it died before deciding (so
        the decisions are those `early_stop.decisions_from_journal` computes)."""
        events = self.journal.events(self.plan.experiment_id, kinds=[EventKind.EVALUATED, EventKind.RUNG,
                                                                     EventKind.STOPPED])
        journaled = {(e.trial_id, e.payload["step"]): Decision.from_json(e.payload, e.trial_id) for e in events
                     if e.kind in (EventKind.RUNG, EventKind.STOPPED) and "bracket" in e.payload}
        for tid, step, metrics in undecided_rung_evaluations(self.ladder, events):
            if (tid, step) in journaled:
                self.ladder.restore(journaled[(tid, step)])
                self.rung_answers[(tid, step)] = journaled[(tid, step)].stop
            else:
                self._decide(tid, step, metrics)

    def _decide(self, tid: str, step: int, metrics: dict, why: str | None = None) -> None:
        """Decide a trial at a rung, journal the decision, and stop the trial if that is it."""
        with self.lock:
            decision = self.ladder.decide(tid, step, metrics)
            if why is not None and decision.value is None:
                decision = self.ladder.decided[(tid, step)] = dataclasses.replace(decision, reason=why)
        try:
            self.rj.decided(tid, decision.to_json())
        except IllegalTransition as exc:  # finished or cancelled meanwhile
            log.warning("%s", exc)
        with self.lock:
            self.rung_answers[(tid, step)] = decision.stop
        if decision.stop:
            if isinstance(self.trainers.get(tid), TrainerGroup):  # its ranks cannot be preempted: end them
                self._release(tid)
                for ref in [r for r, t in self.active.items() if t.trial_id == tid and t.phase == "train"]:
                    del self.active[ref]
            elif tid in self.trainers:  # it read the decision: it checkpoints at its next boundary and returns
                self.stopping.add(tid)
            self._count("stop")
            self._set(tid, TrialStatus.STOPPED, step=step)
        log.info("trial %s at step %d: %s", tid, step, decision.reason)

    def _resources(self) -> dict[str, float]:
        r = self.plan.manifest.resources
        return trial_resources(r.gpus_per_trial, r.cpus_per_trial)

    def _slots(self) -> int:
        r = self.plan.manifest.resources
        slots = cluster_slots(r.cpus_per_trial, r.gpus_per_trial)
        return min(slots, r.max_concurrent_trials) if r.max_concurrent_trials else slots

    def _startable(self, pending: deque, room: int) -> list[str]:
        """The pending trials to start now, in order: as many as there is room for, and with a
        tenant, those of them its admission grants (asked at most every ADMISSION_POLL_S)."""
        room = max(0, min(room, len(pending)))
        if self.admission is None:
            return [pending[i] for i in range(room)]
        since = time.monotonic() - self._asked_at
        if since < ADMISSION_POLL_S or (not room and since < ADMISSION_HEARTBEAT_S):
            return []
        self._asked_at = time.monotonic()
        running = [t.trial_id for t in self.active.values() if t.phase == "train"]
        return self.admission.sync([pending[i] for i in range(room)], running, len(pending))

    def _launch(self, trial_id: str, active: dict) -> None:
        me = ray.get_runtime_context().current_actor
        res = self.plan.manifest.resources
        threads = max(1, int(res.cpus_per_trial))
        args = (self.resolved[trial_id], self.plan.blobs_uri, me)
        kwargs = {"telemetry": self._labels(trial_id), "ownership": self.ownership}
        retry = self.rj.trial(trial_id).attempts > 0
        self.rj.transition(trial_id, EventKind.RUNNING)
        self._count("start")
        if retry:
            self._count("retry")
        self._set(trial_id, TrialStatus.RUNNING)
        if res.gpus_per_trial > 1:  # a data-parallel group, gang-scheduled, supervised in another thread
            group = TrainerGroup(*args, world_size=res.gpus_per_trial, use_gpus=True, num_threads=threads, **kwargs)
            self.trainers[trial_id] = group
            active[me.run_group.remote(trial_id)] = Task(trial_id, "train")
            return
        handle = TrainerActor.options(**self._resources()).remote(*args, threads, **kwargs)
        self.trainers[trial_id] = handle
        expect = self.journal.trial_state(trial_id, self.plan.experiment_id).last_checkpoint_step
        rungs = tuple(self.ladder.rungs[trial_id]) if self.ladder is not None else ()
        active[handle.train.remote(expect_checkpoint=expect, restart_missing=self.restart_missing, rungs=rungs)] = \
            Task(trial_id, "train")

    def _evaluate(self, tid: str, source: dict, label: str):
        if self.evaluator is None:
            self.evaluator = EvaluatorActor.remote(self.plan.blobs_uri, f"experiments/{self.plan.experiment_id}/grids")
        # what the exported metrics say it is: a base is shared by trials, published per trial on record
        weights = {"base": "base", "checkpoint": "checkpoint", "model": "final"}[source["kind"]]
        about = {"experiment": self.plan.experiment_id, "trial": "" if weights == "base" else tid, "weights": weights}
        return self.evaluator.evaluate.remote(self.trial_json[tid], str(self.plan.base_dir), source, label,
                                              about)

    def _base_key(self, tid: str) -> str:
        m = self.trial_json[tid]
        return json.dumps([m["model"], m["eval"]], sort_keys=True)

    def _evaluate_bases(self, trial_ids) -> None:
        """One base evaluation per distinct base among `trial_ids` (grid `base`, or `base-<trial>`
        for the second and later bases of a sweep over models)."""
        for tid in trial_ids:
            key = self._base_key(tid)
            if not self.trial_json[tid]["eval"].get("evaluate_base", True):
                continue
            if key not in self.base_refs:
                label = "base" if not self.base_refs else f"base-{tid}"
                self.base_refs[key] = self._evaluate(tid, {"kind": "base"}, label)

    def _finish_training(self, task: Task, result: dict, active: dict) -> None:
        tid = task.trial_id
        self._release(tid)
        if result.get("checkpoint"):  # the last checkpoint's own report may still be in flight
            info = open_store(self.plan.blobs_uri).info(result["checkpoint"])
            self.rj.checkpointed(tid, result["step"], result["checkpoint"], info.sha256, info.size)
        if tid in self.stopping:  # early-stopped: its `stopped` event is journaled already
            self.stopping.discard(tid)
            return
        if result.get("preempted"):
            self.rj.preempted(tid, result["step"], result.get("checkpoint"))
            self._set(tid, TrialStatus.RUNNING, step=result["step"], preempted=True)
            return
        summary = self._summary(tid, result)
        self._set(tid, TrialStatus.RUNNING, step=result["step"], final_loss=summary["final_loss"])
        if not self.suites:
            self.rj.transition(tid, EventKind.DONE, **summary)
            self._count("finish")
            self._set(tid, TrialStatus.DONE)
            return
        # Journaled now, not at `done`: a run killed during the final evaluation keeps it.
        self.rj.transition(tid, EventKind.EVALUATING, **summary)
        self.done_summary[tid] = summary
        self._set(tid, TrialStatus.EVALUATING)
        ref = self._evaluate(tid, {"kind": "model", "prefix": result["model_prefix"]}, f"{tid}-final")
        active[ref] = Task(tid, "final_eval", result["step"])

    def _summary(self, tid: str, result: dict) -> dict:
        """What a trial's `evaluating` and `done` events record of its training. A trainer that
        found the trial already trained (a resume after a kill during the final evaluation) ran
        no step and knows no loss: the final loss is the one journaled when it was trained."""
        summary = {"final_loss": result["final_loss"], "model": result["model_prefix"], "step": result["step"],
                   "resumed_from": result.get("resumed_from"), "steps_run": result.get("steps_run")}
        if summary["final_loss"] is None and not result.get("steps_run"):
            summary["final_loss"] = journaled_final_loss(self.journal.events(self.plan.experiment_id, tid),
                                                         result["step"])
        return summary

    def _finish_eval(self, task: Task, out: dict) -> None:
        tid = task.trial_id
        if task.phase == "interim_eval":
            self._record_eval(tid, task.step, out)
            if self.ladder is not None and self.ladder.is_rung(tid, task.step):
                self._decide(tid, task.step, out["metrics"])
            return
        key = self._base_key(tid)
        if key in self.base_refs:  # none where eval.evaluate_base is false
            if key not in self.base_metrics:
                self.base_metrics[key] = ray.get(self.base_refs[key])
            self._record_eval(tid, 0, self.base_metrics[key], base=True)
            for suite, values in self.base_metrics[key].get("gauges", {}).items():
                self.telemetry.evaluated(experiment=self.plan.experiment_id, trial=tid, weights="base", suite=suite,
                                         seconds=None, metrics=values)
        self._record_eval(tid, task.step, out)
        self.rj.transition(tid, EventKind.DONE, **self.done_summary.pop(tid, {}))
        self._count("finish")
        self._set(tid, TrialStatus.DONE, metrics=out["metrics"])

    def _record_eval(self, tid: str, step: int, out: dict, **extra: Any) -> None:
        self.rj.evaluated(tid, step, out, **extra)

    def _fail(self, tid: str, error: str, traceback: str | None) -> None:
        # Bounded before it is kept or logged too (the journal bounds what it stores anyway).
        error, traceback = excerpt(error), None if traceback is None else bound_traceback(traceback)
        self._release(tid)
        self.rj.transition(tid, EventKind.FAILED, error=error, traceback=traceback)
        self._count("failure")
        self._set(tid, TrialStatus.FAILED, error=error)

    def _release(self, tid: str) -> None:
        handle = self.trainers.pop(tid, None)
        if isinstance(handle, TrainerGroup):
            handle.shutdown()
        elif handle is not None:
            ray.kill(handle, no_restart=True)

    def _externally_cancelled(self) -> bool:
        return self.journal.experiment_state(self.plan.experiment_id).status is ExperimentStatus.CANCELLED

    def run(self) -> dict[str, Any]:
        """Run every unfinished trial to the end; returns the trial counts by status (or
        `lease_lost` with the reason, having stopped every worker without writing)."""
        if not (self.adopt and self.ownership is not None):
            return self._run_owned()
        self.ownership = adopt(self.ownership)
        self.journal = self.journal.fenced(self.ownership.experiment_id, self.ownership.owner, self.ownership.holder)
        self.rj = RunJournal(self.journal, self.plan.experiment_id)
        with kept(self.ownership):
            return self._run_owned()

    def _run_owned(self) -> dict[str, Any]:
        try:
            return self._run()
        except LeaseLost as exc:
            log.error("experiment %s: %s; stopping its workers", self.plan.experiment_id, exc)
            self._stop_workers()
            return {"lease_lost": str(exc)}
        except JournalUnavailable as exc:
            reason = self.journal_down or str(exc)
            log.error("experiment %s: %s; stopping its trainers at their next step boundary",
                      self.plan.experiment_id, reason)
            self._halt_trainers(reason)
            self._stop_workers()
            return {"journal_unavailable": reason}
        finally:
            if self.admission is not None:  # what it held is free for others now
                self.admission.release()

    def _halt_trainers(self, reason: str) -> None:
        """Ask every trainer to stop at its next step boundary, writing nothing more, and give
        them HALT_GRACE_S to get there (one blocked on the journal hears the same error)."""
        for handle in list(self.trainers.values()):
            for actor in handle.actors if isinstance(handle, TrainerGroup) else [handle]:
                actor.halt.remote(reason)
        training = [ref for ref, task in self.active.items() if task.phase == "train"]
        if training:
            ray.wait(training, num_returns=len(training), timeout=HALT_GRACE_S)

    def _stop_workers(self) -> None:
        for tid in list(self.trainers):
            self._release(tid)
        if self.evaluator is not None:
            ray.kill(self.evaluator, no_restart=True)

    def _run(self) -> dict[str, int]:
        eid = self.plan.experiment_id
        pending = deque(self._register())
        self.queued = len(pending)
        active: dict[Any, Task] = self.active
        if self.plan.tenant is not None:
            r = self.plan.manifest.resources
            self.admission = Admission(eid, self.plan.tenant, trial_need(r.gpus_per_trial, r.cpus_per_trial))
        if self.suites:
            self._evaluate_bases(pending)
        slots, last_poll = self._slots(), time.monotonic()
        while pending or active:
            self._check_journal()
            if time.monotonic() - last_poll > JOURNAL_POLL_S:
                last_poll = time.monotonic()
                self.journal.check_file()  # deleted, replaced or read-only: noticed within a poll
                if self._externally_cancelled():
                    self.cancel_requested.set()
                slots = self._slots()  # nodes join (an autoscaler, a late `ray start`) and leave
            if self.cancel_requested.is_set():
                self._cancel_all(list(pending) + [t.trial_id for t in active.values() if t.phase != "interim_eval"])
                return self._counts()
            training = sum(t.phase == "train" for t in active.values())
            if self.preempt_requested.is_set():
                if not training:
                    break  # evaluations still in flight are redone by resume
                pending.clear()
            for tid in self._startable(pending, slots - training):
                pending.remove(tid)
                self.queued = len(pending)
                self._launch(tid, active)
                training += 1
            while not self.checkpoints.empty():
                tid, step, key = self.checkpoints.get()
                active[self._evaluate(tid, {"kind": "checkpoint", "key": key}, f"{tid}-step{step}")] = \
                    Task(tid, "interim_eval", step)
            if not active:  # every trial waits for the admission book's grant: nothing to wait on
                time.sleep(ADMISSION_POLL_S)
                continue
            ready, _ = ray.wait(list(active), num_returns=1, timeout=0.5)
            for ref in ready:
                self._check_journal()  # a trainer stopped by the journal's outage: no `failed` to write
                task = active.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the trial fails; the sweep goes on
                    error, trace = _describe(exc)
                    if task.phase == "interim_eval":
                        log.warning("interim evaluation of %s at step %d failed: %s", task.trial_id, task.step, error)
                        if self.ladder is not None and self.ladder.is_rung(task.trial_id, task.step):
                            # the trainer waits at the rung: let it go on, and say why
                            self._decide(task.trial_id, task.step, {},
                                         f"the rung's evaluation failed ({error}): going on without recording it")
                    else:
                        try:
                            self._fail(task.trial_id, error, trace)
                        except IllegalTransition as exc2:
                            log.warning("%s", exc2)
                    continue
                try:
                    if task.phase == "train" and "error" in out:
                        self._fail(task.trial_id, out["error"], out["traceback"])
                    elif task.phase == "train":
                        self._finish_training(task, out, active)
                    else:
                        self._finish_eval(task, out)
                except IllegalTransition as exc:  # cancelled through the journal meanwhile
                    log.warning("%s", exc)
        counts = self._counts()
        if self.preempt_requested.is_set():
            counts["preempted"] = sum(v.get("preempted", False) for v in self.live.values())
        if counts.get("done", 0) + counts.get("stopped", 0) == len(self.trials):
            self.rj.experiment(EventKind.DONE)
        log.info("experiment %s: %s", eid, counts)
        return counts

    def _check_journal(self) -> None:
        if self.journal_down:
            raise JournalUnavailable(self.journal_down)

    def _cancel_all(self, trial_ids: list[str]) -> None:
        for tid in dict.fromkeys(trial_ids):
            self._release(tid)
            if not self.rj.trial(tid).finished:
                self.rj.transition(tid, EventKind.CANCELLED)
                self._set(tid, TrialStatus.CANCELLED)
        if not self._externally_cancelled():
            state = self.journal.experiment_state(self.plan.experiment_id)
            self.rj.experiment(EventKind.CANCELLED, f"/after-{state.last_seq}")

    def _counts(self) -> dict[str, int]:
        state = self.journal.experiment_state(self.plan.experiment_id)
        return {k.value: v for k, v in state.counts().items() if v}


def journaled_final_loss(events, step: int) -> float | None:
    """The final loss a trial's journal records for training that ended at `step`: from the
    newest `evaluating` or `done` summary of that step, else the loss its curve journaled at
    that step (the last step's loss is the final loss)."""
    for e in reversed(events):
        if e.kind in (EventKind.EVALUATING, EventKind.DONE) and e.payload.get("step") == step \
                and e.payload.get("final_loss") is not None:
            return e.payload["final_loss"]
    for e in reversed(events):
        if e.kind is EventKind.STEP_METRICS and step in e.payload.get("steps", []):
            return e.payload["loss"][e.payload["steps"].index(step)]
    return None


def _describe(exc: BaseException) -> tuple[str, str]:
    """(error, traceback) of a failed remote call: the remote exception itself, not Ray's wrapper
    (whose message starts with coloured process details)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    shown = cause if isinstance(cause, BaseException) else exc
    # An exception may quote what it read (a file line, the environment): bounded and redacted.
    return excerpt(f"{type(shown).__name__}: {shown}"), bound_traceback(str(exc))


ExperimentCoordinator = ray.remote(num_cpus=0, max_concurrency=16)(Coordinator)
