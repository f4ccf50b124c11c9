"""The FID Inception-v3 network (the TF 2015-12-05 graph), as the project's own module.

torchvision cannot be installed here, and every FID package imports it, so this module rebuilds
the network that pytorch-fid's `fid_inception_v3()` builds (torchvision's Inception3 with
num_classes=1008, aux_logits=False, and the FID-specific blocks) with the same parameter names,
so `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release file) loads with strict checks.

State-dict layout (checked by `load_fid_inception` key by key and shape by shape):
    <conv>.conv.weight                                   (out, in, kh, kw), no bias
    <conv>.bn.{weight,bias,running_mean,running_var}     (out,), BatchNorm eps 1e-3
    <conv>.bn.num_batches_tracked                        optional (not used at inference)
    fc.weight (1008, 2048), fc.bias (1008,)
for 94 convolutions: Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, Conv2d_3b_1x1, Conv2d_4a_3x3,
Mixed_5b/5c/5d (InceptionA, pool features 32/64/64), Mixed_6a (B), Mixed_6b..6e (C, 7x7 channels
128/160/160/192), Mixed_7a (D), Mixed_7b/7c (E), with torchvision's branch names (branch1x1,
branch5x5_1, ...). No AuxLogits: pytorch-fid builds the net with aux_logits=False.

Where the FID graph differs from torchvision's Inception3 (as pytorch-fid documents): average
pools in A, C and the first E block exclude the padding from the count; the last E block
(Mixed_7c) pools its branch with a 3x3 *max* pool, stride 1.

Input: images in [0, 1], resized to 299x299 with TensorFlow 1's bilinear rule (the FID graph's
`ResizeBilinear`, align_corners=False and no half-pixel offset), then scaled to [-1, 1].
Output: the 2048-d global average pool features.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's 1008-way softmax (1000 classes + unused slots)
OPTIONAL_SUFFIX = ".num_batches_tracked"


class FIDWeightsError(ValueError):
    """The weights file is not the FID Inception's (missing/unexpected keys, wrong shapes)."""


# ---------------------------------------------------------------- resize

def _tf1_indices(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of TF1 `resize_bilinear` (align_corners=False, no half-pixel
    centres): output o samples input position o·n_in/n_out."""
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    return i0, i1, (src - i0).float()


def resize_tf1_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size], bilinear as TensorFlow 1 computes it (not PyTorch's
    half-pixel rule; torch-fidelity makes the same choice to match the original FID graph)."""
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    y0, y1, wy = _tf1_indices(h, size, x.device)
    x0, x1, wx = _tf1_indices(w, size, x.device)
    rows = x[:, :, y0, :] + (x[:, :, y1, :] - x[:, :, y0, :]) * wy.to(x.dtype)[:, None]
    return rows[:, :, :, x0] + (rows[:, :, :, x1] - rows[:, :, :, x0]) * wx.to(x.dtype)


# ---------------------------------------------------------------- blocks

class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # The TF graph averages over the valid pixels only at the borders.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """`max_pool=True` is the FID graph's Mixed_7c, which pools its branch with a 3x3 max pool."""

    def __init__(self, cin: int, max_pool: bool = False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], 1)


# ---------------------------------------------------------------- network

class FIDInceptionV3(nn.Module):
    """Randomly initialised from `seed` (tests, benchmarks); use `load_fid_inception` for real
    FID. `weights_sha256` is None for random weights and the file's digest once loaded.
    `seed=None` leaves the tensors uninitialised, for a loader that fills every one of them."""
    feature_dim = FEATURE_DIM

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        # Built on the meta device, then materialised: PyTorch's per-layer default init of 24M
        # parameters would be thrown away by the seeded init below or by a weights file.
        with torch.device("meta"):
            self._build()
        self.to_empty(device="cpu")
        self.weights_sha256: str | None = None
        if seed is not None:
            self._init_random(seed)
        self.eval()

    def _build(self) -> None:
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @torch.no_grad()
    def _init_random(self, seed: int) -> None:
        # He-normal convolutions keep activations O(1) through the 94 ReLU layers (PyTorch's
        # default init shrinks them to ~1e-8), so random-weight features are usable in tests.
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # identity: mean 0, var 1, weight 1, bias 0
        self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * FEATURE_DIM ** -0.5)
        self.fc.bias.zero_()

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] (float) or uint8 -> 299x299 in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(f"float images must be in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
        return resize_tf1_bilinear(x) * 2.0 - 1.0

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> [N, 2048] pool features."""
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            x = getattr(self, name)(x)
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (any size) -> [N, 2048] pool features."""
        return self.pool_features(self.preprocess(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The 1008-way logits (what the Inception Score reads); unused by FID."""
        return self.fc(self.forward(images))


# ---------------------------------------------------------------- strict loading

def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key the FID weights file must hold, with its shape (optional counters excluded)."""
    with torch.device("meta"):
        net = FIDInceptionV3.__new__(FIDInceptionV3)
        nn.Module.__init__(net)
        net._build()
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith(OPTIONAL_SUFFIX)}


def check_state_dict(state: Any, where: str = "state dict") -> dict[str, torch.Tensor]:
    """The state dict, completed with any missing BatchNorm counters; FIDWeightsError if any
    required key is missing, any key is unexpected, or any shape differs."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise FIDWeightsError(f"{where}: expected a state dict (name -> tensor), got {type(state).__name__}")
    want = expected_shapes()
    optional = {k[: -len(".weight")] + OPTIONAL_SUFFIX for k in want if k.endswith(".bn.weight")}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want) - optional)
    wrong = sorted(f"{k}: {tuple(state[k].shape)} != {want[k]}" for k in set(want) & set(state)
                   if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != want[k])
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("wrong shapes", wrong)) if items]
        raise FIDWeightsError(f"{where} is not the FID Inception-v3 ({FID_WEIGHTS_NAME}): " + "; ".join(parts))
    full = dict(state)
    for k in optional - set(state):
        full[k] = torch.tensor(0, dtype=torch.long)
    return full


def _read_source(source: str | os.PathLike[str], store: Any) -> tuple[bytes, str]:
    """Bytes of the weights file from a local path / file:// URI, an az:// URI, or a blob key."""
    from orchestrator.storage.location import resolve_location

    src = str(source)
    try:
        loc = resolve_location(src, store=store)
        if loc.is_local and loc.path.is_file():
            return loc.path.read_bytes(), str(loc.path)
        if not loc.is_local and loc.prefix and loc.store.exists(loc.prefix):
            return loc.store.get(loc.prefix), f"blob {loc.prefix!r} in {loc.store!r}"
        where = str(loc.path) if loc.is_local else f"blob key {loc.prefix!r} in {loc.store!r}"
    except FileNotFoundError:
        where = str(Path(src[len("file://"):] if src.startswith("file://") else src).expanduser())
    raise FileNotFoundError(
        f"FID Inception weights not found at {where}. FID needs {FID_WEIGHTS_NAME} (pytorch-fid's release "
        f"of the TF 2015-12-05 Inception) as a local file or blob; it never falls back to random weights.")


def load_fid_inception(source: str | os.PathLike[str], *, store: Any = None, expected_sha256: str | None = None,
                       device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Load the FID Inception from `source` (local path, file:// or az:// URI, or a key in `store`),
    checking every key and shape; `expected_sha256` (full digest or a prefix) pins the file."""
    data, where = _read_source(source, store)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and not digest.startswith(expected_sha256.lower()):
        raise FIDWeightsError(f"{where}: sha256 {digest} does not match the expected {expected_sha256}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise FIDWeightsError(f"{where} is not a PyTorch state dict file: {exc}") from exc
    checked = check_state_dict(state, where)
    model = FIDInceptionV3(seed=None)  # uninitialised: every tensor comes from the file
    model.load_state_dict(checked, strict=True)
    model.weights_sha256 = digest
    return model.to(device).eval()
