"""Tokenizers built in code (no hub files), for the tiny and bench models.

transformers v5 tokenizer classes accept an in-memory vocabulary, so the tiny pipelines need no
download; each one still encodes any prompt (characters and byte fallback), so prompts matter.
"""

from __future__ import annotations

import string

_CHARS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation)
_WORDS = "a the of and in on with red blue green ball grass library cat dog moving still".split()


def t5_tokenizer(words: list[str] | None = None):
    """Unigram T5 tokenizer: <pad>=0, </s>=1, <unk>=2, whole words first, then characters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in (words or _WORDS)]
    vocab += [(c, -5.0) for c in _CHARS] + [("\u2581" + c, -5.5) for c in _CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def llama_tokenizer():
    """Llama-style BPE with byte fallback: every UTF-8 string is encodable."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in ["\u2581"] + _CHARS:
        vocab.setdefault(c, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", padding_side="right")


def clip_tokenizer():
    """CLIP byte-level BPE with only single-byte tokens (and their end-of-word forms)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
