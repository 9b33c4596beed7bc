"""`train distill`: token-level distillation from a causal teacher sharing the student's vocabulary.

    student + its fitted examples (as SFT) -> vocabulary check against the teacher
    -> teacher targets: logit cache (built once, teacher released; or built by a served teacher
       over HTTP, teacher_base_url) or the live teacher
    -> TokenDistillTrainer (off-policy, both families) -> checkpoint + run_log.json

On-policy distillation (the student writes its replies) is its sibling recipe, `on_policy.py`
(TRL's DistillationTrainer); `train("distill", ...)` picks one by `distill_mode`.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from convdistill.trainers.family import ModelFamily
from convdistill.trainers.kd_config import DistillConfig, KDFields
from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.logit_cache import LocalTeacher, LogitCache, ServedScorer, TeacherScorer, build_or_open
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.runlog import RunLog
from convdistill.trainers.served_teacher import ServedTeacher
from convdistill.trainers.steps import TrainResult, build_datasets, finish_run, prepare_student, resume_point
from convdistill.trainers.teacher_model import load_teacher, teacher_folder, teacher_vocabulary
from convdistill.trainers.vocab_check import VocabularyMismatch


def served_teacher(kd: KDFields) -> ServedTeacher | None:
    """The teacher behind teacher_base_url, when the recipe names one."""
    if not kd.teacher_base_url:
        return None
    return ServedTeacher(kd.teacher_base_url, kd.teacher_model or "", os.environ.get("OPENAI_API_KEY"))


def shared_vocabulary(teacher: Path | ServedTeacher, tokenizer: Any, model: Any, student_name: str) -> int:
    """The number of logit columns teacher and student share. A local teacher's vocabulary is
    compared with the student's here; a served teacher's tokenizer is checked over the endpoint,
    on the data, before anything is scored."""
    if not isinstance(teacher, ServedTeacher):
        return teacher_vocabulary(teacher, tokenizer, model, student_name)
    vocab_size = len(tokenizer.get_vocab())
    width = model.get_output_embeddings().weight.shape[0]
    if width < vocab_size:
        raise VocabularyMismatch(f"the student's output layer has {width} rows for a vocabulary of "
                                 f"{vocab_size} tokens; resize its embeddings first")
    return vocab_size


def attach_targets(lists: dict[str, list[dict[str, Any]]], kd: DistillConfig, teacher: Path | ServedTeacher,
                   family: ModelFamily, tokenizer: Any, vocab_size: int) -> LogitCache | None:
    """Number every example (train first, then eval) and, with kd_cache, build or open the cache
    holding the teacher's targets for all of them."""
    examples = [e for name in ("train", "eval") for e in lists.get(name, [])]
    for index, example in enumerate(examples):
        example["kd_index"] = index
    if not kd.kd_cache:
        return None
    views = [family.teacher_view(e) for e in examples]
    assert kd.output_dir is not None  # TrainingArguments.__post_init__ fills it in
    cache_dir = Path(kd.kd_cache_dir or Path(kd.output_dir) / "teacher-logits")
    scorer: TeacherScorer
    if isinstance(teacher, ServedTeacher):
        scorer = ServedScorer(teacher, tokenizer, kd.teacher_batch_tokens)
    else:
        folder = teacher
        scorer = LocalTeacher(folder, lambda: load_teacher(folder), tokenizer.pad_token_id, vocab_size,
                              kd.teacher_batch_tokens)
    return build_or_open(cache_dir, scorer, views, kd.kd_top_k, kd.kd_temperature, vocab_size)


def train_distill(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None
                  ) -> TrainResult:
    """Off-policy distillation: the student learns the teacher's next-token distribution on the
    data's own replies (and, with kd_weight < 1, the replies themselves). `args`: a DistillConfig."""
    from convdistill.trainers.distill_trainer import TokenDistillTrainer

    served = served_teacher(args)
    teacher = served or teacher_folder(args.teacher)
    folder, family, tokenizer = prepare_student(data, model_args, args)
    set_derived(args, "assistant_only_loss", False, "loss masks come from train_on, built when tokenizing")
    model = load_model(folder, family, model_args, tokenizer)
    vocab_size = shared_vocabulary(teacher, tokenizer, model, model_args.model_name_or_path)
    cache: list[LogitCache | None] = []
    train, evaluation, stats = build_datasets(
        "sft", data, args, tokenizer, family,
        finish=lambda lists: cache.append(attach_targets(lists, args, teacher, family, tokenizer, vocab_size)))
    gc.collect()
    # (a served teacher always fills the cache: the recipe check refuses kd_cache false with it)
    live = None if args.kd_cache or isinstance(teacher, ServedTeacher) else load_teacher(teacher)
    runlog = RunLog(stats)
    trainer = TokenDistillTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=peft_config(model_args, family), callbacks=[runlog, *(callbacks or [])], family=family,
        cache=cache[0], teacher=live, teacher_pad_id=tokenizer.pad_token_id, vocab_size=vocab_size,
        batch_tokens=data.batch_tokens)
    trainer.train(resume_from_checkpoint=resume_point(args.resume_from_checkpoint, args.output_dir))
    teacher_name = teacher.name if isinstance(teacher, ServedTeacher) else str(teacher)
    extra = {"teacher": teacher_name, "kd_loss": args.kd_loss, "kd_weight": args.kd_weight,
             "kd_temperature": args.kd_temperature, "kd_top_k": args.kd_top_k,
             "logit_cache": str(cache[0].folder) if cache[0] is not None else None}
    return finish_run(trainer, runlog, tokenizer, folder, model_args, data, args, family, stats, "distill", extra)
