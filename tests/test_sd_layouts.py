"""Real SD directory layouts (v1-5: ε + PNDM + CLIP BPE tokenizer; v2-1: v-prediction + DDIM)
load offline from a path or a blob prefix and train; tiny weights stand in for the real ones."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import CLIPTextConfig, CLIPTextModel

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.diffusion import training_target
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny, load_components, tiny_config
from orchestrator.storage import open_store
from orchestrator.storage.location import put_dir
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer

SCHEDULERS = {
    # what runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 ship
    "v1-5": ("PNDMScheduler", {"prediction_type": "epsilon", "skip_prk_steps": True}),
    "v2-1": ("DDIMScheduler", {"prediction_type": "v_prediction", "clip_sample": False}),
}


def write_clip_bpe_tokenizer(out: Path) -> int:
    """A character-level CLIP BPE vocabulary in SD's tokenizer/ layout (vocab.json + merges.txt)."""
    out.mkdir(parents=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": tiny_config.MAX_TOKENS,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "do_lower_case": True}))
    return len(vocab)


def make_sd_dir(root: Path, release: str) -> Path:
    """Tiny weights written the way a real SD release lays its directory out."""
    out = root / f"sd-{release}"
    build_tiny(seed=0).save(out)
    shutil.rmtree(out / "tokenizer")
    vocab_size = write_clip_bpe_tokenizer(out / "tokenizer")
    cfg = tiny_config.text_config(vocab_size, vocab_size - 1, vocab_size - 2, vocab_size - 1)
    shutil.rmtree(out / "text_encoder")
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**cfg)).save_pretrained(out / "text_encoder", safe_serialization=True)
    cls, extra = SCHEDULERS[release]
    sched = {"_class_name": cls, **tiny_config.SCHEDULER_CONFIG, **extra}
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    index = json.loads((out / "model_index.json").read_text())
    index.update({"scheduler": ["diffusers", cls], "tokenizer": ["transformers", "CLIPTokenizer"],
                  "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
                  "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": True})
    (out / "model_index.json").write_text(json.dumps(index))
    return out


@pytest.mark.parametrize("release", ["v1-5", "v2-1"])
def test_real_layout_loads_from_path_and_blobs_and_trains(tmp_path, release):
    torch.set_num_threads(1)
    sd_dir = make_sd_dir(tmp_path, release)
    from_path = load_components(sd_dir)
    assert type(from_path.tokenizer).__name__ == "CLIPTokenizer"
    assert from_path.scheduler.config.prediction_type == SCHEDULERS[release][1]["prediction_type"]

    store = open_store(tmp_path / "blobs")
    put_dir(store, sd_dir, f"models/{release}")
    from_blobs = load_components(f"models/{release}", store=store)
    a, b = from_path.unet.state_dict(), from_blobs.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the loss target follows the release's parameterisation
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    target = training_target(from_path.scheduler, latents, noise, t)
    if release == "v1-5":
        assert torch.equal(target, noise)
    else:
        ac = from_path.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert torch.allclose(target, ac.sqrt() * noise - (1 - ac).sqrt() * latents, atol=1e-6)

    spec = TrainSpec(steps=2, batch_size=2, checkpoint_every=2, min_snr_gamma=5.0)
    result = Trainer(get_variant("sd"), from_blobs, shapes_data(n=4, seed=0, size=32, caption="spatial"), spec, store,
                     f"trials/{release}", config=LoopConfig(export_model=False)).run(None)
    assert result.finished and torch.isfinite(torch.tensor(result.final_loss))
