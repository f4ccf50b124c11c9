"""GQA-Captions builder on GQA-format fixtures: selection by question type, records, determinism,
resumption after an interruption (no duplicates, output identical to an uninterrupted run),
refusing to mix builds, skips counted, and the gqa-captions loader over the output."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator.data.gqa_captions as gc
from orchestrator.data.gqa_captions import PROGRESS_NAME, BuildConflictError, build_gqa_captions
from orchestrator.data.loaders import DataFormatError
from orchestrator.data.loaders.sharded import GQACaptionsLoader
from orchestrator.data.shards import ShardReader
from orchestrator.storage import LocalBlobStore

NAMES = ("man", "table", "cup", "dog", "tree", "car", "window", "shirt")
ATTRS = ("red", "wooden", "small", "white", "tall", "green")
RELS = ("to the left of", "to the right of", "on", "near", "holding", "above")
# (semantic, detailed) -> our type: rel->relation, position*->position, exist*->existence, colour: none
TYPES = [("rel", "relS"), ("attr", "positionQuery"), ("obj", "exist"), ("attr", "colorQuery"), ("rel", "existRelS")]


def write_gqa(tmp: Path, n_images: int = 40, n_questions: int = 300, seed: int = 0,
              missing: int = 3) -> tuple[Path, Path]:
    """A small scene-graph file and questions file in GQA's layout. `missing` images are named
    by questions but have no scene graph (as with GQA's test splits)."""
    rng = random.Random(seed)
    graphs = {}
    for i in range(n_images):
        ids = [str(100 * i + k) for k in range(rng.randint(2, 5))]
        graphs[str(2300000 + i)] = {"width": 500, "height": 400, "objects": {
            oid: {"name": rng.choice(NAMES), "x": rng.randint(0, 400), "y": rng.randint(0, 300), "w": 50, "h": 60,
                  "attributes": rng.sample(ATTRS, rng.randint(0, 2)),
                  "relations": [{"name": rng.choice(RELS), "object": rng.choice(ids)}
                                for _ in range(rng.randint(0, 2))]}
            for oid in ids}}
    questions = {}
    for k in range(n_questions):
        img = str(2300000 + rng.randrange(n_images + missing))
        semantic, detailed = rng.choice(TYPES)
        objs = list(graphs[img]["objects"]) if img in graphs else ["1"]
        questions[str(1000 + k)] = {
            "imageId": img, "question": f"Question {k}?", "answer": rng.choice(("yes", "no", "left")),
            "fullAnswer": "Yes.", "isBalanced": True, "semantic": [],
            "types": {"structural": "verify", "semantic": semantic, "detailed": detailed},
            "annotations": {"question": {"2": rng.choice(objs)}, "answer": {}, "fullAnswer": {}}}
    sg, q = tmp / "val_sceneGraphs.json", tmp / "val_balanced_questions.json"
    sg.write_text(json.dumps(graphs))
    q.write_text(json.dumps(questions, indent=1))
    return sg, q


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gqa(tmp_path_factory) -> tuple[Path, Path]:
    return write_gqa(tmp_path_factory.mktemp("gqa"))


@pytest.fixture(scope="module")
def reference(gqa, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted build, compared against by the other tests."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = build_gqa_captions(*gqa, str(out), examples_per_shard=32, on_error="skip", progress=False)
    return out, summary


def test_build_selects_question_types_and_writes_records(gqa, reference) -> None:
    sg, q = gqa
    out, summary = reference
    questions = json.loads(q.read_text())
    graphs = json.loads(sg.read_text())
    wanted = [(qid, x) for qid, x in questions.items()
              if x["types"]["semantic"] == "rel" or x["types"]["detailed"].startswith(("position", "exist"))]
    expected = [qid for qid, x in wanted if x["imageId"] in graphs]
    reader = ShardReader(LocalBlobStore(out), "")
    got = list(reader)
    assert [r["question_id"] for r in got] == expected  # file order, no duplicates
    assert summary["records"] == len(expected) and summary["skipped"] == len(wanted) - len(expected)
    assert summary["skip_counts"] == {"missing scene graph": len(wanted) - len(expected)}
    assert all(s.count == 32 for s in reader.index.shards[:-1]) and len(reader.index.shards) > 3
    r = got[0]
    assert set(r) == {"question_id", "image_id", "image", "caption", "question", "answer", "question_type",
                      "scene_graph_id"}
    assert r["image"] == f"{r['image_id']}.jpg" and r["scene_graph_id"] == r["image_id"] and r["caption"]
    assert {x["question_type"] for x in got} == {"relation", "position", "existence"}
    assert sum(summary["by_type"].values()) == len(expected)
    assert not (out / PROGRESS_NAME).exists()


def test_build_is_deterministic_and_idempotent(gqa, reference, tmp_path: Path) -> None:
    out, summary = reference
    again = build_gqa_captions(*gqa, str(tmp_path / "again"), examples_per_shard=32, on_error="skip", progress=False)
    assert again["dataset_id"] == summary["dataset_id"]
    assert contents(tmp_path / "again") == contents(out)
    done = build_gqa_captions(*gqa, str(out), examples_per_shard=32, on_error="skip", progress=False)
    assert done["already_complete"] and done["records"] == summary["records"]


def test_two_workers_give_the_same_output(gqa, reference, tmp_path: Path) -> None:
    """In a fresh process, as the CLI runs it: the fork pool here would inherit this session's Ray
    threads (tests.test_actors keeps one Ray for the session), and a child forked while one of them
    holds a lock can hang (it did once, in a CI run)."""
    out, _ = reference
    code = ("import sys; from orchestrator.data.gqa_captions import build_gqa_captions; "
            "build_gqa_captions(*sys.argv[1:4], examples_per_shard=32, on_error='skip', progress=False, workers=2)")
    subprocess.run([sys.executable, "-c", code, *map(str, gqa), str(tmp_path / "w2")], check=True, timeout=240)
    assert contents(tmp_path / "w2") == contents(out)


def test_resume_after_interruption_is_identical_and_has_no_duplicates(gqa, reference, tmp_path, monkeypatch) -> None:
    ref_out, summary = reference
    out = tmp_path / "out"
    real = gc.summarise
    calls = {"n": 0}

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 75:  # in the middle of the third shard
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gc, "summarise", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_gqa_captions(*gqa, str(out), examples_per_shard=32, on_error="skip", progress=False)
    progress = json.loads(LocalBlobStore(out).get(PROGRESS_NAME))
    assert [c["shard"]["count"] for c in progress["chunks"]] == [32, 32]
    assert not (out / "index.json").exists()

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(gc, "summarise", counting)
    resumed = build_gqa_captions(*gqa, str(out), examples_per_shard=32, on_error="skip", progress=False)
    assert resumed["resumed_shards"] == 2
    assert calls["n"] == summary["records"] - 64  # finished shards were not captioned again
    assert contents(out) == contents(ref_out)  # byte-identical, progress.json gone
    ids = [r["question_id"] for r in ShardReader(LocalBlobStore(out), "")]
    assert len(ids) == len(set(ids)) == summary["records"]


def test_refuses_to_mix_builds(gqa, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    build_gqa_captions(*gqa, out, examples_per_shard=32, on_error="skip", progress=False, max_per_image=1)
    with pytest.raises(BuildConflictError, match="other inputs or options"):
        build_gqa_captions(*gqa, out, examples_per_shard=32, on_error="skip", progress=False)
    s = build_gqa_captions(*gqa, out, examples_per_shard=32, on_error="skip", progress=False, max_per_image=1,
                           question_types=["position"], overwrite=True)
    got = list(ShardReader(LocalBlobStore(out), ""))
    assert {r["question_type"] for r in got} == {"position"} and len(got) == s["records"]
    assert len({r["image_id"] for r in got}) == len(got)  # at most one question per image


def test_errors_name_the_file_and_line_unless_skipped(gqa, tmp_path: Path) -> None:
    sg, q = gqa
    with pytest.raises(DataFormatError) as err:
        build_gqa_captions(sg, q, str(tmp_path / "out"), progress=False)
    assert err.value.file == str(q) and "has no scene graph" in err.value.message
    line = q.read_text().splitlines()[err.value.line - 1]
    qid = line.strip().split('"')[1]
    assert json.loads(q.read_text())[qid]["imageId"] not in json.loads(sg.read_text())


def test_images_are_checked_and_resolved_by_the_loader(gqa, tmp_path: Path) -> None:
    sg, q = gqa
    images = tmp_path / "images"
    images.mkdir()
    graphs = json.loads(sg.read_text())
    for image_id in list(graphs)[:-1]:  # the last image is missing
        (images / f"{image_id}.jpg").write_bytes(b"jpg")
    out = tmp_path / "out"
    s = build_gqa_captions(sg, q, str(out), images=str(images), examples_per_shard=32, on_error="skip",
                           progress=False)
    assert s["skip_counts"]["missing image"] > 0
    loader = GQACaptionsLoader(str(out), categories=["relation"])
    got = loader.load()
    assert got and {g.question_type for g in got} == {"relation"}
    assert got[0].image.uri == str(images / f"{got[0].image_id}.jpg") and got[0].image.exists()


def test_rejects_bad_options(gqa, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="question_types must be among"):
        build_gqa_captions(*gqa, str(tmp_path / "o"), question_types=["colour"], progress=False)
    with pytest.raises(FileNotFoundError):
        build_gqa_captions(tmp_path / "nope.json", gqa[1], str(tmp_path / "o"), progress=False)


def test_cli_builds_the_same_dataset_and_reports_conflicts(gqa, reference, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    out = tmp_path / "cli"
    args = ["data", "gqa-captions", "--scene-graphs", str(gqa[0]), "--questions", str(gqa[1]), "--out", str(out),
            "--examples-per-shard", "32", "--on-error", "skip", "--no-progress", "--format", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["records"] == reference[1]["records"]
    assert contents(out) == contents(reference[0])
    clash = CliRunner().invoke(app, args[:-5] + ["--max-tokens", "40", "--no-progress"])
    assert clash.exit_code == 2
    assert "already holds a GQA-Captions build with other inputs" in clash.stderr
