"""LoRA and DoRA for the sd variant (`model.sd.lora`, models/common/lora.py): the section validates;
only the adapters train (the U-Net's own weights stay bitwise the base's); checkpoints hold the
adapters alone and resume bit for bit; the export writes diffusers' LoRA file beside the base, which
diffusers' own StableDiffusionPipeline + load_lora_weights samples into the same images as the
project's sampler; a merged export fuses the adapters instead. All on the tiny 32 px SD."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest import ManifestError, load_experiment
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.common import lora
from orchestrator.models.common.serialize import from_bytes
from orchestrator.models.loading import load_model
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny
from orchestrator.models.sd.options import SDLora, SDOptions
from orchestrator.storage import open_store
from orchestrator.storage.location import resolve_location
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer

SD = get_variant("sd")
# Adapter dropout, EMA, accumulation and warm-up on: every piece of state or randomness a resume
# must carry. A high learning rate so four steps move the adapters visibly.
SPEC = TrainSpec(steps=4, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=1, checkpoint_every=2,
                 ema_decay=0.9, seed=3)
LORA = {"rank": 4, "alpha": 8, "dropout": 0.1}
PROMPTS = ["a red circle to the left of a blue square", "two green triangles", ""]
SAMPLING = {"steps": 4, "guidance_scale": 3.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread(torch_one_thread):
    """One thread from the module's first fixture on (the shared runs below included): bitwise
    comparisons need one fixed thread count, and a second thread only spin-waits on 2 cores."""


@pytest.fixture(scope="module")
def data():
    return shapes_data(n=12, seed=0, size=32, caption="spatial")


def model_spec(lora_section: dict | None) -> ModelSpec:
    sd = {"lora": lora_section} if lora_section is not None else {}
    return ModelSpec.model_validate({"variant": "sd", "base": "tiny-random", "sd": sd},
                                    context={"check_files": False})


def make(store, data, prefix: str, lora_section: dict | None = LORA, export: bool = False) -> Trainer:
    """A trainer on the tiny-random base as `orch train` builds it (load_base, origin recorded)."""
    spec = model_spec(lora_section)
    return Trainer(SD, SD.load_base(spec, None, None), data, SPEC, store, prefix, options=spec.options,
                   origin={"model": spec.model_dump(mode="json"), "base_dir": None},
                   config=LoopConfig(export_model=export))


def checkpoint(store, prefix: str, step: int) -> bytes:
    return store.get(f"{prefix}/checkpoints/step-{step:08d}.pt")


def base_state(unet) -> dict[str, torch.Tensor]:
    """The U-Net's own weights (its LoRA layers' base layers), by the base's key names."""
    with lora.base_layers_only(unet):
        return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- the section
MANIFEST = """\
name: lora
model:
  variant: sd
  base: tiny-random
  sd:
    lora: {lora}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 2, batch_size: 4}}
storage: {{blobs: ./blobs}}
"""


def issues_of(path: Path) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ManifestError) as err:
        load_experiment(path)
    return {i.path: (i.line, i.message) for i in err.value.issues}


def test_the_section_validates_and_refuses_what_it_does_not_know(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.format(lora="{rank: 8, dora: true}"))
    model = load_experiment(path).manifest.model
    section = model.options.lora
    assert isinstance(section, SDLora) and (section.rank, section.scale_alpha, section.dora) == (8, 8.0, True)
    assert section.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]   # sd's default targets
    assert model.model_dump()["sd"]["lora"] == {"rank": 8, "dora": True}     # defaults left out
    assert "lora" not in SDOptions().model_dump()   # no lora: the dump (and every id) as before

    path.write_text(MANIFEST.format(lora="{rnk: 8}"))
    assert issues_of(path) == {"model.sd.lora.rnk": (
        6, "unknown key 'rnk' (allowed: rank, alpha, targets, dora, dropout, merge_on_export)")}
    path.write_text(MANIFEST.format(lora="{rank: 0, targets: ['to_q', 'attn*']}"))
    found = issues_of(path)
    assert set(found) == {"model.sd.lora.rank", "model.sd.lora.targets"}
    assert "module-name suffixes" in found["model.sd.lora.targets"][1]
    path.write_text(MANIFEST.format(lora="{}").replace("  sd:\n", "  sd:\n    train_text_encoder: true\n"))
    (message,) = [m for _, m in issues_of(path).values()]
    assert "train_text_encoder cannot be true with it" in message


def test_targets_that_name_nothing_are_a_clear_error():
    with pytest.raises(ValueError, match=r"lora.targets \['to_nothing'\] do not name linear layers"):
        SD.load_base(model_spec({"targets": ["to_nothing"]}), None, None)


# ------------------------------------------------------------------- training and checkpoints
@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """A LoRA run straight through, the same run stopped at step 2 and resumed, and a full
    finetune of the same base (for the checkpoint size)."""
    store = open_store(tmp_path_factory.mktemp("lora") / "blobs")
    ref = make(store, data, "ref")
    straight = ref.run()
    make(store, data, "split").run(max_steps=2)
    resumed = make(store, data, "split")
    result = resumed.run()
    full = make(store, data, "full", lora_section=None)
    full.run()
    return store, ref, straight, resumed, result, full


def test_only_the_adapters_train_and_the_base_weights_stay_bitwise(runs):
    store, ref, *_ = runs
    c, base = ref.model, build_tiny(seed=0)
    assert sorted(ref.objective.modules) == ["unet_lora"]
    trained = {n for n, p in c.unet.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert {id(p) for p in ref.params} == {id(p) for n, p in c.unet.named_parameters() if n in trained}
    assert not any(p.requires_grad for m in (c.vae, c.text_encoder) for p in m.parameters())
    # the targets: q, k, v and out of every attention, self and cross
    wrapped = {"to_out.0" if n.endswith("to_out.0") else n.rsplit(".", 1)[-1]
               for n, m in c.unet.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == {"to_q", "to_k", "to_v", "to_out.0"}
    # after training (and the EMA applied at export time, then restored) the base is untouched ...
    assert_same_tensors(base_state(c.unet), base.unet.state_dict())
    # ... and the adapters moved (B starts at zero)
    assert any(p.abs().sum() > 0 for n, p in c.unet.named_parameters() if ".lora_B." in n)


def test_checkpoints_hold_the_adapters_alone_and_resume_bit_for_bit(runs):
    store, ref, straight, resumed, result, full = runs
    assert result.resumed_from == 2 and result.steps_run == 2 and result.final_loss == straight.final_loss
    sa, sb = ref.trained.state_dict(), resumed.trained.state_dict()
    assert_same_tensors(sa, sb)
    assert all(torch.equal(x, y) for x, y in zip(ref.ema.shadow, resumed.ema.shadow))
    for step in (2, 4):   # the same bytes at every step both wrote
        assert checkpoint(store, "ref", step) == checkpoint(store, "split", step)

    state = from_bytes(checkpoint(store, "ref", 4))
    assert list(state["modules"]) == ["unet_lora"]
    assert state["modules"]["unet_lora"] and all(".lora_" in k for k in state["modules"]["unet_lora"])
    assert all(n.startswith("unet_lora.") and ".lora_" in n for n in state["ema"]["names"])
    assert state["origin"]["model"]["sd"]["lora"] == {"alpha": 8.0, "dropout": 0.1}  # its config
    lora_bytes, full_bytes = len(checkpoint(store, "ref", 4)), len(checkpoint(store, "full", 4))
    assert lora_bytes * 20 < full_bytes, (lora_bytes, full_bytes)

    # the loader re-applies the adapters from the recorded config, then loads them (EMA weights)
    loaded = load_model("ref/checkpoints/step-00000004.pt", store=store)
    assert loaded.step == 4 and set(SD.modules(loaded.model)) == {"unet", "vae", "text_encoder", "unet_lora"}
    ema = dict(zip(state["ema"]["names"], state["ema"]["shadow"]))
    assert_same_tensors({f"unet_lora.{k}": v for k, v in loaded.model.lora.state_dict().items()}, ema)
    assert_same_tensors(base_state(loaded.model.unet), build_tiny(seed=0).unet.state_dict())


# -------------------------------------------------------------------------------------- export
def diffusers_images(directory: Path, with_lora: bool) -> torch.Tensor:
    """The exported directory sampled by diffusers' own pipeline (DDIM, classifier-free guidance),
    its LoRA file loaded onto the base by load_lora_weights."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(directory, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if with_lora:
        pipe.load_lora_weights(directory)
    out = pipe(PROMPTS, height=32, width=32, num_inference_steps=SAMPLING["steps"],
               guidance_scale=SAMPLING["guidance_scale"], generator=torch.Generator().manual_seed(0),
               output_type="pt")
    return out.images


def our_images(model) -> torch.Tensor:
    return SD.generate(model, PROMPTS, sampler="ddim", generator=torch.Generator().manual_seed(0),
                       batch_size=len(PROMPTS), **SAMPLING)


@pytest.mark.parametrize("case", ["lora", "dora", "merged"])
def test_the_export_loads_in_diffusers_and_samples_the_same_images(tmp_path, data, case):
    section = {**LORA, "dora": case == "dora", "merge_on_export": case == "merged"}
    store = open_store(tmp_path / "blobs")
    trainer = make(store, data, "run", section, export=True)
    result = trainer.run()
    with resolve_location(result.model_prefix, store=store).local_dir() as d:
        directory = Path(d)
        files = sorted(p.name for p in directory.iterdir())
        base = build_tiny(seed=0)
        # the trained model as the project holds it: from the checkpoint (EMA adapters applied)
        adapted = load_model(result.checkpoint, store=store).model
        expected = our_images(adapted)
        assert not torch.allclose(expected, our_images(base), atol=1e-3)   # the adapters do something
        exported = load_model(str(directory)).model
        if case == "merged":
            assert lora.LORA_FILE not in files and exported.lora is None   # a plain model directory
            torch.testing.assert_close(our_images(exported), expected, atol=1e-5, rtol=0)
            theirs = diffusers_images(directory, with_lora=False)
        else:
            assert lora.LORA_FILE in files
            # unet/ is the base, bit for bit; the adapters are the file's
            assert_same_tensors(base_state(exported.unet), base.unet.state_dict())
            assert_same_tensors(exported.lora.state_dict(), adapted.lora.state_dict())
            assert torch.equal(our_images(exported), expected)
            theirs = diffusers_images(directory, with_lora=True)
        torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)
    if case == "dora":
        assert any(".lora_magnitude_vector." in n for n in trainer.model.lora.state_dict())
    # exporting (merged or not, EMA swapped in and out) left the trained model's base as it was
    assert_same_tensors(base_state(trainer.model.unet), base.unet.state_dict())


def test_a_lora_export_used_as_a_base_is_fused_into_a_plain_model(tmp_path, data):
    store = open_store(tmp_path / "blobs")
    result = make(store, data, "run", export=True).run()
    with resolve_location(result.model_prefix, store=store).local_dir() as d:
        adapted = load_model(str(d)).model
        expected = our_images(adapted)
        spec = ModelSpec.model_validate({"variant": "sd", "base": str(d)}, context={"check_files": False})
        base = SD.load_base(spec, None, None)
    assert base.lora is None and set(SD.modules(base)) == {"unet", "vae", "text_encoder"}
    assert all(p.requires_grad for p in base.unet.parameters())
    torch.testing.assert_close(our_images(base), expected, atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------------- sd3
def test_sd3_lora_trains_the_transformers_adapters_and_diffusers_samples_its_export(tmp_path, data):
    """The same pieces on SD3's transformer (`model.sd3.lora`, its both-stream attention targets):
    only adapters train, the checkpoint holds `transformer_lora` alone, and diffusers'
    StableDiffusion3Pipeline + load_lora_weights samples the export as the project does."""
    from diffusers import StableDiffusion3Pipeline

    sd3 = get_variant("sd3")
    spec = ModelSpec.model_validate({"variant": "sd3", "base": "tiny-random", "sd3": {"lora": LORA}},
                                    context={"check_files": False})
    model = sd3.load_base(spec, None, None)
    base = {k: v.clone() for k, v in base_state(model.transformer).items()}
    assert {n for n, p in model.transformer.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.transformer.named_parameters() if "lora_" in n}
    assert any(".add_q_proj.lora_A." in n for n, _ in model.transformer.named_parameters())
    store = open_store(tmp_path / "blobs")
    trainer = Trainer(sd3, model, data, SPEC, store, "run", options=spec.options,
                      origin={"model": spec.model_dump(mode="json"), "base_dir": None},
                      config=LoopConfig(export_model=True))
    result = trainer.run()
    assert set(from_bytes(checkpoint(store, "run", 4))["modules"]) == {"transformer_lora"}
    assert_same_tensors(base_state(model.transformer), base)   # the transformer's own weights: the base's
    prompts = PROMPTS[:2]

    def ours(m) -> torch.Tensor:
        return sd3.generate(m, prompts, generator=torch.Generator().manual_seed(0), **SAMPLING)

    with resolve_location(result.model_prefix, store=store).local_dir() as d:
        directory = Path(d)
        assert lora.LORA_FILE in {p.name for p in directory.iterdir()}
        expected = ours(load_model(result.checkpoint, store=store).model)
        exported = load_model(str(directory)).model
        assert torch.equal(ours(exported), expected)
        pipe = StableDiffusion3Pipeline.from_pretrained(directory, local_files_only=True, text_encoder_3=None,
                                                        tokenizer_3=None)
        pipe.set_progress_bar_config(disable=True)
        plain = pipe(prompts, height=32, width=32, num_inference_steps=SAMPLING["steps"],
                     guidance_scale=SAMPLING["guidance_scale"], generator=torch.Generator().manual_seed(0),
                     output_type="pt", max_sequence_length=exported.max_sequence_length).images
        pipe.load_lora_weights(directory)
        theirs = pipe(prompts, height=32, width=32, num_inference_steps=SAMPLING["steps"],
                      guidance_scale=SAMPLING["guidance_scale"], generator=torch.Generator().manual_seed(0),
                      output_type="pt", max_sequence_length=exported.max_sequence_length).images
    assert not torch.allclose(plain, theirs, atol=1e-4)   # the LoRA file changes diffusers' images ...
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)   # ... into the project's


def test_sd3_lora_refuses_trained_text_encoders():
    with pytest.raises(ValueError, match="train_text_encoders cannot be true"):
        ModelSpec.model_validate({"variant": "sd3", "base": "tiny-random",
                                  "sd3": {"lora": {}, "train_text_encoders": True}}, context={"check_files": False})
