"""Stable Diffusion 3 / 3.5 components: build tiny, load and save in diffusers' directory layout,
and encode prompts as SD3 does.

A model directory is what `StableDiffusion3Pipeline.save_pretrained` writes: model_index.json and
transformer/ (SD3Transformer2DModel, the MMDiT), vae/ (AutoencoderKL with scaling_factor and
shift_factor), text_encoder/ and text_encoder_2/ (CLIPTextModelWithProjection: CLIP-L and
OpenCLIP bigG) with tokenizer/ and tokenizer_2/, optionally text_encoder_3/ (T5EncoderModel) with
tokenizer_3/, and scheduler/ (FlowMatchEulerDiscreteScheduler). The loader reads a real release's
directory and the project's tiny ones alike, from a path, a file:// or az:// URI, or a blob prefix.
Our own directories also name the variant (`_orch_variant`) and T5's token length
(`_orch_max_sequence_length`) in model_index.json; diffusers ignores keys starting with "_".
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from orchestrator.models.common.shapes_tokenizer import MAX_TOKENS, SHAPES_WORDS, build_tokenizer, words_of
from orchestrator.models.registry import INDEX_KEY
from orchestrator.storage.location import put_dir, resolve_location, strip_file_scheme

# model_index.json key recording T5's token length (the length of the zeros when T5 is absent).
SEQ_KEY = "_orch_max_sequence_length"
# T5's token length for a directory that records none: diffusers' SD3 training scripts' default
# (its pipeline samples with 256 unless told; pass max_sequence_length to match it).
DEFAULT_MAX_SEQUENCE_LENGTH = 77
# What every SD3 directory holds (T5 and its tokenizer are optional).
REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")
FLAVOURS = ("sd3", "sd35")


@dataclass
class SD3Components:
    transformer: SD3Transformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModelWithProjection    # CLIP-L
    tokenizer: Any
    text_encoder_2: CLIPTextModelWithProjection  # OpenCLIP bigG
    tokenizer_2: Any
    text_encoder_3: T5EncoderModel | None        # T5 v1.1; None: its part of the prompt is zeros
    tokenizer_3: Any
    scheduler: FlowMatchEulerDiscreteScheduler   # its config (shift) gives training's σ table and sampling
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH
    lora: Any = None  # common.lora.Adapters: the transformer's LoRA / DoRA adapters, when it carries them

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.vae.config.shift_factor or 0.0)

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def text_encoders(self) -> dict[str, torch.nn.Module]:
        found = {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}
        if self.text_encoder_3 is not None:
            found["text_encoder_3"] = self.text_encoder_3
        return found

    def freeze_encoders(self) -> None:
        """SD3 finetuning trains the transformer only."""
        for m in (self.vae, *self.text_encoders.values()):
            m.requires_grad_(False)
            m.eval()

    def drop_t5(self) -> "SD3Components":
        """Leave T5 out: its part of every prompt becomes zeros (as the pipeline without it)."""
        self.text_encoder_3, self.tokenizer_3 = None, None
        return self

    def to(self, device: torch.device | str) -> "SD3Components":
        for m in (self.transformer, self.vae, *self.text_encoders.values()):
            m.to(device)
        return self

    def save(self, out_dir: str | Path) -> Path:
        """Write diffusers' layout (safetensors); loadable by `load_components` and by
        `StableDiffusion3Pipeline.from_pretrained`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._save_transformer(out)
        for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            module = getattr(self, name)
            if module is not None:
                module.save_pretrained(out / name, safe_serialization=True)
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            tok = getattr(self, name)
            if tok is not None:
                tok.save_pretrained(out / name)
        self.scheduler.save_pretrained(out / "scheduler")
        index = {
            "_class_name": "StableDiffusion3Pipeline",
            "_diffusers_version": _diffusers_version(),
            "transformer": ["diffusers", type(self.transformer).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", _tokenizer_class_name(self.tokenizer)],
            "text_encoder_2": ["transformers", type(self.text_encoder_2).__name__],
            "tokenizer_2": ["transformers", _tokenizer_class_name(self.tokenizer_2)],
            "text_encoder_3": (["transformers", type(self.text_encoder_3).__name__]
                               if self.text_encoder_3 is not None else [None, None]),
            "tokenizer_3": (["transformers", _tokenizer_class_name(self.tokenizer_3)]
                            if self.tokenizer_3 is not None else [None, None]),
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "image_encoder": [None, None],
            "feature_extractor": [None, None],
            INDEX_KEY: "sd3",
            SEQ_KEY: int(self.max_sequence_length),
        }
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return out


    def _save_transformer(self, out: Path) -> None:
        """transformer/ in diffusers' layout; with adapters, the base's weights and diffusers' LoRA
        file beside them, or the adapters fused in (merge_on_export)."""
        def save() -> None:
            self.transformer.save_pretrained(out / "transformer", safe_serialization=True)

        if self.lora is None:
            save()
        else:
            from diffusers import StableDiffusion3Pipeline

            from orchestrator.models.common import lora

            lora.save_with_adapters(self.transformer, self.lora, save, StableDiffusion3Pipeline.save_lora_weights,
                                    out, "transformer")


def _tokenizer_class_name(tokenizer: Any) -> str:
    # transformers 5 names the generic fast tokenizer TokenizersBackend; the older name is an alias
    # of it there and the real class in transformers 4, so either library loads it. Its T5Tokenizer
    # is the fast one, which diffusers' SD3 index calls T5TokenizerFast (an alias in 5).
    name = type(tokenizer).__name__
    return {"TokenizersBackend": "PreTrainedTokenizerFast", "T5Tokenizer": "T5TokenizerFast"}.get(name, name)


def _diffusers_version() -> str:
    import diffusers
    return diffusers.__version__


# ---------------------------------------------------------------------------- prompts
def _clip_tokens(tokenizer: Any, texts: list[str], length: int) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


def encode_prompt(c: SD3Components, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token embeddings [B, L_clip + L_t5, joint_attention_dim], pooled [B, pooled_dim]) as
    StableDiffusion3Pipeline.encode_prompt makes them: both CLIPs' penultimate hidden states
    concatenated on channels and zero-padded to the transformer's width, then T5's last hidden
    state (zeros of T5's token length without T5) after them on the sequence; pooled: both CLIPs'
    projected pooled outputs, concatenated. Both CLIPs are tokenized to the first tokenizer's
    length, as the pipeline does. Gradients flow if the encoders require them."""
    device = c.text_encoder.device
    length = int(c.tokenizer.model_max_length)
    clip_states, pooled = [], []
    for tok, enc in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
        out = enc(_clip_tokens(tok, texts, length).to(device), output_hidden_states=True)
        clip_states.append(out.hidden_states[-2])
        pooled.append(out[0])
    clip = torch.cat(clip_states, dim=-1)
    width = int(c.transformer.config.joint_attention_dim)
    if c.text_encoder_3 is not None:
        ids = c.tokenizer_3(texts, padding="max_length", max_length=c.max_sequence_length, truncation=True,
                            add_special_tokens=True, return_tensors="pt").input_ids
        t5 = c.text_encoder_3(ids.to(c.text_encoder_3.device))[0].to(clip.dtype)
    else:
        t5 = torch.zeros((len(texts), c.max_sequence_length, width), device=clip.device, dtype=clip.dtype)
    clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


# ---------------------------------------------------------------------------- tiny
def tiny_transformer_config(latent_side: int, latent_channels: int, flavour: str) -> dict[str, Any]:
    """An MMDiT over an 8x8 latent for 32 px images (patch 1: 64 image tokens), 4 heads x 16."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown SD3 flavour {flavour!r}; flavours: {', '.join(FLAVOURS)}")
    return {
        "sample_size": latent_side, "patch_size": 1, "in_channels": latent_channels,
        "out_channels": latent_channels, "num_layers": 4, "attention_head_dim": 16, "num_attention_heads": 4,
        "joint_attention_dim": TINY_JOINT_DIM, "caption_projection_dim": 64,
        "pooled_projection_dim": sum(TINY_CLIP_PROJ), "pos_embed_max_size": latent_side,
        # SD3.5: RMS norm on queries and keys; SD3.5-medium's MMDiT-X adds image self-attention
        # in its first layers (dual attention), here in the first.
        **({"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if flavour == "sd35" else {}),
    }


TINY_CLIP_WIDTH = (32, 24)   # CLIP-L and CLIP-G stand-ins: 56 channels, zero-padded to 64
TINY_CLIP_PROJ = (32, 32)    # their projections: pooled 64
TINY_JOINT_DIM = 64          # the transformer's text width = T5's d_model


def _tiny_clip(tokenizer: Any, width: int, proj: int) -> CLIPTextModelWithProjection:
    ids = tokenizer.convert_tokens_to_ids
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=proj,
        pad_token_id=ids(tokenizer.pad_token), bos_token_id=ids(tokenizer.bos_token),
        eos_token_id=ids(tokenizer.eos_token)))


def _load_clip_weights(target: CLIPTextModelWithProjection, source: CLIPTextModel, vocab: int) -> None:
    if source.config.vocab_size != vocab or source.config.hidden_size != target.config.hidden_size:
        raise ValueError(f"clip_from: a text encoder of vocabulary {source.config.vocab_size} and width "
                         f"{source.config.hidden_size} cannot start one of {vocab} and {target.config.hidden_size}")
    # The stand-in wraps the same text transformer (transformers 5: CLIPTextModel is one itself)
    # and adds a projection, which stays fresh.
    target.text_model.load_state_dict(getattr(source, "text_model", source).state_dict())


def build_t5_tokenizer(extra_texts: list[str] | tuple[str, ...] = ()) -> T5Tokenizer:
    """A T5 tokenizer (transformers' own class, a Unigram model as T5's sentencepiece one) over
    the shapes words plus any word of `extra_texts` as whole pieces, single characters as the
    fallback: <pad> 0, </s> 1, <unk> 2, as T5's, and </s> appended to every text."""
    words = dict.fromkeys([*SHAPES_WORDS, *sorted(set(words_of(extra_texts)))])
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,."
    chars = sorted(set(alphabet) | {ch for w in words for ch in w})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words] + [(ch, -5.0) for ch in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_TOKENS)


def _tiny_t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=TINY_JOINT_DIM, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def build_tiny(seed: int = 0, resolution: int = 32, caption_texts: list[str] | None = None, *,
               flavour: str = "sd3", with_t5: bool = False, latent_channels: int = 4,
               latent_downsample: int = 4, vae: AutoencoderKL | None = None, shift: float = 3.0,
               clip_from: CLIPTextModel | None = None, max_sequence_length: int = MAX_TOKENS,
               clip_tokens: int = MAX_TOKENS) -> SD3Components:
    """A randomly initialised tiny SD3 (flavour "sd3") or SD3.5 ("sd35") in the real layout,
    over the shapes vocabulary (word-level CLIP tokenizers as the tiny SD's, a T5 tokenizer with
    `with_t5`); the same arguments give bitwise the same weights. The VAE is the tiny SD's
    (models/sd/tiny_config), with `latent_channels` (4 as the shapes VAEs, or 16 as SD3's), or
    `vae`, a trained one (its latent channels and grid then set the transformer's). `shift`: the
    flow-matching schedule's (SD3's 3.0 was chosen for 1024 px; 1.0 leaves σ unshifted).
    `clip_from`: a trained tiny SD text encoder over the same vocabulary (the demo base's) whose
    weights start the CLIP-L stand-in; its projection, which SD's encoder lacks, stays fresh.
    `max_sequence_length`: T5's part of the prompt (zeros without T5): its tokens cost every joint
    block's text stream as much as CLIP's do. `clip_tokens`: both CLIP tokenizers' length, to which
    every prompt is padded (and past which it is cut): the pairs world's captions take at most 12."""
    from orchestrator.models.sd import tiny_config

    texts = list(caption_texts or [])
    tokenizer, tokenizer_2 = build_tokenizer(texts, clip_tokens), build_tokenizer(texts, clip_tokens)
    tokenizer_3 = build_t5_tokenizer(texts) if with_t5 else None
    if vae is not None:
        latent_channels = int(vae.config.latent_channels)
        latent_downsample = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_side = resolution // latent_downsample
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if vae is None:
            vae = AutoencoderKL(**{**tiny_config.vae_config(resolution, latent_downsample),
                                   "latent_channels": latent_channels, "shift_factor": 0.0})
        text_encoder = _tiny_clip(tokenizer, TINY_CLIP_WIDTH[0], TINY_CLIP_PROJ[0])
        text_encoder_2 = _tiny_clip(tokenizer_2, TINY_CLIP_WIDTH[1], TINY_CLIP_PROJ[1])
        if clip_from is not None:
            _load_clip_weights(text_encoder, clip_from, len(tokenizer))
        text_encoder_3 = _tiny_t5(tokenizer_3) if with_t5 else None
        transformer = SD3Transformer2DModel(**tiny_transformer_config(latent_side, latent_channels, flavour))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    return SD3Components(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3,
                         tokenizer_3=tokenizer_3, scheduler=scheduler, max_sequence_length=max_sequence_length)


# ---------------------------------------------------------------------------- load
def load_components(source: str | Path, store=None, dtype: torch.dtype | None = None, *,
                    use_t5: bool = True) -> SD3Components:
    """Load an SD3 / SD3.5 directory in diffusers' layout, offline: a local directory (or
    file:// URI), an az:// URI, or a blob prefix in `store`, downloaded first. use_t5=False
    leaves its T5 unread (SD3.5-large's is about 19 GB in float32), as if it had none."""
    with resolve_location(str(source), store=store).local_dir() as path:
        return _load_dir(Path(path), dtype, use_t5)


def _config(path: Path, name: str, file: str = "config.json") -> dict[str, Any]:
    f = path / name / file
    if not f.exists():
        raise FileNotFoundError(f"SD3 directory {path}: component {name!r} is missing (no {name}/{file})")
    return json.loads(f.read_text())


def check_shapes(path: Path | str, configs: dict[str, dict[str, Any]]) -> None:
    """The components fit together, or a ValueError naming the one that does not (and `path`)."""
    tr, vae = configs["transformer"], configs["vae"]
    where = f"SD3 directory {path}"
    if tr.get("in_channels") != vae.get("latent_channels") or \
            (tr.get("out_channels") or tr.get("in_channels")) != vae.get("latent_channels"):
        raise ValueError(f"{where}: component 'transformer' takes {tr.get('in_channels')} latent channels in and "
                         f"{tr.get('out_channels')} out, but component 'vae' has {vae.get('latent_channels')}")
    te, te2 = configs["text_encoder"], configs["text_encoder_2"]
    joint = tr.get("joint_attention_dim")
    clip = te.get("hidden_size", 0) + te2.get("hidden_size", 0)
    if joint is None or clip > joint:
        raise ValueError(f"{where}: component 'transformer' has joint_attention_dim {joint}, narrower than "
                         f"'text_encoder' + 'text_encoder_2' hidden sizes ({te.get('hidden_size')} + "
                         f"{te2.get('hidden_size')} = {clip})")
    pooled = te.get("projection_dim", 0) + te2.get("projection_dim", 0)
    if tr.get("pooled_projection_dim") != pooled:
        raise ValueError(f"{where}: component 'transformer' has pooled_projection_dim "
                         f"{tr.get('pooled_projection_dim')}, but 'text_encoder' + 'text_encoder_2' project to "
                         f"{te.get('projection_dim')} + {te2.get('projection_dim')} = {pooled}")
    t5 = configs.get("text_encoder_3")
    if t5 is not None and t5.get("d_model") != joint:
        raise ValueError(f"{where}: component 'text_encoder_3' has d_model {t5.get('d_model')}, but 'transformer' "
                         f"has joint_attention_dim {joint}")


def _load_dir(path: Path, dtype: torch.dtype | None, use_t5: bool = True) -> SD3Components:
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"{path} is not a diffusers model directory (no model_index.json)")
    index = json.loads((path / "model_index.json").read_text())
    for name in REQUIRED:
        if not (path / name).is_dir():
            raise FileNotFoundError(f"SD3 directory {path}: component {name!r} is missing (no {name}/)")
    configs = {name: _config(path, name) for name in ("transformer", "vae", "text_encoder", "text_encoder_2")}
    sched_cfg = _config(path, "scheduler", "scheduler_config.json")
    with_t5 = use_t5 and ((index.get("text_encoder_3") or [None])[0] is not None or
                          (path / "text_encoder_3").is_dir())
    if with_t5:
        configs["text_encoder_3"] = _config(path, "text_encoder_3")
        if not (path / "tokenizer_3").is_dir():
            raise FileNotFoundError(f"SD3 directory {path}: component 'tokenizer_3' is missing (no tokenizer_3/) "
                                    f"while text_encoder_3 is there")
    check_shapes(path, configs)
    kw: dict[str, Any] = {"local_files_only": True, **({"torch_dtype": dtype} if dtype is not None else {})}
    te_kw: dict[str, Any] = {"local_files_only": True, **({"dtype": dtype} if dtype is not None else {})}
    transformer = SD3Transformer2DModel.from_pretrained(path / "transformer", **kw)
    vae = AutoencoderKL.from_pretrained(path / "vae", **kw)
    text_encoder = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder", **te_kw)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2", **te_kw)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    tokenizer_2 = AutoTokenizer.from_pretrained(path / "tokenizer_2", local_files_only=True)
    text_encoder_3 = tokenizer_3 = None
    if with_t5:
        text_encoder_3 = T5EncoderModel.from_pretrained(path / "text_encoder_3", **te_kw)
        tokenizer_3 = AutoTokenizer.from_pretrained(path / "tokenizer_3", local_files_only=True)
    # Sample and train on the flow-matching schedule whatever class the directory names.
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(sched_cfg)
    from orchestrator.models.common import lora

    from .options import SD3Lora

    adapters = lora.load_diffusers_file(transformer, path, "transformer", SD3Lora)  # None: no LoRA file
    return SD3Components(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3,
                         tokenizer_3=tokenizer_3, scheduler=scheduler,
                         max_sequence_length=int(index.get(SEQ_KEY, DEFAULT_MAX_SEQUENCE_LENGTH)), lora=adapters)


def save_components(components: SD3Components, dest: str | Path, store=None) -> str:
    """Save to a local directory, or to a blob prefix when a store is given."""
    if store is None:
        return str(components.save(strip_file_scheme(str(dest))))
    with tempfile.TemporaryDirectory(prefix="orch-sd3-") as tmp:
        components.save(tmp)
        put_dir(store, tmp, str(dest))
    return str(dest)
