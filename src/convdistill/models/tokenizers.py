"""Student tokenizers: SmolLM2's as it is, a given one, or a BPE trained on an export's texts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from convdistill.errors import BadInput, BadRecipe, Unavailable
from convdistill.files import open_binary

# SmolLM2 uses <|im_end|> for both end-of-turn and padding. Training collators mask the pad
# id out of the labels, which would hide the end-of-turn token, so students pad with
# <|endoftext|> (id 0 in SmolLM2's vocabulary) instead.
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def iter_texts(path: Path) -> Iterator[str]:
    """Every message text of a JSONL file: `text` fields of Open-Assistant exports (nested or
    flat) and `content` fields of path records, found wherever they are nested."""
    with open_binary(path) as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield from _strings(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"{path}:{number}: not JSON ({exc})") from None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("text", "content") and isinstance(item, str):
                yield item
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def train_tokenizer(base: Any, texts_file: Path, vocab_size: int) -> Any:
    """A new BPE with `base`'s pipeline and special tokens, fitted to `texts_file`'s texts."""
    texts = list(iter_texts(texts_file))
    if not texts:
        raise BadInput(f"{texts_file}: no message texts found to train a tokenizer on")
    return base.train_new_from_iterator(
        texts, vocab_size=vocab_size, new_special_tokens=list(SPECIAL_TOKENS)
    )


def load_student_tokenizer(source: Path, vocab_size: int = 8000) -> Any:
    """A tokenizer folder as is, or (a .jsonl/.jsonl.gz file) one trained on it from SmolLM2's."""
    from transformers import AutoTokenizer

    from convdistill.models.smollm2 import prepare_tokenizer

    if source.is_dir():
        tok = AutoTokenizer.from_pretrained(source)
    elif source.is_file():
        base = AutoTokenizer.from_pretrained(prepare_tokenizer())
        tok = train_tokenizer(base, source, vocab_size)
    else:
        raise Unavailable(f"tokenizer {source}: no such folder or file")
    missing = [
        t
        for t in SPECIAL_TOKENS
        if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id) and t != tok.unk_token
    ]
    if missing:
        raise BadRecipe(f"tokenizer {source} lacks the ChatML tokens {missing}")
    tok.pad_token = PAD_TOKEN
    tok.eos_token = "<|im_end|>"
    tok.bos_token = "<|im_start|>"
    return tok
