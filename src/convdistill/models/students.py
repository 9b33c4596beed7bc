"""Tiny random-initialised students, built offline: T5 (encoder-decoder) and Llama (decoder-only).

Both families share one tokenizer, by default SmolLM2's (vocabulary 49,152), so a student's
logits line up token for token with the embedded teacher's and with each other's: logit
distillation then works across families. With that vocabulary the tied embedding matrix is
most of a tiny model; the sizes below are the counts `init_student` actually produces
(embedding included), see SIZES_IN_PARAMS and docs/models.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from convdistill.errors import BadRecipe
from convdistill.models.chat_templates import STUDENT_TEMPLATE
from convdistill.models.smollm2 import prepare_tokenizer
from convdistill.models.tokenizers import PAD_TOKEN, load_student_tokenizer

Family = Literal["t5", "llama"]
Size = Literal["tiny", "small"]
FAMILIES: tuple[str, ...] = ("t5", "llama")
SIZES: tuple[str, ...] = ("tiny", "small")

# Shapes per (family, size). Feed-forward widths are 4x (T5: gated, so 3 matrices like Llama).
_SHAPES: dict[tuple[str, str], dict[str, Any]] = {
    ("llama", "tiny"): dict(
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    ("llama", "small"): dict(
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
    ),
    ("t5", "tiny"): dict(
        d_model=96, d_kv=24, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4
    ),
    ("t5", "small"): dict(
        d_model=384, d_kv=64, d_ff=768, num_layers=4, num_decoder_layers=4, num_heads=6
    ),
}

# Parameter counts with the SmolLM2 tokenizer (embedding 49,152 x width, tied, counted once),
# measured; tests/test_models_students.py checks them.
SIZES_IN_PARAMS: dict[tuple[str, str], int] = {
    ("llama", "tiny"): 5_272_416,
    ("llama", "small"): 28_316_544,
    ("t5", "tiny"): 5_236_096,
    ("t5", "small"): 33_038_976,
}


@dataclass(frozen=True)
class StudentInfo:
    path: Path
    family: str
    size: str
    parameters: int
    vocab_size: int


def student_config(family: str, size: str, tokenizer: Any, max_positions: int = 2048) -> Any:
    """The transformers config of a student with `tokenizer`'s vocabulary and special ids."""
    from transformers import LlamaConfig, T5Config

    if (family, size) not in _SHAPES:
        raise BadRecipe(f"unknown student {family}/{size}: families {FAMILIES}, sizes {SIZES}")
    shape = _SHAPES[(family, size)]
    vocab = len(tokenizer)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    eos = tokenizer.eos_token_id
    if family == "llama":
        return LlamaConfig(  # type: ignore[call-arg]  # config kwargs its stubs do not list
            vocab_size=vocab,
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eos,
            pad_token_id=pad,
            rope_theta=10000.0,
            **shape,
        )
    # T5 convention: the decoder starts from the pad token. Gated GELU as in T5 v1.1 / Flan-T5.
    return T5Config(  # type: ignore[call-arg]  # config kwargs its stubs do not list
        vocab_size=vocab,
        feed_forward_proj="gated-gelu",
        eos_token_id=eos,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        dropout_rate=0.0,
        **shape,
    )


def build_student(family: str, size: str, tokenizer: Any, seed: int = 0) -> Any:
    """A random-initialised model (not saved). Seeded so the same call gives the same weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = student_config(family, size, tokenizer)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    if family == "t5":
        model.generation_config.decoder_start_token_id = config.decoder_start_token_id
    return model


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings once)."""
    return sum(p.numel() for p in model.parameters())


def init_student(
    family: str,
    size: str,
    output_dir: str | Path,
    tokenizer: str | Path | None = None,
    vocab_size: int = 8000,
    seed: int = 0,
) -> StudentInfo:
    """Build a student and save it with its tokenizer and chat template to `output_dir`.

    `tokenizer`: None for SmolLM2's (shared with the embedded teacher); a folder holding a
    transformers tokenizer; or a JSONL export / path-records file to train a new BPE
    tokenizer of `vocab_size` on (same special tokens, so the chat template still applies).
    """
    if family not in FAMILIES:
        raise BadRecipe(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    if size not in SIZES:
        raise BadRecipe(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise BadRecipe(f"{out} exists and is not empty")
    source = Path(tokenizer) if tokenizer is not None else prepare_tokenizer()
    tok = load_student_tokenizer(source, vocab_size=vocab_size)
    tok.chat_template = STUDENT_TEMPLATE
    model = build_student(family, size, tok, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = StudentInfo(out, family, size, count_parameters(model), len(tok))
    (out / "convdistill.json").write_text(
        json.dumps(
            {
                "name": f"{family}-{size}",
                "family": family,
                "size": size,
                "parameters": info.parameters,
                "vocab_size": info.vocab_size,
                "tokenizer_source": str(source),
                "seed": seed,
                "initialised": "random",
            },
            indent=2,
        )
        + "\n"
    )
    return info
