"""Decoder-only SFT throughput: convdistill's trainer vs TRL's SFTTrainer, side by side.

Same model (a tiny Llama student, saved once), same paths (every path of the sample export),
same max_length, batch size, learning rate and steps; the loss is on assistant turns for both
(TRL: `assistant_only_loss=True` with the same generation-marked ChatML template). Reported:
trained (loss-carrying) tokens per second.

- ours: convdistill's pipeline as `train sft` runs it (fitted paths, bfd_split packing with
  padding-free attention, plain-logits loss off CUDA, fp32, no gradient checkpointing);
- trl-defaults: SFTConfig defaults for everything else (gradient checkpointing, padded
  batches, fused LM head; bf16 autocast on a GPU, fp32 on a CPU, where transformers refuses
  TRL's bf16 default);
- trl-fp32: the same, but fp32 and no gradient checkpointing, like ours.

    python benchmarks/bench_sft_decoder.py [--steps 12 --rounds 2 --max-length 512]
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

    folder = work / "llama-tiny"
    if not folder.is_dir():
        init_student("llama", "tiny", folder)
    return folder


def run(kind: str, folder: Path, paths: Path, opts: argparse.Namespace, work: Path) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from convdistill.trainers.data import read_jsonl, train_flags
    from convdistill.trainers.family import DECODER_ONLY
    from convdistill.trainers.loading import load_tokenizer
    from convdistill.trainers.sft_trainer import CausalSFTTrainer
    from convdistill.trainers.tokenize import tokenize_path
    from convdistill.trainers.truncation import TruncationStats

    torch.manual_seed(0)
    tokenizer = load_tokenizer(folder, DECODER_ONLY)
    records = read_jsonl(paths)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    common = dict(output_dir=str(work / f"out-{kind}"), max_length=opts.max_length,
                  per_device_train_batch_size=opts.batch, max_steps=opts.steps,
                  learning_rate=1e-3, report_to="none", save_strategy="no",
                  logging_steps=1000, disable_tqdm=True, dataloader_pin_memory=False, seed=0)
    clock = StepClock()
    if kind == "ours":
        stats = TruncationStats()
        examples = [tokenize_path(r["messages"], train_flags(r, "all"), tokenizer,
                                  opts.max_length, stats) for r in records]
        dataset = Dataset.from_list([e for e in examples if e is not None])
        config = SFTConfig(**common, packing=True, packing_strategy="bfd_split", bf16=False,
                           gradient_checkpointing=False)
        trainer = CausalSFTTrainer(model=model, args=config, train_dataset=dataset,
                                   processing_class=tokenizer, callbacks=[clock])
    else:
        dataset = Dataset.from_list([{"messages": r["messages"]} for r in records])
        # TRL's default bf16=True is refused without a GPU, so both TRL runs are fp32 on a CPU.
        extra: dict = dict(bf16=False) if not torch.cuda.is_available() else {}
        if kind == "trl-fp32":
            extra.update(bf16=False, gradient_checkpointing=False)
        config = SFTConfig(**common, assistant_only_loss=True, **extra)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[clock])
    counter = CountingCollator(trainer.data_collator, shifted=True)
    trainer.data_collator = counter
    trainer.train()
    return throughput(counter.counts, clock.ends, opts.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--runs", default="ours,trl-defaults,trl-fp32")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/sft_decoder.md"))
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sft-decoder-"))
    try:
        folder, paths = student(work), sample_paths(work)
        kinds = opts.runs.split(",")
        results: dict[str, list[float]] = {k: [] for k in kinds}
        for round_ in range(opts.rounds):
            for kind in kinds:
                started = time.monotonic()
                results[kind].append(run(kind, folder, paths, opts, work))
                print(f"round {round_ + 1} {kind}: {results[kind][-1]:.0f} trained tokens/s "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
        print(report(results, "trl-defaults" if "trl-defaults" in kinds else kinds[-1],
                     opts.out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
