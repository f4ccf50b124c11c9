"""Sampled sweeps (`sweep.sample`): random and Sobol points over a space, stable ids, errors at their lines,
and the points recorded by value so a resumed plan never draws them again."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

import orchestrator.models  # noqa: F401  (the variant catalog: `model.<variant>` sections validate)
from orchestrator.manifest import ManifestError, expand, load_manifest
from orchestrator.manifest.schema import SampleSpec
from orchestrator.manifest.sweep import sample_points
from tests.test_manifest import BASE, write

SPACE = """\
sweep:
  grid: {data.train.captions: [generic, spatial]}
  sample:
    num_samples: 8
    seed: 3
    method: {method}
    space:
      train.lr: {loguniform: [1.0e-5, 1.0e-2]}
      train.batch_size: {choice: [4, 8, 16]}
      train.warmup_steps: {int: [0, 9]}
      train.ema_decay: {uniform: [0.9, 0.999]}
"""


@pytest.mark.parametrize("method", ["random", "sobol"])
def test_sampled_points_cross_the_grid_stay_in_their_space_and_keep_their_ids(tmp_path, method):
    path = write(tmp_path, BASE + SPACE.replace('{method}', method))
    trials = expand(load_manifest(path))
    assert len(trials) == 2 * 8
    assert [t.id for t in trials] == [t.id for t in expand(load_manifest(path))]  # same seed, same ids
    for t in trials:
        train = t.config["train"]
        assert 1e-5 <= train["lr"] <= 1e-2 and train["batch_size"] in (4, 8, 16)
        assert train["warmup_steps"] in range(10) and 0.9 <= train["ema_decay"] <= 0.999
        assert t.overrides["train.lr"] == train["lr"]  # the drawn value lands in the trial's config
    # each grid value meets the same 8 drawn points
    by_caption = {c: [{k: v for k, v in t.overrides.items() if k != "data.train.captions"} for t in trials
                      if t.overrides["data.train.captions"] == c] for c in ("generic", "spatial")}
    assert by_caption["generic"] == by_caption["spatial"] and len({str(p) for p in by_caption["generic"]}) == 8
    other = write(tmp_path, BASE + SPACE.replace('{method}', method).replace("seed: 3", "seed: 4"), "other.yaml")
    assert not {t.id for t in trials} & {t.id for t in expand(load_manifest(other))}


def test_the_distributions_map_the_unit_cube_as_written():
    spec = SampleSpec.model_validate({"num_samples": 4096, "seed": 0, "method": "sobol", "space": {
        "train.lr": {"loguniform": [1e-5, 1e-1]}, "train.batch_size": {"int": [1, 4]},
        "train.ema_decay": {"uniform": [0.5, 1.0]}, "train.optimizer": {"choice": ["a", "b"]}}})
    points = sample_points(spec)
    logs = np.log10([p["train.lr"] for p in points])
    # log-uniform over four decades: each decade holds a quarter (Sobol: almost exactly)
    assert np.histogram(logs, bins=4, range=(-5, -1))[0].tolist() == pytest.approx([1024] * 4, abs=8)
    assert sorted({p["train.batch_size"] for p in points}) == [1, 2, 3, 4]
    assert [p["train.batch_size"] for p in points].count(4) == pytest.approx(1024, abs=8)
    assert np.mean([p["train.ema_decay"] for p in points]) == pytest.approx(0.75, abs=0.005)
    assert [p["train.optimizer"] for p in points].count("a") == pytest.approx(2048, abs=8)
    # random draws differ from Sobol's with the same seed; both are reproducible
    rand = sample_points(spec.model_copy(update={"method": "random"}))
    assert rand == sample_points(spec.model_copy(update={"method": "random"})) and rand != points
    assert all(isinstance(p["train.batch_size"], int) for p in rand)
    assert all(math.isclose(p["train.lr"], float(f"{p['train.lr']:.6g}")) for p in rand)


def test_bad_spaces_are_errors_at_their_lines(tmp_path):
    text = BASE + textwrap.dedent("""\
        sweep:
          grid: {train.lr: [1e-4, 3e-4]}
          sample:
            num_samples: 4
            space:
              train.lr: {loguniform: [1.0e-5, 1.0e-2]}
              train.momentum: {uniform: [0.1, 0.9]}
              train.ema_decay: {uniform: [0.999, 0.9]}
              train.batch_size: {loguniform: [0, 8]}
        """)
    with pytest.raises(ManifestError) as info:
        expand(load_manifest(write(tmp_path, text)))
    found = {(i.path, i.line): i.message for i in info.value.issues}
    assert "sweep it in one place" in found[("sweep.sample.space.train.lr", 13)]
    assert "momentum" in found[("sweep.sample.space.train.momentum", 14)]
    assert "low end must be below the high end" in found[("sweep.sample.space.train.ema_decay", 15)]
    assert "both ends must be positive" in found[("sweep.sample.space.train.batch_size", 16)]


def test_a_drawn_value_the_schema_refuses_points_at_its_space_entry(tmp_path):
    text = BASE + textwrap.dedent("""\
        sweep:
          sample:
            num_samples: 4
            space:
              train.batch_size: {int: [-3, 2]}
        """)
    with pytest.raises(ManifestError) as info:
        expand(load_manifest(write(tmp_path, text)))
    issues = info.value.issues
    assert issues and {(i.path, i.line) for i in issues} == {("train.batch_size", 12)}
    assert all(i.message.startswith("swept value ") and "greater than 0" in i.message for i in issues)


def test_a_space_too_small_for_its_samples_says_so(tmp_path):
    text = BASE + "sweep: {sample: {num_samples: 5, space: {train.batch_size: {choice: [4, 8]}}}}\n"
    with pytest.raises(ManifestError, match="sweep.sample drew a config twice"):
        expand(load_manifest(write(tmp_path, text)))


def test_the_recorded_plan_carries_the_drawn_points(tmp_path):
    """Resume reads the plan from the journal by value: the drawn points, not the seed, so a
    changed sampler could never draw other trials for a running experiment."""
    from orchestrator.experiment.plan import SweepPlan, plan_sweep

    plan = plan_sweep(write(tmp_path, BASE + SPACE.replace("{method}", "sobol")))
    doc = plan.to_json()
    assert [o for _, o in doc["trials"]] == [t.overrides for t in plan.trials]
    again = SweepPlan.from_json(doc)
    assert [t.id for t in again.trials] == [t.id for t in plan.trials]
    assert [t.manifest.train.lr for t in again.trials] == [t.manifest.train.lr for t in plan.trials]
