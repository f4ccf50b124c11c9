"""`orch pretrain`'s tiny base: trains, saves in diffusers format, and is what trials start from."""
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.manifest.schema import ModelSpec
from orchestrator.models.loading import load_model
from orchestrator.models.sd import load_components, tokenize
from orchestrator.storage import open_store
from orchestrator.training import TINY_BASE_PREFIX
from orchestrator.training.pretrain import pretrain_base


def test_pretrain_saves_a_loadable_base(tmp_path):
    torch.set_num_threads(1)
    store = open_store(tmp_path / "blobs")
    seen = []
    where = pretrain_base(TINY_BASE_PREFIX, tmp_path / "data", steps=4, seed=0, n=16, batch_size=8,
                          store=store, on_metrics=seen.append)
    assert where == TINY_BASE_PREFIX and [m["step"] for m in seen] == [1, 2, 3, 4]
    assert (tmp_path / "data" / "captions.jsonl").exists()  # the generic-caption shapes data it used

    base = load_model(None, spec=ModelSpec(variant="sd"), store=store).model  # a manifest without model.base
    assert base.latent_scale != 1.0  # fitted to the trained VAE's latents
    ids = tokenize(base.tokenizer, ["a red circle to the left of two blue squares"])
    assert base.tokenizer.unk_token_id not in ids[0].tolist()  # finetune words exist from the start
    local = load_components(pretrain_base(tmp_path / "dir", tmp_path / "data", steps=1, n=16, batch_size=8))
    assert local.unet.config.in_channels == 4


def test_pretrain_init_continues_a_base_keeping_its_vae(tmp_path):
    """--init: the base's VAE and latent scale stay byte-identical; its denoiser trains on."""
    from orchestrator.models.sd.pipeline import module_hash

    torch.set_num_threads(1)
    first = load_components(pretrain_base(tmp_path / "a", tmp_path / "data", steps=2, n=16, batch_size=8))
    seen = []
    more = load_components(pretrain_base(tmp_path / "b", tmp_path / "data", steps=3, n=16, batch_size=8,
                                         init=tmp_path / "a", on_metrics=seen.append))
    assert [m["step"] for m in seen] == [1, 2, 3]
    assert module_hash(more.vae) == module_hash(first.vae) and more.latent_scale == first.latent_scale
    assert module_hash(more.unet) != module_hash(first.unet)
    assert module_hash(more.text_encoder) != module_hash(first.text_encoder)


def test_pretrain_init_with_a_new_denoiser_size(tmp_path):
    """--init DIR --denoiser small: DIR's VAE under a new, wider U-Net and text encoder."""
    import pytest

    from orchestrator.models.sd.pipeline import module_hash

    torch.set_num_threads(1)
    first = load_components(pretrain_base(tmp_path / "a", tmp_path / "data", steps=1, n=16, batch_size=8))
    small = load_components(pretrain_base(tmp_path / "b", tmp_path / "data", steps=1, n=16, batch_size=8,
                                          init=tmp_path / "a", denoiser="small"))
    assert module_hash(small.vae) == module_hash(first.vae)
    assert list(small.unet.config.block_out_channels) == [64, 128] and small.text_encoder.config.hidden_size == 64
    assert small.unet.config.cross_attention_dim == 64
    with pytest.raises(ValueError, match="unknown denoiser size 'huge'"):
        pretrain_base(tmp_path / "c", tmp_path / "data", steps=1, n=16, batch_size=8, init=tmp_path / "a",
                      denoiser="huge")


def test_pretrain_with_a_finer_latent_grid(tmp_path):
    """--latent-downsample 2: a two-block VAE (4x16x16 latents at 32 px) under a three-level U-Net;
    the saved base samples at that grid, and the option is refused where it cannot apply."""
    import pytest

    from orchestrator.models.sd.sampling import generate

    torch.set_num_threads(1)
    c = load_components(pretrain_base(tmp_path / "a", tmp_path / "data", steps=1, vae_steps=1, n=16, batch_size=8,
                                      latent_downsample=2))
    assert c.vae_downsample == 2 and c.unet.config.sample_size == 16 and len(c.unet.config.block_out_channels) == 3
    with torch.no_grad():
        z = c.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)
    images = generate(c, ["a red circle"], steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="latent downsample must be one of"):
        pretrain_base(tmp_path / "b", tmp_path / "data", steps=1, n=16, batch_size=8, latent_downsample=8)
    with pytest.raises(ValueError, match="--init keeps its base's"):
        pretrain_base(tmp_path / "c", tmp_path / "data", steps=1, n=16, batch_size=8, init=tmp_path / "a",
                      latent_downsample=2)


def test_pretrain_caption_style(tmp_path):
    """--captions described: the same build learns from other text (sizes, every object named), so
    its denoiser comes out different; a style the dataset lacks is refused by name."""
    import pytest

    from orchestrator.models.sd.pipeline import module_hash

    torch.set_num_threads(1)
    builds = {style: load_components(pretrain_base(tmp_path / style, tmp_path / "data", steps=2, vae_steps=1, n=16,
                                                   batch_size=8, captions=style))
              for style in ("generic", "described")}
    assert module_hash(builds["generic"].vae) == module_hash(builds["described"].vae)  # same images, same seed
    assert module_hash(builds["generic"].text_encoder) != module_hash(builds["described"].text_encoder)
    with pytest.raises(ValueError, match="'sized' is not a shapes caption style; styles: generic, spatial"):
        pretrain_base(tmp_path / "x", tmp_path / "data", steps=1, n=16, batch_size=8, captions="sized")


def test_pretrain_in_the_pairs_world(tmp_path):
    """--world pairs: the base learns from two-object scenes (the dataset it writes says so)."""
    import json

    torch.set_num_threads(1)
    pretrain_base(tmp_path / "b", tmp_path / "data", steps=1, vae_steps=1, n=8, batch_size=4, world="pairs")
    assert json.loads((tmp_path / "data" / "summary.json").read_text())["world"] == "pairs"
    caps = [json.loads(line)["generic"] for line in (tmp_path / "data" / "captions.jsonl").read_text().splitlines()]
    assert all(" and " in c for c in caps)  # two different objects, named one by one


def test_pretrain_refuses_a_data_dir_of_another_world(tmp_path):
    """A --data-dir holding another dataset (here: the mixed world) is refused, not trained on."""
    import pytest

    from orchestrator.data.shapes import write_shapes_dataset

    write_shapes_dataset(tmp_path / "data", n=8, seed=0)
    with pytest.raises(FileExistsError, match="holds a different dataset"):
        pretrain_base(tmp_path / "b", tmp_path / "data", steps=1, vae_steps=1, n=8, batch_size=4, world="pairs")
