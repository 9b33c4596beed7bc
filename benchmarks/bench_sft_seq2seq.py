"""Encoder-decoder SFT throughput: convdistill's Seq2SeqSFTTrainer vs transformers'
Seq2SeqTrainer with DataCollatorForSeq2Seq, side by side.

Same model (a tiny T5 student, saved once), the same examples (one per assistant turn of every
path of the sample export, `seq2seq_format`, fitted to 384 source / 256 target tokens), batch
size, learning rate and steps, fp32, no gradient checkpointing (Seq2SeqTrainer's defaults).
Reported: trained (label) tokens per second. Runs:
- ours: batches of `--batch` examples of similar length (`train_sampling_strategy:
  group_by_length`, as the tiny T5 recipe does);
- ours-budget: token-budget batches (`batch_tokens: --batch-tokens`, trainers/batching.py);
- seq2seq-trainer: transformers' Seq2SeqTrainer + DataCollatorForSeq2Seq, defaults;
- seq2seq-trainer-grouped: the same with `train_sampling_strategy: group_by_length`, its best
  setting on a CPU (the baseline the ratios are taken against).

    python benchmarks/bench_sft_seq2seq.py [--steps 12 --rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench_sft_common import CountingCollator, StepClock, report, sample_paths, throughput


def student(work: Path) -> Path:
    from convdistill.models import init_student

    folder = work / "t5-tiny"
    if not folder.is_dir():
        init_student("t5", "tiny", folder)
    return folder


def examples(folder: Path, paths: Path, opts: argparse.Namespace) -> list[dict]:
    from convdistill.trainers.data import read_jsonl, train_flags
    from convdistill.trainers.family import ENCODER_DECODER
    from convdistill.trainers.loading import load_tokenizer
    from convdistill.trainers.tokenize import seq2seq_examples
    from convdistill.trainers.truncation import TruncationStats

    tokenizer = load_tokenizer(folder, ENCODER_DECODER)
    stats = TruncationStats()
    out: list[dict] = []
    for record in read_jsonl(paths):
        out += seq2seq_examples(record["messages"], train_flags(record, "all"), tokenizer,
                                opts.max_source, opts.max_target, stats)
    return out


def run(kind: str, folder: Path, data: list[dict], opts: argparse.Namespace, work: Path
        ) -> float:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSeq2SeqLM,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )
    from trl import SFTConfig

    from convdistill.trainers.family import ENCODER_DECODER
    from convdistill.trainers.loading import load_tokenizer
    from convdistill.trainers.seq2seq import Seq2SeqSFTTrainer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(folder, ENCODER_DECODER)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32)
    common = dict(output_dir=str(work / f"out-{kind}"), per_device_train_batch_size=opts.batch,
                  max_steps=opts.steps, learning_rate=1e-3, report_to="none",
                  save_strategy="no", logging_steps=1000, disable_tqdm=True,
                  dataloader_pin_memory=False, seed=0)
    clock = StepClock()
    if kind.startswith("ours"):
        config = SFTConfig(**common, bf16=False, gradient_checkpointing=False,
                           max_length=opts.max_source, train_sampling_strategy="group_by_length")
        budget = opts.batch_tokens if kind == "ours-budget" else None
        trainer = Seq2SeqSFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(data),
                                    processing_class=tokenizer, callbacks=[clock], batch_tokens=budget)
    else:
        dataset = Dataset.from_list(
            [{**e, "attention_mask": [1] * len(e["input_ids"])} for e in data])
        grouped = {"train_sampling_strategy": "group_by_length"} if kind.endswith("grouped") else {}
        trainer = Seq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(**common, **grouped),
                                 train_dataset=dataset, processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                                 callbacks=[clock])
    counter = CountingCollator(trainer.data_collator, shifted=False)
    trainer.data_collator = counter
    trainer.train()
    return throughput(counter.counts, clock.ends, opts.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="ours-budget's padded tokens per batch")
    parser.add_argument("--runs", default="ours,ours-budget,seq2seq-trainer,seq2seq-trainer-grouped")
    parser.add_argument("--max-source", type=int, default=384)
    parser.add_argument("--max-target", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/sft_seq2seq.md"))
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sft-seq2seq-"))
    try:
        folder = student(work)
        data = examples(folder, sample_paths(work), opts)
        print(f"{len(data)} examples", flush=True)
        results: dict[str, list[float]] = {kind: [] for kind in opts.runs.split(",")}
        for round_ in range(opts.rounds):
            for kind in results:
                started = time.monotonic()
                results[kind].append(run(kind, folder, data, opts, work))
                print(f"round {round_ + 1} {kind}: {results[kind][-1]:.0f} trained tokens/s "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
        baseline = "seq2seq-trainer-grouped" if "seq2seq-trainer-grouped" in results else "seq2seq-trainer"
        print(report(results, baseline, opts.out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
