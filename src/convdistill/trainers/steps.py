"""The steps every training recipe shares, below the recipes (sft, dpo, distill, on_policy):

    prepare_student   seed, resolve the starting checkpoint, its family, its tokenizer
    build_datasets    records -> fitted, tokenized examples (counted) -> datasets
    resume_point      resume_from_checkpoint as a folder (or none)
    finish_run        save the checkpoint that serve/eval load as is, write run_log.json

Recipes import these; nothing here imports a recipe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.errors import BadInput, BadRecipe
from convdistill.trainers.data import load_pairs, load_records, train_flags
from convdistill.trainers.family import ModelFamily, family_of
from convdistill.trainers.loading import load_tokenizer, resolve_checkpoint, save_checkpoint
from convdistill.trainers.runlog import RunLog, announce
from convdistill.trainers.truncation import TruncationStats


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    family: ModelFamily
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
            raise BadRecipe(f"resume_from_checkpoint: no checkpoint-* folder in {output_dir}")
        return last
    if not Path(value).is_dir():
        raise BadRecipe(f"resume_from_checkpoint: {value} is not a folder")
    return str(value)


# Inputs at least this long get a progress bar while they are tokenized.
PROGRESS_FROM = 5_000


def progress(records: list[dict[str, Any]], what: str) -> Any:
    """`records`, with a progress bar on stderr when there are many (tokenizing 200k
    conversations takes minutes)."""
    from tqdm.auto import tqdm

    return tqdm(records, desc=what, unit=" records", disable=len(records) < PROGRESS_FROM, file=sys.stderr)


def sft_examples(records: list[dict[str, Any]], tokenizer: Any, family: ModelFamily, train_on: str,
                 max_length: int | None, max_target_length: int | None
                 ) -> tuple[list[dict[str, list[int]]], TruncationStats]:
    """The fitted, tokenized SFT examples of path records, and what fitting them cost."""
    stats = TruncationStats()
    examples: list[dict[str, list[int]]] = []
    for record in progress(records, "tokenizing paths"):
        examples += family.sft_examples(record["messages"], train_flags(record, train_on), tokenizer, max_length,
                                        max_target_length, stats)
    return examples, stats


def pair_examples(records: list[dict[str, Any]], tokenizer: Any, family: ModelFamily, max_length: int | None,
                  max_target_length: int | None) -> tuple[list[dict[str, list[int]]], TruncationStats]:
    """The fitted, tokenized pairs of pair records, and what fitting them cost."""
    stats = TruncationStats()
    examples = []
    for record in progress(records, "tokenizing pairs"):
        example = family.pair_example(record, tokenizer, max_length, max_target_length, stats)
        if example is not None:
            examples.append(example)
    return examples, stats


def build_datasets(method: str, data: Any, args: Any, tokenizer: Any, family: ModelFamily,
                   finish: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None
                   ) -> tuple[Any, Any, dict[str, TruncationStats]]:
    """Train (and eval) datasets of fitted examples. `finish` may add columns to the example
    lists of all splits at once before they become datasets (distillation: teacher targets).
    With `data_cache` on, each split's examples are saved once (data_cache.py) and a later run
    with the same inputs reads them back instead of tokenizing again."""
    from datasets import Dataset

    from convdistill.trainers.data_cache import TokenizedCache, cache_key, tokenizer_digest

    kind = "paths" if method == "sft" else "pairs"
    work = Path(args.output_dir) / "data"
    lists: dict[str, list[dict[str, Any]]] = {}
    ready: dict[str, Any] = {}
    stats: dict[str, TruncationStats] = {}
    tokenizer_id: str | None = None  # its digest serialises the whole tokenizer: once for both splits
    for name, path in (("train", data.train_file), ("eval", data.eval_file)):
        if path is None:
            continue
        limit = data.max_train_examples if name == "train" else None
        cache = None
        if data.data_cache and Path(path).is_file():  # anything else gets the reader's own error
            settings = {"kind": kind, "family": family.name, "train_on": data.train_on,
                        "path_strategy": data.path_strategy, "limit": limit, "max_length": args.max_length,
                        "max_target_length": data.max_target_length}
            tokenizer_id = tokenizer_id or tokenizer_digest(tokenizer)
            cache = TokenizedCache(data.data_cache_dir or work / "tokenized", cache_key(path, settings, tokenizer_id))
            found = cache.load()
            if found is not None:
                ready[name], stats[name] = found
                announce(name, stats[name])
                print(f"[convdistill] {name} data: tokenized examples reused from {cache.path}", file=sys.stderr,
                      flush=True)
                if finish is not None:
                    lists[name] = ready.pop(name).to_list()
                continue
        if method == "sft":
            records, _ = load_records(path, kind, work, data.path_strategy, limit)  # type: ignore[arg-type]
            examples, stats[name] = sft_examples(records, tokenizer, family, data.train_on, args.max_length,
                                                 data.max_target_length)
        else:
            records, read = load_pairs(path, work, limit)
            examples, stats[name] = pair_examples(records, tokenizer, family, args.max_length, data.max_target_length)
            # Records the reader rejected (a preference file's bad lines) are counted with the rest
            stats[name].records += read.records_rejected
            for reason, count in read.reasons.items():
                stats[name].dropped += count
                stats[name].drop_reasons[f"rejected at read: {reason}"] += count
        announce(name, stats[name])
        if not examples:
            raise BadInput(f"{name} data {path}: no examples left to train on "
                           f"({stats[name].summary()})")
        if cache is not None:
            dataset = Dataset.from_list(examples)
            cache.save(dataset, stats[name])
            if finish is None:
                ready[name] = dataset
                continue
        lists[name] = examples
    if finish is not None:
        finish(lists)
    out = {**ready, **{name: Dataset.from_list(examples) for name, examples in lists.items()}}
    return out["train"], out.get("eval"), stats


def prepare_student(data: Any, model_args: Any, args: Any) -> tuple[Path, ModelFamily, Any]:
    """Seed, the student's starting checkpoint (built first for student:...), its family and its
    tokenizer."""
    from transformers import set_seed

    set_seed(args.seed)
    folder = resolve_checkpoint(model_args.model_name_or_path, args.output_dir, data.student_seed,
                                data.student_layers, data.student_encoder_layers,
                                {"mlp_channels": data.student_mlp_channels, "heads": data.student_heads,
                                 "kv_heads": data.student_kv_heads})
    family = family_of(folder)
    return folder, family, load_tokenizer(folder, family)


def finish_run(trainer: Any, runlog: RunLog, tokenizer: Any, folder: Path, model_args: Any,
               data: Any, args: Any, family: ModelFamily, stats: dict[str, TruncationStats],
               method: str, extra: dict[str, Any] | None = None) -> TrainResult:
    checkpoint = save_checkpoint(
        trainer, tokenizer, Path(args.output_dir), folder, model_args, data.save_merged,
        family, {"method": method, "family": family.name, "train_on": data.train_on, **(extra or {})},
    )
    runlog.write(args.output_dir, trainer.state, {"method": method, "base": str(folder), **(extra or {})})
    return TrainResult(Path(args.output_dir), checkpoint, family,
                       trainer.state.global_step, stats, trainer.state.log_history, trainer)
