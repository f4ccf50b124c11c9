"""GLIDE-mini: the released layout (full config on the meta device, a base.pt in that layout loaded
strictly), its tokenizers, the diffusion math, the finetuning options, sampling, exact resume,
and the tiny base built by `orch pretrain --variant glide_mini`."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.common.objective import Batch
from orchestrator.models.glide_mini import variant as glide
from orchestrator.models.glide_mini.config import FULL, tiny
from orchestrator.models.glide_mini.diffusion import Schedule, vlb_bits
from orchestrator.models.glide_mini.model import build, load, load_release, save
from orchestrator.models.glide_mini.options import GlideMiniOptions
from orchestrator.models.glide_mini.tokenizer import GlideTokenizer, gpt2_bpe, shapes_words
from orchestrator.models.loading import load_model
from orchestrator.models.registry import get_variant
from orchestrator.storage import open_store
from orchestrator.storage.location import get_dir
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer

ORCH = [str(Path(sys.executable).with_name("orch"))]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise comparisons need one fixed thread count
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return shapes_data(n=12, seed=0, size=32, caption="spatial")


# ---- the released layout --------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level alphabet of encoder.json)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_bpe(root: Path, vocab_size: int) -> Path:
    """A GPT-2-format pair: encoder.json (token → id, <|endoftext|> last) and vocab.bpe (#version
    line, then merges) with a few real merges and filler tokens up to `vocab_size`."""
    root.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    merges = [("r", "e"), ("re", "d"), ("Ġ", "c"), ("Ġc", "i")]
    tokens = symbols + ["".join(m) for m in merges]
    tokens += [f"filler{i}" for i in range(vocab_size - 1 - len(tokens))] + ["<|endoftext|>"]
    (root / "encoder.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (root / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return root


def test_full_config_matches_the_released_checkpoint_layout():
    m = build(FULL, shapes_words(), device="meta")
    state = m.state_dict()
    assert len(state) == 783
    assert sum(t.numel() for t in state.values()) == 385_030_726
    assert sum(p.numel() for p in m.unet.parameters()) == pytest.approx(308.3e6, rel=1e-3)
    assert sum(p.numel() for p in m.text.parameters()) == pytest.approx(76.7e6, rel=1e-3)
    assert {k.split(".")[0] for k in state} == {
        "time_embed", "input_blocks", "middle_block", "output_blocks", "out", "transformer", "final_ln",
        "token_embedding", "positional_embedding", "padding_embedding", "transformer_proj"}
    assert tuple(state["input_blocks.5.1.encoder_kv.weight"].shape) == (768, 512, 1)
    assert tuple(state["out.2.weight"].shape) == (6, 192, 3, 3)
    assert tuple(state["token_embedding.weight"].shape) == (50257, 512)
    assert tuple(state["transformer_proj.weight"].shape) == (768, 512)
    assert tuple(state["transformer.resblocks.15.attn.c_qkv.weight"].shape) == (1536, 512)


def test_a_base_pt_in_the_released_layout_loads_strictly_from_a_path(tmp_path):
    """The file a user downloads (a bare state dict) + GPT-2 BPE files → the full model, bit for bit."""
    shapes = {k: v.shape for k, v in build(FULL, shapes_words(), device="meta").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g, dtype=torch.float32).to(torch.float16) for k, s in shapes.items()}
    torch.save(state, tmp_path / "base.pt")
    write_bpe(tmp_path / "bpe", 50257)
    spec = ModelSpec.model_validate({"variant": "glide_mini", "base": "base.pt", "glide_mini": {"bpe": "bpe"}},
                                    context={"base_dir": tmp_path})
    loaded = load_model(None, spec=spec, base_dir=tmp_path)
    m = loaded.model
    assert loaded.variant.INFO.name == "glide_mini" and m.config == FULL and loaded.resolution == 64
    got = m.state_dict()
    for key in ("input_blocks.5.1.encoder_kv.weight", "out.2.weight", "token_embedding.weight", "padding_embedding"):
        assert torch.equal(got[key], state[key].float()), key
    assert m.tokenizer.end_token == 50256 and m.tokenizer.vocab_size == 50257
    del state, got, m, loaded


def test_a_bare_state_dict_needs_the_bpe_files(tmp_path):
    (tmp_path / "base.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="model.glide_mini.bpe"):
        ModelSpec.model_validate({"variant": "glide_mini", "base": "base.pt"}, context={"base_dir": tmp_path})


@pytest.mark.parametrize("damage, message", [
    ("missing", r"1 missing keys: out\.2\.bias"),
    ("extra", r"1 unexpected keys: unemb\.weight"),
    ("misshapen", r"1 misshapen keys: out\.2\.weight \(6, 32, 3, 4\) \(expected \(6, 32, 3, 3\)\)"),
])
def test_a_state_dict_that_does_not_fit_is_an_error_naming_the_keys(tmp_path, damage, message):
    cfg = tiny(32, vocab_size=300)
    state = build(cfg, gpt2_bpe(*_pair(write_bpe(tmp_path / "bpe", 300)))).state_dict()
    if damage == "missing":
        del state["out.2.bias"]
    elif damage == "extra":
        state["unemb.weight"] = torch.zeros(3)
    else:
        state["out.2.weight"] = torch.zeros(6, 32, 3, 4)
    with pytest.raises(ValueError, match=message):
        load_release(_bytes(state), "base.pt", tmp_path / "bpe", config=cfg)
    with pytest.raises(ValueError, match="base.pt: not a readable torch state dict"):
        load_release(b"not a checkpoint", "base.pt", tmp_path / "bpe", config=cfg)


def _pair(root: Path) -> tuple[Path, Path]:
    return root / "encoder.json", root / "vocab.bpe"


def _bytes(state: dict) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


# ---- tokenizers -----------------------------------------------------------------------------
def test_gpt2_bpe_pair_lower_cases_merges_and_pads_with_the_end_token(tmp_path):
    tok = gpt2_bpe(*_pair(write_bpe(tmp_path, 400)))
    vocab = json.loads((tmp_path / "encoder.json").read_text(encoding="utf-8"))
    assert tok.encode("RED ci") == [vocab["red"], vocab["Ġci"]]  # lower-cased, then merged
    tokens, mask = tok.padded(["RED ci", ""], ctx=5)
    end = vocab["<|endoftext|>"]
    assert tokens.tolist() == [[vocab["red"], vocab["Ġci"], end, end, end], [end] * 5]
    assert mask.tolist() == [[True, True, False, False, False], [False] * 5]  # "": all padding (CFG's input)
    cut, cut_mask = tok.padded(["red red red"], ctx=2)
    assert cut_mask.all() and cut.shape == (1, 2)
    saved = tmp_path / "saved"
    tok.save(saved)
    assert GlideTokenizer.load(saved).padded(["RED ci"], 5)[0].tolist() == tokens[:1].tolist()


def test_bad_bpe_files_are_named(tmp_path):
    write_bpe(tmp_path, 300)
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nr e\nthree symbols here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe:3: a merge is two symbols"):
        gpt2_bpe(*_pair(tmp_path))
    (tmp_path / "encoder.json").write_text('{"a": 0}')
    with pytest.raises(ValueError, match="no '<\\|endoftext\\|>' token"):
        gpt2_bpe(*_pair(tmp_path))
    with pytest.raises(FileNotFoundError, match="GPT-2 BPE file not found"):
        gpt2_bpe(tmp_path / "nope.json", tmp_path / "vocab.bpe")


def test_shapes_words_tokenizer_for_the_tiny_model():
    tok = shapes_words()
    tokens, mask = tok.padded(["A red circle to the left of a blue square"], ctx=16)
    assert mask[0].sum() == 10 and (tokens[0, 10:] == tok.end_token).all()
    assert len(set(tokens[0, :10].tolist())) == 9  # "a" twice, every other word its own id
    assert tok.tokenizer.token_to_id("<unk>") not in tokens[0].tolist()


# ---- diffusion ------------------------------------------------------------------------------
def test_cosine_schedule_and_respacing():
    s = Schedule.cosine(1000)
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(s.alphas_cumprod[499]) == pytest.approx(abar(0.5) / abar(0.0), rel=1e-9)
    assert float(s.betas.max()) == pytest.approx(0.999)  # capped at the end
    r = s.respaced(100)
    assert r.num_steps == 100 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[r.timesteps])  # same marginals q(x_t | x_0)
    assert torch.allclose(s.respaced(1000).betas, s.betas, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="within 1..1000"):
        s.respaced(0)


def test_vlb_term_trains_only_the_variance_channels():
    s = Schedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([0, 10, 500, 999])
    xt = s.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    out = torch.randn(4, 6, 8, 8, generator=g, requires_grad=True)
    vb = vlb_bits(s, out, x0, xt, t)
    assert vb.shape == (4,) and torch.isfinite(vb).all()
    vb.sum().backward()
    assert out.grad[:, :3].abs().max() == 0 and out.grad[:, 3:].abs().max() > 0


# ---- finetuning options ---------------------------------------------------------------------
def _trained_looking(m):
    """GLIDE zero-initialises every residual branch's last layer and the output conv, so a fresh
    model ignores its input; give those layers weights, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.unet.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def _objective(data, **opts):
    m = _trained_looking(glide.build_tiny(0, 32))
    spec = TrainSpec(steps=2, batch_size=4, lr=1e-3, gradient_checkpointing=opts.pop("ckpt", False),
                     precision=opts.pop("precision", "fp32"))
    return m, glide.objective(m, data, spec, GlideMiniOptions(**opts), store=None, device=torch.device("cpu"))


@pytest.mark.parametrize("train, trained", [("unet", {"unet"}), ("text", {"text"}), ("both", {"unet", "text"})])
def test_train_the_unet_the_text_transformer_or_both(data, train, trained):
    m, obj = _objective(data, train=train, caption_dropout=0.0)
    assert set(obj.modules) == trained
    obj.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0))).backward()
    for name, module in m.modules().items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) if name in trained else all(g is None for g in grads), name


def test_captions_condition_the_loss_and_dropout_replaces_them(data):
    _, obj = _objective(data, train="both", caption_dropout=0.0)
    loss = lambda o: float(o.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0))))  # noqa: E731
    base = loss(obj)
    obj.tokens = obj.tokens.roll(1, 0)  # other captions, same images and noise
    obj.mask = obj.mask.roll(1, 0)
    assert loss(obj) != base
    _, dropped = _objective(data, train="both", caption_dropout=0.999)
    _, uncond = _objective(data, train="both", caption_dropout=0.0)
    uncond.tokens, uncond.mask = (x.expand(len(data), -1).clone() for x in (uncond.uncond_tokens, uncond.uncond_mask))
    # dropout draws one uniform per example before the noise: skip them in the undropped run's generator
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = dropped.loss(Batch(torch.arange(4), 4, g1))
    torch.rand(4, generator=g2)
    assert torch.allclose(a, uncond.loss(Batch(torch.arange(4), 4, g2)))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(data):
    grads = []
    for ckpt in (False, True):
        m, obj = _objective(data, train="both", ckpt=ckpt)
        loss = obj.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0)))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in m.unet.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))


def test_bf16_autocast_trains(data):
    import contextlib
    import functools

    m, obj = _objective(data, train="both")
    cast = functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)
    loss = obj.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0), autocast=cast))
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.unet.parameters())
    del contextlib


# ---- sampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_reproducible_and_guidance_changes_images(sampler):
    m = _trained_looking(glide.build_tiny(0, 32))
    run = lambda s, seed=0: glide.generate(m, ["a red circle", "a blue square"], sampler=sampler, steps=4,  # noqa: E731
                                           guidance_scale=s, generator=torch.Generator().manual_seed(seed))
    a = run(3.0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, run(3.0))
    assert not torch.equal(a, run(1.0)) and not torch.equal(a, run(3.0, seed=1))


# ---- training: checkpoints, exact resume, export --------------------------------------------
def _trainer(store, data, prefix, options):
    m = glide.build_tiny(0, 32)
    spec = TrainSpec(steps=6, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=2, checkpoint_every=2,
                     ema_decay=0.99, noise_offset=0.1, seed=3)
    return Trainer(get_variant("glide_mini"), m, data, spec, store, prefix, options=options,
                   config=LoopConfig(device="cpu"))


def test_exact_resume_and_export(tmp_path, data):
    data.random_flip = True
    try:
        store = open_store(f"file://{tmp_path}/blobs")
        options = GlideMiniOptions(train="both", caption_dropout=0.3)
        full = _trainer(store, data, "full", options).run()
        _trainer(store, data, "split", options).run(max_steps=4)
        resumed = _trainer(store, data, "split", options)
        result = resumed.run()
    finally:
        data.random_flip = False
    assert result.resumed_from == 4 and result.steps_run == 2 and result.final_loss == full.final_loss
    get_dir(store, "full/model", tmp_path / "a")
    get_dir(store, "split/model", tmp_path / "b")
    a, b = load(tmp_path / "a").state_dict(), load(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # exported EMA weights, bitwise


def test_export_load_round_trip(tmp_path):
    m = glide.build_tiny(1, 32)
    save(m, tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["_orch_variant"] == "glide_mini"
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.variant.INFO.name == "glide_mini"
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in m.state_dict().items())


# ---- the tiny base by `orch pretrain`, then `orch sample` -----------------------------------
def test_orch_pretrain_builds_the_tiny_base_and_orch_sample_draws_from_it(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1"}
    blobs = f"file://{tmp_path}/blobs"
    run = subprocess.run([*ORCH, "pretrain", "--variant", "glide_mini", "--blobs", blobs, "--steps", "3", "--n", "16",
                          "--batch-size", "8", "--data-dir", str(tmp_path / "data"), "--threads", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "models/tiny-glide-mini-base" in run.stdout
    store = open_store(blobs)
    assert store.exists("models/tiny-glide-mini-base/model_index.json")
    spec = ModelSpec.model_validate({"variant": "glide_mini", "base": None})
    base = load_model(None, spec=spec, store=store)
    assert base.variant.INFO.name == "glide_mini" and base.resolution == 32
    out = tmp_path / "grid.png"
    sample = subprocess.run([*ORCH, "sample", "--model", "models/tiny-glide-mini-base", "--blobs", blobs,
                             "--prompt", "a red circle", "--prompt", "a blue square", "--steps", "3",
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-2000:]
    from PIL import Image

    assert Image.open(out).format == "PNG"
    bad = subprocess.run([*ORCH, "pretrain", "--variant", "nope", "--blobs", blobs], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown model variant 'nope'" in bad.stderr


def test_a_missing_tiny_base_says_how_to_build_it(tmp_path):
    spec = ModelSpec.model_validate({"variant": "glide_mini", "base": None})
    with pytest.raises(FileNotFoundError, match="orch pretrain --variant glide_mini"):
        load_model(None, spec=spec, store=open_store(f"file://{tmp_path}/blobs"))
