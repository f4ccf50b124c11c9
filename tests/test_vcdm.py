"""VCDM (issue 13, first step): the prior's EDM preconditioning against hand-computed numbers and
its Heun sampler on a known denoiser; the zero-initialised embedding projection; the chained
generate (VCDM, oracle and unconditional arms) reproduced bit for bit after export/load; both
stages trained by the generic Trainer with a checkpoint and exact resume; freezable stages; the
CLIP-embedding cache; the manifest's `model.vcdm` section with file/field/line errors."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest import ManifestError, expand, load_manifest
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config
from orchestrator.models.common.objective import Batch
from orchestrator.models.loading import load_model
from orchestrator.models.registry import get_variant
from orchestrator.models.vcdm import variant as vcdm
from orchestrator.models.vcdm.edm import EDMConfig, coefficients, denoise, edm_loss, heun_sample, karras_sigmas
from orchestrator.models.vcdm.embeddings import EmbeddingCache
from orchestrator.models.vcdm.model import load, save
from orchestrator.models.vcdm.options import VCDMOptions
from orchestrator.storage import open_store
from orchestrator.storage.location import get_dir
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data():
    return shapes_data(n=8, seed=0, size=32, caption="generic")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    model, tok = build_tiny_clip(seed=0, image_size=32)
    enc = ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny-shapes-clip")
    return enc.save(tmp_path_factory.mktemp("clip") / "clip")


def _model_spec(clip_dir: Path | None, **options) -> ModelSpec:
    vcdm_opts = {"clip": str(clip_dir), **options} if clip_dir else options
    return ModelSpec.model_validate({"variant": "vcdm", "base": "tiny-random", "vcdm": vcdm_opts})


def _conditioning_matters(m):
    """The projection starts at zero; give it weights, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.image.embed_proj.weight.copy_(torch.randn(m.image.embed_proj.weight.shape, generator=g) * 0.5)
    return m


# ---- the prior: EDM ----------------------------------------------------------------------------
def test_edm_preconditioning_matches_hand_computed_coefficients():
    c_skip, c_out, c_in, c_noise = coefficients(torch.tensor([0.5, 2.0], dtype=torch.float64), 0.5)
    # σ = 0.5: σ²+σ_d² = 0.5; σ = 2: 4.25
    assert torch.allclose(c_skip, torch.tensor([0.25 / 0.5, 0.25 / 4.25], dtype=torch.float64))
    assert torch.allclose(c_out, torch.tensor([0.25 / math.sqrt(0.5), 1.0 / math.sqrt(4.25)], dtype=torch.float64))
    assert torch.allclose(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(4.25)], dtype=torch.float64))
    assert torch.allclose(c_noise, torch.tensor([math.log(0.5) / 4, math.log(2.0) / 4], dtype=torch.float64))

    cfg = EDMConfig()
    seen = {}

    def net(x_in, c):
        seen["x_in"], seen["c"] = x_in, c
        return torch.full_like(x_in, 3.0)

    x, sigma = torch.tensor([[1.0, -2.0]]), torch.tensor([2.0])
    d = denoise(net, x, sigma, cfg)
    assert torch.allclose(seen["x_in"], x / math.sqrt(4.25)) and \
        torch.allclose(seen["c"], torch.tensor([math.log(2) / 4]))
    assert torch.allclose(d, (0.25 / 4.25) * x + (1 / math.sqrt(4.25)) * 3.0)

    # loss: ln σ = P_mean + P_std·n; weight (σ²+σ_d²)/(σσ_d)²; squared error averaged over dims
    y, n, noise = torch.tensor([[0.3, -0.1]]), torch.tensor([0.5]), torch.tensor([[1.0, 2.0]])
    s = math.exp(-1.2 + 1.2 * 0.5)
    expect_d = (0.25 / (s * s + 0.25)) * (y + s * noise) + (s * 0.5 / math.sqrt(s * s + 0.25)) * 3.0
    expect = (s * s + 0.25) / (s * 0.5) ** 2 * (expect_d - y).pow(2).mean()
    assert torch.allclose(edm_loss(lambda x_in, c: torch.full_like(x_in, 3.0), y, n, noise, cfg), expect.view(1))

    sig = karras_sigmas(5, cfg)
    assert sig[0] == pytest.approx(80.0) and sig[-2] == pytest.approx(0.002) and sig[-1] == 0
    assert bool((sig[:-1].diff() < 0).all())


def test_heun_sampler_lands_on_the_point_an_ideal_denoiser_knows():
    """Data that is one point y0: the ideal D(x; σ) = y0, so the probability-flow ODE is a straight
    line to y0 and the sampler must end there."""
    cfg, y0 = EDMConfig(), torch.tensor([0.7, -0.4, 0.1])

    def ideal(x_in, c_noise):  # F such that c_skip·x + c_out·F = y0
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = coefficients(sigma, cfg.sigma_data)
        x = x_in / c_in[:, None]
        return (y0 - c_skip[:, None] * x) / c_out[:, None]

    out = heun_sample(ideal, (4, 3), 6, cfg, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, y0.expand(4, 3), atol=1e-4)


# ---- the image model ---------------------------------------------------------------------------
def test_zero_initialised_projection_makes_the_conditioned_unet_the_unconditional_one():
    m = vcdm.build_tiny(0, 32, embed_dim=64)
    g = torch.Generator().manual_seed(0)
    x, t, e = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 700]), torch.randn(2, 64, generator=g) * 5
    with torch.no_grad():
        uncond = m.image(x, t, None)
        assert torch.equal(m.image(x, t, e), uncond)
        assert torch.equal(m.image.unet(x, t, class_labels=torch.zeros(2, 128)).sample, uncond)
        _conditioning_matters(m)
        assert not torch.equal(m.image(x, t, e), uncond)
        assert torch.equal(m.image(x, t, e, torch.tensor([False, False])), uncond)  # dropped: no embedding


# ---- export / load, the three arms -------------------------------------------------------------
def test_export_load_reproduces_generate_bit_for_bit(tmp_path):
    m = _conditioning_matters(vcdm.build_tiny(3, 32, embed_dim=16))
    save(m, tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["_orch_variant"] == "vcdm" and index["_class_name"] == "VCDMPipeline"
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.variant.INFO.name == "vcdm" and loaded.kind == "chain" and loaded.resolution == 32

    def arms(model):
        run = lambda **kw: vcdm.generate(model, ["a", "b"], steps=3, prior_steps=3,  # noqa: E731
                                         generator=torch.Generator().manual_seed(7), **kw)
        oracle = torch.linspace(-1, 1, 32).view(2, 16)
        return run(), run(embeddings=oracle), run(conditioning="none")

    for module in m.modules().values():
        module.eval()  # as load_model leaves a model (in eval mode torch's transformer takes its fused path)
    before, after = arms(m), arms(loaded.model)
    for a, b in zip(before, after):
        assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b)
    assert not torch.equal(before[0], before[1]) and not torch.equal(before[0], before[2])
    with pytest.raises(ValueError, match=r"embeddings must be \[2, 16\]"):
        vcdm.generate(m, ["a", "b"], steps=2, embeddings=torch.zeros(3, 16))


# ---- training: both stages, freezable, exact resume, the cache -----------------------------------
def _trainer(store, data, prefix, spec_model):
    m = vcdm.load_base(spec_model, store, None)
    spec = TrainSpec(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=2, ema_decay=0.9, seed=3)
    return Trainer(get_variant("vcdm"), m, data, spec, store, prefix, options=spec_model.options,
                   config=LoopConfig(device="cpu"))


def test_both_stages_train_through_the_generic_trainer_and_resume_exactly(tmp_path, data, clip_dir):
    store = open_store(f"file://{tmp_path}/blobs")
    spec_model = _model_spec(clip_dir, embedding_dropout=0.25)
    data.random_flip = True
    try:
        full = _trainer(store, data, "full", spec_model)
        assert set(full.objective.modules) == {"prior", "unet"}
        first = full.run()
        split = _trainer(store, data, "split", spec_model)
        assert split.cache_hits == {"embeddings": True, "flipped": True}  # the first trainer's entries
        split.run(max_steps=2)
        result = _trainer(store, data, "split", spec_model).run()
    finally:
        data.random_flip = False
    assert first.cache_hits == {"embeddings": False, "flipped": False}
    assert result.resumed_from == 2 and result.steps_run == 2 and result.final_loss == first.final_loss
    get_dir(store, "full/model", tmp_path / "a")
    get_dir(store, "split/model", tmp_path / "b")
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    for x, y in ((a.prior, b.prior), (a.image, b.image)):
        sa, sb = x.state_dict(), y.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)  # exported EMA weights, bitwise
    assert a.image.embed_proj.weight.abs().sum() > 0  # the conditioning trained away from zero


@pytest.mark.parametrize("options, trained", [({"train": "prior"}, {"prior"}), ({"train": "unet"}, {"unet"}),
                                              ({"conditioning": "none"}, {"unet"})])
def test_each_stage_freezes(data, clip_dir, options, trained):
    spec_model = _model_spec(None if options.get("conditioning") == "none" else clip_dir, **options)
    m = vcdm.load_base(spec_model, None, None)
    obj = vcdm.objective(m, data, TrainSpec(steps=1, batch_size=4), spec_model.options, store=None,
                         device=torch.device("cpu"))
    assert set(obj.modules) == trained
    obj.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0))).backward()
    for name, module in m.modules().items():
        grads = {n: p.grad for n, p in module.named_parameters()}
        if name not in trained:
            assert all(g is None for g in grads.values()), name
        elif options.get("conditioning") == "none":  # the baseline leaves the projection at zero
            assert grads["embed_proj.weight"] is None and grads["unet.conv_out.weight"] is not None
        else:
            assert all(g is not None for g in grads.values()), name


def test_clip_embeddings_are_cached_by_content_and_not_recomputed(tmp_path, data, clip_dir):
    from orchestrator.models.clip import load_clip_dir

    store = open_store(f"file://{tmp_path}/blobs")
    clip = load_clip_dir(clip_dir)
    calls = []
    forward = clip.model.get_image_features
    clip.model.get_image_features = lambda *a, **k: calls.append(1) or forward(*a, **k)
    cache = EmbeddingCache(store)
    first, hit = cache.load_or_compute(clip, data)
    assert not hit and calls and first.shape == (8, 64) and store.exists(cache.key(clip, data))
    n = len(calls)
    second, hit = cache.load_or_compute(clip, data)
    assert hit and len(calls) == n and torch.equal(first, second)  # the CLIP did not run again
    assert not torch.allclose(first.norm(dim=-1), torch.ones(8))  # unnormalised
    other, _ = build_tiny_clip(seed=1, image_size=32)
    clip.model.load_state_dict(other.state_dict())
    assert cache.key(clip, data) != EmbeddingCache(store).key(load_clip_dir(clip_dir), data)  # other weights


# ---- the manifest ------------------------------------------------------------------------------
MANIFEST = """\
name: v
model:
  variant: vcdm
  base: tiny-random
{section}data: {{train: {{kind: shapes, n: 8}}}}
"""


@pytest.mark.parametrize("section, path, line, message", [
    ("", "model", 2, "variant vcdm needs its section model.vcdm"),
    ("  vcdm: {conditioning: none, train: both}\n", "model.vcdm", 5, "conditioning: none trains the U-Net alone"),
    ("  vcdm: {conditioning: embedding}\n", "model.vcdm", 5, "conditioning: embedding needs clip"),
    ("  vcdm:\n    clip: ./nowhere\n", "model.vcdm.clip", 6, "CLIP directory not found"),
    ("  vcdm: {conditioning: none, trian: unet}\n", "model.vcdm.trian", 5, ""),
])
def test_manifest_options_are_checked_with_file_field_and_line(tmp_path, section, path, line, message):
    p = tmp_path / "v.yaml"
    p.write_text(MANIFEST.format(section=section))
    with pytest.raises(ManifestError) as err:
        load_manifest(p)
    found = {i.path: i for i in err.value.issues}
    assert path in found, err.value.issues
    assert found[path].line == line and message in found[path].message and found[path].file.endswith("v.yaml")


def test_the_unconditional_baseline_is_one_switch_away(tmp_path, clip_dir):
    p = tmp_path / "v.yaml"
    p.write_text(MANIFEST.format(section=f"  vcdm: {{clip: {clip_dir}}}\n"))
    options = load_manifest(p).manifest.model.options
    assert isinstance(options, VCDMOptions) and options.stages == ("prior", "unet")
    p.write_text(MANIFEST.format(section=f"  vcdm: {{clip: {clip_dir}, conditioning: none}}\n"))
    assert load_manifest(p).manifest.model.options.stages == ("unet",)
    # ... or one sweep entry: the arms' trials from one manifest
    p.write_text(MANIFEST.format(section=f"  vcdm: {{clip: {clip_dir}}}\n")
                 + "sweep: {grid: {model.vcdm.conditioning: [embedding, none]}}\n")
    trials = expand(load_manifest(p))
    assert [t.manifest.model.options.stages for t in trials] == [("prior", "unet"), ("unet",)]
    assert len({t.id for t in trials}) == 2


def test_a_chain_generates_for_the_evaluator_and_orch_sample(tmp_path, clip_dir):
    """The evaluator's generation (and `orch sample`) take a chain as they take a generator: wiring
    only, on 4 images of an untrained model (no measurement)."""
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.clip import load_clip_dir

    m = vcdm.build_tiny(0, 32, embed_dim=64)
    save(m, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.generates
    ctx = build_context(None, model=loaded, clip_encoder=load_clip_dir(clip_dir), samples=4, steps=2, device="cpu",
                        store=open_store(f"file://{tmp_path}/blobs"))
    (result,) = run_in_context(ctx, ["fid_clip"])
    assert result.suite == "fid_clip" and ctx.generated().shape == (4, 3, 32, 32)
    from typer.testing import CliRunner

    from orchestrator.cli import app

    run = CliRunner().invoke(app, ["sample", "--model", str(tmp_path / "m"), "--prompt", "a", "--prompt", "b",
                                   "--steps", "2", "--out", str(tmp_path / "grid.png")])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_no_tiny_base_yet_says_so():
    spec = ModelSpec.model_validate({"variant": "vcdm", "base": None, "vcdm": {"conditioning": "none"}})
    with pytest.raises(FileNotFoundError, match="no tiny shapes base yet"):
        vcdm.load_base(spec, None, None)


def test_fid_clip_with_the_conditioning_clip_is_refused_when_the_manifest_loads(tmp_path, clip_dir):
    """The path check before any training (the suite compares the weights too, when it runs)."""
    from orchestrator.models.registry import load_checked_manifest

    model, tok = build_tiny_clip(seed=1, image_size=32)
    other = ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "seed-1").save(tmp_path / "c1")
    (tmp_path / "link").symlink_to(clip_dir)
    p = tmp_path / "v.yaml"
    for eval_clip, refused in ((clip_dir, True), ("./link", True), (other, False)):
        p.write_text(MANIFEST.format(section=f"  vcdm: {{clip: {clip_dir}}}\n")
                     + f"eval: {{suites: [fid_clip], clip: {eval_clip}}}\n")
        if not refused:
            assert load_checked_manifest(p).manifest.eval.clip == str(other)
            continue
        with pytest.raises(ManifestError) as err:
            load_checked_manifest(p)
        (issue,) = [i for i in err.value.issues if i.path == "eval.clip"]
        assert issue.line == 7 and "second CLIP" in issue.message
