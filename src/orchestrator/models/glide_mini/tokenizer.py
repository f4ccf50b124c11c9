"""GLIDE's tokens: a caption → `text_ctx` token ids padded with the end token, and a mask that is
false on the padding (whose positions the text transformer replaces by a learned embedding).

Two vocabularies behind one small class: the released base's GPT-2 byte-level BPE (any
`encoder.json` + `vocab.bpe` pair in GPT-2's format, lower-cased input, end token
`<|endoftext|>`), and the project's word-level shapes tokenizer for the tiny model. Both are kept
as a `tokenizers` model (tokenizer.json), so an exported model directory carries its own.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

GPT2_END = "<|endoftext|>"


class GlideTokenizer:
    def __init__(self, tokenizer: Tokenizer, end_token: int):
        self.tokenizer, self.end_token = tokenizer, end_token

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def padded(self, texts: list[str], ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, ctx] long, mask [B, ctx] bool); a caption longer than ctx is cut; "" is all
        padding — the unconditional input of classifier-free guidance."""
        tokens = torch.full((len(texts), ctx), self.end_token, dtype=torch.long)
        mask = torch.zeros((len(texts), ctx), dtype=torch.bool)
        for row, text in enumerate(texts):
            ids = self.encode(text)[:ctx] if text else []
            tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = True
        return tokens, mask

    # ---- files ---------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(out_dir / "tokenizer.json"))
        (out_dir / "glide_tokenizer.json").write_text(json.dumps({"end_token": self.end_token}) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "GlideTokenizer":
        meta = json.loads((directory / "glide_tokenizer.json").read_text())
        return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), int(meta["end_token"]))


def gpt2_bpe(encoder_json: str | Path, vocab_bpe: str | Path) -> GlideTokenizer:
    """GPT-2's byte-level BPE from its two files (glide-text2im ships the same pair)."""
    for path in (encoder_json, vocab_bpe):
        if not Path(path).is_file():
            raise FileNotFoundError(f"GPT-2 BPE file not found: {path}")
    try:
        vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{encoder_json}: not a GPT-2 encoder.json (a JSON object of token → id): {exc}") from None
    if not isinstance(vocab, dict) or GPT2_END not in vocab:
        raise ValueError(f"{encoder_json}: not a GPT-2 encoder.json (no {GPT2_END!r} token)")
    merges = []
    for i, line in enumerate(Path(vocab_bpe).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (i == 1 and line.startswith("#version")):
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"{vocab_bpe}:{i}: a merge is two symbols separated by a space, got {line!r}")
        merges.append((pair[0], pair[1]))
    tok = Tokenizer(BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return GlideTokenizer(tok, vocab[GPT2_END])


def shapes_words(caption_texts: list[str] | None = None) -> GlideTokenizer:
    """The shapes world's word-level vocabulary (models/common/shapes_tokenizer), its EOS the end token."""
    from orchestrator.models.common.shapes_tokenizer import EOS, build_tokenizer

    hf = build_tokenizer(caption_texts or [])
    return GlideTokenizer(hf.backend_tokenizer, hf.convert_tokens_to_ids(EOS))
