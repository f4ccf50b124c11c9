"""The shapes world: sampling, rendering, scene graphs, Winoground pairs and the dataset writer."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.data import spatial_rule
from orchestrator.data.detector import detect
from orchestrator.data.scene_graph import load_scene_graphs
from orchestrator.data.shapes import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    Scene,
    ShapeObject,
    gap_pixels,
    is_valid,
    make_example,
    render,
    sample_scene,
    swap_positions,
    write_shapes_dataset,
)

WINOGROUND_KEYS = ["id", "image_0", "image_1", "caption_0", "caption_1", "tag", "secondary_tag",
                   "num_main_preds", "collapsed_tag"]


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("size", [32, 64])
def test_scenes_are_valid_and_rendered_exactly(size):
    palette = {tuple(c) for c in COLOURS.values()} | {BACKGROUND}
    counts = Counter()
    for i in range(200):
        ex = make_example(11, i, size)
        scene = ex.scene
        assert 1 <= len(scene.objects) <= 3 and is_valid(scene)
        counts[len(scene.objects)] += 1
        arr = np.asarray(ex.image())
        assert arr.shape == (size, size, 3)
        assert {tuple(p) for p in arr.reshape(-1, 3)} <= palette  # no anti-aliasing
        for o in scene.objects:  # the drawn pixels span exactly the recorded box
            ys, xs = np.nonzero((arr == COLOURS[o.colour]).all(-1))
            inside = (xs >= o.x) & (xs < o.x + o.w) & (ys >= o.y) & (ys < o.y + o.h)
            xs, ys = xs[inside], ys[inside]
            assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == o.box
    assert set(counts) == {1, 2, 3}


def test_examples_are_deterministic_and_independent():
    a = make_example(3, 17, 32)
    b = make_example(3, 17, 32)
    assert a == b
    assert a.image().tobytes() == b.image().tobytes()
    assert make_example(4, 17, 32).scene != a.scene  # another seed, another scene (almost surely)
    assert len({make_example(3, i, 32).scene for i in range(20)}) == 20


def test_gap_is_kept():
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = sample_scene(rng, 32, min_objects=3, max_objects=3)
        gap = gap_pixels(32)
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                assert (a.x + a.w + gap <= b.x or b.x + b.w + gap <= a.x
                        or a.y + a.h + gap <= b.y or b.y + b.h + gap <= a.y)


def test_scene_graph_is_gqa_format_and_uses_the_rule():
    ex = make_example(0, 3, 32)
    d = ex.scene_graph.to_gqa()
    assert d["width"] == d["height"] == 32
    for o in d["objects"].values():
        assert set(o) == {"name", "x", "y", "w", "h", "attributes", "relations"}
        assert o["name"] in SHAPES
        assert o["attributes"][0] in COLOURS and o["attributes"][1] in ("small", "large")
        for r in o["relations"]:
            assert set(r) == {"name", "object"}
    objs = ex.scene.objects
    for i, a in enumerate(objs):
        got = {r.name for r in ex.scene_graph.objects[str(i)].relations if r.object != str(i)}
        want = set()
        for j, b in enumerate(objs):
            if i != j:
                want |= spatial_rule.gqa_relations(a.box, b.box)
        assert got == want


def test_swap_positions_exchanges_centres():
    scene = Scene(32, (ShapeObject("circle", "red", "large", 2, 2, 12, 12),
                       ShapeObject("square", "blue", "small", 20, 20, 8, 8)))
    sw = swap_positions(scene, 0, 1)
    assert sw is not None
    assert sw.objects[0].centre == scene.objects[1].centre
    assert sw.objects[1].centre == scene.objects[0].centre
    crowded = Scene(32, (ShapeObject("circle", "red", "large", 19, 1, 12, 12),
                         ShapeObject("square", "blue", "small", 1, 1, 8, 8),
                         ShapeObject("square", "green", "small", 1, 12, 8, 8)))
    assert swap_positions(crowded, 0, 1) is None  # the large circle would hit the green square


def test_winoground_pairs_swap_roles_and_images():
    pairs = 0
    for i in range(150):
        ex = make_example(2, i, 32)
        if ex.pair is None:
            continue
        pairs += 1
        p = ex.pair
        assert p.caption_0 == ex.spatial and p.caption_0 != p.caption_1
        assert Counter(re.findall(r"\w+", p.caption_0)) == Counter(re.findall(r"\w+", p.caption_1))  # same words
        assert p.tag in ("Noun", "Adjective-Color", "Adjective-Size")
        # The detector + rule on image_1 confirm the swap.
        f = ex.spatial_fact
        dets = {(d.shape, d.colour, d.box): d for d in detect(render(p.scene_1))}
        a, b = p.scene_1.objects[int(f.subject)], p.scene_1.objects[int(f.object)]
        da, db = dets[(a.shape, a.colour, a.box)], dets[(b.shape, b.colour, b.box)]
        assert spatial_rule.holds(f.relation, db.box, da.box)
        assert not spatial_rule.holds(f.relation, da.box, db.box)
    assert pairs >= 30


def test_captions_examples():
    scene = Scene(32, (ShapeObject("circle", "red", "large", 1, 10, 12, 12),
                       ShapeObject("square", "blue", "large", 18, 10, 12, 12)))
    ex_sg = scene.scene_graph("x")
    from orchestrator.data.captions import counting_caption, described_caption, generic_caption, spatial_caption
    assert generic_caption(ex_sg) == "a red circle and a blue square"
    assert described_caption(ex_sg) == "a large red circle and a large blue square"
    assert spatial_caption(ex_sg)[0] == "a red circle to the left of a blue square"
    assert counting_caption(ex_sg) == "one red circle and one blue square"
    tri = Scene(32, (ShapeObject("triangle", "yellow", "small", 1, 1, 8, 8),
                     ShapeObject("triangle", "yellow", "small", 20, 1, 8, 8),
                     ShapeObject("circle", "blue", "small", 10, 20, 8, 8)))
    sg = tri.scene_graph("y")
    assert counting_caption(sg) == "two yellow triangles and one blue circle"
    assert generic_caption(sg) == "two yellow triangles and a blue circle"
    # Every object on its own, with its size, in order; no relation word.
    assert described_caption(sg) == "a small yellow triangle, a small yellow triangle and a small blue circle"
    text, fact = spatial_caption(sg)
    # The triangles are indistinguishable, so the caption must hold for both of them.
    assert text == "a small yellow triangle above a blue circle, and another small yellow triangle"
    assert fact.subject == "0" and fact.relation == "above" and fact.object == "2"


def test_web_captions_use_relation_words_independently_of_layout():
    """A web caption names the first two objects with a relation drawn apart from the layout: the
    same scene reads differently per draw, and over a dataset the stated relation agrees with the
    true one no more than chance (while the spatial caption always does)."""
    from orchestrator.data.captions import WEB_RELATIONS, web_caption
    scene = Scene(32, (ShapeObject("circle", "red", "large", 1, 10, 12, 12),
                       ShapeObject("square", "blue", "large", 18, 10, 12, 12)))
    sg = scene.scene_graph("x")
    assert [web_caption(sg, k) for k in range(4)] == [f"a red circle {r} a blue square" for r in WEB_RELATIONS]
    assert sorted(WEB_RELATIONS) == sorted(spatial_rule.GQA_TO_GENEVAL)
    one = Scene(32, (ShapeObject("circle", "red", "large", 1, 10, 12, 12),)).scene_graph("y")
    assert web_caption(one, 2) == "a red circle"
    tri = Scene(32, (ShapeObject("triangle", "yellow", "small", 1, 1, 8, 8),
                     ShapeObject("triangle", "yellow", "small", 20, 1, 8, 8),
                     ShapeObject("circle", "blue", "small", 10, 20, 8, 8)))
    assert web_caption(tri.scene_graph("z"), 0) == \
        f"a small yellow triangle {WEB_RELATIONS[0]} a small yellow triangle, and a blue circle"
    n, agree, chance, used = 2000, 0, 0.0, set()
    for i in range(n):
        ex = make_example(1, i, world="pairs")
        sg, (a, b) = ex.scene_graph, ex.scene_graph.ids()
        triples = set(sg.relations())
        rel = next(r for r in WEB_RELATIONS if f" {r} " in ex.web)
        used.add(rel)
        agree += (a, rel, b) in triples
        chance += sum((a, r, b) in triples for r in WEB_RELATIONS) / len(WEB_RELATIONS)
        f = ex.spatial_fact  # the spatial caption of the same scene states a true relation
        assert (f.subject, f.relation, f.object) in triples
    assert used == set(WEB_RELATIONS)
    # The drawn word holds as often as a uniform draw would (within 3 binomial sd); the README
    # quotes that chance level (0.28: a layout has one or two true relations of the four).
    chance /= n
    assert 0.25 < chance < 0.32
    assert abs(agree / n - chance) < 3 * (chance * (1 - chance) / n) ** 0.5


def test_write_dataset_layout_and_determinism(tmp_path):
    s1 = write_shapes_dataset(tmp_path / "a", n=40, seed=9, size=32)
    s2 = write_shapes_dataset(tmp_path / "b", n=40, seed=9, size=32)
    h1, h2 = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert h1 == h2  # byte-identical, every file
    assert s1["files"] == s2["files"] and s1["path"] != s2["path"]
    root = tmp_path / "a"
    assert sorted(p.name for p in root.iterdir()) == ["captions.jsonl", "images", "scene_graphs.json",
                                                      "summary.json", "winoground"]
    assert len(list((root / "images").glob("*.png"))) == 40
    graphs = load_scene_graphs(root / "scene_graphs.json")
    caps = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    assert [c["image_id"] for c in caps] == list(graphs) == [p.stem for p in sorted((root / "images").glob("*.png"))]
    for c in caps:
        assert set(c) == {"image_id", "generic", "spatial", "counting", "described", "web", "spatial_fact"}
    with Image.open(root / "images" / f"{caps[0]['image_id']}.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    examples = [json.loads(line) for line in (root / "winoground/examples.jsonl").read_text().splitlines()]
    assert len(examples) == s1["winoground_examples"] > 0
    for k, e in enumerate(examples):
        assert list(e) == WINOGROUND_KEYS and e["id"] == k
        for stem in (e["image_0"], e["image_1"]):
            assert "." not in stem and (root / "winoground/images" / f"{stem}.png").is_file()
    assert sorted(s1["files"]) == sorted(k for k in h1 if k != "summary.json")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_example_i_does_not_depend_on_n(tmp_path):
    write_shapes_dataset(tmp_path / "small", n=5, seed=1)
    write_shapes_dataset(tmp_path / "big", n=9, seed=1)
    for i in range(5):
        rel = f"images/{i:06d}.png"
        assert (tmp_path / "small" / rel).read_bytes() == (tmp_path / "big" / rel).read_bytes()
    small = (tmp_path / "small/captions.jsonl").read_text().splitlines()
    big = (tmp_path / "big/captions.jsonl").read_text().splitlines()
    assert big[:5] == small


def test_writer_refuses_to_clobber(tmp_path):
    out = tmp_path / "ds"
    first = write_shapes_dataset(out, n=6, seed=0)
    before = _tree_hashes(out)
    again = write_shapes_dataset(out, n=6, seed=0)  # identical: accepted, left as is
    assert again["files"] == first["files"] and _tree_hashes(out) == before
    with pytest.raises(FileExistsError):
        write_shapes_dataset(out, n=6, seed=1)
    assert _tree_hashes(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_shapes_dataset(other, n=3, seed=0)
    assert (other / "notes.txt").read_text() == "keep me"
    replaced = write_shapes_dataset(out, n=6, seed=1, overwrite=True)
    assert replaced["seed"] == 1 and _tree_hashes(out) != before
    empty = tmp_path / "empty"
    empty.mkdir()
    write_shapes_dataset(empty, n=2, seed=0)  # an empty directory is fine
    assert (empty / "summary.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError):
        write_shapes_dataset(tmp_path / "bad", n=2, seed=0, size=48)


def test_pairs_world_two_distinct_objects_and_mixed_unchanged(tmp_path):
    """world "pairs" (GenEval's position task): two objects that differ in shape or colour, so no
    caption needs a size word; the mixed world's scenes are what they were (same draws)."""
    import pytest

    from orchestrator.data.worlds import get_world

    mixed = [make_example(3, i) for i in range(200)]
    assert make_example(3, 7, world="mixed") == mixed[7]
    # Scene 1 of seed 0 as it was drawn before worlds existed (the datasets' bytes stay the same).
    assert make_example(0, 1).spatial == "a large yellow triangle to the right of a small yellow triangle"
    assert {len(e.scene.objects) for e in mixed} == {1, 2, 3}
    pairs = [make_example(3, i, world="pairs") for i in range(200)]
    assert all(len(e.scene.objects) == 2 for e in pairs)
    assert all(len({(o.shape, o.colour) for o in e.scene.objects}) == 2 for e in pairs)
    stated = [e for e in pairs if e.spatial_fact is not None]
    assert len(stated) > 150 and not any(w in e.spatial.split() for e in stated for w in ("small", "large"))
    assert all(is_valid(e.scene) for e in pairs)
    summary = write_shapes_dataset(tmp_path / "p", n=8, seed=3, world="pairs")
    assert summary["world"] == "pairs"
    with pytest.raises(FileExistsError):  # the same directory holds another world's scenes
        write_shapes_dataset(tmp_path / "p", n=8, seed=3)
    with pytest.raises(ValueError, match="unknown shapes world 'triples'; worlds: mixed, pairs"):
        get_world("triples")
