"""VCDM evaluation (issue 13, step 3): the oracle arm (images from the conditioning CLIP's
embeddings of held-out real scenes, with the sampled arm's noise), FID's real images drawn from
every held-out scene for a chain, the consistency suite's agreement counting, and the manifest's
eval settings (oracle, kid_subsets, reference_resamples, reference_scenes) reaching the suites."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.detector import Detection
from orchestrator.data.shapes import make_example
from orchestrator.eval.consistency import ASPECTS, agree, group_agreement
from orchestrator.eval.suites import build_context, run_in_context
from orchestrator.manifest import ManifestError, expand
from orchestrator.manifest.schema import ModelSpec
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, load_clip_dir, preprocessor_config
from orchestrator.models.common.serialize import module_hash
from orchestrator.models.loading import load_model
from orchestrator.models.registry import load_checked_manifest
from orchestrator.models.vcdm import variant as vcdm
from orchestrator.models.vcdm.embeddings import image_embeddings
from orchestrator.models.vcdm.model import save
from orchestrator.storage import open_store

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _clip(tmp: Path, seed: int) -> Path:
    model, tok = build_tiny_clip(seed=seed, image_size=32)
    return ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)),
                       f"seed-{seed}").save(tmp / f"c{seed}")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """(the CLIP the model is conditioned on, a second one to judge with)."""
    tmp = tmp_path_factory.mktemp("clips")
    return _clip(tmp, 0), _clip(tmp, 1)


def _chain(tmp: Path, conditioned_on: Path | None) -> Path:
    """An untrained chain whose projection has weights (so embeddings change its images), recorded
    as conditioned on `conditioned_on` (None: the unconditional arm)."""
    m = vcdm.build_tiny(0, 32, embed_dim=64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.image.embed_proj.weight.copy_(torch.randn(m.image.embed_proj.weight.shape, generator=g) * 0.5)
    m.clip_sha256 = module_hash(load_clip_dir(conditioned_on).model) if conditioned_on else None
    return save(m, tmp / ("chain" if conditioned_on else "uncond"))


def _ctx(model_dir: Path, tmp: Path, **options):
    opts = dict(samples=6, steps=2, batch_size=6, fid_reference_n=8, reference_resamples=2, kid_subsets=5,
                device="cpu")
    return build_context(str(model_dir), store=open_store(f"file://{tmp}/blobs"), **{**opts, **options})


# ---- the oracle arm --------------------------------------------------------------------------
def test_the_oracle_arm_generates_from_true_embeddings_of_scenes_after_the_reference(tmp_path, clips):
    cond, judge = clips
    model_dir = _chain(tmp_path, cond)
    ctx = _ctx(model_dir, tmp_path, clip=str(judge), oracle_clip=str(cond), reference_scenes="all")
    (result,) = run_in_context(ctx, ["fid_clip"])
    values = {m.name: m for m in result.metrics}
    assert {"fid_clip", "kid", "oracle", "oracle_kid"} <= set(values)
    assert values["oracle"].n == 6 and values["oracle"].n_reference == 8 and values["oracle"].std is not None
    assert values["oracle"].value != values["fid_clip"].value
    assert result.info["oracle"]["real_scenes"] == [8, 14]

    # What the oracle arm is, recomputed by hand: the conditioning CLIP's embeddings of held-out
    # scenes 8..13 (every scene, as reference_scenes says), the sampled arm's noise (seed 1234).
    real = np.stack([np.asarray(make_example(1000, i, 32).image()) for i in range(8, 14)])
    emb = image_embeddings(load_clip_dir(cond), torch.from_numpy(real).permute(0, 3, 1, 2))
    m = load_model(str(model_dir)).model
    expected = vcdm.generate(m, [""] * 6, steps=2, batch_size=6, resolution=32, embeddings=emb,
                             generator=torch.Generator().manual_seed(1234))
    assert torch.equal(ctx.oracle_generated(), expected)
    assert not torch.equal(ctx.generated(), expected)  # the sampled arm: the prior's embeddings


def test_the_oracle_arm_refuses_another_clip_and_is_absent_for_the_unconditional_arm(tmp_path, clips):
    cond, judge = clips
    ctx = _ctx(_chain(tmp_path, cond), tmp_path, clip=str(cond), oracle_clip=str(judge))
    with pytest.raises(ValueError, match="not the CLIP the model is conditioned on"):
        ctx.oracle_generated()
    ctx = _ctx(_chain(tmp_path, None), tmp_path, clip=str(judge), oracle_clip=str(cond))
    (result,) = run_in_context(ctx, ["fid_clip"])
    assert not [m for m in result.metrics if m.name.startswith("oracle_")]
    assert result.info["oracle"].startswith("not applicable")


def test_reference_scenes_all_draws_every_held_out_scene_prompted_only_those_with_a_relation(tmp_path, clips):
    all_scenes = _ctx(_chain(tmp_path, None), tmp_path, reference_scenes="all")
    prompted = _ctx(_chain(tmp_path, None), tmp_path)
    counts = [len(make_example(1000, i, 32).scene.objects) for i in range(8)]
    assert min(counts) == 1  # one-object scenes state no relation: only "all" includes them
    expect_all = np.stack([np.asarray(make_example(1000, i, 32).image()) for i in range(8)])
    assert torch.equal(all_scenes.reference_images(), torch.from_numpy(expect_all).permute(0, 3, 1, 2))
    expect_prompted = np.stack([np.asarray(h.example.image()) for h in prompted.heldout(8)])
    assert torch.equal(prompted.reference_images(), torch.from_numpy(expect_prompted).permute(0, 3, 1, 2))
    assert not torch.equal(all_scenes.reference_images(), prompted.reference_images())
    assert all_scenes.reference_key("fid_clip", "w", 8) != prompted.reference_key("fid_clip", "w", 8)


# ---- consistency -----------------------------------------------------------------------------
def _det(shape: str, colour: str) -> Detection:
    return Detection(shape, colour, (0, 0, 4, 4), (2.0, 2.0), 16, 1.0)


def test_agreement_counts_equal_object_multisets_and_never_empty_pairs():
    red_c, blue_s = _det("circle", "red"), _det("square", "blue")
    key = ASPECTS["consistency"]
    assert agree([red_c, blue_s], [blue_s, red_c], key)
    assert not agree([red_c, blue_s], [red_c, red_c], key)
    assert not agree([], [], key)
    assert agree([red_c], [_det("triangle", "red")], ASPECTS["colour_consistency"])
    assert not agree([red_c], [_det("triangle", "red")], key)
    # embedding 0 draws red circles (3 images: pairs (0,1), (0,2), (1,2), one image lost: 1 of 3
    # pairs agree); embedding 1 always a blue square (3 of 3); across: image i of 0 vs i of 1.
    groups = [[[red_c], [red_c], []], [[blue_s], [blue_s], [blue_s]]]
    within, across = group_agreement(groups, key)
    assert within == [pytest.approx(1 / 3), 1.0] and across == [0.0, 0.0]
    within, across = group_agreement([[[red_c], [red_c]], [[red_c], [red_c]]], key)
    assert within == [1.0, 1.0] and across == [1.0, 1.0]  # one image for every embedding: no gain


def test_the_consistency_suite_reports_per_embedding_agreement_with_chance_beside_it(tmp_path, clips):
    cond, _ = clips
    ctx = _ctx(_chain(tmp_path, cond), tmp_path, consistency_embeddings=3, consistency_images=2)
    (result,) = run_in_context(ctx, ["consistency"])
    names = {m.name: m for m in result.metrics}
    for aspect in ASPECTS:
        assert {aspect, f"chance_{aspect}", f"{aspect}_gain"} <= set(names)
        assert names[aspect].n == 3 and 0 <= names[aspect].value <= 1
        assert names[f"{aspect}_gain"].value == pytest.approx(names[aspect].value - names[f"chance_{aspect}"].value)
    assert names["detected"].n == 6 and "conditioned" not in result.info
    # the unconditional arm is measured alike, and says what its number means
    (result,) = run_in_context(_ctx(_chain(tmp_path, None), tmp_path, consistency_embeddings=3,
                                    consistency_images=2), ["consistency"])
    assert result.info["conditioned"].startswith("no: the unconditional arm")


# ---- the manifest ----------------------------------------------------------------------------
MANIFEST = """\
name: v
model:
  variant: {variant}
  base: tiny-random
{section}data: {{train: {{kind: shapes, n: 8}}}}
{sweep}eval:
  suites: [{suites}]
  clip: {judge}
  oracle: true
  kid_subsets: 7
  reference_resamples: 0
  reference_scenes: all
"""


def test_eval_settings_reach_the_suites_and_the_oracle_is_checked_with_its_line(tmp_path, clips):
    from orchestrator.actors.evaluator import eval_options

    cond, judge = clips
    p = tmp_path / "v.yaml"
    p.write_text(MANIFEST.format(variant="vcdm", section=f"  vcdm: {{clip: {cond}}}\n", judge=judge,
                                 suites="fid_clip, consistency",
                                 sweep="sweep: {grid: {model.vcdm.conditioning: [embedding, none]}}\n"))
    loaded = load_checked_manifest(p)
    trials = expand(loaded)
    opts = [eval_options(t.manifest, tmp_path) for t in trials]
    assert [o.oracle_clip for o in opts] == [str(cond)] * 2  # the none arm reports "not applicable"
    assert (opts[0].kid_subsets, opts[0].reference_resamples, opts[0].reference_scenes) == (7, 0, "all")

    for variant, section, suites, message in (
            ("sd", "", "spatial", "variant sd has no oracle arm"),
            ("vcdm", f"  vcdm: {{clip: {cond}}}\n", "consistency", "scored by the fid and fid_clip suites")):
        p.write_text(MANIFEST.format(variant=variant, section=section, judge=judge, suites=suites, sweep=""))
        with pytest.raises(ManifestError) as err:
            load_checked_manifest(p)
        (issue,) = [i for i in err.value.issues if i.path == "eval.oracle"]
        assert issue.line == 9 + section.count("\n") and message in issue.message, issue


def test_the_unconditional_arm_carries_no_clip_even_when_the_sweep_names_one(clips):
    cond, _ = clips
    spec = ModelSpec.model_validate({"variant": "vcdm", "base": "tiny-random",
                                     "vcdm": {"clip": str(cond), "conditioning": "none"}})
    m = vcdm.load_base(spec, None, None)
    assert m.clip is None and m.conditioning_clip_sha256 is None
    spec = ModelSpec.model_validate({"variant": "vcdm", "base": "tiny-random", "vcdm": {"clip": str(cond)}})
    assert vcdm.load_base(spec, None, None).conditioning_clip_sha256 == module_hash(load_clip_dir(cond).model)


def test_consistency_needs_a_chain(tmp_path):
    from orchestrator.eval.suites import MetricUnavailable
    from orchestrator.models.sd.pipeline import build_tiny, save_components

    save_components(build_tiny(0, 32, ["a red circle"]), tmp_path / "sd")
    with pytest.raises(MetricUnavailable, match="samples no conditioning of its own"):
        run_in_context(build_context(str(tmp_path / "sd"), samples=2, device="cpu"), ["consistency"])
