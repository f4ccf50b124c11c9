"""Early stopping's rule (experiment/early_stop.py) and its manifest checks, without a cluster."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

import orchestrator.models  # noqa: F401  (the variant catalog)
from orchestrator.experiment.early_stop import Decision, Ladder, decisions_from_journal
from orchestrator.manifest import ManifestError, expand, load_manifest
from orchestrator.manifest.schema import EarlyStopSpec


def spec(**kw) -> EarlyStopSpec:
    return EarlyStopSpec(**{"metric": "spatial.accuracy", "mode": "max", "grace_steps": 1, "reduction_factor": 2,
                            **kw})


def test_ray_tunes_documented_example():
    """AsyncHyperBandScheduler's _Bracket(min_t=1, max_t=10, rf=2, s=0) docstring: rewards 2 and 4 go on,
    then 1 is stopped against the cutoff 3.0 (the median of 2 and 4); milestones 1, 2, 4, 8."""
    ladder = Ladder(spec(metric="m"), [("t1", 10), ("t2", 10), ("t3", 10)])
    assert ladder.rungs["t1"] == [1, 2, 4, 8]
    first, second, third = (ladder.decide(t, 1, {"m": v}) for t, v in (("t1", 2), ("t2", 4), ("t3", 1)))
    assert (first.stop, first.cutoff, first.compared) == (False, None, {})
    assert (second.stop, second.cutoff) == (False, 2.0)
    assert (third.stop, third.cutoff, third.rank, third.compared) == (True, 3.0, 3, {"t1": 2.0, "t2": 4.0})
    assert "below the cutoff 3" in third.reason
    assert ladder.decide("t3", 1, {"m": 100}) is third  # decided once


def test_min_mode_quantile_brackets_and_missing_values():
    ladder = Ladder(spec(metric="fid", mode="min", grace_steps=10, reduction_factor=3, brackets=2),
                    [(f"t{i}", 300) for i in range(6)])
    assert ladder.rungs["t0"] == [10, 30, 90, 270] and ladder.rungs["t1"] == [30, 90, 270]  # bracket 1 starts at 30
    assert ladder.bracket == {"t0": 0, "t1": 1, "t2": 0, "t3": 1, "t4": 0, "t5": 1}
    for t, v in (("t0", 50.0), ("t2", 40.0)):
        assert not ladder.decide(t, 10, {"fid": v}).stop
    # min: the cutoff is the 1/3 quantile of the earlier values (linear interpolation), lower is better
    worse = ladder.decide("t4", 10, {"fid": 47.0})
    assert worse.cutoff == pytest.approx(40 + (50 - 40) * (1 / 3)) and worse.stop and worse.rank == 2
    # another bracket's rung at the same step is its own
    assert not ladder.decide("t1", 30, {"fid": 99.0}).stop
    with pytest.raises(ValueError, match="not a rung"):
        ladder.decide("t1", 10, {"fid": 1.0})
    # a missing metric, or one with no sample (n = 0), goes on and records nothing
    gone = ladder.decide("t0", 30, {"spatial.accuracy": 0.5})
    assert not gone.stop and gone.value is None
    assert "no value of fid" in gone.reason and "spatial.accuracy" in gone.reason
    empty = ladder.decide("t2", 30, {"fid": 3.0, "fid.n": 0})
    assert empty.value is None and ladder.recorded[(0, 30)] == {}


def test_decisions_are_a_function_of_the_journal_and_restore_exactly():
    trials = [("a", 100), ("b", 100), ("c", 100), ("d", 100)]
    s = spec(grace_steps=10, reduction_factor=3)

    def ev(seq, tid, step, value, **extra):
        return SimpleNamespace(seq=seq, trial_id=tid, kind=SimpleNamespace(value="evaluated"),
                               payload={"step": step, "weights": f"ckpt/{tid}/{step}",
                                        "metrics": {"spatial.accuracy": value}, **extra})

    events = [ev(1, "a", 0, 0.0, base=True), ev(2, "a", 10, 0.2), ev(3, "b", 10, 0.6), ev(4, "a", 20, 0.9),
              ev(5, "c", 10, 0.1), ev(6, "b", 30, 0.7), ev(7, "d", 10, 0.5), ev(8, "c", 10, 0.9)]
    live = Ladder(s, trials)
    expected = [live.decide(t, step, {"spatial.accuracy": v}) for t, step, v in
                (("a", 10, 0.2), ("b", 10, 0.6), ("c", 10, 0.1), ("b", 30, 0.7), ("d", 10, 0.5))]
    assert [d.stop for d in expected] == [False, False, True, False, False]
    # the journal's order, not the list's; base and non-rung evaluations and a second evaluation ignored
    assert decisions_from_journal(s, trials, reversed(events)) == expected
    restored = Ladder(s, trials)
    for d in expected:
        restored.restore(Decision.from_json({k: v for k, v in d.to_json().items() if k != "trial_id"}, d.trial_id))
    assert restored.recorded == live.recorded and restored.decided == live.decided


BASE = """\
name: es
model: {variant: sd, resolution: 32, base: tiny-random}
data: {train: {kind: shapes, captions: spatial, n: 8}}
train: {steps: 100, checkpoint_every: 10, warmup_steps: 0}
eval: {suites: [spatial], every: 10}
"""


def _issues(tmp_path, text: str) -> list[tuple[str, int, str]]:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(ManifestError) as info:
        expand(load_manifest(p))
    return [(i.path, i.line, i.message) for i in info.value.issues]


def test_the_manifest_refuses_rungs_that_are_never_evaluated(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(BASE + "sweep: {grid: {train.lr: [1.0e-3, 1.0e-4]}, early_stop: {metric: spatial.accuracy, "
                         "mode: max, grace_steps: 10}}\n")
    assert len(expand(load_manifest(ok))) == 2
    bad = BASE.replace("every: 10}", "every: 20}") + textwrap.dedent("""\
        sweep:
          grid: {train.steps: [100, 10]}
          early_stop: {metric: clip_r_precision.top1, mode: max, grace_steps: 10}
        """)
    found = _issues(tmp_path, bad)
    assert {(p, line) for p, line, _ in found} == {("sweep.early_stop", 8)}
    text = "\n".join(m for _, _, m in found)
    assert "trial 0 (train.steps=100): early_stop.metric clip_r_precision.top1 needs the clip_r_precision suite" in text
    assert "rung at step 10 is not a multiple of eval.every (20)" in text and "rung at step 90 " in text
    assert "trial 1 (train.steps=10): " in text and "no rung below train.steps 10" in text
    no_every = BASE.replace("  every: 10", "").replace(", every: 10", "") + \
        "sweep: {early_stop: {metric: spatial.accuracy, mode: max, grace_steps: 10}}\n"
    assert any("needs eval.every" in m for _, _, m in _issues(tmp_path, no_every))
    with pytest.raises(ManifestError, match="reduction_factor"):
        load_manifest(_write(tmp_path, BASE + "sweep: {early_stop: {metric: spatial.accuracy, mode: max, "
                                              "grace_steps: 10, reduction_factor: 1}}\n"))


def _write(tmp_path, text):
    p = tmp_path / "w.yaml"
    p.write_text(text)
    return p


def test_trials_start_in_a_seeded_shuffle_unless_told_the_plan_order():
    shuffled = spec().start_order(16)
    assert sorted(shuffled) == list(range(16)) and shuffled != list(range(16))
    assert spec().start_order(16) == shuffled and spec(seed=1).start_order(16) != shuffled
    assert spec(order="plan").start_order(5) == [0, 1, 2, 3, 4]
