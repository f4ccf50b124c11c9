"""The geneval suite: the CLIP colour classifier against a hand computation, the suite end to end on a tiny SD
model with a tiny random Mask2Former and tiny CLIP (metric names and n, outcomes, the results.jsonl artifact,
the same noise giving the same results), prompt selection, requirements, and the manifest's eval.geneval.
Random weights: plumbing and invariants, never a score value."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import orchestrator.models  # noqa: F401  (the variant catalog)
from orchestrator.data.loaders.geneval import TAGS, parse_record
from orchestrator.eval import geneval as ge
from orchestrator.eval.colour_classifiers import ClipColourClassifier
from orchestrator.eval.geneval_suite import ARTIFACT, choose_prompts, results_jsonl
from orchestrator.eval.mask2former_configs import mask2former_config, save_random_mask2former
from orchestrator.eval.suites import build_context, run_in_context
from orchestrator.manifest.schema import GENEVAL_TAGS
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, load_clip, preprocessor_config, save_clip
from orchestrator.models.loading import LoadedModel
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny

RECORDS = [
    {"tag": "single_object", "include": [{"class": "cup", "count": 1}], "prompt": "a photo of a cup"},
    {"tag": "two_object", "include": [{"class": "cup", "count": 1}, {"class": "bench", "count": 1}],
     "prompt": "a photo of a cup and a bench"},
    {"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}],
     "prompt": "a photo of two cups"},
    {"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "red"}], "prompt": "a photo of a red cup"},
    {"tag": "position", "include": [{"class": "bench", "count": 1},
                                    {"class": "cup", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a cup left of a bench"},
    {"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "red"},
                                      {"class": "bench", "count": 1, "color": "blue"}],
     "prompt": "a photo of a red cup and a blue bench"},
]
COLUMNS = {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("geneval")
    (root / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    # every query a confident "cup" (random weights detect nothing), so counts are met and colours are asked
    save_random_mask2former(root / "detector", mask2former_config("tiny"), favour="cup")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), root / "clip")
    return root


@pytest.fixture(scope="module")
def sd():
    return LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory")


def test_the_tasks_are_the_manifests(tmp_path):
    """Every task the manifest offers is a tag the loader reads."""
    from orchestrator.data.loaders.geneval import load_geneval_metadata

    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps({"tag": t, "prompt": "a photo of a cat", "include": [{"class": "cat", "count": 1}]})
                         + "\n" for t in GENEVAL_TAGS))
    assert [p.tag for p in load_geneval_metadata(f)] == list(GENEVAL_TAGS) == list(TAGS)


def test_clip_colours_are_the_averaged_template_embeddings(files):
    enc = load_clip(str(files / "clip"))
    clf = ClipColourClassifier(enc)
    image = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    mask = np.zeros((32, 32), bool)
    mask[4:20, 6:14] = True
    dets = [ge.ObjectDetection("cup", 0.9, (6, 4, 14, 20), mask), ge.ObjectDetection("cup", 0.8, (10, 12, 31, 30))]
    weights = []
    for colour in ge.COLORS:  # by hand: three texts, each normalised, averaged, normalised again
        t = enc.encode_texts([f"a photo of a {colour} cup", f"a photo of a {colour}-colored cup",
                              f"a photo of a {colour} object"])
        weights.append(t.mean(0) / t.mean(0).norm())
    weights = torch.stack(weights)
    crops = [ge.crop_for_colour(image, d) for d in dets]
    assert crops[0].size == (8, 16) and crops[0].getpixel((0, 0)) == image.getpixel((6, 4))
    emb = torch.cat([enc.encode_images([c]) for c in crops])  # each crop through the encoder's own preprocessing
    want = emb @ weights.T
    assert clf.cosines(image, dets, "cup").numpy() == pytest.approx(want.numpy(), abs=1e-5)
    assert clf(image, dets, "cup") == [ge.COLORS[int(i)] for i in want.argmax(1)]
    assert clf.text_weights("cup") is clf.text_weights("cup")  # cached per class
    assert clf(image, [], "cup") == []


def _run(sd, files, **kw):
    opts = dict(geneval=str(files / "evaluation_metadata.jsonl"), geneval_detector=str(files / "detector"),
                geneval_clip=str(files / "clip"), geneval_per_prompt=2, steps=2, device="cpu")
    ctx = build_context(None, model=sd, **{**opts, **kw})
    [res] = run_in_context(ctx, ["geneval"])
    return res


def test_suite_end_to_end_on_a_tiny_model(sd, files):
    res = _run(sd, files)
    assert [m.name for m in res.metrics] == ["overall", *TAGS]
    assert [m.n for m in res.metrics] == [12] + [2] * 6
    for m in res.metrics[1:]:
        assert 0 <= m.ci_low <= m.value <= m.ci_high <= 1
    assert res.metrics[0].value == pytest.approx(np.mean([m.value for m in res.metrics[1:]]))
    outcomes = res.info["outcomes"]
    assert list(outcomes) == list(TAGS) and all(len(b) == 2 and set(b) <= {"0", "1"} for b in outcomes.values())
    assert res.info["thresholds"]["threshold"] == 0.3 and res.info["thresholds"]["counting_threshold"] == 0.9
    assert res.info["detector"] == "detector" and res.info["colours"] == "clip" and res.info["tasks"]["colors"] == 1
    lines = res.artifacts[ARTIFACT].decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 12 and all(set(r) == COLUMNS for r in records)
    assert [r["filename"] for r in records[:3]] == ["00000/samples/00000.png", "00000/samples/00001.png",
                                                   "00001/samples/00000.png"]
    assert [json.loads(r["metadata"]) for r in records[::2]] == RECORDS
    for r in records:
        for boxes in json.loads(r["details"]).values():  # class -> kept boxes [x0, y0, x1, y1, score]
            assert all(len(b) == 5 and 0 <= b[0] < b[2] <= 32 and b[4] > 0.3 for b in boxes)
        assert "".join(outcomes[r["tag"]]).count("1") >= 0
    # the favoured class is detected, so the colour clauses reach the CLIP classifier
    colors = [r for r in records if r["tag"] == "colors"]
    assert all(r["correct"] or "red cup, found 0 red (colours seen:" in r["reason"] for r in colors)
    assert res.info["wall_s"]["colour"] > 0 and res.info["wall_s"]["detection"] > 0
    assert ge.summarise(records).to_json() == res.info["summary"]  # the artifact reads back to the same summary
    again = _run(sd, files)  # the same noise: the same images, detections and verdicts
    assert again.artifacts[ARTIFACT] == res.artifacts[ARTIFACT] and again.info["outcomes"] == outcomes


def test_tasks_and_prompt_counts_select_prompts_keeping_their_noise(sd, files):
    res = _run(sd, files, geneval_tags=("colors", "position"), geneval_per_prompt=1)
    assert [m.name for m in res.metrics] == ["overall", "colors", "position"]
    full = [json.loads(line) for line in _run(sd, files, geneval_per_prompt=1).artifacts[ARTIFACT].splitlines()]
    part = [json.loads(line) for line in res.artifacts[ARTIFACT].splitlines()]
    assert part == [r for r in full if r["tag"] in ("colors", "position")]  # prompt index seeds its noise
    prompts = [parse_record(r, "m.jsonl", i + 1, i) for i, r in enumerate(RECORDS * 2)]
    assert [p.index for p in choose_prompts(prompts, max_prompts=1)] == [0, 1, 2, 3, 4, 5]
    assert [p.index for p in choose_prompts(prompts, ["counting"])] == [2, 8]
    with pytest.raises(ValueError, match="no prompt of task"):
        choose_prompts(prompts[:1], ["counting"])
    assert results_jsonl([{"a": 1}]) == b'{"a": 1}\n'


def test_the_shapes_world_runs_with_its_own_detector_and_palette(sd, tmp_path):
    record = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a red circle"}
    (tmp_path / "shapes.jsonl").write_text(json.dumps(record) + "\n")
    res = _run(sd, tmp_path, geneval=str(tmp_path / "shapes.jsonl"), geneval_detector="shapes", geneval_clip=None,
               geneval_per_prompt=1)
    assert [m.name for m in res.metrics] == ["overall", "colors"] and res.info["detector"] == "shapes"
    assert res.info["colours"] == "shapes-palette"


def test_requirements_name_what_is_missing(sd, files, tmp_path):
    from orchestrator.eval.results import MetricUnavailable

    with pytest.raises(MetricUnavailable) as info:
        run_in_context(build_context(None, model=sd, device="cpu", geneval=str(tmp_path / "none.jsonl")), ["geneval"])
    message = str(info.value)
    assert "none.jsonl" in message and "needs a detector" in message
    with pytest.raises(MetricUnavailable, match=r"does not detect: 'cup', 'bench'"):
        _run(sd, files, geneval_detector="shapes")
    with pytest.raises(MetricUnavailable, match=r"geneval \(object colours; or set geneval.clip\): needs a CLIP"):
        _run(sd, files, geneval_clip=None)
    with pytest.raises(MetricUnavailable, match="geneval: detector not found"):
        _run(sd, files, geneval_detector=str(tmp_path / "gone"))


MANIFEST = """\
name: unit
model: {variant: sd, resolution: 32}
data:
  train: {kind: shapes, captions: generic, n: 100}
eval:
"""


def test_a_manifest_asking_for_geneval_needs_its_section(tmp_path):
    from orchestrator.actors.evaluator import eval_options
    from orchestrator.manifest import ManifestError, load_manifest

    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST + "  suites: [geneval]\n")
    with pytest.raises(ManifestError, match=r"suite geneval needs eval\.geneval"):
        load_manifest(path)
    (tmp_path / "meta.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    (tmp_path / "det").mkdir()
    path.write_text(MANIFEST + textwrap.indent("suites: [geneval]\ngeneval: {metadata: meta.jsonl, detector: det}\n",
                                               "  "))
    with pytest.raises(ManifestError, match="needs a CLIP for object colours"):
        load_manifest(path)
    path.write_text(MANIFEST + textwrap.indent("suites: [geneval]\ngeneval: {metadata: gone.jsonl, detector: det, "
                                               "clip: det}\n", "  "))
    with pytest.raises(ManifestError, match="GenEval metadata file not found"):
        load_manifest(path)
    path.write_text(MANIFEST + textwrap.indent("suites: [geneval]\ngeneval: {metadata: meta.jsonl, detector: det, "
                                               "clip: det, tags: [colors], max_prompts: 5, per_prompt: 2}\n", "  "))
    loaded = load_manifest(path)
    o = eval_options(loaded.manifest, loaded.base_dir)
    assert (o.geneval, o.geneval_detector, o.geneval_clip) == (str(tmp_path / "meta.jsonl"), str(tmp_path / "det"),
                                                              str(tmp_path / "det"))
    assert (o.geneval_tags, o.geneval_max_prompts, o.geneval_per_prompt) == (("colors",), 5, 2)
    path.write_text(MANIFEST + textwrap.indent("suites: [geneval]\ngeneval: {metadata: meta.jsonl, detector: shapes}\n",
                                               "  "))
    assert eval_options(load_manifest(path).manifest, tmp_path).geneval_detector == "shapes"
