"""Early stopping for sweeps (`sweep.early_stop`): asynchronous successive halving (ASHA; Li et al.,
MLSys 2020) with the stopping rule of Ray Tune's AsyncHyperBandScheduler, decided from the journal.

Rungs. A trial in bracket s has rung k at step grace_steps * reduction_factor ** (k + s), for every such
step below its train.steps. Trial i of the plan is in bracket i mod `brackets` (Ray Tune draws a bracket at
random; here the plan order decides, so a resumed sweep puts every trial where it was).

Rule. When a trial's interim evaluation at one of its rungs is journaled, its metric value v is compared
with the values the trials before it recorded at that rung of its bracket, in journal order: the cutoff is
their (1 - 1/reduction_factor) quantile (numpy's linear interpolation), none when none is recorded. Mode
max stops the trial when v < cutoff (min: v > cutoff); then v joins the rung. So with reduction_factor 3 a
trial goes on while it is in the top third of those that reached the rung before it, and the first to reach
a rung always goes on. A trial whose evaluation lacks the metric (or has no value for it, n = 0) goes on and
records nothing, as Ray Tune does with a missing reward, and the decision says so.

Why the project's own code and not Ray Tune's scheduler or Optuna's SuccessiveHalvingPruner: both keep the
rungs in memory, fed live by their own trial loop (Ray Tune's `_Bracket` is private, and `ray.tune` needs
pandas and pyarrow here); a decision here must be replayed from the journal by a restarted driver and must
say why (the rung, the cutoff, every value compared). The rule itself is Ray Tune's, tested on its
documented example.

A decision is a function of the journal: `decisions_from_journal` recomputes every decision from the
`evaluated` events alone, in journal order; the coordinator journals each as it makes it (`rung` to go on,
`stopped` to stop) and, restarted, restores the rungs from those events before deciding anything new.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Decision:
    trial_id: str
    step: int                   # the rung's step
    bracket: int
    rung: int                   # the rung's index within its bracket (0: grace_steps * rf ** bracket)
    metric: str
    mode: str
    value: float | None         # the trial's metric at the rung (None: missing, so nothing was compared)
    cutoff: float | None        # the (1 - 1/rf) quantile of `compared` (None: nothing compared)
    stop: bool
    rank: int | None = None     # the value's rank among `compared` plus itself, best first
    compared: dict[str, float] = field(default_factory=dict)  # trial -> its value at this rung, journal order
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], trial_id: str | None = None) -> "Decision":
        """From `to_json`, or from a `rung` / `stopped` event's payload and its trial."""
        given = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**{**given, **({"trial_id": trial_id} if trial_id is not None else {})})


class Ladder:
    """Every bracket's rungs and the values recorded at them. `trials`: (trial id, train.steps) in plan
    order; `spec`: the manifest's EarlyStopSpec (metric, mode, grace_steps, reduction_factor, brackets)."""

    def __init__(self, spec: Any, trials: Sequence[tuple[str, int]]):
        self.spec = spec
        self.bracket = {tid: i % spec.brackets for i, (tid, _) in enumerate(trials)}
        self.rungs = {tid: spec.rungs(self.bracket[tid], total) for tid, total in trials}
        self.recorded: dict[tuple[int, int], dict[str, float]] = {}  # (bracket, step) -> trial -> value
        self.decided: dict[tuple[str, int], Decision] = {}

    def is_rung(self, trial_id: str, step: int) -> bool:
        return step in self.rungs.get(trial_id, ())

    def decide(self, trial_id: str, step: int, metrics: Mapping[str, Any]) -> Decision:
        """Decide a trial at one of its rungs from its evaluation's metrics (once: a second call
        returns the first decision)."""
        if (trial_id, step) in self.decided:
            return self.decided[(trial_id, step)]
        if not self.is_rung(trial_id, step):
            raise ValueError(f"step {step} is not a rung of trial {trial_id} (its rungs: {self.rungs.get(trial_id)})")
        spec, bracket = self.spec, self.bracket[trial_id]
        rung = self.rungs[trial_id].index(step)
        recorded = self.recorded.setdefault((bracket, step), {})
        compared = dict(recorded)
        base = dict(trial_id=trial_id, step=step, bracket=bracket, rung=rung, metric=spec.metric, mode=spec.mode)
        value = _value(metrics, spec.metric)
        if value is None:
            shown = ", ".join(sorted(k for k in metrics if k.rsplit(".", 1)[-1] not in _AUX)[:12])
            decision = Decision(**base, value=None, cutoff=None, stop=False, compared=compared,
                                reason=f"no value of {spec.metric} in the evaluation (it has: {shown or 'nothing'}); "
                                       "going on without recording it")
        else:
            sign = 1.0 if spec.mode == "max" else -1.0
            cutoff = (sign * float(np.percentile([sign * v for v in compared.values()],
                                                 (1 - 1 / spec.reduction_factor) * 100))
                      if compared else None)
            stop = cutoff is not None and sign * value < sign * cutoff
            better = sum(sign * v > sign * value for v in compared.values())
            recorded[trial_id] = value
            if cutoff is None:
                reason = "first to reach this rung: goes on"
            else:
                verb = "below" if spec.mode == "max" else "above"
                quantile = f"{1 - 1 / spec.reduction_factor:.0%} quantile of {len(compared)} earlier at step {step}"
                reason = (f"{spec.metric} {value:.6g} is {verb} the cutoff {cutoff:.6g} (the {quantile}): stop" if stop
                          else f"{spec.metric} {value:.6g} reaches the cutoff {cutoff:.6g} (the {quantile}): goes on")
            decision = Decision(**base, value=value, cutoff=cutoff, stop=stop, rank=better + 1, compared=compared,
                                reason=reason)
        self.decided[(trial_id, step)] = decision
        return decision

    def restore(self, decision: Decision) -> None:
        """Take back a journaled decision (a restarted coordinator), as `decide` recorded it."""
        if decision.value is not None:
            self.recorded.setdefault((decision.bracket, decision.step), {})[decision.trial_id] = decision.value
        self.decided[(decision.trial_id, decision.step)] = decision


_AUX = {"n", "ci_low", "ci_high", "std", "n_reference"}


def _value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or metrics.get(f"{name}.n") == 0:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def undecided_rung_evaluations(ladder: Ladder, events: Iterable[Any]) -> Iterator[tuple[str, int, dict]]:
    """(trial, step, metrics) of each `evaluated` event that judges a rung not yet decided, in journal
    order: a trial's first evaluation at a rung counts (a re-evaluation keeps the first). Lazy, so a
    caller that decides as it goes skips the rungs it has just decided."""
    for e in sorted(events, key=lambda e: e.seq):
        p = e.payload
        if e.kind.value != "evaluated" or p.get("base") or p.get("weights") == "base":
            continue
        step = int(p["step"])
        if ladder.is_rung(e.trial_id, step) and (e.trial_id, step) not in ladder.decided:
            yield e.trial_id, step, p.get("metrics") or {}


def decisions_from_journal(spec: Any, trials: Sequence[tuple[str, int]], events: Iterable[Any]) -> list[Decision]:
    """Every decision the journal's `evaluated` events imply, in journal order."""
    ladder = Ladder(spec, trials)
    return [ladder.decide(tid, step, metrics) for tid, step, metrics in undecided_rung_evaluations(ladder, events)]
