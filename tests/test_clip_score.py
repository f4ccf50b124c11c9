"""CLIPScore: the formula on hand-set cosines, the suite on a tiny model and CLIP (its mean, interval
and per-image scores), the paired permutation test it feeds, and the manifest's requirement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.eval.clip_score import W, clip_scores, mean_with_interval
from orchestrator.eval.suites import run_suites
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip
from orchestrator.models.loading import LoadedModel
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny


class _Cosines:
    """A scorer with set cosines: what the formula does with them is the test."""
    def __init__(self, cos):
        self.cos = cos

    def score_pairs(self, captions, images):
        return np.asarray(self.cos[:len(captions)])


def test_formula_rescales_and_clips_negative_cosines():
    got = clip_scores(_Cosines([0.3, -0.2, 0.0, 1.0]), None, ["a", "b", "c", "d"])
    assert got.tolist() == pytest.approx([2.5 * 0.3, 0.0, 0.0, 2.5]) and W == 2.5
    with pytest.raises(ValueError, match=r"\(3,\) scores for 4"):
        clip_scores(_Cosines([0.1, 0.2, 0.3]), None, ["a", "b", "c", "d"])
    m = mean_with_interval("clip_score", np.array([1.0, 2.0, 3.0, 4.0]))
    half = 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert (m.value, m.n, m.ci_low, m.ci_high) == pytest.approx((2.5, 4, 2.5 - half, 2.5 + half))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipscore")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), root / "clip")
    return root / "clip"


def test_suite_scores_each_generated_image_against_its_prompt(clip_dir):
    torch.set_num_threads(1)
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.clip import load_clip

    sd = LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory")
    ctx = build_context(None, model=sd, clip=str(clip_dir), samples=6, steps=2, batch_size=6, device="cpu")
    [res] = run_in_context(ctx, ["clip_score"])
    [m] = res.metrics
    per_image = res.info["outcomes"]["clip_score"]
    enc = load_clip(str(clip_dir))
    want = [W * max(float(t @ v), 0.0) for t, v in zip(enc.encode_texts([p.text for p in ctx.prompts()]),
                                                         enc.encode_images(ctx.generated()))]
    assert per_image == pytest.approx(want, abs=1e-6) and len(per_image) == m.n == 6
    assert m.value == pytest.approx(np.mean(want), abs=1e-6) and m.ci_low <= m.value <= m.ci_high
    assert res.info["formula"].startswith("w * max(cos") and res.info["clip"] == enc.name
    # the same model, noise and prompts: the same scores (what pairing two models rests on)
    again = run_suites(None, ["clip_score"], model=sd, clip=str(clip_dir), samples=6, steps=2, batch_size=6,
                       device="cpu")
    assert again[0].info["outcomes"]["clip_score"] == per_image


def test_a_manifest_asking_for_clip_score_needs_a_clip(tmp_path):
    from orchestrator.manifest import ManifestError, load_manifest

    p = tmp_path / "m.yaml"
    p.write_text("name: cs\nmodel: {variant: sd, base: tiny-random, resolution: 32}\n"
                 "data: {train: {kind: shapes, n: 8}}\ntrain: {steps: 2, batch_size: 4}\n"
                 "eval: {suites: [clip_score], samples: 10}\n")
    with pytest.raises(ManifestError, match="clip"):
        load_manifest(p)


def test_pick_score_is_the_models_logit_scale_times_the_cosine(clip_dir):
    """PickScore's formula on a tiny CLIP standing in for PickScore_v1 (the real one is a CLIP-H
    directory given by path): exp(logit_scale) times the cosine, per image, unclipped."""
    from orchestrator.models.clip import load_clip

    sd = LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory")
    [res] = run_suites(None, ["pick_score"], model=sd, pick_score=str(clip_dir), samples=6, steps=2, batch_size=6,
                       device="cpu")
    enc = load_clip(str(clip_dir))
    scale = float(enc.model.logit_scale.detach().exp())
    from orchestrator.eval.suites import build_context

    ctx = build_context(None, model=sd, samples=6, steps=2, batch_size=6, device="cpu")
    cos = enc.score_pairs([p.text for p in ctx.prompts()], ctx.generated())
    assert res.info["outcomes"]["pick_score"] == pytest.approx((scale * cos).tolist(), abs=1e-5)
    assert res.metrics[0].value == pytest.approx(float(np.mean(scale * cos)), abs=1e-5)
    assert res.info["logit_scale_exp"] == pytest.approx(scale) and scale != 1.0
    with pytest.raises(Exception, match="pick_score"):
        run_suites(None, ["pick_score"], model=sd, samples=6, steps=2, device="cpu")
