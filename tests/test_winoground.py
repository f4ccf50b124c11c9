"""Winoground scores against hand-computed references, incl. ties; both data layouts."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.loaders.errors import DataFormatError
from orchestrator.data.loaders.images import ImageRef
from orchestrator.data.loaders.winoground import WinogroundExample, shapes_pairs
from orchestrator.eval.winoground import evaluate_winoground, load_winoground, outcomes, score_examples, summarise


def _m(c0i0, c0i1, c1i0, c1i1):
    return np.array([[c0i0, c0i1], [c1i0, c1i1]], dtype=float)


# (scores, text, image, group), worked out by hand from the definitions
CASES = [
    (_m(0.9, 0.1, 0.2, 0.8), True, True, True),      # each caption and image prefers its partner
    (_m(0.5, 0.6, 0.4, 0.7), True, False, False),    # text ok; c0 prefers i1 (0.6 > 0.5): image fails
    (_m(0.8, 0.8, 0.1, 0.9), True, False, False),    # tie s(c0,i0) == s(c0,i1): strict > fails image
    (_m(0.6, 0.5, 0.7, 0.8), False, True, False),    # i0 prefers c1 (0.7 > 0.6): text fails
    (_m(0.5, 0.5, 0.5, 0.5), False, False, False),   # all tied: everything fails
    (_m(0.7, 0.3, 0.7, 0.9), False, True, False),    # tie s(c0,i0) == s(c1,i0): text fails
    (_m(0.2, 0.9, 0.8, 0.1), False, False, False),   # everything swapped
]


def test_definitions_by_hand():
    scores = np.stack([c[0] for c in CASES])
    got = outcomes(scores)
    assert list(got["text"]) == [c[1] for c in CASES]
    assert list(got["image"]) == [c[2] for c in CASES]
    assert list(got["group"]) == [c[3] for c in CASES]


def test_summary_per_tag():
    scores = np.stack([c[0] for c in CASES])
    tags = ["Object", "Object", "Relation", "Relation", "Relation", "Both", "Object"]
    res = summarise(scores, tags)
    assert res.n == 7
    assert (res.rates["text"].correct, res.rates["image"].correct, res.rates["group"].correct) == (3, 3, 1)
    obj = res.per_tag["Object"]
    assert (obj["text"].correct, obj["image"].correct, obj["group"].correct, obj["text"].n) == (2, 1, 1, 3)
    rel = res.per_tag["Relation"]
    assert (rel["text"].correct, rel["image"].correct, rel["group"].correct, rel["text"].n) == (1, 1, 0, 3)
    assert res.per_tag["Both"]["image"].value == 1.0
    lo, hi = res.rates["text"].ci
    assert lo < 3 / 7 < hi
    assert res.to_json()["per_tag"]["Object"]["group"] == {"value": 1 / 3, "correct": 1, "n": 3,
                                                           "ci": list(res.per_tag["Object"]["group"].ci)}


class _LookupScorer:
    """s(caption, image) from a table; the image is identified by its top-left pixel value."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def __call__(self, caption, image):
        self.calls += 1
        return self.table[(caption, image.getpixel((0, 0))[0])]


def _img(v: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (v, v, v))


def _ref(v: int) -> ImageRef:
    buf = io.BytesIO()
    _img(v).save(buf, format="PNG")
    return ImageRef(f"{v}.png", None, buf.getvalue())


def _example(m: int, a: str, b: str, i0: int, i1: int) -> WinogroundExample:
    return WinogroundExample(m, a, b, _ref(i0), _ref(i1), "", "", 1, "Object", f"case {m}")


def test_any_scorer_and_batched_scorer_agree():
    examples, table = [], {}
    for m, (s, *_rest) in enumerate(CASES):
        a, b = f"cap {m} a", f"cap {m} b"
        i0, i1 = 2 * m, 2 * m + 1
        table.update({(a, i0): s[0, 0], (a, i1): s[0, 1], (b, i0): s[1, 0], (b, i1): s[1, 1]})
        examples.append(_example(m, a, b, i0, i1))
    scorer = _LookupScorer(table)
    scores = score_examples(examples, scorer)
    assert scorer.calls == 4 * len(CASES)
    assert np.array_equal(scores, np.stack([c[0] for c in CASES]))

    class Batched:
        def score_pairs(self, captions, images):
            return [table[(c, im.getpixel((0, 0))[0])] for c, im in zip(captions, images)]

    res = evaluate_winoground(examples, Batched())
    assert res.rates["group"].correct == 1


def test_word_order_blind_scorer_scores_zero():
    """A bag-of-words scorer ties on every Winoground pair: strict > gives 0 / 0 / 0."""
    examples = shapes_pairs(80, seed=3)
    assert len(examples) > 5
    res = evaluate_winoground(examples, lambda c, im: float(len(set(c.split()))))
    assert res.rates["text"].correct == res.rates["image"].correct == res.rates["group"].correct == 0


def test_shapes_layout_on_disk_matches_memory(tmp_path):
    from orchestrator.data.shapes import write_shapes_dataset

    write_shapes_dataset(tmp_path / "ds", n=40, seed=3)
    on_disk = load_winoground(tmp_path / "ds")  # finds winoground/examples.jsonl
    in_memory = shapes_pairs(40, seed=3)
    assert [(e.id, e.caption_0, e.caption_1, e.collapsed_tag) for e in on_disk] == \
           [(e.id, e.caption_0, e.caption_1, e.collapsed_tag) for e in in_memory]
    for disk, memory in zip(on_disk[0].images(), in_memory[0].images()):
        assert np.array_equal(np.asarray(disk), np.asarray(memory))


def test_real_winoground_layout(tmp_path):
    data = tmp_path / "winoground" / "data"
    (data / "images").mkdir(parents=True)
    rec = {"id": 0, "caption_0": "an old person kisses a young person",
           "caption_1": "a young person kisses an old person", "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
           "tag": "Noun", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}
    (data / "examples.jsonl").write_text(json.dumps(rec) + "\n\n")
    for stem, v in (("ex_0_img_0", 10), ("ex_0_img_1", 20)):
        _img(v).save(data / "images" / f"{stem}.png")
    (ex,) = load_winoground(tmp_path / "winoground")
    assert ex.collapsed_tag == "Object" and ex.images()[1].getpixel((0, 0)) == (20, 20, 20)
    (data / "examples.jsonl").write_text(json.dumps({**rec, "image_1": "missing"}) + "\n")
    with pytest.raises(DataFormatError, match=r"examples.jsonl:1.*missing"):
        load_winoground(data)
    with pytest.raises(FileNotFoundError, match="examples.jsonl"):
        load_winoground(tmp_path / "nowhere")


def test_parquet_revision_scores_through_the_same_loader(tmp_path):
    """The newer Hugging Face layout (images inline in data/test-*.parquet) is read by the
    benchmark loader and scored like the jsonl one."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"id": m, "caption_0": f"cap {m} a", "caption_1": f"cap {m} b",
             "image_0": {"bytes": _ref(2 * m).data, "path": None}, "image_1": {"bytes": _ref(2 * m + 1).data,
                                                                                "path": None},
             "tag": "Object", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}
            for m in range(len(CASES))]
    (tmp_path / "wg" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "wg" / "data" / "test-00000-of-00001.parquet")
    examples = load_winoground(tmp_path / "wg")
    assert [e.source.endswith(f"row {m + 1}") for m, e in enumerate(examples)] == [True] * len(CASES)
    table = {}
    for m, (s, *_rest) in enumerate(CASES):
        table.update({(f"cap {m} a", 2 * m): s[0, 0], (f"cap {m} a", 2 * m + 1): s[0, 1],
                      (f"cap {m} b", 2 * m): s[1, 0], (f"cap {m} b", 2 * m + 1): s[1, 1]})
    res = evaluate_winoground(examples, _LookupScorer(table))
    assert [res.rates[k].correct for k in ("text", "image", "group")] == [
        sum(c[i] for c in CASES) for i in (1, 2, 3)]
