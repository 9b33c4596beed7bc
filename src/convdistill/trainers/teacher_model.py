"""The causal teacher a distillation recipe learns from, when its weights are local: which
folder, loading it frozen, and the vocabulary check against the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe
from convdistill.models import resolve_model
from convdistill.trainers.family import DECODER_ONLY, family_of
from convdistill.trainers.vocab_check import shared_vocab_size


def teacher_folder(name: str) -> Path:
    folder = resolve_model(name)
    if family_of(folder) is not DECODER_ONLY:
        raise BadRecipe(f"teacher {name}: an encoder-decoder model; train distill needs a decoder-only (causal) "
                        "teacher, which scores the student's conversation text token by token")
    return folder


def load_teacher(folder: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval().requires_grad_(False)


def teacher_vocabulary(folder: Path, tokenizer: Any, model: Any, student_name: str) -> int:
    """The shared vocabulary size, checked before anything slow runs (the teacher's output
    width is read from its config, so the teacher itself is not loaded for the check)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder).get_text_config()
    return shared_vocab_size(AutoTokenizer.from_pretrained(folder), tokenizer, config.vocab_size,
                             model.get_output_embeddings().weight.shape[0], str(folder), student_name)
