"""`train distill`: token-level distillation from a causal teacher sharing the student's vocabulary.

    student + its fitted examples (as SFT) -> vocabulary check against the teacher
    -> teacher targets: logit cache (built once, teacher released; or built by a served teacher
       over HTTP, teacher_base_url) or the live teacher
    -> TokenDistillTrainer (off-policy, both families) -> checkpoint + run_log.json

On-policy distillation (the student writes its replies) goes through TRL's DistillationTrainer
instead, see `on_policy.py`.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from convdistill.models import resolve_model
from convdistill.trainers.kd_config import DistillConfig
from convdistill.trainers.loading import is_encoder_decoder, load_model, peft_config
from convdistill.trainers.logit_cache import LocalTeacher, LogitCache, ServedScorer, TeacherScorer, build_or_open
from convdistill.trainers.runlog import RunLog
from convdistill.trainers.served_teacher import ServedTeacher
from convdistill.trainers.teacher_scoring import teacher_view
from convdistill.trainers.vocab_check import VocabularyMismatch, shared_vocab_size


def teacher_folder(name: str) -> Path:
    folder = resolve_model(name)
    if is_encoder_decoder(folder):
        raise ValueError(f"teacher {name}: an encoder-decoder model; train distill needs a decoder-only (causal) "
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


def served_teacher(kd: DistillConfig) -> ServedTeacher | None:
    if not kd.teacher_base_url:
        return None
    return ServedTeacher(kd.teacher_base_url, kd.teacher_model or "", os.environ.get("OPENAI_API_KEY"))


def attach_targets(lists: dict[str, list[dict[str, Any]]], kd: DistillConfig, args: Any,
                   teacher: Path | ServedTeacher, encoder_decoder: bool, tokenizer: Any, vocab_size: int
                   ) -> LogitCache | None:
    """Number every example (train first, then eval) and, with kd_cache, build or open the cache
    holding the teacher's targets for all of them."""
    examples = [e for name in ("train", "eval") for e in lists.get(name, [])]
    for index, example in enumerate(examples):
        example["kd_index"] = index
    if not kd.kd_cache:
        return None
    views = [teacher_view(e, encoder_decoder) for e in examples]
    cache_dir = Path(kd.kd_cache_dir or Path(args.output_dir) / "teacher-logits")
    scorer: TeacherScorer
    if isinstance(teacher, ServedTeacher):
        scorer = ServedScorer(teacher, tokenizer, kd.teacher_batch_tokens)
    else:
        folder = teacher
        scorer = LocalTeacher(folder, lambda: load_teacher(folder), tokenizer.pad_token_id, vocab_size,
                              kd.teacher_batch_tokens)
    return build_or_open(cache_dir, scorer, views, kd.kd_top_k, kd.kd_temperature, vocab_size)


def train_distill(data: Any, model_args: Any, args: Any, kd: DistillConfig, callbacks: list[Any] | None = None
                  ) -> Any:
    """Off-policy distillation (or, with distill_mode on_policy, TRL's on-policy trainer)."""
    from convdistill.trainers.distill_trainer import TokenDistillTrainer
    from convdistill.trainers.run import _datasets, _finish, _prepare, _resume_point

    if kd.distill_mode == "on_policy":
        from convdistill.trainers.on_policy import train_on_policy

        return train_on_policy(data, model_args, args, kd, callbacks)
    served = served_teacher(kd)
    teacher = served or teacher_folder(kd.teacher)
    folder, encoder_decoder, tokenizer = _prepare(data, model_args, args)
    args.assistant_only_loss = False
    model = load_model(folder, model_args, encoder_decoder)
    if isinstance(teacher, ServedTeacher):  # its tokenizer is checked over the endpoint, on the data
        vocab_size = len(tokenizer.get_vocab())
        width = model.get_output_embeddings().weight.shape[0]
        if width < vocab_size:
            raise VocabularyMismatch(f"the student's output layer has {width} rows for a vocabulary of "
                                     f"{vocab_size} tokens; resize its embeddings first")
    else:
        vocab_size = teacher_vocabulary(teacher, tokenizer, model, model_args.model_name_or_path)
    cache: list[LogitCache | None] = []
    train, evaluation, stats = _datasets(
        "sft", data, args, tokenizer, encoder_decoder,
        finish=lambda lists: cache.append(attach_targets(lists, kd, args, teacher, encoder_decoder, tokenizer,
                                                         vocab_size)))
    gc.collect()
    live = None if kd.kd_cache else load_teacher(teacher)
    runlog = RunLog(stats)
    trainer = TokenDistillTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=peft_config(model_args, encoder_decoder), callbacks=[runlog, *(callbacks or [])], kd=kd,
        encoder_decoder=encoder_decoder, cache=cache[0], teacher=live, teacher_pad_id=tokenizer.pad_token_id,
        vocab_size=vocab_size)
    trainer.train(resume_from_checkpoint=_resume_point(args.resume_from_checkpoint, args.output_dir))
    teacher_name = teacher.name if isinstance(teacher, ServedTeacher) else str(teacher)
    extra = {"teacher": teacher_name, "kd_loss": kd.kd_loss, "kd_weight": kd.kd_weight,
             "kd_temperature": kd.kd_temperature, "kd_top_k": kd.kd_top_k,
             "logit_cache": str(cache[0].folder) if cache[0] is not None else None}
    return _finish(trainer, runlog, tokenizer, folder, model_args, data, args, encoder_decoder, stats, "distill",
                   extra)
