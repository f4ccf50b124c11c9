"""The judged sample grid (orchestrator.eval.sheet): cells upscaled by nearest neighbour to >= 96 px,
one per image, the same bytes for the same inputs, and captions that say what the spatial judge
decided, checked on rendered shapes-world ground truth (right), its swapped relation (wrong) and
scenes with an object removed (not judged). The last test runs the Evaluator actor's class on a
tiny random SD and reads back the grid it stores."""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.data.shapes import Scene, ShapeObject, make_example, render
from orchestrator.eval.sheet import FRAME, PAD, caption_lines, judged_sheet, phrase
from orchestrator.eval.spatial import SpatialPrompt, judge, score_spatial

SEED = 7


def _examples(n: int, size: int = 32, pairs: bool = False):
    """The first `n` shapes scenes stating a relation (with `pairs`: whose swap is cleanly false)."""
    out, i = [], 0
    while len(out) < n:
        ex = make_example(SEED, i, size)
        if ex.spatial_fact is not None and (ex.pair is not None or not pairs):
            out.append(ex)
        i += 1
    return out


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_captions_say_what_the_judge_decided():
    exs = _examples(12, pairs=True)
    for ex in exs:
        true = SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial)
        a, b = phrase(true.subject), phrase(true.object)
        assert caption_lines(true, judge(ex.image(), true)) == [ex.spatial, f"{a} ✓", f"{b} ✓", "relation: right"]
        false = true.swapped()  # the same picture against "B <relation> A"
        assert caption_lines(false, judge(ex.image(), false)) == [false.text, f"{b} ✓", f"{a} ✓", "relation: wrong"]
    # An object the picture lacks: crossed out, and the relation is not judged.
    circle = ShapeObject("circle", "red", "small", 2, 12, 8, 8)
    square = ShapeObject("square", "blue", "large", 18, 10, 12, 12)
    prompt = SpatialPrompt("a red circle to the left of a blue square", ("circle", ("red",)), "left of",
                           ("square", ("blue",)))
    only_circle = judge(render(Scene(32, (circle,))), prompt)
    assert caption_lines(prompt, only_circle)[1:] == ["red circle ✓", "blue square ✗", "relation: n/a (object missing)"]
    neither = judge(render(Scene(32, ())), prompt)
    assert caption_lines(prompt, neither)[1:] == ["red circle ✗", "blue square ✗", "relation: n/a (object missing)"]
    # One red circle cannot stand on both sides of "a red circle left of a red circle".
    same = replace(prompt, object=("circle", ("red",)))
    assert caption_lines(same, judge(render(Scene(32, (circle, square))), same))[1:] == \
        ["red circle ✓", "red circle ✓", "relation: n/a (one object fits both)"]
    # Size words come first, whatever order the description holds them in.
    assert phrase(("triangle", ("blue", "small"))) == "small blue triangle"


def test_verdicts_agree_with_the_suite_score():
    exs = _examples(16, pairs=True)
    prompts = [SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial) for ex in exs]
    prompts = [p if k % 2 else p.swapped() for k, p in enumerate(prompts)]  # half right, half wrong
    images = [ex.image() for ex in exs]
    s = score_spatial(images, prompts)
    verdicts = [caption_lines(p, judge(im, p))[-1] for im, p in zip(images, prompts)]
    assert [v == "relation: right" for v in verdicts] == list(s.outcomes) == [bool(k % 2) for k in range(16)]


@pytest.mark.parametrize("size,scale", [(32, 4), (64, 2)])
def test_sheet_has_one_upscaled_cell_per_image(size, scale):
    exs = _examples(10, size=size)
    prompts = [SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial) for ex in exs]
    images = [ex.image() for ex in exs]
    sheet = judged_sheet(images, prompts, cols=4)
    cell = size * scale + 2 * FRAME  # image and its verdict frame
    assert size * scale >= 96
    assert sheet.width == 4 * (cell + PAD) + PAD  # four columns; ten cells make three rows
    pitch = (sheet.height - PAD) // 3
    assert sheet.height == 3 * pitch + PAD and pitch > cell + 3 * 12  # room under each image for its text
    for k, im in enumerate(images):
        r, c = divmod(k, 4)
        x, y = PAD + c * (cell + PAD) + FRAME, PAD + r * pitch + FRAME
        shown = sheet.crop((x, y, x + size * scale, y + size * scale))
        want = im.resize((size * scale, size * scale), Image.Resampling.NEAREST)
        assert np.array_equal(np.asarray(shown), np.asarray(want)), k
    # The eleventh and twelfth cells of the last row are empty.
    blank = np.asarray(sheet.crop((PAD + 3 * (cell + PAD), PAD + 2 * pitch, sheet.width - PAD, sheet.height - PAD)))
    assert (blank == 255).all()
    # `limit` keeps the first K; a title adds a heading above the cells.
    four = judged_sheet(images, prompts, cols=4, limit=4)  # one row (its text may take fewer lines)
    assert four.width == sheet.width and cell + 2 * PAD < four.height <= pitch + PAD
    assert judged_sheet(images, prompts, cols=4, title="base").height > sheet.height


def test_sheet_is_deterministic_and_takes_a_generators_tensor():
    exs = _examples(9)
    prompts = [SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial) for ex in exs]
    images = [ex.image() for ex in exs]
    first = _png(judged_sheet(images, prompts, title="base: same prompts and noise"))
    assert first == _png(judged_sheet(images, prompts, title="base: same prompts and noise"))
    # [N, 3, H, W] floats in [0, 1], as every generator returns them: the same picture.
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    assert first == _png(judged_sheet(tensor, prompts, title="base: same prompts and noise"))
    # Given judgements are drawn as given (no second detection).
    given = [judge(im, p) for im, p in zip(images, prompts)]
    assert first == _png(judged_sheet(images, prompts, judgements=given, title="base: same prompts and noise"))
    with pytest.raises(ValueError, match="9 images for 8 prompts"):
        judged_sheet(images, prompts[:8])


def test_evaluator_saves_the_judged_grid_where_spatial_ran(tmp_path):
    """The Evaluator actor's class on a tiny random SD: the stored `<label>.png` is the judged sheet
    of its generated images (their size and count), and the metrics are the suite's."""
    from orchestrator.actors.evaluator import Evaluator
    from orchestrator.manifest import load_manifest
    from orchestrator.storage import open_store

    path = tmp_path / "m.yaml"
    path.write_text("name: judged-grid\n"
                    "model: {variant: sd, base: tiny-random, resolution: 32}\n"
                    "data: {train: {kind: shapes, captions: spatial, n: 8}, eval: {kind: shapes, n: 8, seed: 7}}\n"
                    "train: {steps: 1, batch_size: 2}\n"
                    "eval: {suites: [spatial], samples: 3, steps: 2}\n"
                    f"storage: {{blobs: {tmp_path / 'blobs'}, journal: sqlite:///{tmp_path / 'j.db'}}}\n")
    manifest = load_manifest(path).manifest
    evaluator = Evaluator(f"file://{tmp_path / 'blobs'}", "experiments/x/grids")
    out = evaluator.evaluate(manifest.model_dump(mode="json"), str(tmp_path), {"kind": "base"}, "base")
    assert out["grid"] == "experiments/x/grids/base.png" and out["metrics"]["spatial.accuracy.n"] == 3
    grid = Image.open(io.BytesIO(open_store(f"file://{tmp_path / 'blobs'}").get(out["grid"])))
    cell = 32 * 4 + 2 * FRAME
    assert grid.width == 3 * (cell + PAD) + PAD and grid.height > cell + PAD  # three upscaled cells, text under
