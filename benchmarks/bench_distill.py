"""Logit distillation benchmarks (issue 6), both on the shipped distill recipes with the embedded
SmolLM2-135M-Instruct as teacher:

1. speed: seconds per training step from the logit cache vs with the teacher run live on every
   batch; same student, data, batches and steps, runs alternating, median of `--rounds`;
2. held-out KL: the same tiny student trained for the same steps with distillation only
   (kd_weight 1) vs cross-entropy only (kd_weight 0), then KL(teacher || student) over the full
   vocabulary on the best paths of trees it never saw.

    python benchmarks/bench_distill.py [--families t5,llama] [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
TRAIN_TREES = 60  # the recipes' max_train_examples: the first 60 trees' best paths
HELDOUT_FROM = 70  # best paths of trees 70..99 are never trained on


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())


def seconds_per_step(ends: list[float], warmup: int = 2) -> float:
    return (ends[-1] - ends[warmup]) / (len(ends) - 1 - warmup)


def run(family: str, out: Path, overrides: dict[str, Any]) -> tuple[Any, StepClock]:
    """One training run of the family's distill recipe with a step clock attached."""
    from convdistill.trainers import train

    clock = StepClock()
    recipe = ROOT / "trainers" / f"{family}-tiny-distill.yaml"
    fixed = {"output_dir": str(out), "save_strategy": "no", "disable_tqdm": True}
    result = train("distill", recipe, {**fixed, **overrides}, callbacks=[clock])
    return result, clock


def speed(family: str, work: Path, rounds: int, steps: int) -> dict[str, Any]:
    cache = work / f"{family}-cache"
    started = time.perf_counter()
    run(family, work / f"{family}-warm", {"max_steps": 1, "kd_cache_dir": str(cache)})  # builds the cache
    build = time.perf_counter() - started
    times: dict[str, list[float]] = {"cached": [], "live": []}
    for _ in range(rounds):
        for mode in ("cached", "live"):
            _, clock = run(family, work / f"{family}-{mode}",
                           {"max_steps": steps, "kd_cache": mode == "cached", "kd_cache_dir": str(cache)})
            times[mode].append(seconds_per_step(clock.ends))
    cached, live = statistics.median(times["cached"]), statistics.median(times["live"])
    return {"family": family, "cache_build_s": round(build, 1), "cached_s_per_step": round(cached, 3),
            "live_s_per_step": round(live, 3), "speedup": round(live / cached, 2), "runs": times}


def heldout_file(work: Path) -> Path:
    from convdistill.conversation_trees import export_paths

    every = work / "best.jsonl"
    export_paths(SAMPLE, every, strategy="best")
    lines = every.read_text().splitlines()
    out = work / "heldout.jsonl"
    out.write_text("\n".join(lines[HELDOUT_FROM:]) + "\n")
    return out


def kl_comparison(family: str, work: Path, steps: int, heldout: Path) -> dict[str, Any]:
    from convdistill.models import resolve_model
    from convdistill.trainers.kd_eval import heldout_kl

    cache = work / f"{family}-cache"
    row: dict[str, Any] = {"family": family, "steps": steps}
    for name, weight in (("distilled", 1.0), ("cross_entropy", 0.0)):
        result, _ = run(family, work / f"{family}-{name}", {"max_steps": steps, "kd_weight": weight,
                                                             "kd_cache_dir": str(cache)})
        limits = {"max_length": 256, "max_target_length": 192} if family == "t5" else {"max_length": 384}
        measured = heldout_kl(result.checkpoint, resolve_model("smollm2-135m-instruct"), heldout, **limits)
        row[name] = round(measured["kl"], 3)
        row["tokens"] = int(measured["tokens"])
    row["ratio"] = round(row["distilled"] / row["cross_entropy"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="t5,llama")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps per speed run")
    parser.add_argument("--kl-steps", type=int, default=40, help="steps per held-out KL run (the recipes': 40)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "distill")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-kl", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    heldout = heldout_file(args.work)
    report: dict[str, Any] = {"speed": [], "kl": []}
    for family in args.families.split(","):
        if not args.skip_speed:
            report["speed"].append(speed(family, args.work, args.rounds, args.steps))
            print(json.dumps(report["speed"][-1]), file=sys.stderr, flush=True)
        if not args.skip_kl:
            report["kl"].append(kl_comparison(family, args.work, args.kl_steps, heldout))
            print(json.dumps(report["kl"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
