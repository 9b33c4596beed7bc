"""On-policy distillation for decoder-only students, through TRL's DistillationTrainer.

The student writes its own reply to each multi-turn prompt of our paths (every trained
assistant turn's conversation so far) and learns to match the teacher's next-token
distribution on what it wrote (generalised JSD; Agarwal et al. 2024). TRL's trainer does the
generation and the loss; what is ours is the data (multi-turn prompts fitted to a token budget,
oldest turns dropped first), the shared-vocabulary check, and the checkpoint conventions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convdistill.errors import BadInput, BadRecipe
from convdistill.trainers.data import load_records, train_flags
from convdistill.trainers.family import DECODER_ONLY
from convdistill.trainers.kd_config import TRL_BETA
from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.runlog import RunLog, announce
from convdistill.trainers.steps import TrainResult, finish_run, prepare_student, resume_point
from convdistill.trainers.teacher_model import load_teacher, teacher_folder, teacher_vocabulary
from convdistill.trainers.truncation import TruncationStats, keep_latest_turns


def policy_prompts(records: list[dict[str, Any]], tokenizer: Any, train_on: str, max_prompt_tokens: int,
                   stats: TruncationStats) -> list[dict[str, Any]]:
    """One prompt per trained assistant turn: the messages before it, fitted to the budget."""

    def prompt_tokens(messages: list[dict[str, str]]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                 return_dict=True)["input_ids"])

    prompts = []
    for record in records:
        stats.records += 1
        messages = record["messages"]
        for index, flag in enumerate(train_flags(record, train_on)):
            if not flag:
                continue
            history = list(messages[:index])
            if not history or history[-1]["role"] != "user":
                stats.drop("assistant turn without a user turn before it")
                continue
            stats.examples += 1
            if prompt_tokens(history) > max_prompt_tokens:
                kept, dropped, ok = keep_latest_turns(history, lambda c: prompt_tokens(c) <= max_prompt_tokens)
                stats.turns_dropped += dropped
                if not ok:
                    stats.drop("the last user turn alone exceeds kd_max_prompt_length")
                    continue
                stats.truncated += 1
                history = kept
            prompts.append({"prompt": history})
    return prompts


def record_datasets(data: Any, args: Any,
                    rows_of: Callable[[list[dict[str, Any]], TruncationStats], list[dict[str, Any]]]
                    ) -> tuple[dict[str, Any], dict[str, TruncationStats]]:
    """Train (and eval) datasets of the rows `rows_of` builds from the path records (prompts,
    conversations), with what building them counted, announced; a split left empty is refused."""
    from datasets import Dataset

    stats: dict[str, TruncationStats] = {}
    datasets = {}
    for name, path in (("train", data.train_file), ("eval", data.eval_file)):
        if path is None:
            continue
        records, _ = load_records(path, "paths", Path(args.output_dir) / "data", data.path_strategy,
                                  data.max_train_examples if name == "train" else None)
        stats[name] = TruncationStats()
        rows = rows_of(records, stats[name])
        announce(name, stats[name])
        if not rows:
            raise BadInput(f"{name} data {path}: no prompts left ({stats[name].summary()})")
        datasets[name] = Dataset.from_list(rows)
    return datasets, stats


def train_on_policy(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None
                    ) -> TrainResult:
    """On-policy distillation of a decoder-only student: TRL's DistillationTrainer on the paths'
    multi-turn prompts, the divergence and temperature set from the kd fields. `args`: an
    OnPolicyDistillConfig."""
    from trl import DistillationTrainer

    teacher = teacher_folder(args.teacher)
    folder, family, tokenizer = prepare_student(data, model_args, args)
    if family is not DECODER_ONLY:
        raise BadRecipe("distill_mode on_policy: TRL's DistillationTrainer generates with causal students only; "
                        "use distill_mode off_policy for an encoder-decoder student")
    model = load_model(folder, family, model_args, tokenizer)
    teacher_vocabulary(teacher, tokenizer, model, model_args.model_name_or_path)
    # TRL's divergence knob is `beta` (0 forward KL, 1 reverse KL, between: JSD); ours is kd_loss.
    set_derived(args, "beta", TRL_BETA.get(args.kd_loss, args.kd_jsd_beta), f"set by kd_loss {args.kd_loss}")
    set_derived(args, "temperature", args.kd_temperature, "set by kd_temperature")
    tokenizer.padding_side = "left"  # generation batches are left-padded
    datasets, stats = record_datasets(data, args, lambda records, counts: policy_prompts(
        records, tokenizer, data.train_on, args.kd_max_prompt_length, counts))
    runlog = RunLog(stats)
    trainer = DistillationTrainer(model=model, teacher_model=load_teacher(teacher), args=args,
                                  train_dataset=datasets["train"], eval_dataset=datasets.get("eval"),
                                  processing_class=tokenizer, callbacks=[runlog, *(callbacks or [])],
                                  peft_config=peft_config(model_args, family))
    trainer.train(resume_from_checkpoint=resume_point(args.resume_from_checkpoint, args.output_dir))
    tokenizer.padding_side = "right"
    extra = {"teacher": str(teacher), "distill_mode": "on_policy", "beta": args.beta,
             "temperature": args.temperature}
    return finish_run(trainer, runlog, tokenizer, folder, model_args, data, args, family, stats, "distill", extra)
