"""Discffusion's scorer on the tiny SD: the capture leaves the U-Net's computation unchanged, the
score's switches do what they say, candidates batched score as one at a time, the noise is shared,
the adapters start at zero; the matcher variant exports, loads and serves the winoground suite."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.models.discffusion import variant as disc
from orchestrator.models.discffusion.capture import cross_attention_layers, last_of_down_mid_up
from orchestrator.models.discffusion.options import DiscffusionOptions
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
    first = DiffusionScorer(c, DiscffusionOptions(pooling="max_row"))
    DiffusionScorer(c, DiscffusionOptions())  # a second scorer of the same U-Net installs its own processors
    assert torch.equal(first.score_candidates(image, CAPTIONS),
                       DiffusionScorer(c, DiscffusionOptions(pooling="max_row")).score_candidates(image, CAPTIONS))
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


MANIFEST = """\
name: disc
model: {variant: discffusion, base: tiny-random, resolution: 32, discffusion: {noise_levels: [0.3, 0.7], margin: 0.1}}
data: {train: {kind: shapes-winoground, n: 60, seed: 3}}
train: {steps: 4, batch_size: 2, lr: 1.0e-2, checkpoint_every: 2, seed: 0, ema_decay: 0.9}
storage: {blobs: ./blobs, journal: sqlite:///./journal.db}
"""


def test_a_trial_trains_the_adapters_with_the_margin_loss_and_resumes_exactly(tmp_path):
    from orchestrator.models.common.serialize import from_bytes
    from orchestrator.storage import open_store
    from orchestrator.training import LoopConfig, train_trial

    for name in ("full", "split"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.yaml").write_text(MANIFEST)
    one_thread = LoopConfig(num_threads=1)
    full = train_trial(tmp_path / "full" / "m.yaml", "0", config=one_thread)
    train_trial(tmp_path / "split" / "m.yaml", "0", max_steps=2, config=one_thread)
    split = train_trial(tmp_path / "split" / "m.yaml", "0", config=one_thread)
    assert full.finished and split.resumed_from == 2 and split.final_loss == full.final_loss
    states = [from_bytes(open_store(str(tmp_path / d / "blobs")).get(r.checkpoint)) for d, r in
              (("full", full), ("split", split))]
    assert list(states[0]["modules"]) == ["adapters"]  # only the adapters train
    a, b = (s["modules"]["adapters"] for s in states)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for v in a.values())  # they moved from zero
    # the checkpoint scores through the one loader, its adapters (EMA) applied
    loaded = load_model(full.checkpoint, store=open_store(str(tmp_path / "full" / "blobs")), base_dir=tmp_path / "full")
    assert loaded.kind == "matcher"
    assert any(p.abs().sum() > 0 for p in loaded.model.adapters.parameters())


def test_a_matcher_refuses_image_text_training_data(tmp_path):
    from orchestrator.manifest.errors import ManifestError
    from orchestrator.models.registry import load_checked_manifest

    (tmp_path / "m.yaml").write_text(MANIFEST.replace("kind: shapes-winoground, n: 60, seed: 3",
                                                      "kind: shapes, captions: spatial, n: 8"))
    with pytest.raises(ManifestError, match="cannot train on data kind 'shapes'"):
        load_checked_manifest(tmp_path / "m.yaml")


def _comvg(root):
    """A three-row ComVG layout (the official CSV's columns, images by id) with random images."""
    import csv

    rows = [["0", "red circle left of blue square", "1", "2", "subject"],
            ["1", "green triangle above yellow circle", "3", "4", "object"],
            ["2", "blue square below red circle", "5", "6", "verb"]]
    with open(root / "compositional_visual_genome.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence", "pos_triplet", "neg_triplet", "pos_image_id", "neg_image_id", "neg_value"])
        for r in rows:
            w.writerow([r[0], r[1], "a,b,c", "a,b,d", r[2], r[3], r[4]])
    (root / "images").mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(1, 7):
        Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()).save(
            root / "images" / f"{i}.jpg")


def test_comvg_image_choices_train_the_adapters(tmp_path):
    """An image choice's negative is its other image: the margin loss reaches the adapters."""
    from orchestrator.data.choices import open_choices
    from orchestrator.manifest.schema import DataSource, TrainSpec
    from orchestrator.models.common.objective import Batch

    _comvg(tmp_path)
    data = open_choices(DataSource(kind="comvg", root=str(tmp_path)), 32)
    m = disc._build(_sd(), DiscffusionOptions(noise_levels=[0.5], margin=10.0))
    obj = disc.objective(m, data, TrainSpec(), None, store=None, device=torch.device("cpu"))
    loss = obj.loss(Batch(torch.arange(3), 3, torch.Generator().manual_seed(0)))
    loss.backward()
    assert len(data) == 3 and float(loss) > 0  # margin 10: every choice inside the margin
    assert all(a.p_k.grad is not None and a.p_k.grad.abs().sum() > 0 for a in m.adapters.values())


def test_matching_suite_on_comvg_and_shapes_pairs_with_a_matcher_and_with_clip(tmp_path):
    """ComVG (one sentence, two images) and shapes Winoground pairs (text choices) through the
    matching suite: accuracy with n and interval, per category; the matcher scores itself, a
    context with no model falls back to the CLIP."""
    from orchestrator.eval.context import EvalOptions
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config

    _comvg(tmp_path)
    m = LoadedModel(disc.SPEC, disc._build(_sd(), DiscffusionOptions(noise_levels=[0.5])), "base")
    comvg = {"kind": "comvg", "root": str(tmp_path)}
    ctx = build_context(None, options=EvalOptions(matching=comvg, device="cpu"), model=m)
    [res] = run_in_context(ctx, ["matching"])
    by = {mv.name: mv for mv in res.metrics}
    assert by["accuracy"].n == 3 and set(by) == {"accuracy", "accuracy/object", "accuracy/subject", "accuracy/verb"}
    assert by["accuracy"].ci_low <= by["accuracy"].value <= by["accuracy"].ci_high
    assert res.info["scorer"].startswith("discffusion") and len(res.info["outcomes"]["accuracy"]) == 3

    pairs = {"kind": "shapes-winoground", "n": 60, "seed": 1000}
    model, tok = build_tiny_clip(seed=0)
    clip = ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny")
    ctx = build_context(None, options=EvalOptions(matching=pairs, device="cpu"), clip_encoder=clip)
    [res] = run_in_context(ctx, ["matching"])
    by = {mv.name: mv for mv in res.metrics}
    assert by["accuracy"].n == res.info["choices"] > 0 and res.info["scorer"].startswith("clip")
    assert any(name.startswith("accuracy/") for name in by)


def test_manifest_checks_what_the_scoring_suites_need(tmp_path):
    from orchestrator.manifest.errors import ManifestError
    from orchestrator.models.registry import load_checked_manifest

    sd = ("name: s\nmodel: {variant: sd, base: tiny-random}\n"
          "data: {train: {kind: shapes, captions: spatial, n: 8}, eval: {kind: shapes, n: 8}}\n"
          "eval: {suites: [spatial, winoground, matching]}\nstorage: {blobs: ./b}\n")
    (tmp_path / "sd.yaml").write_text(sd)
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(tmp_path / "sd.yaml")
    found = {i.path: (i.line, i.message) for i in err.value.issues}
    assert "needs eval.clip" in found["eval.suites.1"][1] and found["eval.suites.1"][0] == 4
    assert "suite matching reads the benchmark in data.eval" in found["data.eval.kind"][1]
    (tmp_path / "d.yaml").write_text(MANIFEST.replace("storage:", "eval: {suites: [winoground]}\nstorage:"))
    load_checked_manifest(tmp_path / "d.yaml")  # a matcher scores itself: no CLIP needed


def test_fewshot_split_parts_never_overlap_and_keep_pairs_together():
    from orchestrator.data.choices import labelled_choices
    from orchestrator.manifest.schema import DataSource

    def part(name, fraction=0.05):
        src = DataSource(kind="shapes-winoground", n=400, seed=5, fewshot=name, fewshot_fraction=fraction)
        return labelled_choices(src, 32)

    everything = labelled_choices(DataSource(kind="shapes-winoground", n=400, seed=5), 32)
    train, held = part("train"), part("heldout")
    key = lambda c: (c.texts, c.answer, c.image.read_bytes())  # noqa: E731
    assert len(train) + len(held) == len(everything) and len(train) % 2 == 0  # pairs: two questions each
    assert not {key(c) for c, _ in train} & {key(c) for c, _ in held}
    pairs = len(everything) // 2
    assert len(train) == 2 * math.ceil(0.05 * pairs)  # 5% of the examples, each with its two choices
    assert [key(c) for c, _ in part("train")] == [key(c) for c, _ in train]  # seeded: the same split again
    assert DataSource(kind="shapes-winoground", n=4).model_dump() == \
        DataSource(kind="shapes-winoground", n=4, fewshot_fraction=0.5).model_dump()  # unsplit: ids unchanged
