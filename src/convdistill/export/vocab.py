"""A student's tokenizer as llama.cpp's GGUF vocabulary, or a one-line reason why it cannot be.

llama.cpp does not run the Hugging Face tokenizer: it re-implements a fixed set of pipelines,
chosen by `tokenizer.ggml.model` (the algorithm) and `tokenizer.ggml.pre` (the pre-tokenizer
regexes). A tokenizer is written only when its pipeline is one of those, so that llama.cpp
splits every prompt into the same ids as the checkpoint did in training:

- byte-level BPE with GPT-2's split regex and no normaliser (`gpt2` / `gpt-2`): what the
  students carry. SmolLM2's own GGUF says `smollm` (digits split one by one), but the tokenizer
  transformers rebuilds from it, which every student was trained with, splits digits as GPT-2
  does, so `gpt-2` is the faithful name;
- the same with a `Digits(individual_digits)` step first (`gpt2` / `smollm`), SmolLM2's original
  tokenizer.json.

Anything else (a normaliser, another pre-tokenizer, byte fallback, Unigram or WordPiece models)
is refused by name rather than written as an approximation whose prompts would silently differ.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gguf import TokenType

from convdistill.errors import BadRecipe

# The pre-tokenizers llama.cpp knows, as tokenizer.json states them (keys that matter only).
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}

# TRL's {% generation %} markers (convdistill.models.chat_templates) mean nothing to a runtime
# rendering prompts, and Jinja engines without the extension (llama-cpp-python's, minja)
# reject them: they are taken out; the rendered text is the same.
_GENERATION_MARKERS = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


class TokenizerNotRepresentable(BadRecipe):
    """The tokenizer uses a pipeline llama.cpp does not implement."""


@dataclass
class GGUFVocab:
    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[bytes]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos, eos, eot, pad, unk -> id
    chat_template: str | None


def _matches(stated: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(stated, dict) and all(stated.get(k) == v for k, v in wanted.items())


def pre_tokenizer_name(spec: dict[str, Any]) -> str:
    """llama.cpp's name for a tokenizer.json's pre-tokenizer, or TokenizerNotRepresentable."""
    pre = spec.get("pre_tokenizer")
    if _matches(pre, _BYTE_LEVEL):
        return "gpt-2"
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        if len(steps) == 2 and _matches(steps[0], _DIGITS) and _matches(steps[1], _BYTE_LEVEL):
            return "smollm"
    described = json.dumps(pre, sort_keys=True)[:160]
    raise TokenizerNotRepresentable(
        f"pre-tokenizer {described} has no llama.cpp equivalent (byte-level BPE with GPT-2's "
        "split, optionally after single digits, is what llama.cpp and this export know)")


def strip_generation_markers(template: str) -> str:
    return _GENERATION_MARKERS.sub("", template)


def gguf_vocab(tokenizer: Any, vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of a fast Hugging Face tokenizer, padded to the model's `vocab_size`
    rows (ids past the tokenizer's are never produced; they are written as unused)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerNotRepresentable("not a fast (tokenizer.json) tokenizer")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerNotRepresentable(
            f"a {model.get('type')} tokenizer model; this export writes byte-level BPE only")
    if spec.get("normalizer") is not None:
        kind = spec["normalizer"].get("type")
        raise TokenizerNotRepresentable(f"normaliser {kind!r}: llama.cpp's BPE has none")
    if model.get("byte_fallback"):
        raise TokenizerNotRepresentable("byte-fallback BPE (a sentencepiece-style BPE) is not "
                                        "byte-level BPE")
    pre = pre_tokenizer_name(spec)
    if len(tokenizer) > vocab_size:
        raise TokenizerNotRepresentable(
            f"{len(tokenizer)} tokens but the model has only {vocab_size} embedding rows")

    by_id = {i: t for t, i in model["vocab"].items()}
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i]["content"].encode())
            types.append(TokenType.CONTROL if added[i]["special"] else TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i].encode())
            types.append(TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]".encode())
            types.append(TokenType.UNUSED)
    # tokenizers writes merges as "a b" strings (older) or [a, b] pairs (newer)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    special: dict[str, int] = {}
    for role, token in (("bos", tokenizer.bos_token), ("eos", tokenizer.eos_token),
                        ("pad", tokenizer.pad_token), ("unk", tokenizer.unk_token)):
        if token is not None:
            special[role] = tokenizer.convert_tokens_to_ids(token)
    if "eos" in special:
        special["eot"] = special["eos"]  # the end of a turn is what stops a reply
    template = tokenizer.chat_template
    return GGUFVocab(
        model="gpt2", pre=pre, tokens=tokens, types=[int(t) for t in types], merges=merges,
        special_ids=special,
        chat_template=strip_generation_markers(template) if isinstance(template, str) else None,
    )
