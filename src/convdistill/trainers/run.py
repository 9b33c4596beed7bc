"""`train_sft` and `train_dpo`: a recipe read top to bottom, both model families.

    model + tokenizer -> records -> fitted, tokenized examples (counted) -> TRL trainer
    -> train (resumable) -> checkpoint that serve/eval load as is -> run_log.json
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.trainers.data import load_records, train_flags
from convdistill.trainers.loading import (
    is_encoder_decoder,
    load_model,
    load_tokenizer,
    peft_config,
    resolve_checkpoint,
    save_checkpoint,
)
from convdistill.trainers.runlog import RunLog, announce
from convdistill.trainers.tokenize import seq2seq_examples, tokenize_pair, tokenize_path
from convdistill.trainers.truncation import TruncationStats


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    encoder_decoder: bool
    global_step: int
    data: dict[str, TruncationStats]
    log_history: list[dict[str, Any]]
    trainer: Any


def _resume_point(value: Any, output_dir: str) -> str | None:
    """resume_from_checkpoint: a checkpoint folder, or true/last for the newest one."""
    if value in (None, "", False, "false", "False"):
        return None
    if value in (True, "true", "True", "last"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint: no checkpoint-* folder in {output_dir}")
        return last
    if not Path(value).is_dir():
        raise ValueError(f"resume_from_checkpoint: {value} is not a folder")
    return str(value)


def _sft_examples(records: list[dict[str, Any]], tokenizer: Any, data: Any, args: Any,
                  encoder_decoder: bool) -> tuple[list[dict[str, list[int]]], TruncationStats]:
    stats = TruncationStats()
    examples: list[dict[str, list[int]]] = []
    for record in records:
        flags = train_flags(record, data.train_on)
        if encoder_decoder:
            examples += seq2seq_examples(record["messages"], flags, tokenizer, args.max_length,
                                         data.max_target_length or args.max_length, stats)
        else:
            example = tokenize_path(record["messages"], flags, tokenizer, args.max_length, stats)
            if example is not None:
                examples.append(example)
    return examples, stats


def _pair_examples(records: list[dict[str, Any]], tokenizer: Any, data: Any, args: Any,
                   encoder_decoder: bool) -> tuple[list[dict[str, list[int]]], TruncationStats]:
    stats = TruncationStats()
    examples = []
    for record in records:
        example = tokenize_pair(record, tokenizer, args.max_length, stats, encoder_decoder,
                                data.max_target_length)
        if example is not None:
            examples.append(example)
    return examples, stats


def _datasets(method: str, data: Any, args: Any, tokenizer: Any, encoder_decoder: bool,
              finish: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None
              ) -> tuple[Any, Any, dict[str, TruncationStats]]:
    """Train (and eval) datasets of fitted examples. `finish` may add columns to the example
    lists of all splits at once before they become datasets (distillation: teacher targets)."""
    from datasets import Dataset

    kind = "paths" if method == "sft" else "pairs"
    build = _sft_examples if method == "sft" else _pair_examples
    work = Path(args.output_dir) / "data"
    lists: dict[str, list[dict[str, Any]]] = {}
    stats: dict[str, TruncationStats] = {}
    for name, path in (("train", data.train_file), ("eval", data.eval_file)):
        if path is None:
            continue
        records, _ = load_records(path, kind, work, data.path_strategy,  # type: ignore[arg-type]
                                  data.max_train_examples if name == "train" else None)
        examples, stats[name] = build(records, tokenizer, data, args, encoder_decoder)
        announce(name, stats[name])
        if not examples:
            raise ValueError(f"{name} data {path}: no examples left to train on "
                             f"({stats[name].summary()})")
        lists[name] = examples
    if finish is not None:
        finish(lists)
    out = {name: Dataset.from_list(examples) for name, examples in lists.items()}
    return out["train"], out.get("eval"), stats


def _prepare(data: Any, model_args: Any, args: Any) -> tuple[Path, bool, Any]:
    from transformers import set_seed

    set_seed(args.seed)
    folder = resolve_checkpoint(model_args.model_name_or_path, args.output_dir, data.student_seed,
                                data.student_layers, data.student_encoder_layers)
    encoder_decoder = is_encoder_decoder(folder)
    return folder, encoder_decoder, load_tokenizer(folder, encoder_decoder)


def _finish(trainer: Any, runlog: RunLog, tokenizer: Any, folder: Path, model_args: Any,
            data: Any, args: Any, encoder_decoder: bool, stats: dict[str, TruncationStats],
            method: str, extra: dict[str, Any] | None = None) -> TrainResult:
    checkpoint = save_checkpoint(
        trainer, tokenizer, Path(args.output_dir), folder, model_args, data.save_merged,
        encoder_decoder, {"method": method, "family": "encoder-decoder" if encoder_decoder
                          else "decoder-only", "train_on": data.train_on, **(extra or {})},
    )
    runlog.write(args.output_dir, trainer.state, {"method": method, "base": str(folder), **(extra or {})})
    return TrainResult(Path(args.output_dir), checkpoint, encoder_decoder,
                       trainer.state.global_step, stats, trainer.state.log_history, trainer)


def train_sft(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None) -> TrainResult:
    """Supervised fine-tuning on path records: loss on the selected assistant turns."""
    from convdistill.trainers.seq2seq import Seq2SeqSFTTrainer
    from convdistill.trainers.sft_trainer import CausalSFTTrainer

    folder, encoder_decoder, tokenizer = _prepare(data, model_args, args)
    # Loss masks are built by tokenize_path (train_on), not by TRL's assistant_only_loss.
    args.assistant_only_loss = False
    train, evaluation, stats = _datasets("sft", data, args, tokenizer, encoder_decoder)
    model = load_model(folder, model_args, encoder_decoder)
    runlog = RunLog(stats)
    trainer_class = Seq2SeqSFTTrainer if encoder_decoder else CausalSFTTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=train,
                            eval_dataset=evaluation, processing_class=tokenizer,
                            peft_config=peft_config(model_args, encoder_decoder),
                            callbacks=[runlog, *(callbacks or [])])
    trainer.train(resume_from_checkpoint=_resume_point(args.resume_from_checkpoint,
                                                       args.output_dir))
    return _finish(trainer, runlog, tokenizer, folder, model_args, data, args, encoder_decoder,
                   stats, "sft")


def train_dpo(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None) -> TrainResult:
    """DPO on pair records. The reference is explicit: a copy of the starting weights, or,
    under LoRA/QLoRA, the same model with its adapter disabled; never reloaded by name."""
    from convdistill.trainers.dpo_trainer import FittedDPOTrainer
    from convdistill.trainers.seq2seq import Seq2SeqDPOTrainer

    folder, encoder_decoder, tokenizer = _prepare(data, model_args, args)
    train, evaluation, stats = _datasets("dpo", data, args, tokenizer, encoder_decoder)
    model = load_model(folder, model_args, encoder_decoder)
    peft = peft_config(model_args, encoder_decoder)
    reference = None
    if peft is None:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    runlog = RunLog(stats)
    trainer_class = Seq2SeqDPOTrainer if encoder_decoder else FittedDPOTrainer
    trainer = trainer_class(model=model, ref_model=reference, args=args, train_dataset=train,
                            eval_dataset=evaluation, processing_class=tokenizer,
                            peft_config=peft, callbacks=[runlog, *(callbacks or [])])
    trainer.train(resume_from_checkpoint=_resume_point(args.resume_from_checkpoint,
                                                       args.output_dir))
    return _finish(trainer, runlog, tokenizer, folder, model_args, data, args, encoder_decoder,
                   stats, "dpo")


def train(method: str, config: Any = None, overrides: Any = None, callbacks: list[Any] | None = None
          ) -> TrainResult:
    """Load a recipe (file or mapping, plus overrides) and run it: sft, dpo or distill.
    `callbacks`: extra transformers TrainerCallbacks (progress, timing)."""
    from convdistill.launch import check_distributed_launch
    from convdistill.trainers.recipe import load_recipe

    if method not in ("sft", "dpo", "distill"):
        raise ValueError(f"unknown training method {method!r}: sft, dpo or distill")
    parsed = load_recipe(method, config, overrides)  # type: ignore[arg-type]
    # before any model or data loads: several processes that cannot form a process group would
    # each train alone and overwrite one another's checkpoints
    check_distributed_launch(bool(getattr(parsed[2], "use_cpu", False)))
    if method == "distill":
        from convdistill.trainers.distill_run import train_distill

        return train_distill(*parsed, callbacks=callbacks)
    return (train_sft if method == "sft" else train_dpo)(*parsed, callbacks=callbacks)
