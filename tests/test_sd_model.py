"""Tiny Stable Diffusion: config, word tokenizer, diffusers-format round trip, sampling to a PNG grid."""
import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.models.sd import (
    build_tiny,
    build_tokenizer,
    encode_text,
    generate,
    load_components,
    save_components,
    save_grid,
    tokenize,
)
from orchestrator.storage import open_store


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


def test_word_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer(["a purple hexagon"])
    ids = tokenize(tok, ["A red circle to the left of a blue square, and another purple hexagon", ""])
    assert ids.shape == (2, tok.model_max_length)
    assert tok.unk_token_id not in ids[0].tolist()  # every shapes word and the extra ones are known
    assert ids[1, :2].tolist() == [tok.bos_token_id, tok.eos_token_id]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert torch.equal(tokenize(again, ["two yellow triangles above a green square"]),
                       tokenize(tok, ["two yellow triangles above a green square"]))


def test_tiny_shapes(tiny):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = tiny.vae.encode(x).latent_dist.mean
        assert z.shape == (2, 4, 8, 8)  # 4 latent channels, 4x downsampling
        emb = encode_text(tiny, ["a red circle", "two blue squares"])
        eps = tiny.unet(z, torch.tensor([10, 500]), encoder_hidden_states=emb).sample
    assert eps.shape == z.shape
    assert build_tiny(seed=0).unet.conv_in.weight.equal(tiny.unet.conv_in.weight)  # seeded build


def test_save_load_round_trip(tiny, tmp_path):
    save_components(tiny, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    # ... and from a blob prefix, via a temporary download
    store = open_store(tmp_path / "blobs")
    save_components(tiny, "models/t", store=store)
    for loaded in (load_components(tmp_path / "m"), load_components("models/t", store=store)):
        for a, b in ((tiny.unet, loaded.unet), (tiny.vae, loaded.vae), (tiny.text_encoder, loaded.text_encoder)):
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        ids = tokenize(loaded.tokenizer, ["a small red circle below a large blue square"])
        assert torch.equal(ids, tokenize(tiny.tokenizer, ["a small red circle below a large blue square"]))
        z, emb = torch.randn(1, 4, 8, 8), encode_text(tiny, ["a red circle"])
        with torch.no_grad():
            # Same weights; the CPU kernels may round differently for differently aligned buffers.
            torch.testing.assert_close(loaded.unet(z, 7, encoder_hidden_states=emb).sample,
                                       tiny.unet(z, 7, encoder_hidden_states=emb).sample, rtol=1e-5, atol=1e-5)
            assert torch.equal(encode_text(loaded, ["a red circle"]), emb)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_cfg_grid(tiny, tmp_path, sampler):
    prompts = ["a red circle", "two blue squares", "a green triangle above a yellow circle"]

    def run():
        return generate(tiny, prompts, sampler=sampler, steps=3, guidance_scale=3.0,
                        generator=torch.Generator().manual_seed(0), batch_size=2)

    images = run()
    assert images.shape == (3, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, run())  # seeded generator: reproducible
    path = save_grid(images, tmp_path / "grid.png", cols=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 34 + 2, 34 + 2)
