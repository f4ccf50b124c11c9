"""Manifest schema, line-numbered errors and sweep expansion."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import orchestrator.models  # noqa: F401  (the variant catalog: `model.<variant>` sections validate)
from orchestrator.manifest import ManifestError, expand, experiment_id, load_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO, BAD = EXAMPLES / "shapes-demo" / "manifest.yaml", EXAMPLES / "bad-manifest" / "manifest.yaml"

BASE = """\
name: unit
model: {variant: sd, resolution: 32}
data:
  train: {kind: shapes, captions: generic, n: 100}
train:
  steps: 50
  lr: 1e-4
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def issues_of(path: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ManifestError) as info:
        loaded = load_manifest(path)
        expand(loaded)
    return [(i.path, i.line, i.message) for i in info.value.issues]


def test_demo_manifest_expands_to_four_trials_with_stable_ids():
    first = expand(load_manifest(DEMO))
    second = expand(load_manifest(DEMO))
    assert len(first) == 4
    assert [t.id for t in first] == [t.id for t in second]
    assert len({t.id for t in first}) == 4
    assert {(t.overrides["model.variant"], t.overrides["data.train.captions"]) for t in first} == {
        ("sd", "generic"), ("sd", "spatial"), ("sd3", "generic"), ("sd3", "spatial")}
    # the overrides really land in the trial's resolved config, each variant with its own options
    for t in first:
        assert t.config["model"]["variant"] == t.overrides["model.variant"]
        assert t.config["data"]["train"]["captions"] == t.overrides["data.train.captions"]
        variant = t.config["model"]["variant"]
        assert t.config["model"]["base"].endswith({"sd": "demo-base", "sd3": "tiny-sd3-base"}[variant])
        text = {"sd": "train_text_encoder", "sd3": "train_text_encoders"}[variant]
        assert t.config["model"][variant][text] is True and t.config["train"]["lr"] == 1e-3


def test_field_order_and_number_spelling_do_not_change_ids(tmp_path):
    a = write(tmp_path, BASE + "sweep: {grid: {train.lr: [1e-4, 0.0003]}, seeds: [0, 1]}\n", "a.yaml")
    b = write(tmp_path, """\
        train: {lr: 0.0001, steps: 50}
        sweep: {seeds: [0, 1], grid: {train.lr: [0.0001, 3.0e-4]}}
        data:
          train: {n: 100, captions: generic, kind: shapes}
        model: {resolution: 32, variant: sd}
        name: unit
        """, "b.yaml")
    la, lb = load_manifest(a), load_manifest(b)
    ta, tb = expand(la), expand(lb)
    assert sorted(t.id for t in ta) == sorted(t.id for t in tb)
    assert experiment_id(la, ta) == experiment_id(lb, tb)


def test_changing_a_trained_field_changes_the_id_but_storage_does_not(tmp_path):
    base = expand(load_manifest(write(tmp_path, BASE, "a.yaml")))[0].id
    other_lr = expand(load_manifest(write(tmp_path, BASE.replace("1e-4", "2e-4"), "b.yaml")))[0].id
    moved = expand(load_manifest(write(tmp_path, BASE + "storage: {blobs: file:///tmp/elsewhere}\n", "c.yaml")))[0].id
    assert other_lr != base
    assert moved == base


def test_grid_trials_and_seeds_cross(tmp_path):
    p = write(tmp_path, BASE + textwrap.dedent("""\
        sweep:
          grid: {train.lr: [1e-4, 3e-4], data.train.captions: [generic, spatial]}
          trials:
            - {train.batch_size: 4}
            - {train.batch_size: 8, train.steps: 20}
          seeds: [0, 1, 2]
        """))
    trials = expand(load_manifest(p))
    assert len(trials) == 2 * 2 * 2 * 3
    assert sorted({t.config["train"]["seed"] for t in trials}) == [0, 1, 2]
    assert {t.config["train"]["steps"] for t in trials if t.overrides["train.batch_size"] == 8} == {20}
    assert [t.index for t in trials] == list(range(len(trials)))


def test_bad_example_lists_every_problem_with_its_line():
    found = {(path, line) for path, line, _ in issues_of(BAD)}
    assert {
        ("name", 2), ("model.variant", 4), ("model.base", 5), ("data.train", 7), ("train.steps", 9),
        ("train.batch_size", 10), ("train.lr", 11), ("train.learning_rate", 12),
        ("sweep.grid.train.momentum", 16), ("eval.suites.1", 17),
    } <= found


def test_unknown_key_names_the_allowed_ones(tmp_path):
    p = write(tmp_path, BASE.replace("  lr: 1e-4\n", "  lr: 1e-4\n  lr_decay: cosine\n"))
    [(path, line, message)] = issues_of(p)
    assert (path, line) == ("train.lr_decay", 8)
    assert "unknown key 'lr_decay'" in message and "warmup_steps" in message


def test_bad_swept_value_points_at_the_sweep_entry(tmp_path):
    p = write(tmp_path, BASE + "sweep:\n  grid:\n    train.lr:\n      - 1e-4\n      - 5.0\n")
    [(path, line, message)] = issues_of(p)
    assert path == "train.lr" and line == 12
    assert "swept value 5.0" in message and "less than or equal to 1" in message


def test_seed_swept_twice_and_unsweepable_sections_are_rejected(tmp_path):
    p = write(tmp_path, BASE + "sweep:\n  grid: {train.seed: [1, 2], storage.blobs: [a, b]}\n  seeds: [0]\n")
    messages = {path: m for path, _, m in issues_of(p)}
    assert "sweep.seeds" in messages["sweep.grid.train.seed"]
    assert "cannot sweep 'storage.blobs'" in messages["sweep.grid.storage.blobs"]


def test_duplicate_trials_are_an_error(tmp_path):
    p = write(tmp_path, BASE + "sweep: {grid: {train.lr: [1e-4, 0.0001]}}\n")
    [(path, _, message)] = issues_of(p)
    assert path == "sweep" and "duplicates trial 0" in message


def test_duplicate_yaml_keys_and_syntax_errors_have_lines(tmp_path):
    dup = write(tmp_path, BASE + "train: {steps: 3}\n", "dup.yaml")
    [(path, line, message)] = issues_of(dup)
    assert (path, line) == ("train", 8) and "first defined on line 5" in message

    broken = write(tmp_path, BASE + "sweep: {grid: [unclosed\n", "broken.yaml")
    [(path, line, message)] = issues_of(broken)
    assert path == "" and line is not None and line >= 8 and "invalid YAML" in message


def test_missing_and_existing_files_resolve_against_the_manifest_dir(tmp_path):
    (tmp_path / "wino").mkdir()
    ok = write(tmp_path, BASE.replace("{kind: shapes, captions: generic, n: 100}", "{kind: winoground, root: wino}"))
    load_manifest(ok)  # relative to the manifest, not the cwd
    missing = write(tmp_path, BASE.replace("{kind: shapes, captions: generic, n: 100}",
                                           "{kind: winoground, root: gone}"))
    [(path, line, message)] = issues_of(missing)
    assert (path, line) == ("data.train.root", 4) and "data root not found" in message


def test_missing_required_sections_and_non_mapping(tmp_path):
    p = write(tmp_path, "name: x\n")
    found = {path for path, _, _ in issues_of(p)}
    assert {"model", "data"} <= found
    p2 = write(tmp_path, "- just\n- a list\n", "list.yaml")
    [(_, line, message)] = issues_of(p2)
    assert line == 1 and "mapping" in message
    [(_, _, message)] = issues_of(tmp_path / "nope.yaml")
    assert message == "file not found"


def test_model_pretrain_ranges_and_where_it_applies(tmp_path):
    bad = write(tmp_path, BASE.replace(
        "model: {variant: sd, resolution: 32}",
        "model:\n  variant: sd\n  pretrain: {steps: 0, vae_steps: -1, n: 0, batch_size: 5000, lr: 2.0, warmup: 3}"))
    found = {path: (line, message) for path, line, message in issues_of(bad)}
    assert {"model.pretrain.steps", "model.pretrain.vae_steps", "model.pretrain.n", "model.pretrain.batch_size",
            "model.pretrain.lr", "model.pretrain.warmup"} <= set(found)
    assert all(line == 4 for line, _ in found.values())
    assert "greater than or equal to 1" in found["model.pretrain.steps"][1]
    assert "less than or equal to 1" in found["model.pretrain.lr"][1]

    small = write(tmp_path, BASE.replace("model: {variant: sd, resolution: 32}",
                                         "model: {variant: sd, pretrain: {n: 8, batch_size: 16}}"), "small.yaml")
    [(path, _, message)] = issues_of(small)
    assert path == "model.pretrain" and "at least batch_size" in message

    with_base = write(tmp_path, BASE.replace("model: {variant: sd, resolution: 32}",
                                             "model: {variant: sd, base: tiny-random, pretrain: {steps: 10}}"),
                      "base.yaml")
    [(path, _, message)] = issues_of(with_base)
    assert path == "model" and "model.base: null" in message


def test_model_pretrain_unset_keeps_ids_and_set_changes_them(tmp_path):
    plain = load_manifest(write(tmp_path, BASE, "plain.yaml"))
    [t_plain] = expand(plain)
    assert "pretrain" not in t_plain.config["model"]  # ids of manifests written before the field are unchanged
    assert t_plain.manifest.model.pretrain_settings.steps == 3000
    set_ = load_manifest(write(tmp_path, BASE.replace("model: {variant: sd, resolution: 32}",
                                                      "model: {variant: sd, pretrain: {steps: 200, n: 100}}"),
                               "set.yaml"))
    [t_set] = expand(set_)
    assert t_set.id != t_plain.id and t_set.config["model"]["pretrain"]["steps"] == 200
    assert t_set.manifest.model.pretrain_settings.n == 100 and t_set.manifest.model.pretrain_settings.vae_steps == 1000


def test_world_field_shapes_only_and_unset_hashes_as_before():
    from pydantic import ValidationError

    from orchestrator.manifest.schema import DataSource, EvalSpec

    assert DataSource(kind="shapes", n=4, world="pairs").world == "pairs"
    assert "world" not in DataSource(kind="shapes", n=4).model_dump() and "world" not in EvalSpec().model_dump()
    assert EvalSpec(world="pairs").model_dump()["world"] == "pairs"
    with pytest.raises(ValidationError, match="kind 'shapes-winoground' takes none"):
        DataSource(kind="shapes-winoground", n=4, world="pairs")
    with pytest.raises(ValidationError, match="world"):
        EvalSpec(world="triples")
