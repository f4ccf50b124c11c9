"""The tiny shapes-world CLIP: contrastive training lowers the loss; transformers-format round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from orchestrator.models.clip import (
    ClipTrainer,
    contrastive_loss,
    load_clip,
    save_clip,
    shapes_clip_data,
    train_tiny_clip,
)
from orchestrator.storage import LocalBlobStore


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # One intra-op thread: on a shared 2-core machine a second one spin-waits and runs 10-50x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return shapes_clip_data(40, seed=0)


def test_training_data(data):
    assert data.n_scenes == 40 and len(data) > 40  # swapped Winoground images appended
    assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 32, 32)
    for i, p in enumerate(data.partner):
        if p >= 0:
            assert data.partner[p] == i  # pairs point at each other
    assert all(len(c) >= 1 for c in data.captions)


def test_loss_matches_definition():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.5, 1.0], [1.0, 0.0]])
    texts = ["a", "b", "a"]  # rows 0 and 2 share a caption: both are positives for it
    scale = torch.tensor(math.log(10.0))
    logits = 10 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.tensor([[0.5, 0, 0.5], [0, 1.0, 0], [0.5, 0, 0.5]])
    want = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean())
    assert contrastive_loss(img, txt, scale, texts).item() == pytest.approx(want.item(), rel=1e-6)
    # the pair term: the same loss on rows/columns (0, 1) alone, with the identity as target
    block = logits[:2, :2]
    eye = torch.eye(2)
    pair = 0.5 * (-(eye * block.log_softmax(1)).sum(1).mean() - (eye * block.T.log_softmax(1)).sum(1).mean())
    got = contrastive_loss(img, txt, scale, texts, pairs=[(0, 1)], pair_weight=0.5).item()
    assert got == pytest.approx((want + 0.5 * pair).item(), rel=1e-6)


def test_a_few_steps_reduce_the_loss(data):
    trainer = ClipTrainer(data, seed=0, lr=3e-3, batch_size=24)
    images, texts, pairs = trainer.sample_batch()
    words = [sorted(t.replace(",", "").split()) for t in texts]
    assert pairs and all(texts[i] != texts[j] and words[i] == words[j] for i, j in pairs)  # roles swapped
    with torch.no_grad():
        before = trainer.loss_on(images, texts, pairs).item()
    for _ in range(8):
        trainer.step()
    with torch.no_grad():
        after = trainer.loss_on(images, texts, pairs).item()
    assert after < before - 0.05, (before, after)


def test_save_load_roundtrip(tmp_path):
    enc, result = train_tiny_clip(tmp_path / "clip", steps=2, seed=1, n=24, batch_size=8)
    assert result.steps == 2 and len(result.losses) == 2 and result.saved_to
    for f in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (tmp_path / "clip" / f).is_file(), f
    texts = ["a red circle to the left of a blue square", "two yellow triangles"]
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t0, i0 = enc.encode_texts(texts), enc.encode_images(images)
    back = load_clip(tmp_path / "clip")
    assert torch.allclose(back.encode_texts(texts), t0, atol=1e-6)
    assert torch.allclose(back.encode_images(images), i0, atol=1e-6)
    # scores: cosine similarities, and the Winoground scorer interface
    sim = back.similarity(texts, images)
    assert sim.shape == (2, 3) and np.allclose(sim, (t0 @ i0.T).double().numpy(), atol=1e-6)
    assert back(texts[0], images[1]) == pytest.approx(sim[0, 1], abs=1e-6)
    # through the blob store (config.json written last marks a complete upload)
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    save_clip(back, "models/tiny-clip", store=store)
    assert store.list("models/tiny-clip/")[-1].endswith("tokenizer_config.json") or store.exists(
        "models/tiny-clip/config.json")
    from_blob = load_clip("models/tiny-clip", store=store)
    assert torch.allclose(from_blob.encode_texts(texts), t0, atol=1e-6)


def test_missing_clip_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CLIP directory"):
        load_clip(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no CLIP model under blob prefix"):
        load_clip("models/none", store=LocalBlobStore(tmp_path / "blobs", fsync=False))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        load_clip(tmp_path / "half")
