"""Whole-conversation on-policy distillation (issue 27): seconds per training step against
off-policy distillation with the same student, teacher, data, batch and steps, and the share of
the on-policy step spent generating.

The tiny students of the shipped recipes, the embedded SmolLM2-135M-Instruct as teacher, the first
`--examples` best paths of the bundled sample, batches of 4, forward KL everywhere, one torch
thread (the machine is shared). Three runs per family:

- off-policy, cached: the shipped default (the teacher scores the data once, before training;
  that build is reported apart, not in the steps);
- off-policy, live: the teacher scores every batch (kd_cache false);
- on_policy_conversation: the student writes every turn (kd_self_fraction 1, no warm-up) after
  its own replies, `--new-tokens` tokens at most each, and the teacher scores them live.

Seconds per step skip the first step (allocation, first calls). Not an experiment: no quality
figure comes out of it.

    python benchmarks/bench_conversation_policy.py [--families llama,t5] [--steps 6] [--examples 16] \
        [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distill import StepClock, seconds_per_step

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = {"llama": 384, "t5": 256}  # the off-policy recipes' budgets, used by every run


def run(family: str, mode: str, out: Path, steps: int, examples: int, new_tokens: int) -> dict[str, Any]:
    from convdistill.trainers import train

    conversation = mode == "conversation"
    recipe = ROOT / "trainers" / f"{family}-tiny-distill{'-conversation' if conversation else ''}.yaml"
    overrides: dict[str, Any] = {
        "output_dir": str(out), "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1,
        "max_steps": steps, "max_train_examples": examples, "per_device_train_batch_size": 4,
        "max_length": MAX_LENGTH[family], "kd_loss": "forward_kl", "kd_weight": 0.5, "report_to": "none"}
    if conversation:
        overrides.update(kd_self_fraction=1.0, kd_self_warmup_steps=0, kd_max_new_tokens=new_tokens,
                         kd_max_prompt_length=MAX_LENGTH[family])
    else:
        overrides.update(kd_cache=mode == "cached", train_sampling_strategy="random")
    clock = StepClock()
    started = time.perf_counter()
    result = train("distill", recipe, overrides, callbacks=[clock])
    row: dict[str, Any] = {"family": family, "mode": mode, "steps": len(clock.ends),
                           "s_per_step": round(seconds_per_step(clock.ends, warmup=1), 2),
                           "wall_s": round(time.perf_counter() - started, 1)}
    if conversation:
        logged = [e for e in result.log_history if "generate_share" in e][1:]  # the measured steps
        row["generate_share"] = round(statistics.mean(e["generate_share"] for e in logged), 3)
        row["teacher_share"] = round(statistics.mean(e["teacher_seconds"] / e["step_seconds"] for e in logged), 3)
        row["student_turns_per_step"] = round(statistics.mean(e["student_turns"] for e in logged), 1)
        row["run_log_generation"] = json.loads((out / "run_log.json").read_text())["generation"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="llama,t5")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for family in args.families.split(","):
            for mode in ("cached", "live", "conversation"):
                row = run(family, mode, Path(work) / f"{family}-{mode}", args.steps, args.examples, args.new_tokens)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| family | mode | s/step | x cached | x live | generating | teacher |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        base = {r["mode"]: r["s_per_step"] for r in rows if r["family"] == row["family"]}
        share = f"{row['generate_share']:.0%}" if "generate_share" in row else ""
        teacher = f"{row['teacher_share']:.0%}" if "teacher_share" in row else ""
        print(f"| {row['family']} | {row['mode']} | {row['s_per_step']:.2f} | {row['s_per_step'] / base['cached']:.1f} "
              f"| {row['s_per_step'] / base['live']:.1f} | {share} | {teacher} |")


if __name__ == "__main__":
    main()
