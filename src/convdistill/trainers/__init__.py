"""Trainers: multi-turn SFT, DPO and distillation for decoder-only and encoder-decoder students, on TRL.

    train(method, recipe)       load a recipe and run it; the checkpoint loads in serve and eval as is
    load_recipe                 YAML + overrides -> (DataConfig, trl.ModelConfig, TRL config: for distill
                                extended by the kd fields, kd_config.DistillConfig / OnPolicyDistillConfig)
    sft.train_sft, dpo.train_dpo, distill.train_distill, on_policy.train_on_policy,
    conversation_policy.train_conversation_policy   the recipes
    ModelFamily, DECODER_ONLY, ENCODER_DECODER, family_of   what differs per model family
    tokenize_path, seq2seq_examples, tokenize_pair, seq2seq_pair   records -> token ids and loss masks
    TruncationStats             what the shared truncation policy cut or dropped
    Seq2SeqSFTTrainer, Seq2SeqDPOTrainer   TRL's trainers for encoder-decoder students

Imports point down: this dispatcher -> the recipes (sft, dpo, distill, on_policy, conversation_policy) -> the shared
steps (steps.py) and components (loading, data, tokenize, teacher_model, logit_cache, ...).
"""

from __future__ import annotations

from typing import Any

from convdistill.errors import BadRecipe
from convdistill.trainers.family import DECODER_ONLY, ENCODER_DECODER, ModelFamily, family_of
from convdistill.trainers.recipe import DataConfig, RecipeError, load_recipe
from convdistill.trainers.steps import TrainResult
from convdistill.trainers.tokenize import seq2seq_examples, seq2seq_pair, tokenize_pair, tokenize_path
from convdistill.trainers.truncation import TruncationStats

METHODS = ("sft", "dpo", "distill")


def train(method: str, config: Any = None, overrides: Any = None, callbacks: list[Any] | None = None
          ) -> TrainResult:
    """Load a recipe (file or mapping, plus overrides) and run it: sft, dpo or distill (off- or
    on-policy by the recipe's `distill_mode`). `callbacks`: extra transformers TrainerCallbacks
    (progress, timing)."""
    from convdistill.launch import check_distributed_launch

    if method not in METHODS:
        raise BadRecipe(f"unknown training method {method!r}: {', '.join(METHODS)}")
    data, model_args, args = load_recipe(method, config, overrides)  # type: ignore[arg-type]
    # before any model or data loads: several processes that cannot form a process group would
    # each train alone and overwrite one another's checkpoints
    check_distributed_launch(bool(getattr(args, "use_cpu", False)))
    # The recipes import TRL's trainers: loaded here, for the one that runs.
    if method == "sft":
        from convdistill.trainers.sft import train_sft

        return train_sft(data, model_args, args, callbacks=callbacks)
    if method == "dpo":
        from convdistill.trainers.dpo import train_dpo

        return train_dpo(data, model_args, args, callbacks=callbacks)
    if args.distill_mode == "on_policy":
        from convdistill.trainers.on_policy import train_on_policy

        return train_on_policy(data, model_args, args, callbacks=callbacks)
    if args.distill_mode == "on_policy_conversation":
        from convdistill.trainers.conversation_policy import train_conversation_policy

        return train_conversation_policy(data, model_args, args, callbacks=callbacks)
    from convdistill.trainers.distill import train_distill

    return train_distill(data, model_args, args, callbacks=callbacks)


__all__ = [
    "DECODER_ONLY",
    "ENCODER_DECODER",
    "METHODS",
    "DataConfig",
    "ModelFamily",
    "RecipeError",
    "TrainResult",
    "TruncationStats",
    "family_of",
    "load_recipe",
    "seq2seq_examples",
    "seq2seq_pair",
    "tokenize_pair",
    "tokenize_path",
    "train",
]
