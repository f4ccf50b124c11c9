"""The FID Inception-v3 module: key layout, strict loading, TF1 resize, feature extraction.

Random weights only: these tests check the plumbing and never claim a real FID value.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.eval.inception import (
    FEATURE_DIM,
    FIDInceptionV3,
    FIDWeightsError,
    check_state_dict,
    expected_shapes,
    load_fid_inception,
    resize_tf1_bilinear,
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
def model() -> FIDInceptionV3:
    return FIDInceptionV3(seed=1)


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.pth"
    torch.save(model.state_dict(), path)
    return path


def test_key_layout_matches_pytorch_fid():
    shapes = expected_shapes()
    convs = [k[: -len(".conv.weight")] for k in shapes if k.endswith(".conv.weight")]
    assert len(convs) == 94 and len(shapes) == 94 * 5 + 2
    for c in convs:  # BasicConv2d: bias-free conv + BatchNorm with running statistics
        assert all(f"{c}.bn.{p}" in shapes for p in ("weight", "bias", "running_mean", "running_var"))
    # a sample of names and shapes from pytorch-fid's fid_inception_v3 / torchvision's Inception3
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_5d.branch5x5_2.conv.weight"] == (64, 48, 5, 5)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch1x1.conv.weight"] == (320, 1280, 1, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3b.bn.running_var"] == (384,)
    assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
    assert not any(k.startswith("AuxLogits") for k in shapes)
    # torchvision's inception_v3 has 27,161,264 parameters; less AuxLogits (3,326,696), plus 8
    # more classes (8 * 2049): 23,850,960
    params = [k for k in shapes if ".running_" not in k]
    assert sum(int(np.prod(shapes[k])) for k in params) == 23_850_960


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_state_dict_roundtrip(tmp_path, model, weights_file):
    loaded = load_fid_inception(weights_file)
    assert loaded.weights_sha256 is not None and not loaded.training
    assert _same_weights(loaded, model)
    # files without BatchNorm's num_batches_tracked counters (older PyTorch) load as well
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "no_counters.pth")
    assert _same_weights(load_fid_inception(tmp_path / "no_counters.pth"), model)
    # from the blob store, by key
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    store.put_file("weights/fid.pth", weights_file)
    assert _same_weights(load_fid_inception("weights/fid.pth", store=store), model)


def test_strict_loading_errors(tmp_path, model, weights_file):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth.*never falls back"):
        load_fid_inception(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="blob key"):
        load_fid_inception("weights/nope.pth", store=LocalBlobStore(tmp_path / "blobs", fsync=False))
    state = model.state_dict()
    cases = {
        "missing keys": {k: v for k, v in state.items() if k != "Mixed_6c.branch1x1.conv.weight"},
        "unexpected keys": {**state, "AuxLogits.fc.weight": torch.zeros(1008, 768)},
        "wrong shapes": {**state, "fc.weight": torch.zeros(1000, 2048)},
    }
    for label, bad in cases.items():
        with pytest.raises(FIDWeightsError, match=label):
            check_state_dict(bad)
    torch.save(cases["wrong shapes"], tmp_path / "bad.pth")  # and through the file loader
    with pytest.raises(FIDWeightsError, match=r"bad.pth is not the FID Inception.*fc.weight: \(1000, 2048\)"):
        load_fid_inception(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FIDWeightsError, match="not a PyTorch state dict"):
        load_fid_inception(tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(FIDWeightsError, match="expected a state dict"):
        load_fid_inception(tmp_path / "list.pth")
    with pytest.raises(FIDWeightsError, match="sha256"):
        load_fid_inception(weights_file, expected_sha256="6726825d")


def _tf1_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Brute force, one output pixel at a time: TF1 resize_bilinear, align_corners=False."""
    h, w = img.shape
    out = np.zeros((size, size))
    for oy in range(size):
        for ox in range(size):
            sy, sx = oy * h / size, ox * w / size
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[oy, ox] = top * (1 - fy) + bottom * fy
    return out


def test_tf1_resize():
    rng = np.random.default_rng(0)
    img = rng.random((5, 7))
    got = resize_tf1_bilinear(torch.tensor(img)[None, None], size=11)[0, 0].numpy()
    np.testing.assert_allclose(got, _tf1_reference(img, 11), atol=1e-6)
    big = torch.rand(1, 3, 598, 598)
    assert torch.equal(resize_tf1_bilinear(big), big[:, :, ::2, ::2])  # exact 2x: every other pixel
    same = torch.rand(1, 3, 299, 299)
    assert resize_tf1_bilinear(same) is same


def test_features(model):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 3, 32, 32, generator=g) * 255).round().to(torch.uint8)
    with torch.inference_mode():
        feats = model(x)  # uint8 in [0, 255] -> TF1 resize to 299 -> [-1, 1] -> pool features
        small = torch.rand(2, 3, 80, 80, generator=g) * 2 - 1  # smallest sizes the net takes
        pair, alone = model.pool_features(small), model.pool_features(small[1:])
    assert feats.shape == (2, FEATURE_DIM) and torch.isfinite(feats).all()
    assert (feats >= 0).all() and feats.std() > 1e-3  # post-ReLU averages, not collapsed
    assert not torch.allclose(feats[0], feats[1])
    torch.testing.assert_close(alone[0], pair[1], rtol=1e-4, atol=1e-5)  # eval mode: no batch coupling
    pre = model.preprocess(x)
    assert pre.shape == (2, 3, 299, 299) and pre.min() >= -1 and pre.max() <= 1
    torch.testing.assert_close(model.preprocess(x.float() / 255), pre)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x.float() / 255 * 2 - 1)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(x[:, :1])


def test_reference_stats_of_a_folder(tmp_path, weights_file):
    from PIL import Image

    from orchestrator.eval.fid import folder_batches, load_reference, write_reference_stats
    from orchestrator.eval.frechet import FeatureStats

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (32, 32, 48)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    shapes = [tuple(b.shape) for b in folder_batches(tmp_path, batch_size=8)]
    assert shapes == [(2, 3, 32, 32), (1, 3, 48, 48)]  # one batch per run of same-size images
    stats = write_reference_stats(tmp_path, str(tmp_path / "ref.npz"), fid_weights=str(weights_file))
    back = FeatureStats.load(tmp_path / "ref.npz")
    assert back.n == 3 and back.dim == 2048 and np.array_equal(back.mu, stats.mu)
    _, features = load_reference(str(tmp_path / "ref.npz"))  # kept for KID and FID's spread
    assert features.shape == (3, 2048) and np.allclose(features.mean(0), stats.mu, rtol=0, atol=1e-12)
    write_reference_stats(tmp_path, str(tmp_path / "stats-only.npz"), fid_weights=str(weights_file),
                          keep_features=False)
    assert load_reference(str(tmp_path / "stats-only.npz"))[1] is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        next(iter(folder_batches(tmp_path / "empty", 8)))
