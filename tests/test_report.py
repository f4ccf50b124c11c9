"""`orch report` on a real tiny sweep: the folder it writes opens in a real headless Chromium with
every picture loaded; errors are exit 2.

The sweep runs in-process (no Ray: starting its workers costs more than this whole module may take
on a shared 2-core machine) through the runtime's own pieces: the Coordinator's journaling
(registration, step-metric batches, checkpoints, evaluations), the Trainer actor's class training
each trial and reporting to it, the Evaluator actor's class storing grids and DrawBench sheets."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from orchestrator.actors.coordinator import Coordinator
from orchestrator.actors.evaluator import Evaluator
from orchestrator.actors.trainer import TrialWorker
from orchestrator.cli import app
from orchestrator.experiment.plan import plan_sweep
from orchestrator.journal import EventKind, open_journal
from orchestrator.report.build import write_report
from orchestrator.report.collect import collect

MANIFEST = """\
name: report-test
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 12}}, eval: {{kind: shapes-winoground, n: 8, seed: 7}}}}
train: {{steps: 6, batch_size: 4, lr: 1.0e-3, warmup_steps: 4, checkpoint_every: 3, seed: 1}}
sweep: {{grid: {{train.lr: [1.0e-3, 3.0e-4]}}}}
resources: {{cpus_per_trial: 1}}
eval:
  suites: [spatial, drawbench]
  samples: 4
  clip: {clip}
  drawbench: {{file: drawbench.csv, categories: [Counting], per_prompt: 2}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A two-trial sweep evaluated at the base and the end (each evaluation costs seconds here; an
    interim one would only add a point): (manifest path, experiment id)."""
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("report")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), root / "clip")
    with open(root / "drawbench.csv", "w", newline="") as f:  # R-precision's 99 negatives need 100 prompts
        w = csv.writer(f)
        w.writerow(["Prompt", "Category"])
        w.writerows([(f"{n} red circles", "Counting") for n in ("two", "three", "four", "five", "six")])
        w.writerows([(f"a blue square number {i}", "Colors") for i in range(100)])
    path = root / "m.yaml"
    path.write_text(MANIFEST.format(clip=root / "clip"))
    coord = Coordinator(plan_sweep(path).to_json())
    eid, plan = coord.plan.experiment_id, coord.plan
    evaluator = Evaluator(plan.blobs_uri, f"experiments/{eid}/grids")

    def evaluate(tid: str, source: dict, label: str) -> dict:
        return evaluator.evaluate(coord.trial_json[tid], str(plan.base_dir), source, label)

    to_coordinator = SimpleNamespace(on_metrics=SimpleNamespace(remote=coord.on_metrics),
                                     on_checkpoint=SimpleNamespace(remote=coord.on_checkpoint),
                                     on_notice=SimpleNamespace(remote=coord.on_notice),
                                     on_placed=SimpleNamespace(remote=coord.on_placed))
    base = None
    for tid in coord._register():
        base = base or evaluate(tid, {"kind": "base"}, "base")
        coord.rj.transition(tid, EventKind.RUNNING)
        result = TrialWorker(plan.trial(tid).to_json(), plan.blobs_uri, reporter=to_coordinator).train()
        coord.rj.transition(tid, EventKind.EVALUATING)
        final = evaluate(tid, {"kind": "model", "prefix": result["model_prefix"]}, f"{tid}-final")
        coord._record_eval(tid, 0, base, base=True)
        coord._record_eval(tid, result["step"], final)
        coord.rj.transition(tid, EventKind.DONE, final_loss=result["final_loss"])
    return path, eid


def test_report_opens_in_a_browser_with_every_picture(experiment, browser, artifacts_dir, tmp_path):
    path, eid = experiment
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", eid, "--out", str(out), "--journal",
                                      f"sqlite:///{path.parent / 'journal.db'}"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert "index.html" in names and not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
    assert sum(n.startswith("curves-") for n in names) == 2                  # loss + lr per trial
    assert {"metric-spatial.accuracy.png", "metric-drawbench.r_at_1.png"} <= set(names)  # steps 0 and 6
    assert "img-base.png" in names and sum(n.endswith("-final.png") for n in names) == 2
    assert sum("drawbench-counting" in n for n in names) == 3                # base + each trial's final
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "no grading yet" in page
    assert "name: report-test" in page and "drawbench: {file: drawbench.csv" in page  # the YAML as written

    browser.get(out.joinpath("index.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
    assert {src for src, _, _ in images} == set(names) - {"index.html"}  # every file shown, none missing
    assert all(done and width > 0 for _, done, width in images), images
    rows = browser.execute_script("return document.querySelectorAll('#results tbody tr').length;")
    assert rows == 2
    browser.save_screenshot(str(artifacts_dir / "report.png"))


def test_step_metrics_and_evaluations_come_from_the_journal(experiment):
    path, eid = experiment
    with open_journal(f"sqlite:///{path.parent / 'journal.db'}", create=False) as journal:
        data = collect(journal, eid)
    for t in data.trials:
        assert t.steps == [1, 2, 3, 4, 5, 6] and all(x is not None for x in t.loss)
        assert t.lr[0] < t.lr[1] < t.lr[-1] == max(t.lr)   # warm-up, then the configured rate
        assert [ev.step for ev in t.evaluations] == [0, 6]
        assert set(t.evaluations[-1].sheets) == {"Counting"}


def test_tallies_render_and_the_swap_is_whole(experiment, tmp_path):
    path, eid = experiment
    with open_journal(f"sqlite:///{path.parent / 'journal.db'}", create=False) as journal:
        data = collect(journal, eid)
    tally = SimpleNamespace(task_id="g1", models=["base", "final"], graders=["ann", "<bob>"], kappa=0.41,
                            rows=[{"model": "base", "n": 20, "match_rate": 0.25, "ci_low": 0.11, "ci_high": 0.47,
                                   "mean_rank": 1.8},
                                  {"model": "final", "n": 20, "match_rate": 0.6, "ci_low": 0.39, "ci_high": 0.78,
                                   "mean_rank": 1.2}],
                            preference=[[None, 0.3], [0.7, None]])
    out = tmp_path / "r"
    out.mkdir()
    (out / "stale.txt").write_text("from an older report")
    index = write_report(data, out, None, [tally])
    page = index.read_text()
    assert not (out / "stale.txt").exists()  # replaced whole
    assert "task g1" in page and "&lt;bob&gt;" in page and "0.410" in page and "0.700" in page
    assert "no sample grids" in page and "no blob store was given" in page  # said, not an error


def test_unknown_experiment_is_exit_2(experiment, tmp_path):
    path, _ = experiment
    result = CliRunner().invoke(app, ["report", "e000000000000", "--out", str(tmp_path / "x"), "--journal",
                                      f"sqlite:///{path.parent / 'journal.db'}"])
    assert result.exit_code == 2 and "e000000000000" in result.output
    assert not (tmp_path / "x").exists() and not list(Path(tmp_path).glob(".x.tmp-*"))
