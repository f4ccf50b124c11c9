"""Word-level tokenizer for the shapes world, saved as a transformers `PreTrainedTokenizerFast`
(the tiny SD base's, and the tiny GLIDE-mini base's through its raw `tokenizers` model).

The shapes vocabulary is a few dozen words, so a word-level model beats BPE on size and
readability. It is saved with `save_pretrained` (tokenizer.json + tokenizer_config.json), so
`AutoTokenizer.from_pretrained(dir)` loads it offline exactly as it loads SD's CLIPTokenizer.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3; EOS must not be 2 (CLIPTextModel's legacy pooling rule)

# Every word the shapes world's caption builders can emit, so a base model pretrained on generic
# captions already has ids for the spatial and counting words a finetune introduces.
SHAPES_WORDS = (
    "a an and the of to is are there another more other , . "
    "circle circles square squares triangle triangles "
    "red green blue yellow small large big medium "
    "left right above below on in at top bottom middle side image "
    "zero one two three four five six seven eight nine ten"
).split()

MAX_TOKENS = 32  # the longest 3-object spatial caption is ~20 words

_WORD = re.compile(r"\w+|[^\w\s]")


def words_of(texts: Iterable[str]) -> list[str]:
    """Lower-cased words and punctuation marks, as the tokenizer splits them."""
    return [w for t in texts for w in _WORD.findall(t.lower())]


def build_tokenizer(extra_texts: Iterable[str] = (), max_length: int = MAX_TOKENS) -> PreTrainedTokenizerFast:
    """A tokenizer over SHAPES_WORDS plus any word in `extra_texts`, in a fixed order."""
    vocab: dict[str, int] = {}
    for w in (*SPECIALS, *SHAPES_WORDS, *sorted(set(words_of(extra_texts)))):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), tok.pre_tokenizer])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length,
        pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS)


def tokenize(tokenizer, texts: list[str]):
    """Input ids [B, max_length] padded and truncated as SD pads prompts (always to the maximum)."""
    return tokenizer(texts, padding="max_length", truncation=True,
                     max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
