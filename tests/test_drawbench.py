"""The drawbench suite on a tiny random SD and the tiny shapes CLIP: sheets in the blob store, paired
noise, per-category R-precision with n and intervals, and its errors (plumbing, not metric values)."""
from __future__ import annotations

import csv
import io
import textwrap

import pytest
import torch
from PIL import Image

from orchestrator.eval.drawbench import DrawBenchSuite, load_prompts, sheet_size
from orchestrator.eval.suites import MetricUnavailable, build_context, flatten_metrics, run_suites, store_artifacts
from orchestrator.models.loading import LoadedModel
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage import LocalBlobStore
from tests.test_eval_suites import _one_thread  # noqa: F401 - one torch thread for this module too
from tests.test_eval_suites import assets as eval_assets  # noqa: F401

COUNTING = ["two red circles", "three blue squares", "one green triangle"]
POSITIONAL = ["a red circle to the left of a blue square", "a green triangle above a yellow circle"]
COLOURS = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "triangle")]
FAST = dict(steps=2, r_precision_negatives=8, r_precision_chunks=2, drawbench_per_prompt=2, device="cpu")


@pytest.fixture(scope="module")
def assets(eval_assets):  # noqa: F811 - requests the fixture imported above by name
    """test_eval_suites' tiny CLIP (and SD), with a DrawBench CSV beside them."""
    root = eval_assets
    with open(root / "drawbench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Prompts", "Category"])
        w.writerows([(p, "Colors") for p in COLOURS[:6]] + [(p, "Counting") for p in COUNTING]
                    + [(p, "Positional ") for p in POSITIONAL] + [(p, "Colors") for p in COLOURS[6:]])
    return root


@pytest.fixture(scope="module")
def sd():
    return LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory")


def test_sheets_and_per_category_r_precision(assets, sd, tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    results = run_suites(None, ["drawbench"], model=sd, store=store, clip=str(assets / "clip"),
                         drawbench=str(assets / "drawbench.csv"), **FAST)
    keys = store_artifacts(store, "experiments/e1/grids/base", results)
    (res,) = results
    m = {x.name: x for x in res.metrics}
    assert set(m) == {"r_at_1", "r_at_1/Counting", "r_at_1/Positional"}
    assert (m["r_at_1/Counting"].n, m["r_at_1/Positional"].n, m["r_at_1"].n) == (6, 4, 10)
    for x in m.values():
        assert 0 <= x.ci_low <= x.value <= x.ci_high <= 1 and x.std is not None
    flat = flatten_metrics(results)
    assert flat["drawbench.r_at_1/Counting.n"] == 6 and "drawbench.r_at_1/Positional.ci_high" in flat
    sheets = res.info["sheets"]
    assert sheets == {"Counting": "drawbench-counting.png", "Positional": "drawbench-positional.png"}
    assert res.info["artifacts"] == keys["drawbench"]
    for cat, prompts in (("Counting", COUNTING), ("Positional", POSITIONAL)):
        key = res.info["artifacts"][sheets[cat]]
        assert key == f"experiments/e1/grids/base-drawbench-{cat.lower()}.png"
        img = Image.open(io.BytesIO(store.get(key)))
        assert img.format == "PNG" and img.size == sheet_size(len(prompts), 2, 32)  # one row per prompt
    assert res.info["pool"] == len(COLOURS) + len(COUNTING) + len(POSITIONAL) and res.info["candidates"] == 9
    outcomes = res.info["outcomes"]  # per image, in prompt order: for paired tests
    assert {k: len(v) for k, v in outcomes.items()} == {"r_at_1": 10, "r_at_1/Counting": 6, "r_at_1/Positional": 4}
    assert all(outcomes[f"r_at_1/{cat}"].count("1") == res.info["categories"][cat]["hits"]
               for cat in ("Counting", "Positional"))


def test_noise_is_paired_by_prompt_and_seed(assets, sd):
    def images(seed: int, categories=("Counting", "Positional")):
        ctx = build_context(None, model=sd, clip=str(assets / "clip"), drawbench=str(assets / "drawbench.csv"),
                            drawbench_categories=categories, seed=seed, **FAST)
        suite = DrawBenchSuite()
        assert suite.requirements(ctx) == []
        return suite.generate(ctx, suite._load(ctx)[1])

    a, b = images(7), images(7)
    assert a.shape == (5, 2, 3, 32, 32) and torch.equal(a, b)  # the same model twice: the same images
    assert not torch.equal(a, images(8))                        # another seed: other noise
    # a prompt's noise follows its place in the file, not what is selected beside it
    assert torch.equal(images(7, ("Positional",)), a[3:])
    assert not torch.equal(a[0, 0], a[0, 1])                   # K images of a prompt differ


def test_empty_category_and_missing_clip_are_said(assets, sd):
    with pytest.raises(ValueError, match=r"drawbench\.csv.*no prompts in category \['Rare Words'\]"):
        load_prompts(str(assets / "drawbench.csv"), ["Rare Words"])
    with pytest.raises(MetricUnavailable, match=r"drawbench: .*drawbench\.csv.*'Rare Words'"):
        run_suites(None, ["drawbench"], model=sd, clip=str(assets / "clip"), drawbench=str(assets / "drawbench.csv"),
                   drawbench_categories=("Counting", "Rare Words"), **FAST)
    with pytest.raises(MetricUnavailable, match="drawbench: needs a CLIP"):
        run_suites(None, ["drawbench"], model=sd, drawbench=str(assets / "drawbench.csv"), **FAST)


def test_the_default_categories_may_be_partly_there(assets, tmp_path):
    """No categories named: the seed paper's pair is a default, so a sheet with Counting prompts
    and no Positional ones is evaluated on Counting; a sheet with neither is an error."""
    every, chosen = load_prompts(str(assets / "drawbench.csv"), None)
    assert [p.prompt for p in chosen] == COUNTING + POSITIONAL
    rows = (assets / "drawbench.csv").read_text().splitlines()
    only_counting = tmp_path / "counting.csv"
    only_counting.write_text("\n".join([rows[0]] + [r for r in rows[1:] if "Positional" not in r]) + "\n")
    _, chosen = load_prompts(str(only_counting), None)
    assert [p.prompt for p in chosen] == COUNTING
    neither = tmp_path / "neither.csv"
    neither.write_text("\n".join([rows[0]] + [r for r in rows[1:] if "Positional" not in r and "Counting" not in r])
                       + "\n")
    with pytest.raises(ValueError, match="default categories"):
        load_prompts(str(neither), None)


def test_csv_from_a_blob_key(assets, tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    store.put("bench/drawbench.csv", (assets / "drawbench.csv").read_bytes())
    every, chosen = load_prompts("bench/drawbench.csv", ["Positional"], store=store)
    assert len(every) == 17 and [p.prompt for p in chosen] == POSITIONAL and chosen[0].index == 9


def test_manifest_section(tmp_path, assets):
    from orchestrator.actors.evaluator import eval_options
    from orchestrator.manifest import ManifestError, load_manifest

    head = textwrap.dedent(f"""\
        name: unit
        model: {{variant: sd, resolution: 32}}
        data: {{train: {{kind: shapes, captions: generic, n: 100}}}}
        eval:
          suites: [drawbench]
          clip: {assets / 'clip'}
        """)
    path = tmp_path / "m.yaml"
    path.write_text(head + f"  drawbench: {{file: {assets / 'drawbench.csv'}, "
                    "categories: [Counting], per_prompt: 3}\n")
    loaded = load_manifest(path)
    o = eval_options(loaded.manifest, loaded.base_dir)
    assert (o.drawbench, o.drawbench_categories, o.drawbench_per_prompt) == \
        (str(assets / "drawbench.csv"), ("Counting",), 3)
    path.write_text(head + "  drawbench: {file: nowhere.csv, per_prompt: 0}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    found = {i.path: (i.line, i.message) for i in info.value.issues}
    assert found["eval.drawbench.file"][0] == 7 and "DrawBench CSV not found" in found["eval.drawbench.file"][1]
    assert found["eval.drawbench.per_prompt"][0] == 7
    path.write_text(head)
    with pytest.raises(ManifestError, match="suite drawbench needs eval.drawbench"):
        load_manifest(path)


def test_orch_eval_writes_sheets_and_refuses_an_empty_category(assets, tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    # the CLI keeps the protocol (99 negatives, 10 chunks): 100 prompts, 5 x 2 images in the category
    rows = ["Prompt,Category"] + [f"{n} red circles,Counting" for n in ("two", "three", "four", "five", "six")] \
        + [f"a blue square number {i},Colors" for i in range(100)]
    (tmp_path / "db.csv").write_text("\n".join(rows) + "\n")
    args = ["eval", str(assets / "model"), "--suite", "drawbench", "--clip", str(assets / "clip"), "--drawbench",
            str(tmp_path / "db.csv"), "--per-prompt", "2", "--steps", "2", "--format", "json"]
    ok = CliRunner().invoke(app, [*args, "--categories", "Counting", "--sheets", str(tmp_path / "sheets")])
    assert ok.exit_code == 0, ok.output
    assert Image.open(tmp_path / "sheets" / "drawbench-counting.png").size == sheet_size(5, 2, 32)
    bad = CliRunner().invoke(app, [*args, "--categories", "Counting,Nope"])
    assert bad.exit_code == 2 and "db.csv" in bad.output and "'Nope'" in bad.output
