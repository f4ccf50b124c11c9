"""Discffusion's later switches on the tiny SD: the LoRA adapter (peft) and dynamic head weighting
train through the seam's loop, resume exactly, export and load; the Diffusion Classifier's adaptive
pruning equals the full evaluation where it keeps a candidate; the shapes world's ComVG-style pairs
are deterministic, say what their negative changes, split few-shot and score by neg_value."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orchestrator.manifest.schema import DataSource
from orchestrator.models.discffusion import variant as disc
from orchestrator.models.discffusion.capture import AttentionRecorder
from orchestrator.models.discffusion.options import DiscffusionOptions
from orchestrator.models.discffusion.score import DiffusionScorer
from orchestrator.models.loading import load_model

# The shared fixtures and the tiny SD with non-zero output layers, as the first Discffusion tests use them.
# Tests request `image` by naming it as a parameter, which pyflakes reads as a redefinition (F811).
from tests.test_discffusion import CAPTIONS, _sd, image, one_thread  # noqa: F401

# ---- LoRA ----------------------------------------------------------------------------------

def test_lora_sits_on_every_attention_starts_at_zero_shot_and_exports(image, tmp_path):  # noqa: F811
    from orchestrator.models.sd import load_components

    plain = disc.score(disc._build(_sd(), DiscffusionOptions()), CAPTIONS, [image] * 4)
    m = disc._build(_sd(), DiscffusionOptions(adapter="lora"))
    lora = m.adapters["lora"]
    # 4 transformer blocks × (self + cross attention) × (q, k, v, out)
    assert len(lora) == 32 and {k.rsplit("_", 1)[-1] for k in lora} == {"q", "k", "v", "0"}
    assert all(ab["A"].out_features == 4 for ab in lora.values())
    assert np.allclose(disc.score(m, CAPTIONS, [image] * 4), plain, atol=1e-6)  # B = 0: zero-shot
    with torch.no_grad():
        for ab in lora.values():
            ab["B"].weight.normal_(0, 0.2)
    trained = disc.score(m, CAPTIONS, [image] * 4)
    assert not np.allclose(trained, plain, atol=1e-4)
    disc.export(m, tmp_path / "d")
    # the base is saved as it was (no peft keys), LoRA in the adapters file
    keys = load_components(tmp_path / "d").unet.state_dict()
    assert not any("lora" in k or "base_layer" in k for k in keys)
    assert any("lora" in k for k in m.sd.unet.state_dict())  # and still on the live model
    loaded = load_model(str(tmp_path / "d"))
    assert loaded.model.options.adapter == "lora"
    assert np.allclose(disc.score(loaded.model, CAPTIONS, [image] * 4), trained, atol=1e-6)


MANIFEST = """\
name: disc
model: {{variant: discffusion, base: tiny-random, resolution: 32, discffusion: {{noise_levels: [0.3, 0.7], margin: 0.1, {options}}}}}
data: {{train: {{kind: {kind}, n: 60, seed: 3}}}}
train: {{steps: 4, batch_size: 2, lr: 1.0e-2, checkpoint_every: 2, seed: 0}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""  # noqa: E501 - a manifest template: its model line is one YAML line


def _trials(tmp_path, options: str, kind: str = "shapes-winoground"):
    """The same trial run whole, and stopped at step 2 then resumed; their final checkpoints."""
    from orchestrator.models.common.serialize import from_bytes
    from orchestrator.storage import open_store
    from orchestrator.training import LoopConfig, train_trial

    for name in ("full", "split"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.yaml").write_text(MANIFEST.format(options=options, kind=kind))
    one_thread = LoopConfig(num_threads=1)  # noqa: F811 - as in test_discffusion; the autouse fixture still applies
    full = train_trial(tmp_path / "full" / "m.yaml", "0", config=one_thread)
    train_trial(tmp_path / "split" / "m.yaml", "0", max_steps=2, config=one_thread)
    split = train_trial(tmp_path / "split" / "m.yaml", "0", config=one_thread)
    assert full.finished and split.resumed_from == 2 and split.final_loss == full.final_loss
    states = [from_bytes(open_store(str(tmp_path / d / "blobs")).get(r.checkpoint))["modules"]
              for d, r in (("full", full), ("split", split))]
    assert [list(s) for s in states] == [["adapters"], ["adapters"]]
    a, b = (s["adapters"] for s in states)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # exact resume
    loaded = load_model(full.checkpoint, store=open_store(str(tmp_path / "full" / "blobs")), base_dir=tmp_path / "full")
    return a, loaded


def test_a_lora_trial_trains_only_lora_and_resumes_exactly(tmp_path):
    state, loaded = _trials(tmp_path, "adapter: lora, lora_rank: 2")
    assert all(k.startswith("lora.") for k in state)
    assert any(state[k].abs().sum() > 0 for k in state if k.endswith("B.weight"))  # B moved from zero
    assert loaded.model.options.adapter == "lora" and loaded.model.options.lora_rank == 2
    live = loaded.model.adapters.state_dict()
    assert all(torch.equal(live[k], state[k]) for k in state)  # the checkpoint's LoRA is the U-Net's


# ---- dynamic head weighting ------------------------------------------------------------------

def test_head_attribution_is_attention_times_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, generator=g)
    rec = AttentionRecorder("lse", 1.0, "probs")
    a = logits.softmax(-1)
    # f = mean_i log Σ_j exp(A_ij): ∂f/∂A_ij = softmax_j(A_i) / N
    expected = (a * a.softmax(-1) / a.shape[2]).sum(dim=(-1, -2))
    assert torch.allclose(rec.attribution(logits, 1), expected, atol=1e-6)
    riemann = rec.attribution(logits, 4)  # integrated gradients: (1/m) Σ_k ∂f(k/m A)/∂A
    by_hand = sum((a * (k / 4 * a).softmax(-1) / 5).sum(dim=(-1, -2)) for k in range(1, 5)) / 4
    assert torch.allclose(riemann, by_hand, atol=1e-6) and not torch.allclose(riemann, expected)
    with pytest.raises(ValueError, match="pooling cosine reads no A"):
        DiscffusionOptions(head_weighting=True, pooling="cosine")


def test_head_weights_start_uniform_are_learned_in_training_and_used_at_inference(image, tmp_path):  # noqa: F811
    from orchestrator.models.common.objective import Batch

    off = disc.score(disc._build(_sd(), DiscffusionOptions(layers="last_down_mid_up")), CAPTIONS, [image] * 4)
    m = disc._build(_sd(), DiscffusionOptions(head_weighting=True, layers="last_down_mid_up"))
    heads = m.adapters["heads"]
    assert len(heads) == 3 and all(torch.equal(h.weight, torch.ones(h.weight.shape)) for h in heads.values())
    assert np.allclose(disc.score(m, CAPTIONS, [image] * 4), off, atol=1e-6)  # untrained: the plain mean
    before = disc.score(m, CAPTIONS, [image] * 4)
    assert all(int(h.count) == 0 for h in heads.values())  # scoring alone learns nothing

    from orchestrator.data.choices import open_choices
    from orchestrator.manifest.schema import TrainSpec

    data = open_choices(DataSource(kind="shapes-winoground", n=30, seed=1), 32)
    obj = disc.objective(m, data, TrainSpec(), None, store=None, device=torch.device("cpu"))
    obj.loss(Batch(torch.arange(2), 2, torch.Generator().manual_seed(0))).backward()
    for h in heads.values():
        assert int(h.count) > 0 and torch.isclose(h.weight.mean(), torch.tensor(1.0), atol=1e-5)
        assert not torch.allclose(h.weight, torch.ones_like(h.weight), atol=1e-4)
        assert h.weight.grad is None  # buffers, detached: never optimised
    assert not np.allclose(disc.score(m, CAPTIONS, [image] * 4), before, atol=1e-7)
    disc.export(m, tmp_path / "d")
    loaded = load_model(str(tmp_path / "d"))
    assert all(torch.equal(loaded.model.adapters["heads"][k].weight, h.weight) for k, h in heads.items())


def test_a_head_weighting_trial_resumes_exactly_with_its_weights(tmp_path):
    state, loaded = _trials(tmp_path, "head_weighting: true, head_attribution_steps: 2")
    weights = {k: v for k, v in state.items() if k.startswith("heads.") and k.endswith(".weight")}
    assert len(weights) == 4 and all(not torch.allclose(w, torch.ones_like(w)) for w in weights.values())
    assert all(torch.equal(loaded.model.adapters.state_dict()[k], w) for k, w in weights.items())


# ---- adaptive pruning ------------------------------------------------------------------------

def test_pruning_scores_kept_candidates_as_the_full_evaluation(image):  # noqa: F811
    c = _sd()
    levels = {"noise_levels": [0.1, 0.3, 0.5, 0.7, 0.9]}
    full = DiffusionScorer(c, DiscffusionOptions(**levels),
                           method="diffusion_classifier").score_candidates(image, CAPTIONS)
    off = DiffusionScorer(c, DiscffusionOptions(**levels, prune_keep=4, prune_steps=2),
                          method="diffusion_classifier").score_candidates(image, CAPTIONS)
    assert torch.equal(off, full)  # keeping every candidate is no pruning
    pruner = DiffusionScorer(c, DiscffusionOptions(**levels, prune_keep=2, prune_steps=2, batch_size=3),
                             method="diffusion_classifier")
    pruned = pruner.score_candidates(image, CAPTIONS)
    first = DiffusionScorer(c, DiscffusionOptions(noise_levels=[0.1, 0.9]), method="diffusion_classifier"
                            ).score_candidates(image, CAPTIONS)  # the first stage: the ends of the set
    kept = set(torch.topk(first, 2).indices.tolist())
    dropped = sorted(set(range(4)) - kept)
    assert all(torch.allclose(pruned[i], full[i], atol=1e-7) for i in kept)
    assert max(pruned[i] for i in dropped) < min(pruned[i] for i in kept)
    assert (pruned[dropped[0]] < pruned[dropped[1]]) == (first[dropped[0]] < first[dropped[1]])


def test_pruning_keeps_the_true_winner_on_a_clear_case():
    """The shipped tiny base, a large red circle and six one-object captions: the Diffusion
    Classifier's full evaluation clearly picks the true one, and pruning to two after two of eight
    timesteps keeps it, with the same score."""
    from pathlib import Path

    from orchestrator.data.shapes import Scene, ShapeObject, render
    from orchestrator.models.sd import load_components

    c = load_components(Path(__file__).resolve().parents[1] / "assets" / "demo-base")
    img = render(Scene(32, (ShapeObject("circle", "red", "large", 10, 10, 12, 12),)))
    caps = ["a blue square", "a green triangle", "a red circle", "a yellow square", "a blue triangle", "a green square"]
    levels = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    with torch.no_grad():
        full = DiffusionScorer(c, DiscffusionOptions(noise_levels=levels), method="diffusion_classifier"
                               ).score_candidates(img, caps)
        pruned = DiffusionScorer(c, DiscffusionOptions(noise_levels=levels, prune_keep=2, prune_steps=2),
                                 method="diffusion_classifier").score_candidates(img, caps)
    assert int(full.argmax()) == 2 and float(full[2] - full.sort().values[-2]) > 0.01
    assert int(pruned.argmax()) == 2 and torch.allclose(pruned[2], full[2], atol=1e-7)


# ---- shapes ComVG-style pairs -----------------------------------------------------------------

def test_shapes_comvg_pairs_are_deterministic_and_change_what_neg_value_says():
    import io

    from PIL import Image

    from orchestrator.data.loaders.comvg import NEG_VALUES, shapes_comvg_pairs
    from orchestrator.data.shapes import make_example

    pairs = shapes_comvg_pairs(60, seed=4)
    assert pairs == shapes_comvg_pairs(60, seed=4) and pairs != shapes_comvg_pairs(60, seed=5)
    assert {p.neg_value for p in pairs} == set(NEG_VALUES) and len(pairs) > 20
    for p in pairs:
        scene = make_example(4, int(p.source.rsplit(" ", 1)[-1]), 32).scene
        pos, neg = (np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")) for r in (p.pos_image, p.neg_image))
        assert p.sentence.split(",")[0] == p.sentence and (pos != neg).any()
        subject, relation, obj = p.pos_triplet.split(",")
        assert p.sentence.endswith(obj) and f" {relation} " in p.sentence
        if p.neg_value == "predicate":
            assert p.neg_triplet == f"{subject},not {relation},{obj}"
        else:  # one object's shape changed in place: the colours drawn stay the same
            changed = p.neg_triplet.split(",")[0 if p.neg_value == "subject" else 2]
            assert changed != (subject if p.neg_value == "subject" else obj)
            assert {tuple(c) for c in pos.reshape(-1, 3)} == {tuple(c) for c in neg.reshape(-1, 3)}
        assert len(scene.objects) >= 2


def test_shapes_comvg_as_a_manifest_kind_splits_few_shot_and_scores_by_neg_value():
    from orchestrator.data.choices import labelled_choices
    from orchestrator.data.loaders.base import ImageChoice
    from orchestrator.eval.context import EvalOptions
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config

    with pytest.raises(ValueError, match="needs n"):
        DataSource(kind="shapes-comvg")
    every = labelled_choices(DataSource(kind="shapes-comvg", n=200, seed=2), 32)
    train = labelled_choices(DataSource(kind="shapes-comvg", n=200, seed=2, fewshot="train"), 32)
    held = labelled_choices(DataSource(kind="shapes-comvg", n=200, seed=2, fewshot="heldout"), 32)
    key = lambda c: (c.text, c.images[0].data)  # noqa: E731
    assert len(train) == math.ceil(0.05 * len(every)) and len(train) + len(held) == len(every)
    assert not {key(c) for c, _ in train} & {key(c) for c, _ in held}
    assert all(isinstance(c, ImageChoice) and c.answer == 0 and len(c.images) == 2 for c, _ in every)

    model, tok = build_tiny_clip(seed=0)
    clip = ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny")
    src = {"kind": "shapes-comvg", "n": 60, "seed": 2, "fewshot": "heldout"}
    ctx = build_context(None, options=EvalOptions(matching=src, device="cpu"), clip_encoder=clip)
    [res] = run_in_context(ctx, ["matching"])
    by = {mv.name: mv for mv in res.metrics}
    assert {"accuracy/subject", "accuracy/object", "accuracy/predicate"} <= set(by)
    assert by["accuracy"].n == sum(by[f"accuracy/{v}"].n for v in ("subject", "object", "predicate"))
    assert by["accuracy"].ci_low <= by["accuracy"].value <= by["accuracy"].ci_high


def test_a_discffusion_trial_trains_on_shapes_comvg(tmp_path):
    state, loaded = _trials(tmp_path, "noise_error: 0.0", kind="shapes-comvg")
    assert any(v.abs().sum() > 0 for v in state.values())
    assert loaded.kind == "matcher"
