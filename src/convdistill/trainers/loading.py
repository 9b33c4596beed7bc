"""Models and tokenizers for training, and checkpoints that serve and eval load as they are.

`model_name_or_path` may be a checkpoint folder, an embedded model's name (see
`convdistill models list`), `student:<family>-<size>` (e.g. `student:t5-tiny`): a random
initialised student, or `student:<family>-from-<teacher>` (e.g.
`student:llama-from-smollm2-135m-instruct` with `student_layers: 8`): a student built from the
teacher's layers. Either is saved once into `<output_dir>/student-init` (kept, so a resumed run
and a DPO reference start from the very same weights).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from convdistill.errors import BadRecipe
from convdistill.models import STUDENT_TEMPLATE, chatml_template, init_student, resolve_model
from convdistill.trainers.family import ModelFamily


def resolve_checkpoint(name: str, output_dir: str, seed: int, layers: int | None = None,
                       encoder_layers: int | None = None, width: dict[str, int | None] | None = None) -> Path:
    """The starting checkpoint's folder; a `student:` is built first. `width`: the
    mlp_channels / heads / kv_heads of a width-pruned student:llama-from-<teacher>."""
    if name.startswith("student:"):
        family, _, size = name.removeprefix("student:").partition("-")
        folder = Path(output_dir) / "student-init"
        if not (folder / "config.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            if size.startswith("from-"):
                from convdistill.models.from_teacher import init_from_teacher

                width = {k: v for k, v in (width or {}).items() if v is not None}
                if layers is None and not width:
                    raise BadRecipe(f"model_name_or_path {name}: set student_layers (teacher layers to keep) "
                                    "or student_mlp_channels / student_heads (width)")
                init_from_teacher(size.removeprefix("from-"), family, folder, layers=layers,
                                  encoder_layers=encoder_layers, mlp_channels=width.get("mlp_channels"),
                                  heads=width.get("heads"), kv_heads=width.get("kv_heads"))
            else:
                init_student(family, size or "tiny", folder, seed=seed)
        return folder
    return resolve_model(name)


def load_tokenizer(folder: Path, family: ModelFamily) -> Any:
    """The checkpoint's tokenizer with a chat template TRL can train with.

    Decoder-only training needs `{% generation %}` markers with the end-of-turn token inside;
    a template without them is swapped for TRL's training version of it when TRL knows it, or
    for ChatML when the tokenizer has ChatML's tokens. Encoder-decoder training only renders
    the template (seq2seq_format), so any template works; ChatML text is supplied if none."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = tokenizer.chat_template
    chatml_tokens = all(
        tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id)
        for t in ("<|im_start|>", "<|im_end|>")
    )
    if not family.needs_generation_markers:
        if not template:
            tokenizer.chat_template = STUDENT_TEMPLATE
    elif not template or not has_generation_markers(template):
        try:
            tokenizer.chat_template = get_training_chat_template(tokenizer) if template else None
        except (ValueError, KeyError, TypeError):
            tokenizer.chat_template = None
        if tokenizer.chat_template is None:
            if not chatml_tokens:
                raise BadRecipe(
                    f"{folder}: the tokenizer's chat template has no {{% generation %}} markers "
                    "and it lacks ChatML tokens for the one convdistill supplies; set "
                    "chat_template_path to a template with generation markers"
                )
            tokenizer.chat_template = chatml_template()
    if chatml_tokens and tokenizer.eos_token != "<|im_end|>":
        # The end-of-turn token is what training teaches the model to stop on.
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Collators mask the pad id out of the labels; padding with the end-of-turn token would
        # hide it from the loss and the model would never learn to stop.
        candidates = [t for t in ("<|endoftext|>", "<pad>", tokenizer.unk_token) if t]
        for token in candidates:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != tokenizer.eos_token_id:
                tokenizer.pad_token = token
                break
        else:
            raise BadRecipe(f"{folder}: no pad token distinct from the end-of-turn token")
    return tokenizer


def load_model(folder: Path, family: ModelFamily, model_args: Any = None, tokenizer: Any = None) -> Any:
    """The checkpoint in `folder` with the recipe's dtype, attention and quantization
    (`model_args`, a trl.ModelConfig); without model_args, as saved. With `tokenizer` (as
    `load_tokenizer` prepared it), the model's special token ids are matched to it."""
    from trl.trainer.utils import get_quantization_config

    kwargs: dict[str, Any] = {"dtype": None}
    if model_args is not None:
        kwargs["dtype"] = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
        quantization = get_quantization_config(model_args)
        if quantization is not None:
            kwargs["quantization_config"] = quantization
            kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {
                "": "cpu"}
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
    model = family.auto_model().from_pretrained(folder, **kwargs)
    if tokenizer is not None:
        match_special_tokens(model, tokenizer)
    return model


def match_special_tokens(model: Any, tokenizer: Any) -> None:
    """Give the model config and generation config the tokenizer's pad, BOS and EOS ids, as the
    transformers Trainer does before training, but quietly: `load_tokenizer` chose them (the
    end-of-turn EOS, a pad distinct from it), so the Trainer's "tokenizer has new PAD/BOS/EOS
    tokens" warning would only tell a user about our own decision."""
    from transformers.trainer_utils import align_special_tokens
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.trainer_utils")
    level = logger.level
    logger.setLevel(hf_logging.ERROR)
    try:
        align_special_tokens(model, tokenizer)
    finally:
        logger.setLevel(level)


def peft_config(model_args: Any, family: ModelFamily) -> Any:
    """TRL's LoRA config from the recipe, with the task type that matches the family and
    `all-linear` targets when the recipe names none (read from a copy: the recipe's own
    ModelConfig keeps what the user wrote)."""
    from trl.trainer.utils import get_peft_config

    if model_args.load_in_4bit and not model_args.use_peft:
        raise BadRecipe("load_in_4bit (QLoRA) needs use_peft: true; a 4-bit model cannot be "
                        "fully fine-tuned")
    if not model_args.use_peft:
        return None
    targets = "all-linear" if model_args.lora_target_modules is None else model_args.lora_target_modules
    return get_peft_config(replace(model_args, lora_task_type=family.lora_task_type, lora_target_modules=targets))


def save_checkpoint(trainer: Any, tokenizer: Any, folder: Path, base: Path, model_args: Any,
                    save_merged: bool, family: ModelFamily, extra: dict[str, Any]) -> Path:
    """Write the final checkpoint: full weights (merged under LoRA/QLoRA unless save_merged is
    false) and the tokenizer with the chat template used in training."""
    from accelerate.utils import is_peft_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    info = {"base": str(base), **extra}
    if is_peft_model(model):
        adapter = folder / "adapter"
        model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        info["adapter"] = str(adapter)
        if save_merged:
            # Merge into a full-precision copy of the base: a 4-bit (QLoRA) base cannot hold
            # merged weights, and serve/eval load plain checkpoints.
            from peft import PeftModel

            plain = load_model(base, family, _plain(model_args))
            merged = PeftModel.from_pretrained(plain, adapter).merge_and_unload()
            merged.save_pretrained(folder)
            info["saved"] = "merged"
        else:
            info["saved"] = "adapter"
    else:
        model.save_pretrained(folder)
        info["saved"] = "full"
    tokenizer.save_pretrained(folder)
    (folder / "convdistill.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def _plain(model_args: Any) -> Any:
    return replace(model_args, load_in_4bit=False, load_in_8bit=False, dtype="float32")
