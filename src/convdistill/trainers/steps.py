"""The steps every training recipe shares, below the recipes (sft, dpo, distill, on_policy):

    prepare_student   seed, resolve the starting checkpoint, its family, its tokenizer
    build_datasets    records -> fitted, tokenized examples (counted) -> datasets
    resume_point      resume_from_checkpoint as a folder (or none)
    set_derived       a TRL field the recipe decides, said out loud when it replaces the user's
    finish_run        save the checkpoint that serve/eval load as is, write run_log.json

Recipes import these; nothing here imports a recipe.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.trainers.data import load_records, train_flags
from convdistill.trainers.loading import is_encoder_decoder, load_tokenizer, resolve_checkpoint, save_checkpoint
from convdistill.trainers.runlog import RunLog, announce
from convdistill.trainers.tokenize import seq2seq_examples, tokenize_pair, tokenize_path
from convdistill.trainers.truncation import TruncationStats


def set_derived(config: Any, name: str, value: Any, why: str) -> None:
    """Set a field of a TRL config that the recipe derives from its own fields. When the recipe
    had given that field a value of its own (not the field's default) that this replaces, one line
    says what changed and why, so that a setting is never dropped in silence."""
    current = getattr(config, name)
    default = next((f.default for f in dataclasses.fields(config) if f.name == name), dataclasses.MISSING)
    if current not in (value, default):
        print(f"[convdistill] recipe: {name} {current!r} -> {value!r} ({why})", file=sys.stderr, flush=True)
    setattr(config, name, value)


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    encoder_decoder: bool
    global_step: int
    data: dict[str, TruncationStats]
    log_history: list[dict[str, Any]]
    trainer: Any


def resume_point(value: Any, output_dir: str) -> str | None:
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


def sft_examples(records: list[dict[str, Any]], tokenizer: Any, data: Any, args: Any,
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


def pair_examples(records: list[dict[str, Any]], tokenizer: Any, data: Any, args: Any,
                  encoder_decoder: bool) -> tuple[list[dict[str, list[int]]], TruncationStats]:
    stats = TruncationStats()
    examples = []
    for record in records:
        example = tokenize_pair(record, tokenizer, args.max_length, stats, encoder_decoder,
                                data.max_target_length)
        if example is not None:
            examples.append(example)
    return examples, stats


def build_datasets(method: str, data: Any, args: Any, tokenizer: Any, encoder_decoder: bool,
              finish: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None
              ) -> tuple[Any, Any, dict[str, TruncationStats]]:
    """Train (and eval) datasets of fitted examples. `finish` may add columns to the example
    lists of all splits at once before they become datasets (distillation: teacher targets)."""
    from datasets import Dataset

    kind = "paths" if method == "sft" else "pairs"
    build = sft_examples if method == "sft" else pair_examples
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


def prepare_student(data: Any, model_args: Any, args: Any) -> tuple[Path, bool, Any]:
    from transformers import set_seed

    set_seed(args.seed)
    folder = resolve_checkpoint(model_args.model_name_or_path, args.output_dir, data.student_seed,
                                data.student_layers, data.student_encoder_layers)
    encoder_decoder = is_encoder_decoder(folder)
    return folder, encoder_decoder, load_tokenizer(folder, encoder_decoder)


def finish_run(trainer: Any, runlog: RunLog, tokenizer: Any, folder: Path, model_args: Any,
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
