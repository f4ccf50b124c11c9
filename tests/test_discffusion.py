"""Discffusion's scorer on the tiny SD: the capture leaves the U-Net's computation unchanged, the
score's switches do what they say, candidates batched score as one at a time, the noise is shared,
the adapters start at zero; the matcher variant exports, loads and serves the winoground suite."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.manifest.schema import DiscffusionOptions
from orchestrator.models.discffusion import variant as disc
from orchestrator.models.discffusion.capture import cross_attention_layers, last_of_down_mid_up
from orchestrator.models.discffusion.score import DiffusionScorer, timesteps
from orchestrator.models.loading import LoadedModel, load_model
from orchestrator.models.sd import build_tiny

CAPTIONS = ["a red circle to the left of a blue square", "a blue square to the left of a red circle",
            "a green triangle", "two yellow circles"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def _sd(seed: int = 0):
    c = build_tiny(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised output layers would make the text irrelevant
        for p in c.unet.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return c


def test_the_capture_leaves_the_unet_output_unchanged():
    c = _sd()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    text = torch.randn(2, 32, 32)
    with torch.no_grad():
        before = c.unet(x, t, encoder_hidden_states=text).sample
        DiffusionScorer(c, DiscffusionOptions())
        after = c.unet(x, t, encoder_hidden_states=text).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_candidates_batched_score_as_one_at_a_time_with_shared_noise(image):
    c = _sd()
    batched = DiffusionScorer(c, DiscffusionOptions(batch_size=32)).score_candidates(image, CAPTIONS)
    single = DiffusionScorer(c, DiscffusionOptions(batch_size=1)).score_candidates(image, CAPTIONS)
    assert torch.allclose(batched, single, atol=1e-5)
    assert len(set(batched.tolist())) == len(CAPTIONS)  # the text decides
    again = DiffusionScorer(c, DiscffusionOptions()).score_candidates(image, CAPTIONS)
    assert torch.equal(again, batched)
    other = DiffusionScorer(c, DiscffusionOptions(seed=1)).score_candidates(image, CAPTIONS)
    assert not torch.equal(other, batched)


def test_pooling_switches(image):
    c = _sd()
    score = lambda **kw: DiffusionScorer(c, DiscffusionOptions(**kw)).score_candidates(image, CAPTIONS)  # noqa: E731
    lse, row, col, cos = (score(pooling=p) for p in ("lse", "max_row", "max_col", "cosine"))
    assert all(torch.isfinite(s).all() for s in (lse, row, col, cos))
    assert len({tuple(s.tolist()) for s in (lse, row, col, cos)}) == 4
    # (1/λ) log Σ exp(λ a) → max a as λ grows, and ≥ max a always
    sharp = score(pooling="lse", lam=100.0, attention="logits")
    row_logits = score(pooling="max_row", attention="logits")
    assert torch.all(sharp >= row_logits - 1e-6) and torch.allclose(sharp, row_logits, atol=0.05)
    assert not torch.equal(score(tokens="all"), lse)
    assert not torch.equal(score(layers="last_down_mid_up"), lse)
    batch = score(reduce="batch")
    assert torch.allclose(batch, batch[0].expand_as(batch))  # one number per pass: the code's quirk
    assert not torch.equal(score(noise_error=1.0), lse)


def test_layer_sets_and_timesteps():
    c = build_tiny(seed=0)
    names = cross_attention_layers(c.unet)
    assert len(names) == 4 and last_of_down_mid_up(names) == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2", "mid_block.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2"]
    assert timesteps(DiscffusionOptions()) == [200, 400, 600, 800]
    assert timesteps(DiscffusionOptions(timestep_count=40))[:3] == [989, 964, 939]  # 999 − i, i = 10, 35, 60


def test_baseline_scorers_prefer_lower_noise_error(image):
    c = _sd()
    dc = DiffusionScorer(c, method="diffusion_classifier").score_candidates(image, CAPTIONS)
    itm = DiffusionScorer(copy.deepcopy(c), method="diffusion_itm").score_candidates(image, CAPTIONS)
    assert torch.all(dc < 0) and len(set(dc.tolist())) == len(CAPTIONS)
    assert torch.allclose(itm - itm.mean(), dc - dc.mean(), atol=1e-5)  # minus one shared ε̂_∅ error
    with pytest.raises(ValueError, match="unknown scoring method"):
        DiffusionScorer(c, method="nope")


def test_adapters_start_at_zero_and_change_the_score(image):
    m = disc._build(_sd(), DiscffusionOptions())
    zero = disc.score(m, CAPTIONS, [image] * 4)
    plain = DiffusionScorer(_sd(), DiscffusionOptions()).score_pairs(CAPTIONS, [image] * 4)
    assert np.allclose(zero, plain, atol=1e-6)  # same noise and weights: zero adapters = zero-shot
    with torch.no_grad():
        for a in m.adapters.values():
            a.p_k.normal_(0, 0.5)
    assert not np.allclose(disc.score(m, CAPTIONS, [image] * 4), zero)


def test_export_load_and_the_winoground_suite(tmp_path):
    from orchestrator.eval.context import EvalOptions
    from orchestrator.eval.suites import build_context, run_in_context

    m = disc._build(_sd(), DiscffusionOptions(noise_levels=[0.5], pooling="max_row"))
    with torch.no_grad():
        next(iter(m.adapters.values())).p_v.fill_(0.01)
    disc.export(m, tmp_path / "d")
    loaded = load_model(str(tmp_path / "d"))
    assert loaded.kind == "matcher" and loaded.variant.INFO.name == "discffusion"
    assert loaded.model.options.pooling == "max_row"
    assert all(torch.equal(a, b) for a, b in zip(m.adapters.state_dict().values(),
                                                 loaded.model.adapters.state_dict().values()))
    ctx = build_context(None, options=EvalOptions(winoground_scenes=20, device="cpu"), model=loaded)
    [result] = run_in_context(ctx, ["winoground"])
    by_name = {mv.name: mv for mv in result.metrics}
    assert by_name["text"].n == by_name["group"].n > 0 and 0 <= by_name["group"].value <= 1
    assert "discffusion" in str(result.info)  # the matcher scored, not a CLIP
