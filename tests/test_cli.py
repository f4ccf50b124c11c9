"""The `orch` command line: exit codes, JSON output, and honesty about what is not built yet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.manifest import expand, load_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO, BAD = EXAMPLES / "shapes-demo" / "manifest.yaml", EXAMPLES / "bad-manifest" / "manifest.yaml"
runner = CliRunner()


def test_validate_good_and_bad_exit_codes_through_the_console_script():
    orch = Path(sys.executable).with_name("orch")
    # A narrow terminal: each message must still be one line (a long checkout path once split
    # "4 \ntrial(s)" when rich wrapped the output at 80 columns).
    env = {**os.environ, "COLUMNS": "40"}
    good = subprocess.run([orch, "validate", DEMO], capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("\n") == 1 and "4 trial(s)" in good.stdout
    bad = subprocess.run([orch, "validate", BAD], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    # one line per problem: file:line: field: message
    assert "bad-manifest/manifest.yaml:12: train.learning_rate: unknown key" in bad.stderr
    assert "bad-manifest/manifest.yaml:4: model.variant:" in bad.stderr


def test_validate_json_lists_all_errors():
    result = runner.invoke(app, ["validate", str(BAD), "--format", "json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    assert len(doc["errors"]) >= 10
    assert all({"file", "path", "line", "message"} <= set(e) for e in doc["errors"])


def test_plan_json_matches_the_library_and_is_stable():
    first = runner.invoke(app, ["plan", str(DEMO), "--format", "json"])
    second = runner.invoke(app, ["plan", str(DEMO), "--format", "json"])
    assert first.exit_code == 0
    doc = json.loads(first.stdout)
    assert doc == json.loads(second.stdout)
    assert [t["id"] for t in doc["trials"]] == [t.id for t in expand(load_manifest(DEMO))]


def test_plan_table_shows_swept_columns():
    result = runner.invoke(app, ["plan", str(DEMO)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "data.train.captions" in result.stdout and "model.variant" in result.stdout
    assert result.stdout.count("spatial") == 2 and result.stdout.count("sd3 ") == 2


def test_plan_of_missing_file_is_bad_input(tmp_path):
    result = runner.invoke(app, ["plan", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_help_lists_every_design_command():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    for command in ("validate", "plan", "run", "submit", "status", "results", "cancel", "resume",
                    "train", "eval", "data", "serve", "pretrain", "sample", "journal"):
        assert f" {command} " in result.stdout, command


def test_data_shapes_is_deterministic_and_refuses_to_clobber(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        result = runner.invoke(app, ["data", "shapes", "--out", str(out), "--n", "12", "--seed", "5",
                                     "--format", "json"])
        assert result.exit_code == 0, result.stderr
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    clash = runner.invoke(app, ["data", "shapes", "--out", str(a), "--n", "13", "--seed", "5"])
    assert clash.exit_code == 2 and "different dataset" in clash.stderr
    bad_size = runner.invoke(app, ["data", "shapes", "--out", str(tmp_path / "c"), "--n", "3", "--size", "48"])
    assert bad_size.exit_code == 2 and not (tmp_path / "c").exists()


TINY = """\
name: cli-train
model: {{variant: sd, base: {base}, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 3, batch_size: 4, checkpoint_every: 1}}
storage: {{blobs: ./blobs}}
"""


def test_train_without_a_pretrained_base_says_how_to_build_it(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(TINY.format(base="null"))
    result = runner.invoke(app, ["train", str(manifest), "--trial", "0", "--no-progress"])
    assert result.exit_code == 2
    assert "orch pretrain" in result.stderr
    assert not list(tmp_path.rglob("checkpoints"))  # nothing trained from random weights


def test_train_stops_and_resumes_through_the_cli(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(TINY.format(base="tiny-random"))
    first = runner.invoke(app, ["train", str(manifest), "--trial", "0", "--max-steps", "2", "--threads", "1",
                                "--format", "json"])
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["step"], doc["finished"]) == (2, False)
    second = runner.invoke(app, ["train", str(manifest), "--trial", "0", "--threads", "1", "--format", "json"])
    doc = json.loads(second.stdout)
    assert (doc["resumed_from"], doc["steps_run"], doc["finished"]) == (2, 1, True)
    unknown = runner.invoke(app, ["train", str(manifest), "--trial", "tnope", "--no-progress"])
    assert unknown.exit_code == 2 and "no single trial matches" in unknown.stderr


def test_journal_migrate_is_idempotent_on_sqlite_and_postgres(tmp_path, postgres_url):
    from sqlalchemy import create_engine

    from orchestrator.journal import current_revision, head_revision

    for url in (f"sqlite:///{tmp_path}/j.db", postgres_url):
        for _ in range(2):
            result = runner.invoke(app, ["journal", "migrate", url])
            assert result.exit_code == 0, result.stderr
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
        engine.dispose()
    missing = runner.invoke(app, ["journal", "migrate", postgres_url.rsplit("/", 1)[0] + "/orch_no_such_db"])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_sample_writes_a_grid_from_a_blob_prefix(tmp_path):
    from PIL import Image

    from orchestrator.models.sd import build_tiny, save_components
    from orchestrator.storage import open_store

    blobs = str(tmp_path / "blobs")
    save_components(build_tiny(seed=0), "models/m", store=open_store(blobs))
    args = ["sample", "--model", "models/m", "--blobs", blobs, "--prompt", "a red circle",
            "--prompt", "a blue square", "--per-prompt", "2", "--steps", "2", "--out"]
    result = runner.invoke(app, args + [str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.stderr
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] == grid.size[1] and 64 <= grid.size[0] < 96  # 2 prompts x 2 images of 32 px, padded
    missing = runner.invoke(app, ["sample", "--model", "models/none", "--blobs", blobs, "--prompt", "x",
                                  "--out", str(tmp_path / "g2.png")])
    assert missing.exit_code == 2 and not (tmp_path / "g2.png").exists()


def test_runtime_commands_name_unknown_experiments(tmp_path):
    from orchestrator.journal import open_journal

    journal = f"sqlite:///{tmp_path}/j.db"
    open_journal(journal).close()  # a journal that exists but has no such experiment (readers create none)
    for argv in (["status", "enope"], ["results", "enope"], ["cancel", "enope"], ["resume", "enope"]):
        result = runner.invoke(app, argv + ["--journal", journal])
        assert result.exit_code == 2, (argv, result.stderr)
        assert "enope" in result.stderr
    empty = runner.invoke(app, ["status", "--journal", journal, "--format", "json"])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


def test_eval_and_clip_train_through_the_cli(tmp_path):
    blobs = str(tmp_path / "blobs")
    trained = runner.invoke(app, ["clip", "train", "--out", "clip/tiny", "--blobs", blobs, "--steps", "3", "--n", "16",
                                  "--batch-size", "8"])
    assert trained.exit_code == 0, trained.stderr
    from orchestrator.models.sd import build_tiny, save_components
    from orchestrator.storage import open_store

    save_components(build_tiny(seed=0), "models/m", store=open_store(blobs))
    journal = f"sqlite:///{tmp_path}/j.db"
    args = ["eval", "--checkpoint", "models/m", "--blobs", blobs, "--suite", "spatial,clip_r_precision",
            "--clip", "clip/tiny", "--samples", "10", "--steps", "2", "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    by_suite = {r["suite"]: r for r in json.loads(result.stdout)}
    assert set(by_suite) == {"spatial", "clip_r_precision"}
    # every suite's headline metric is computed over all 10 generated images
    assert [r["metrics"][0]["n"] for r in by_suite.values()] == [10, 10]
    # no weights file: FID says so and exits 2, nothing is computed silently
    no_fid = runner.invoke(app, ["eval", "--checkpoint", "models/m", "--blobs", blobs, "--suite", "fid"])
    assert no_fid.exit_code == 2 and "fid" in no_fid.stderr.lower()
    half = runner.invoke(app, args[:-2] + ["--journal", journal])
    assert half.exit_code == 2 and "--experiment" in half.stderr


def test_blobs_ls_and_get_copy_a_verified_plain_file(tmp_path):
    from orchestrator.storage import LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs")
    store.put("experiments/e1/grids/t1-final.png", b"\x89PNG fake grid")
    uri = f"file://{tmp_path / 'blobs'}"
    listed = runner.invoke(app, ["blobs", "ls", "experiments/e1/", "--blobs", uri])
    assert listed.exit_code == 0 and "experiments/e1/grids/t1-final.png" in listed.output
    dest = tmp_path / "out" / "grid.png"
    got = runner.invoke(app, ["blobs", "get", "experiments/e1/grids/t1-final.png", str(dest), "--blobs", uri])
    assert got.exit_code == 0 and dest.read_bytes() == b"\x89PNG fake grid"  # the bytes, not the stored header
    missing = runner.invoke(app, ["blobs", "get", "experiments/e1/nope.png", str(dest), "--blobs", uri])
    assert missing.exit_code == 2 and "no object" in missing.output
    blob = next((tmp_path / "blobs").rglob("t1-final.png*"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")  # corrupt the stored bytes
    corrupt = runner.invoke(app, ["blobs", "get", "experiments/e1/grids/t1-final.png", str(tmp_path / "c.png"),
                                  "--blobs", uri])
    assert corrupt.exit_code == 1 and not (tmp_path / "c.png").exists()


def test_eval_of_an_export_directory_needs_no_manifest_and_records_once(tmp_path):
    from orchestrator.journal import Event, open_journal
    from orchestrator.models.sd import build_tiny

    build_tiny(seed=0).save(tmp_path / "export")  # model_index.json names the variant
    journal = f"sqlite:///{tmp_path}/j.db"
    with open_journal(journal) as j:
        j.register_experiment("exp", "cli", "name: cli\n")
        j.register_trial("exp", "t1", {})
        for kind in ("queued", "running"):
            j.append(Event.for_trial("exp", "t1", kind, f"t1/{kind}"))
    args = ["eval", str(tmp_path / "export"), "--suite", "spatial", "--samples", "2", "--steps", "1",
            "--journal", journal, "--experiment", "exp", "--trial", "t1", "--step", "5"]
    first, again = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and "recorded:" in first.stderr, first.stderr
    assert again.exit_code == 0 and "already recorded" in again.stderr
    with open_journal(journal) as j:
        assert len(j.events("exp", "t1", kinds=["evaluated"])) == 1
        assert j.trial_state("t1").metrics[5]["spatial.accuracy.n"] == 2
    both = runner.invoke(app, ["eval", str(tmp_path / "export"), "--checkpoint", "x", "--suite", "spatial"])
    assert both.exit_code == 2 and "once" in both.stderr
