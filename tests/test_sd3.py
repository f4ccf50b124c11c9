"""Stable Diffusion 3 / 3.5 as a variant (`model.variant: sd3`), on tiny random weights written in
diffusers' exact layout: SD3 and SD3.5 flavours, with and without T5, load offline from a path, a
file:// URI, a blob prefix and az:// (Azurite); a missing or misshapen component is an error naming
it; diffusers' own StableDiffusion3Pipeline loads the export and samples the same images as the
project's sampler; it trains through the generic loop from a manifest, resumes bit for bit, with
cached and uncached embeddings alike, and two gloo ranks train as one process; the spatial suite
runs on it; each weighting scheme draws σ as it should."""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest import ManifestError, load_experiment
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.objective import Batch
from orchestrator.models.loading import LoadedModel, load_model
from orchestrator.models.registry import get_variant
from orchestrator.models.sd3 import build_tiny, encode_prompt, generate, load_components
from orchestrator.models.sd3.objective import draw_sigma_indices, training_sigmas
from orchestrator.models.sd3.options import SD3Options
from orchestrator.storage import open_store
from orchestrator.storage.location import put_dir

SD3 = get_variant("sd3")
FLAVOURS = [("sd3", False), ("sd3", True), ("sd35", False), ("sd35", True)]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise comparisons need one fixed thread count; tiny models need no more
    yield
    torch.set_num_threads(n)


def weights(c) -> list[torch.Tensor]:
    return [p for m in SD3.modules(c).values() for p in m.state_dict().values()]


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return len(wa) == len(wb) and all(torch.equal(x, y) for x, y in zip(wa, wb))


# ---------------------------------------------------------------------------- layout and loading
@pytest.mark.parametrize("flavour,with_t5", FLAVOURS)
def test_tiny_flavours_save_in_diffusers_layout_and_load_back(tmp_path, flavour, with_t5):
    c = build_tiny(seed=0, flavour=flavour, with_t5=with_t5)
    assert same_weights(c, build_tiny(seed=0, flavour=flavour, with_t5=with_t5))  # seeded: bitwise the same
    assert (c.transformer.config.qk_norm == "rms_norm") == (flavour == "sd35")
    out = c.save(tmp_path / "m")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline" and index["_orch_variant"] == "sd3"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["text_encoder_3"] == (["transformers", "T5EncoderModel"] if with_t5 else [None, None])
    assert (out / "text_encoder_3").is_dir() == with_t5
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert any((out / sub / f).exists() for f in ("diffusion_pytorch_model.safetensors", "model.safetensors"))

    store = open_store(tmp_path / "blobs")
    put_dir(store, out, "models/tiny-sd3")
    for source, kw in ((out, {}), (f"file://{out}", {}), ("models/tiny-sd3", {"store": store})):
        again = load_components(source, **kw)
        assert same_weights(c, again), source
        assert (again.text_encoder_3 is None) == (not with_t5) and again.max_sequence_length == c.max_sequence_length
        emb, pooled = encode_prompt(again, ["a red circle to the left of a blue square"])
        assert emb.shape == (1, 2 * c.max_sequence_length, 64) and pooled.shape == (1, 64)
    loaded = load_model(str(out))  # the index names the variant: no manifest
    assert loaded.variant is SD3 and loaded.resolution == 32


def test_a_release_layout_without_project_keys_loads_as_sd3(tmp_path):
    """A release's directory: CLIP BPE tokenizers (vocab.json + merges.txt), a T5 tokenizer named
    T5TokenizerFast, and no `_orch_*` keys: the pipeline class names the variant, T5's token
    length is the training scripts' 77."""
    from tests.test_sd_layouts import write_clip_bpe_tokenizer

    out = build_tiny(seed=0, with_t5=True).save(tmp_path / "release")
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(out / name)
        write_clip_bpe_tokenizer(out / name)
    index = json.loads((out / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if not k.startswith("_orch")}
    index.update({"tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"]})
    (out / "model_index.json").write_text(json.dumps(index))
    loaded = load_model(str(out))
    assert loaded.variant is SD3 and type(loaded.model.tokenizer).__name__ == "CLIPTokenizer"
    assert loaded.model.max_sequence_length == 77 and loaded.model.tokenizer_3 is not None
    images = SD3.generate(loaded.model, ["a red circle"], steps=1, guidance_scale=2.0,
                          generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


@pytest.mark.azurite
def test_an_sd3_directory_in_azure_loads_by_its_uri(azurite_env, tmp_path):
    container = f"t-{uuid.uuid4().hex[:12]}"
    c = build_tiny(seed=1, flavour="sd35", with_t5=True)
    c.save(tmp_path / "m")
    put_dir(open_store(f"az://{container}"), tmp_path / "m", "models/sd35")
    loaded = load_model(f"az://{container}/models/sd35")
    assert loaded.variant is SD3 and same_weights(loaded.model, c)


def test_prompt_embedding_is_sd3s(tmp_path):
    """CLIPs' penultimate states side by side, zero-padded to the joint width, then T5 (or zeros)."""
    c = build_tiny(seed=0, with_t5=True)
    texts = ["two red squares above a green circle"]
    emb, pooled = encode_prompt(c, texts)
    ids = c.tokenizer(texts, padding="max_length", max_length=c.tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    l_out = c.text_encoder(ids, output_hidden_states=True)
    g_out = c.text_encoder_2(ids, output_hidden_states=True)
    n, w1, w2 = ids.shape[1], c.text_encoder.config.hidden_size, c.text_encoder_2.config.hidden_size
    assert torch.equal(emb[:, :n, :w1], l_out.hidden_states[-2]) and torch.equal(emb[:, :n, w1:w1 + w2],
                                                                                 g_out.hidden_states[-2])
    assert torch.all(emb[:, :n, w1 + w2:] == 0)
    assert torch.equal(pooled, torch.cat([l_out.text_embeds, g_out.text_embeds], dim=-1))
    assert emb[:, n:].abs().sum() > 0  # T5's part
    no_t5, _ = encode_prompt(c.drop_t5(), texts)
    assert torch.equal(no_t5[:, :n], emb[:, :n]) and torch.all(no_t5[:, n:] == 0) and no_t5.shape == emb.shape


def test_use_t5_false_leaves_t5_out_of_the_model_and_its_export(tmp_path):
    from orchestrator.manifest.schema import ModelSpec

    out = build_tiny(seed=0, with_t5=True).save(tmp_path / "m")
    spec = ModelSpec.model_validate({"variant": "sd3", "base": str(out),
                                     "sd3": {"use_t5": False, "max_sequence_length": 8}})
    c = SD3.load_base(spec, None, None)
    assert c.text_encoder_3 is None and c.tokenizer_3 is None and c.max_sequence_length == 8
    emb, _ = encode_prompt(c, ["a red circle"])
    assert emb.shape == (1, 32 + 8, 64) and torch.all(emb[:, 32:] == 0)
    SD3.export(c, tmp_path / "export")
    assert not (tmp_path / "export" / "text_encoder_3").exists()
    assert load_components(tmp_path / "export").max_sequence_length == 8


def _break(out: Path, what: str) -> None:
    if what == "missing transformer":
        shutil.rmtree(out / "transformer")
    elif what == "missing tokenizer_3":
        shutil.rmtree(out / "tokenizer_3")
    else:
        component, key, value = {
            "latent channels": ("vae", "latent_channels", 16),
            "joint width": ("transformer", "joint_attention_dim", 32),
            "pooled width": ("transformer", "pooled_projection_dim", 48),
            "t5 width": ("text_encoder_3", "d_model", 32),
        }[what]
        cfg = json.loads((out / component / "config.json").read_text())
        (out / component / "config.json").write_text(json.dumps({**cfg, key: value}))


@pytest.mark.parametrize("what,error,names", [
    ("missing transformer", FileNotFoundError, "'transformer'"),
    ("missing tokenizer_3", FileNotFoundError, "'tokenizer_3'"),
    ("latent channels", ValueError, "'vae'"),
    ("joint width", ValueError, "'text_encoder_2'"),
    ("pooled width", ValueError, "pooled_projection_dim"),
    ("t5 width", ValueError, "'text_encoder_3'"),
])
def test_a_missing_or_misshapen_component_is_named(tmp_path, what, error, names):
    out = build_tiny(seed=0, with_t5=True).save(tmp_path / "m")
    _break(out, what)
    with pytest.raises(error, match=names) as err:
        load_components(out)
    assert str(out) in str(err.value)


def test_trained_text_encoders_get_gradients_and_dropout_encodes_the_empty_prompt(tmp_path):
    """model.sd3.train_text_encoders (a from-scratch base): both CLIPs train with the transformer,
    their embeddings computed every step (no text cache), a dropped caption encoded as ""."""
    data = shapes_data(n=4, seed=0, size=32, caption="spatial")
    c = build_tiny(seed=0)
    obj = SD3.objective(c, data, TrainSpec(steps=1, batch_size=4), SD3Options(train_text_encoders=True,
                                                                               caption_dropout=0.5),
                        store=open_store(tmp_path / "blobs"), device=torch.device("cpu"), use_cache=True)
    assert set(obj.modules) == {"transformer", "text_encoder", "text_encoder_2"}
    assert obj.encoded is not None and obj.encoded.text_emb is None   # latents cached, text not
    obj.loss(Batch(torch.arange(4), 4, torch.Generator().manual_seed(0))).backward()
    for name in ("text_encoder", "text_encoder_2"):
        grads = [p.grad for p in obj.modules[name].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    drop = torch.tensor([True, False, True, False])
    emb, pooled = obj._text(torch.arange(4), drop)
    empty, empty_pooled = encode_prompt(c, [""])
    torch.testing.assert_close(emb[0], empty[0])
    torch.testing.assert_close(pooled[2], empty_pooled[0])
    assert not torch.allclose(emb[1], empty[0])


# ---------------------------------------------------------------------------- diffusers' pipeline
@pytest.mark.parametrize("flavour,with_t5", [("sd3", False), ("sd35", True)])
def test_diffusers_pipeline_loads_the_export_and_samples_the_same_images(tmp_path, flavour, with_t5):
    from diffusers import StableDiffusion3Pipeline

    c = build_tiny(seed=2, flavour=flavour, with_t5=with_t5)
    c.vae.register_to_config(scaling_factor=1.5305, shift_factor=0.0609)  # SD3's, so both are exercised
    SD3.export(c, tmp_path / "export")
    drop = {} if with_t5 else {"text_encoder_3": None, "tokenizer_3": None}  # as diffusers drops T5
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "export", local_files_only=True, **drop)
    prompts = ["a red circle to the left of a blue square", "a green triangle"]
    ours = SD3.generate(c, prompts, steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(5))
    theirs = pipe(prompts, num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(5),
                  height=32, width=32, output_type="pt", max_sequence_length=c.max_sequence_length).images
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    # measured 2.6e-6 at most (float32, CPU, one thread; docs/variants/sd3.md): the same noise, the same steps
    assert (ours - theirs).abs().max() < 1e-4
    # the stochastic sampler (suites' "ddpm") draws its noise from the generator: reproducible
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = generate(c, prompts[:1], sampler="ddpm", steps=3, guidance_scale=1.0, generator=g())
    assert torch.equal(a, generate(c, prompts[:1], sampler="ddpm", steps=3, guidance_scale=1.0, generator=g()))
    with pytest.raises(ValueError, match="flow-matching Euler"):
        generate(c, prompts[:1], sampler="pndm", steps=1)


# ---------------------------------------------------------------------------- training
def test_each_weighting_scheme_draws_sigma_in_range():
    c = build_tiny(seed=0)
    sigmas, timesteps = training_sigmas(c)
    assert torch.allclose(timesteps, sigmas * 1000) and sigmas[0] == 1 and sigmas[-1] > 0
    s = 3.0  # SD3's shift: σ = s·t / (1 + (s − 1)·t) of the unshifted t
    t = 1 - torch.arange(1000) / 1000
    assert torch.allclose(sigmas, s * t / (1 + (s - 1) * t), atol=1e-6)
    for scheme in ("logit_normal", "mode", "cosmap", "sigma_sqrt", "uniform"):
        idx = draw_sigma_indices(SD3Options(weighting_scheme=scheme), 4096, torch.Generator().manual_seed(0), 1000)
        assert idx.shape == (4096,) and idx.dtype == torch.long
        sig = sigmas[idx]
        assert torch.all((sig > 0) & (sig <= 1)), scheme
    u = idx.float() / 1000  # uniform: mean 1/2
    assert abs(u.mean() - 0.5) < 0.02
    idx = draw_sigma_indices(SD3Options(logit_mean=1.0), 20000, torch.Generator().manual_seed(0), 1000)
    logits = torch.logit((idx.float() + 0.5) / 1000)
    assert abs(logits.mean() - 1.0) < 0.05 and abs(logits.std() - 1.0) < 0.05


def test_cached_and_uncached_embeddings_give_the_same_loss_and_ranks_agree(tmp_path):
    data = shapes_data(n=8, seed=0, size=32, caption="spatial")
    store = open_store(tmp_path / "blobs")
    spec = TrainSpec(steps=1, batch_size=4, seed=0)
    options = SD3Options(caption_dropout=0.5, weighting_scheme="cosmap")
    c = build_tiny(seed=0, with_t5=True)
    losses = []
    for use_cache in (True, False):
        obj = SD3.objective(c, data, spec, options, store=store, device=torch.device("cpu"), use_cache=use_cache)
        batch = Batch(torch.arange(4), 4, torch.Generator().manual_seed(7))
        losses.append(obj.loss(batch))
        if use_cache:
            assert obj.cache_hits == {"latents": False, "text": False}
            # two ranks, each its half of the global batch: the same draws, the same mean loss
            halves = [obj.loss(Batch(torch.arange(4)[r], 4, torch.Generator().manual_seed(7), rows=r))
                      for r in (torch.tensor([0, 1]), torch.tensor([2, 3]))]
            assert torch.allclose((halves[0] + halves[1]) / 2, losses[0], rtol=1e-5, atol=1e-6)
    assert math.isfinite(losses[0].item())
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6), losses
    again = SD3.objective(c, data, spec, options, store=store, device=torch.device("cpu"))
    assert again.cache_hits == {"latents": True, "text": True}


def test_loss_falls_on_a_fixed_batch_with_gradient_checkpointing(tmp_path):
    data = shapes_data(n=4, seed=0, size=32, caption="spatial")
    c = build_tiny(seed=0)
    obj = SD3.objective(c, data, TrainSpec(steps=1, batch_size=4, gradient_checkpointing=True), SD3Options(),
                        store=open_store(tmp_path / "blobs"), device=torch.device("cpu"), use_cache=False)
    assert c.transformer.is_gradient_checkpointing
    opt = torch.optim.AdamW(c.transformer.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        batch = Batch(torch.arange(4), 4, torch.Generator().manual_seed(0))  # the same draws every step
        loss = obj.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_generic_loop_trains_it_in_bf16_with_checkpointing_and_ema(tmp_path):
    from orchestrator.training.control import LoopConfig
    from orchestrator.training.loop import Trainer

    spec = TrainSpec(steps=2, batch_size=4, checkpoint_every=2, precision="bf16", gradient_checkpointing=True,
                     ema_decay=0.9)
    c = build_tiny(seed=0, flavour="sd35", with_t5=True)
    result = Trainer(SD3, c, shapes_data(n=4, seed=0, size=32, caption="spatial"), spec, open_store(tmp_path / "b"),
                     "trials/bf16", options=SD3Options(weighting_scheme="mode"),
                     config=LoopConfig(export_model=False)).run(None)
    assert result.finished and math.isfinite(result.final_loss)


MANIFEST = """\
name: sd3-tiny
model:
  variant: sd3
  base: tiny-random
  sd3: {{weighting_scheme: logit_normal, caption_dropout: 0.1}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, ema_decay: 0.9, seed: 2}}
eval: {{suites: [spatial]}}
storage: {{blobs: ./{blobs}}}
"""


def write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MANIFEST.format(blobs=f"{name}-blobs"))
    return path


def test_it_trains_from_a_manifest_resumes_bit_for_bit_exports_and_evaluates(tmp_path):
    from orchestrator.eval.suites import run_suites
    from orchestrator.training import train_trial

    loaded = load_experiment(write(tmp_path, "check"))
    assert isinstance(loaded.manifest.model.options, SD3Options)
    assert loaded.manifest.model.model_dump()["sd3"] == {"caption_dropout": 0.1}  # defaults left out
    typo = write(tmp_path, "typo")
    typo.write_text(typo.read_text().replace("weighting_scheme: logit_normal", "weighting_scheme: lognormal"))
    with pytest.raises(ManifestError) as err:
        load_experiment(typo)
    assert [(i.path, i.line) for i in err.value.issues] == [("model.sd3.weighting_scheme", 5)]

    first = train_trial(write(tmp_path, "split"), "0", max_steps=2)
    assert first.step == 2
    resumed = train_trial(tmp_path / "split.yaml", "0")
    straight = train_trial(write(tmp_path, "straight"), "0")
    assert resumed.resumed_from == 2 and resumed.steps_run == 2
    assert math.isfinite(straight.final_loss) and resumed.final_loss == straight.final_loss

    a = load_model(resumed.model_prefix, store=open_store(tmp_path / "split-blobs"))
    b = load_model(straight.model_prefix, store=open_store(tmp_path / "straight-blobs"))
    assert a.variant is SD3 and same_weights(a.model, b.model)
    assert not same_weights(a.model, build_tiny(seed=0))  # training moved the weights
    # a checkpoint loads to the export's weights (EMA applied), with no manifest either
    ckpt = load_model("trials/" + resumed.checkpoint.split("trials/")[1], store=open_store(tmp_path / "split-blobs"))
    assert ckpt.step == 4 and ckpt.variant is SD3 and same_weights(ckpt.model, a.model)

    (result,) = run_suites(None, ["spatial"], model=LoadedModel(SD3, a.model, "test"), samples=4, steps=2,
                           device="cpu")
    assert result.suite == "spatial" and result.metrics[0].n == 4


def _rank(rank: int, port: int, tmp: str) -> None:
    """One rank of a two-rank gloo group training the tiny SD3 (spawned by the test below)."""
    from orchestrator.training.control import LoopConfig
    from orchestrator.training.distributed import DistContext, destroy_process_group, init_process_group
    from orchestrator.training.loop import Trainer

    torch.set_num_threads(1)
    ctx = DistContext(rank, 2, master_port=port, backend="gloo")
    init_process_group(ctx, "cpu")
    try:
        data = shapes_data(n=8, seed=0, size=32, caption="spatial")
        trainer = Trainer(SD3, build_tiny(seed=0, with_t5=True), data, DP_SPEC, open_store(Path(tmp) / f"blobs-{rank}"),
                          "trials/dp", options=DP_OPTIONS, config=LoopConfig(export_model=False, device="cpu"),
                          distributed=ctx)
        trainer.run()
        if rank == 0:
            torch.save(trainer.objective.modules["transformer"].state_dict(), Path(tmp) / "rank0.pt")
    finally:
        destroy_process_group()


DP_SPEC = TrainSpec(steps=3, batch_size=4, lr=1e-3, checkpoint_every=3, seed=1)
DP_OPTIONS = SD3Options(caption_dropout=0.3, weighting_scheme="mode")


def test_two_gloo_ranks_train_as_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from orchestrator.training.control import LoopConfig
    from orchestrator.training.loop import Trainer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks inherit the imported modules (spawning fresh interpreters costs ~20 s here)
    mp.start_processes(_rank, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    data = shapes_data(n=8, seed=0, size=32, caption="spatial")
    single = Trainer(SD3, build_tiny(seed=0, with_t5=True), data, DP_SPEC, open_store(tmp_path / "single"),
                     "trials/dp", options=DP_OPTIONS, config=LoopConfig(export_model=False, device="cpu"))
    single.run()
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = single.objective.modules["transformer"].state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst  # the same step up to float summation order


# ---------------------------------------------------------------------------- the tiny base
def test_orch_pretrain_builds_the_tiny_sd3_base_from_an_init_with_a_trained_vae(tmp_path):
    """`orch pretrain --variant sd3` trains the transformer and both text encoders through the
    variant's objective from --init (its VAE kept: the objective trains none), and refuses to start
    without one; `model.base: null` then loads the base it saved."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.manifest.schema import ModelSpec

    runner = CliRunner()
    blobs = f"file://{tmp_path}/blobs"
    common = ["pretrain", "--variant", "sd3", "--blobs", blobs, "--steps", "2", "--n", "8", "--batch-size", "4",
              "--data-dir", str(tmp_path / "data")]
    refused = runner.invoke(app, common)
    assert refused.exit_code == 2 and "--init" in refused.output and "VAE" in refused.output
    init = build_tiny(seed=0, shift=1.0)
    init.save(tmp_path / "init")
    built = runner.invoke(app, [*common, "--init", str(tmp_path / "init"), "--warmup-steps", "1"])
    assert built.exit_code == 0, built.output
    store = open_store(blobs)
    base = load_model(None, spec=ModelSpec.model_validate({"variant": "sd3", "base": None}), store=store).model
    assert torch.equal(base.vae.decoder.conv_out.weight, init.vae.decoder.conv_out.weight)   # the VAE kept
    for name in ("transformer", "text_encoder", "text_encoder_2"):                           # the rest trained
        assert not all(torch.equal(a, b) for a, b in zip(getattr(base, name).state_dict().values(),
                                                         getattr(init, name).state_dict().values())), name
    assert base.scheduler.config.shift == 1.0


def test_the_tiny_base_can_start_its_clip_from_the_sd_bases_text_encoder_and_shorten_t5():
    """build_sd3_base.sh's init: the CLIP-L stand-in takes the shipped SD base's trained text
    encoder (same vocabulary and width; its projection stays fresh), and `max_sequence_length`
    sets the length of T5's zeros in the prompt."""
    from transformers import CLIPTextModel

    root = Path(__file__).resolve().parents[1] / "assets" / "demo-base"
    sd_text = CLIPTextModel.from_pretrained(root / "text_encoder")
    fresh, started = build_tiny(seed=0), build_tiny(seed=0, clip_from=sd_text, max_sequence_length=1)
    theirs, ours = sd_text.state_dict(), started.text_encoder.text_model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert torch.equal(started.text_encoder.text_projection.weight, fresh.text_encoder.text_projection.weight)
    assert torch.equal(started.transformer.pos_embed.proj.weight, fresh.transformer.pos_embed.proj.weight)
    assert not torch.equal(started.text_encoder.text_model.embeddings.token_embedding.weight,
                           fresh.text_encoder.text_model.embeddings.token_embedding.weight)
    embeds, _ = encode_prompt(started, ["a red circle to the left of a blue square"])
    assert embeds.shape[1] == started.tokenizer.model_max_length + 1  # CLIP's tokens, then one of T5's zeros
    narrow = CLIPTextModel(sd_text.config.__class__(**{**sd_text.config.to_dict(), "hidden_size": 16,
                                                        "intermediate_size": 32}))
    with pytest.raises(ValueError, match="clip_from: a text encoder of vocabulary .* width 16"):
        build_tiny(seed=0, clip_from=narrow)
