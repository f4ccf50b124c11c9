"""Spatial accuracy by detection, checked on rendered ground truth from the shapes world."""
from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.data.shapes import Scene, ShapeObject, make_example, render
from orchestrator.eval.spatial import (
    SpatialPrompt,
    heldout_spatial_prompts,
    judge,
    score_spatial,
)
from orchestrator.eval.stats import mcnemar, wilson_interval

SEED, N = 7, 60


def _examples(n: int = N, size: int = 32):
    out, i = [], 0
    while len(out) < n:
        ex = make_example(SEED, i, size)
        if ex.spatial_fact is not None:
            out.append(ex)
        i += 1
    return out


@pytest.mark.parametrize("size", [32, 64])
def test_true_relations_score_one(size):
    exs = _examples(size=size)
    prompts = [SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial) for ex in exs]
    s = score_spatial([ex.image() for ex in exs], prompts)
    assert (s.n, s.correct, s.both_present) == (N, N, N)
    assert s.accuracy == s.object_accuracy == s.conditional_accuracy == s.axis_accuracy == 1.0
    assert s.accuracy_ci[1] == 1.0 and 0.9 < s.accuracy_ci[0] < 1.0
    assert s.displacement_ci[0] > 0.2  # A lies well off B in the stated direction


def test_swapped_prompts_score_zero():
    # Winoground pairs are the facts whose reversal is false for every pair of fitting objects.
    exs = [ex for ex in _examples(120) if ex.pair is not None][:N]
    assert len(exs) >= 40
    for make in (lambda ex: SpatialPrompt.from_fact(ex.spatial_fact).swapped(),
                 lambda ex: SpatialPrompt.from_fact(ex.spatial_fact.to_json()).swapped()):
        s = score_spatial([ex.image() for ex in exs], [make(ex) for ex in exs])
        assert s.correct == 0 and s.accuracy == 0.0
        assert s.object_accuracy == 1.0  # the objects are there; only the relation is wrong
        assert s.axis_accuracy == 1.0  # and they are apart along the stated axis, the wrong way round
        assert s.displacement_ci[1] < -0.2
    # The same images against the roles' rendered swap (image_1) are right again.
    s = score_spatial([render(ex.pair.scene_1) for ex in exs],
                      [SpatialPrompt.from_fact(ex.spatial_fact).swapped() for ex in exs])
    assert s.accuracy == 1.0


def test_missing_object_fails_object_accuracy():
    exs = _examples(30)
    images, prompts = [], []
    for ex in exs:
        fact = ex.spatial_fact
        # Drop every object B's description fits (it need not single one out).
        name, attrs = fact.object_desc
        keep = [o for o in ex.scene.objects if not (o.shape == name and {o.colour, o.size} >= set(attrs))]
        assert len(keep) < len(ex.scene.objects)
        images.append(render(Scene(ex.scene.image_size, tuple(keep))))
        prompts.append(SpatialPrompt.from_fact(fact, ex.spatial))
    s = score_spatial(images, prompts)
    assert s.both_present == 0 and s.correct == 0
    assert s.object_accuracy == 0.0 and s.conditional_accuracy == 0.0
    assert s.conditional_ci == (0.0, 1.0)  # no image to condition on


def test_colour_shape_and_size_must_match():
    a = ShapeObject("circle", "red", "small", 2, 12, 8, 8)
    b = ShapeObject("square", "blue", "large", 18, 10, 12, 12)
    img = render(Scene(32, (a, b)))
    left = SpatialPrompt("", ("circle", ("red",)), "left of", ("square", ("blue",)))
    assert judge(img, left).correct
    assert not judge(img, replace(left, relation="right of")).correct
    assert judge(img, replace(left, relation="right of")).axis_correct
    # Centres 6 and 24 px across a 32 px image: A is 18/32 of the side to the left of B.
    assert judge(img, left).displacement == pytest.approx(18 / 32)
    assert judge(img, replace(left, relation="right of")).displacement == pytest.approx(-18 / 32)
    assert not judge(img, replace(left, relation="above")).axis_correct
    wrong_colour = judge(img, replace(left, subject=("circle", ("green",))))
    assert not wrong_colour.subject_found and wrong_colour.object_found and not wrong_colour.correct
    assert not judge(img, replace(left, subject=("triangle", ("red",)))).both_present
    assert judge(img, replace(left, subject=("circle", ("small", "red")))).correct
    assert not judge(img, replace(left, subject=("circle", ("large", "red")))).subject_found


def test_all_pairs_rule_needs_every_fitting_pair_to_hold():
    # The stricter rule: a second red circle on the wrong side makes the image wrong.
    b = ShapeObject("square", "blue", "small", 12, 12, 8, 8)
    left = ShapeObject("circle", "red", "small", 1, 12, 8, 8)
    right = ShapeObject("circle", "red", "small", 23, 12, 8, 8)
    prompt = SpatialPrompt("", ("circle", ("red",)), "left of", ("square", ("blue",)))
    assert judge(render(Scene(32, (left, b))), prompt, "all_pairs").correct
    assert not judge(render(Scene(32, (left, b, right))), prompt, "all_pairs").correct
    # One object cannot stand on both sides of a relation (either rule).
    same = SpatialPrompt("", ("circle", ("red",)), "left of", ("circle", ("red",)))
    for rule in ("geneval", "all_pairs"):
        assert not judge(render(Scene(32, (left, b))), same, rule).both_present
        assert judge(render(Scene(32, (left, b, right))), same, rule).both_present
    with pytest.raises(ValueError, match="spatial rule must be one of geneval, all_pairs"):
        judge(render(Scene(32, (left, b))), prompt, "every_pair")


def test_geneval_rule_judges_the_most_confident_detection_of_each_object():
    """Issue 31's example: a blue square, a red circle left of it and a small red fragment right of
    it, prompt "a red circle to the left of a blue square". GenEval keeps the most confident
    detection per described object (here the larger circle) and scores it right; all pairs, wrong."""
    square = ShapeObject("square", "blue", "large", 24, 20, 16, 16)
    circle = ShapeObject("circle", "red", "large", 2, 20, 16, 16)
    fragment = ShapeObject("circle", "red", "small", 48, 24, 7, 7)  # 7x7 at 64 px: above min_area, smaller
    prompt = SpatialPrompt("", ("circle", ("red",)), "left of", ("square", ("blue",)))
    image = render(Scene(64, (square, circle, fragment)))
    assert judge(image, prompt).correct and judge(image, prompt, "geneval").correct
    assert not judge(image, prompt, "all_pairs").correct
    # the most confident is the larger blob, not the first found: the fragment on the left now
    moved = render(Scene(64, (square, replace(circle, x=48, y=20), replace(fragment, x=2))))
    assert not judge(moved, prompt).correct and judge(moved, prompt).both_present
    # score_spatial takes the rule through; the all-pairs score is never above the GenEval one
    ex = _examples(20, 64)
    images = [render(e.scene) for e in ex] + [image]
    prompts = [SpatialPrompt.from_fact(e.spatial_fact) for e in ex] + [prompt]
    g, a = score_spatial(images, prompts), score_spatial(images, prompts, "all_pairs")
    assert g.correct == a.correct + 1 == len(images)


def _as_geneval(prompt: SpatialPrompt):
    """The spatial prompt as GenEval's position record: B, then A with its colour and the relation to B."""
    from orchestrator.data.loaders.geneval import parse_record

    def clause(desc, **more):
        colours = [a for a in desc[1] if a in ("red", "green", "blue", "yellow")]
        return {"class": desc[0], "count": 1, **({"color": colours[0]} if colours else {}), **more}
    rec = {"tag": "position", "prompt": prompt.text or "p",
           "include": [clause(prompt.object), clause(prompt.subject, position=[prompt.relation, 0])]}
    return parse_record(rec, "mem.jsonl", 1, 0)


def test_spatial_and_geneval_judges_agree_where_genevals_clauses_can_say_the_prompt():
    """The spatial suite judges with GenEval's code (the shapes detector behind its interface, its
    confidence order, its relation): on prompts naming two shapes, each drawn once, and on the fragment
    example (a same-coloured fragment), its verdict is GenEval's own `evaluate_image`'s. Where one shape
    is named twice, GenEval's class clauses take the same top detection for both and cannot hold."""
    from orchestrator.eval import geneval as ge
    from orchestrator.eval.colour_classifiers import ShapesColourClassifier
    from orchestrator.eval.detectors import ShapesDetector

    det, colours = ShapesDetector(), ShapesColourClassifier()
    cases = []
    for ex in _examples(120, 64):
        p = SpatialPrompt.from_fact(ex.spatial_fact)
        shapes = [o.shape for o in ex.scene.objects]
        if p.subject[0] != p.object[0] and all(shapes.count(x) == 1 for x in (p.subject[0], p.object[0])):
            cases += [(ex.image(), p), (ex.image(), p.swapped())]
    square = ShapeObject("square", "blue", "large", 24, 20, 16, 16)
    circle = ShapeObject("circle", "red", "large", 2, 20, 16, 16)
    fragment = ShapeObject("circle", "red", "small", 48, 24, 7, 7)
    left = SpatialPrompt("", ("circle", ("red",)), "left of", ("square", ("blue",)))
    cases += [(render(Scene(64, (square, circle, fragment))), left),
              (render(Scene(64, (square, replace(circle, x=48, y=20), replace(fragment, x=2)))), left)]
    verdicts = [judge(im, p).correct for im, p in cases]
    assert len(cases) >= 40 and 0 < sum(verdicts) < len(cases)  # both verdicts occur
    assert verdicts == [ge.evaluate_image(im, _as_geneval(p), det, colours)["correct"] for im, p in cases]
    # Two circles: the spatial judge picks each described one; GenEval's rule, the top circle twice.
    blue = replace(circle, colour="blue", x=40)
    two = SpatialPrompt("", ("circle", ("red",)), "left of", ("circle", ("blue",)))
    image = render(Scene(64, (circle, blue)))
    assert judge(image, two).correct
    assert not ge.evaluate_image(image, _as_geneval(two), det, colours)["correct"]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_and_heldout_prompts():
    assert mcnemar([True] * 10, [False] * 10) == {"only_a": 10, "only_b": 0, "p_value": pytest.approx(2 / 1024)}
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0
    import numpy as np  # numpy outcomes with many discordant pairs: exact, not an overflowed p = 1

    big = mcnemar(np.ones(90, dtype=bool), np.zeros(90, dtype=bool))
    assert big["only_a"] == 90 and type(big["only_a"]) is int and big["p_value"] == pytest.approx(2 / 2 ** 90)
    prompts = heldout_spatial_prompts(1000, 12)
    assert len(prompts) == 12 and all(p.relation in {"left of", "right of", "above", "below"} for p in prompts)
    assert prompts == heldout_spatial_prompts(1000, 12)  # deterministic by seed


def test_heldout_prompts_of_a_world():
    """The evaluator's held-out prompts and real images follow EvalOptions.world (the demo's: pairs)."""
    from orchestrator.eval.suites import build_context

    pairs = heldout_spatial_prompts(1000, 20, world="pairs")
    assert pairs != heldout_spatial_prompts(1000, 20)
    assert not any(a in ("small", "large") for p in pairs for a in p.subject[1] + p.object[1])
    ctx = build_context(None, samples=20, world="pairs")
    assert ctx.prompts() == pairs
    assert all(len(h.example.scene.objects) == 2 for h in ctx.heldout(20))
    with pytest.raises(ValueError, match="unknown shapes world 'triples'"):
        build_context(None, samples=20, world="triples")
