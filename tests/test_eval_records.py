"""Receipts: every recorded evaluation says what it ran with (weights and metric-model digests,
inputs, options, code, runtime); `orch eval list` names them, `orch eval diff` says what differs and
what each difference can move, `orch eval rerun` reproduces one bit for bit, or says what moved."""
from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.journal import Event, open_journal
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip
from orchestrator.models.sd import build_tiny

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup(tmp_path):
    build_tiny(seed=0).save(tmp_path / "export")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), tmp_path / "clip")
    journal = f"sqlite:///{tmp_path}/j.db"
    with open_journal(journal) as j:
        j.register_experiment("exp", "cli", "name: cli\n")
        j.register_trial("exp", "t1", {})
        for kind in ("queued", "running"):
            j.append(Event.for_trial("exp", "t1", kind, f"t1/{kind}"))
    return tmp_path, journal


def evaluate(tmp_path, journal, step: int, *extra: str) -> str:
    args = ["eval", str(tmp_path / "export"), "--suite", "spatial,clip_score", "--samples", "3", "--steps", "1",
            "--clip", str(tmp_path / "clip"), "--journal", journal, "--experiment", "exp", "--trial", "t1",
            "--step", str(step), *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.stderr
    return re.search(r"evaluation ([0-9a-f]{12}) of", res.stderr)[1]


def test_the_receipt_names_what_the_evaluation_ran_with(setup):
    from orchestrator.eval.receipt import location_digest, model_digest
    from orchestrator.models.clip import load_clip
    from orchestrator.models.common.serialize import module_hash
    from orchestrator.models.loading import load_model

    tmp_path, journal = setup
    eid = evaluate(tmp_path, journal, 5)
    with open_journal(journal) as j:
        [event] = j.events("exp", "t1", kinds=["evaluated"])
    p = event.payload
    assert p["eval_id"] == eid and p["options"]["steps"] == 1 and p["options"]["samples"] == 3
    r = p["receipt"]
    assert r["weights"]["sha256"] == model_digest(load_model(str(tmp_path / "export")))
    assert r["weights"]["variant"] == "sd" and r["metric_models"]["clip"] == module_hash(
        load_clip(str(tmp_path / "clip")).model)
    assert r["inputs"]["clip"] == location_digest(str(tmp_path / "clip")) and len(r["inputs"]["clip"]) == 64
    assert r["images"] == {"spatial": 3, "clip_score": 3}
    assert r["runtime"]["threads"] == 1 and r["runtime"]["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", r["code"]["commit"]) and isinstance(r["code"]["dirty"], bool)
    listed = runner.invoke(app, ["eval", "list", "--journal", journal, "--format", "json"])
    assert listed.exit_code == 0 and [(x["eval_id"], x["step"]) for x in json.loads(listed.stdout)] == [(eid, 5)]


def test_rerun_reproduces_bit_for_bit_and_names_what_moved(setup):
    tmp_path, journal = setup
    eid = evaluate(tmp_path, journal, 5)
    same = runner.invoke(app, ["eval", "rerun", eid[:8], "--journal", journal])
    assert same.exit_code == 0 and "identical" in same.stdout and "bit for bit" in same.stdout, same.output
    # other weights at the same location: the values move, and the rerun says why
    build_tiny(seed=1).save(tmp_path / "export")
    moved = runner.invoke(app, ["eval", "rerun", eid, "--journal", journal, "--format", "json"])
    assert moved.exit_code == 1, moved.output
    report = json.loads(moved.stdout)
    assert report["identical"] is False and any(d["what"].startswith("clip_score") for d in report["differences"])
    assert [r["field"] for r in report["ran_with"]] == ["weights.sha256"]
    assert report["ran_with"][0]["can_move"] == "every suite"
    missing = runner.invoke(app, ["eval", "rerun", "ffffffffffff", "--journal", journal])
    assert missing.exit_code == 2 and "no evaluation 'ffffffffffff'" in missing.stderr


def test_diff_lists_each_difference_with_the_metrics_it_can_move(setup):
    tmp_path, journal = setup
    a = evaluate(tmp_path, journal, 5)
    b = evaluate(tmp_path, journal, 5, "--guidance-scale", "4.5", "--spatial-rule", "all_pairs")
    res = runner.invoke(app, ["eval", "diff", a, b, "--journal", journal, "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    fields = {r["field"]: r for r in d["ran_with"]}
    assert set(fields) == {"options.guidance_scale", "options.spatial_rule"}
    assert fields["options.spatial_rule"]["can_move"] == "spatial"
    assert "clip_score" in fields["options.guidance_scale"]["can_move"] and fields["options.guidance_scale"]["b"] == 4.5
    assert {v["metric"] for v in d["values"]} <= {"spatial.accuracy", "spatial.object_accuracy", "clip_score",
                                                 "clip_score.ci_low", "clip_score.ci_high", "clip_score.std",
                                                 "spatial.accuracy.ci_low", "spatial.accuracy.ci_high",
                                                 "spatial.object_accuracy.ci_low", "spatial.object_accuracy.ci_high",
                                                 "spatial.conditional_accuracy", "spatial.conditional_accuracy.n",
                                                 "spatial.conditional_accuracy.ci_low",
                                                 "spatial.conditional_accuracy.ci_high"}
    text = runner.invoke(app, ["eval", "diff", a, a, "--journal", journal])
    assert text.exit_code == 0 and "ran with the same" in text.stdout and "same value" in text.stdout
