"""Suites end to end on a tiny random model: run_suites, checkpoint URIs, prerequisites, the journal.

Random weights everywhere: these check the plumbing (counts, intervals, caching, errors), never
claim a metric value worth reporting.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.eval.record import record_results
from orchestrator.eval.suites import MetricUnavailable, flatten_metrics, run_suites
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip
from orchestrator.models.loading import LoadedModel, load_model
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.storage import LocalBlobStore

FAST = dict(samples=4, steps=2, batch_size=4, r_precision_pool=110, r_precision_chunks=2, winoground_scenes=30,
            device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread spin-waits on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    build_tiny(seed=0).save(root / "model")
    model, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), root / "clip")
    return root


class _StandInInception(nn.Module):
    """Features from a fixed random projection: the FID suite's plumbing without the 24M-parameter
    network (tested on its own in test_inception.py) nor a 2048-d eigen-solve (test_frechet.py)."""
    weights_sha256 = None
    feature_dim = 64

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, self.feature_dim)

    def forward(self, images):
        x = torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)
        return torch.relu(self.proj(x))


def test_all_suites_on_a_checkpoint_directory(assets, tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    names = ["spatial", "clip_r_precision", "winoground", "fid", "fid_clip"]
    results = run_suites(str(assets / "model"), names, store=store, clip=str(assets / "clip"),
                         inception_net=_StandInInception(), best_of=2, **FAST)
    by = {r.suite: r for r in results}
    assert list(by) == names
    acc = {m.name: m for m in by["spatial"].metrics}
    assert acc["accuracy"].n == 4 and 0 <= acc["accuracy"].ci_low <= acc["accuracy"].value <= acc["accuracy"].ci_high
    (rp,) = by["clip_r_precision"].metrics
    assert rp.n == 4 and rp.std is not None and by["clip_r_precision"].info["candidates"] == 100
    rp_info = by["clip_r_precision"].info
    assert rp_info["chunking"].startswith("shuffled") and "miss" in rp_info["ties"]  # the conventions, said
    assert by["spatial"].info["best_of"] == 2 and sum(by["spatial"].info["best_of_picks"]) == 4
    assert by["spatial"].info["rule"] == "geneval"  # eval.spatial_rule's default, recorded
    wino = {m.name for m in by["winoground"].metrics}
    assert {"text", "image", "group"} <= wino and any("/" in m for m in wino)  # per collapsed_tag
    fid_metrics = {m.name: m for m in by["fid"].metrics}  # the names the fid suites report
    assert list(fid_metrics) == ["fid", "reference_resample_min", "reference_resample_max", "kid"]
    fid, kid = fid_metrics["fid"], fid_metrics["kid"]
    assert fid.n == 4 and fid.n_reference == 4 and fid.ci_low is None and np.isfinite(fid.value)
    assert all(m.n == 4 and m.n_reference == 4 for m in fid_metrics.values())
    spread = by["fid"].info["reference_resamples"]["values"]
    assert len(spread) == 3 and fid.std == pytest.approx(np.std(spread, ddof=1))
    assert (fid_metrics["reference_resample_min"].value, fid_metrics["reference_resample_max"].value) == \
        (min(spread), max(spread))
    assert np.isfinite(kid.value) and kid.std == 0.0 and by["fid"].info["kid"]["subset_size"] == 4  # n = 4: exact
    assert [m.name for m in by["fid_clip"].metrics] == ["fid_clip", *list(fid_metrics)[1:]]
    assert "RANDOM" in by["fid"].info["weights"]
    assert by["fid_clip"].info["reference_cached"] is False
    assert store.exists(by["fid_clip"].info["reference"])
    # a second run reuses the cached reference statistics and, seeded, reproduces the value
    again = run_suites(str(assets / "model"), "fid_clip", store=store, clip=str(assets / "clip"), best_of=2, **FAST)
    assert again[0].info["reference_cached"] is True
    for a, b in zip(again[0].metrics, by["fid_clip"].metrics):
        assert a.value == pytest.approx(b.value, rel=1e-9, abs=1e-12)
    # per-sample outcomes for paired tests, in sample order: what each rate counts
    rp_bits = rp_info["outcomes"]["r_at_1"]
    assert len(rp_bits) == 4 and rp_bits.count("1") == rp_info["hits"]
    wino_bits = by["winoground"].info["outcomes"]
    rates = {m.name: m for m in by["winoground"].metrics}
    assert set(wino_bits) == set(rates)  # every rate, per tag too
    assert all(len(wino_bits[k]) == rates[k].n and wino_bits[k].count("1") == round(rates[k].value * rates[k].n)
               for k in rates)
    assert all(a == "1" and b == "1" for k in ("text", "group") for a, b in zip(wino_bits["group"], wino_bits[k])
               if a == "1")  # a group pass is a text (and image) pass
    # the generated features kept (as an artifact, for the paired bootstrap), equal to what FID used
    from orchestrator.eval.fid import features_in, stats_of
    from orchestrator.eval.frechet import distance
    from orchestrator.eval.results import store_artifacts

    keys = store_artifacts(store, "experiments/e/grids/step-1", results)
    kept = features_in(store.get(keys["fid"][by["fid"].info["features"]]))
    assert kept.shape == (4, 64) and "fid_clip" in keys
    ref_x = features_in(store.get(by["fid_clip"].info["reference"]))
    assert ref_x is not None
    fid_clip_kept = features_in(store.get(keys["fid_clip"][by["fid_clip"].info["features"]]))
    assert distance(stats_of(fid_clip_kept), stats_of(ref_x)) == pytest.approx(by["fid_clip"].metrics[0].value)
    flat = flatten_metrics(results)
    assert flat["fid.n"] == 4 and "fid.ci_low" not in flat and "clip_r_precision.r_at_1.std" in flat
    assert flat["fid.n_reference"] == 4 and flat["fid_clip.kid.n_reference"] == 4 and "fid.kid.std" in flat


def test_in_memory_model_and_context_reuse():
    from orchestrator.eval.suites import build_context, run_in_context

    ctx = build_context(None, model=LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory"),
                        **{**FAST, "samples": 3})
    (res,) = run_in_context(ctx, "spatial")
    assert res.metrics[0].n == 3
    images = ctx.generated()  # the images the suite judged, e.g. for a sample grid
    assert images.shape == (3, 3, 32, 32) and ctx.generated() is images


def test_prerequisites_fail_before_any_work(tmp_path):
    with pytest.raises(MetricUnavailable) as err:
        run_suites(str(tmp_path / "no-such-model"), "fid,clip_r_precision,fid_clip", samples=4)
    text = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in text and "clip_r_precision: needs a CLIP" in text
    with pytest.raises(MetricUnavailable, match="FID Inception weights not found"):
        run_suites("x", ["fid"], fid_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(MetricUnavailable, match="needs a checkpoint"):
        run_suites(None, ["spatial"])
    with pytest.raises(MetricUnavailable, match="drawbench: needs a DrawBench CSV"):
        run_suites("x", ["drawbench"])
    with pytest.raises(MetricUnavailable, match="matching: needs a benchmark to read"):
        run_suites("x", ["matching"])
    with pytest.raises(ValueError, match="unknown suite"):
        run_suites("x", ["fidd"])
    with pytest.raises(TypeError, match="unknown evaluation options"):
        run_suites("x", ["spatial"], sample=3)


def test_training_checkpoint_uri(tmp_path):
    """A trainer's checkpoint loads with no manifest (it records its base), EMA applied as the
    export does; a base given explicitly replaces the recorded one."""
    from orchestrator.data.image_text import shapes_data
    from orchestrator.training.control import LoopConfig
    from orchestrator.training.loop import Trainer

    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    spec = ModelSpec(variant="sd", base="tiny-random")
    data = shapes_data(n=4, seed=0, size=32)
    for name, ema in (("plain", None), ("ema", 0.5)):
        trainer = Trainer(get_variant("sd"), build_tiny(seed=0), data, TrainSpec(steps=2, batch_size=2, lr=1e-2,
                          checkpoint_every=2, ema_decay=ema), store, f"trials/{name}",
                          origin={"model": spec.model_dump(mode="json"), "base_dir": None},
                          config=LoopConfig(export_model=False))
        trainer.run()
        loaded = load_model(f"trials/{name}/checkpoints/step-00000002.pt", store=store)
        assert loaded.step == 2 and loaded.variant.INFO.name == "sd"
        want = trainer.ema.shadow if ema else list(trainer.trained["unet"].parameters())
        got = list(loaded.model.unet.parameters())
        assert all(torch.equal(a.float(), b.float()) for a, b in zip(got, want))
        if ema:  # the averaged weights are not the raw ones: the loader really applied them
            assert not all(torch.equal(a, b) for a, b in zip(got, trainer.trained["unet"].parameters()))
    with pytest.raises(FileNotFoundError, match="no tiny base"):
        load_model("trials/plain/checkpoints/step-00000002.pt", store=store, base=None,
                   spec=ModelSpec(variant="sd"))
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model("trials/plain/model", store=store)


def test_record_results_in_the_journal(assets, tmp_path):
    from orchestrator.journal import Event, open_journal

    results = run_suites(str(assets / "model"), ["winoground"], clip=str(assets / "clip"), **FAST)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.register_experiment("exp", "eval-test", "name: eval-test\n")
    journal.register_trial("exp", "t1", {})
    for kind in ("queued", "running"):
        journal.append(Event.for_trial("exp", "t1", kind, f"t1/{kind}"))
    how = {"samples": 4}
    assert record_results(journal, "exp", "t1", 200, results, weights="trials/t1/model", options=how) is True
    assert record_results(journal, "exp", "t1", 200, results, weights="trials/t1/model", options=how) is False
    # other options are another evaluation, not a conflict
    assert record_results(journal, "exp", "t1", 200, results, weights="trials/t1/model", options={"samples": 8})
    metrics = journal.trial_state("t1").metrics[200]
    assert metrics["winoground.group.n"] == results[0].metrics[2].n
    assert metrics["winoground.text"] == pytest.approx(results[0].metrics[0].value)
    journal.close()


def test_fid_clip_refuses_the_clip_the_model_is_conditioned_on(tmp_path):
    """A VCDM is conditioned on a CLIP's embeddings; fid_clip with those very weights (another
    object, same seed) is refused before any work, a CLIP of another seed is accepted."""
    from orchestrator.eval.fid import FIDClipSuite
    from orchestrator.eval.suites import build_context
    from orchestrator.models.vcdm.variant import build_tiny as build_vcdm
    from orchestrator.models.vcdm.variant import export, load

    def clip(seed):
        model, tok = build_tiny_clip(seed=seed)
        return ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), f"tiny-seed{seed}")

    m = build_vcdm(seed=0, embed_dim=clip(0).embed_dim)
    m.clip = clip(0)
    vcdm = LoadedModel(get_variant("vcdm"), m, "in-memory")
    with pytest.raises(MetricUnavailable, match="is the CLIP the model is conditioned on.*second CLIP"):
        run_suites(None, "fid_clip", model=vcdm, clip_encoder=clip(0), **FAST)
    assert FIDClipSuite().requirements(build_context(None, model=vcdm, clip_encoder=clip(1), **FAST)) == []
    # an exported directory records the CLIP's hash, so the guard holds without the CLIP attached
    export(m, tmp_path / "vcdm")
    reloaded = LoadedModel(get_variant("vcdm"), load(tmp_path / "vcdm"), "dir")
    assert reloaded.model.clip is None and reloaded.conditioning_clip_sha256 == vcdm.conditioning_clip_sha256
    assert FIDClipSuite().requirements(build_context(None, model=reloaded, clip_encoder=clip(0), **FAST))
    # a variant that declares no conditioning CLIP is never refused
    assert LoadedModel(get_variant("sd"), build_tiny(seed=0), "in-memory").conditioning_clip_sha256 is None


def test_a_statistics_only_reference_gives_the_fid_alone(assets, tmp_path):
    """pytorch-fid's .npz holds mu and sigma only: no features, so no KID and no resampling (said so);
    and the resampling and KID options."""
    from orchestrator.eval.frechet import FeatureStats

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, _StandInInception.feature_dim))
    FeatureStats(x.mean(0), np.cov(x, rowvar=False)).save(tmp_path / "ref.npz")
    (res,) = run_suites(str(assets / "model"), "fid", inception_net=_StandInInception(),
                        fid_reference=str(tmp_path / "ref.npz"), **FAST)
    assert [m.name for m in res.metrics] == ["fid"] and res.metrics[0].n_reference is None
    assert res.info["kid"].startswith("unavailable") and res.info["reference_resamples"].startswith("unavailable")
    (res,) = run_suites(str(assets / "model"), "fid", inception_net=_StandInInception(), reference_resamples=0,
                        kid_subsets=7, fid_reference_n=6, **FAST)
    assert [m.name for m in res.metrics] == ["fid", "kid"] and res.metrics[0].std is None
    assert res.info["kid"]["subsets"] == 7 and res.metrics[1].n_reference == 6  # 4 vs 6 images: subsets of 4
    with pytest.raises(ValueError, match="reference_resamples"):
        run_suites("x", "fid", reference_resamples=-1)
