"""Does distillation pay (issue 26)? The demo's decoder-only student (SmolLM2-135M-Instruct pruned
to 24 layers at 1152 MLP channels, 97.3M) trained from the same start on the same data for the
same steps, by logit distillation from the corrected teacher and by SFT alone, over seeds.

Per run: held-out reference NLL (bench_teacher_init's: the 30 assistant replies of the best paths
of trees 70..99, teacher-forced after their history) and the demo's suite (context_memory and the
first 6 anaphora cases: 17 cases, 51 turns, gold history, greedy, 40 tokens): cases passed, score
and turns failing a gate. Data and run: bench_teacher_init's `distill` (the first 60 trees' best
paths, 30 steps of 4, lr 3e-4 cosine, max_length 256; distillation top-32 forward KL, kd_weight
0.5). The student and the corrected teacher are bench_student_shapes' (built or corrected here
when missing). Finished runs are reused, so an interrupted benchmark goes on where it stopped.

    python benchmarks/bench_distill_vs_sft.py [--seeds 0,1,2] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_student_shapes import build
from bench_teacher_init import TEACHER, distill, heldout_pairs, reference_nll

ROOT = Path(__file__).resolve().parents[1]
SHAPE = "d24-m1152"


def suite_figures(checkpoint: Path) -> dict[str, Any]:
    """The demo's own suite and decoding (demo.evaluation), on a checkpoint."""
    from convdistill.demo import make_config
    from convdistill.demo.evaluation import demo_suite
    from convdistill.eval import RunOptions, open_backend, run_suite

    config = make_config(threads=1)
    sizes = config.sizes
    backend = open_backend(str(checkpoint), None, batch_size=sizes.eval_batch_size,
                           max_tokens=sizes.eval_max_tokens, temperature=0.0, seed=config.seed)
    s = run_suite(demo_suite(config), backend, RunOptions(history="gold", nll=False))["summary"]
    return {"cases_passed": s["cases_passed"], "cases": s["cases"], "score": round(s["score"], 3),
            "turns_gated": s["turns_gated"], "turns": s["turns"] + s["turns_unscored"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-student-shapes")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from convdistill.models import resolve_model
    from convdistill.trainers.teacher_correction import correct_teacher

    torch.set_num_threads(args.threads)
    work = args.out
    student = work / "students" / SHAPE
    build(SHAPE, student)
    teacher = work / "teacher-corrected"
    if not (teacher / "config.json").is_file():
        correct_teacher(overrides={"output_dir": str(teacher), "max_steps": 40, "seed": 0})
    pairs = heldout_pairs(AutoTokenizer.from_pretrained(resolve_model(TEACHER)))
    results_path = work / "distill_vs_sft.json"
    report: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    report.update({"student": SHAPE, "teacher": str(teacher), "steps": args.steps, "lr": args.lr,
                   "cpus": os.cpu_count(), "threads": args.threads})
    runs = report.setdefault("runs", {})
    for seed in map(int, args.seeds.split(",")):
        for method in ("distill", "sft"):
            name = f"{method}-s{seed}"
            if name in runs:
                continue
            started = time.monotonic()
            trained = distill(student, work / "runs" / f"{SHAPE}-vs-{name}", args.steps, args.lr,
                              work / "kd-cache-corrected", teacher=str(teacher), seed=seed, method=method)
            checkpoint = Path(trained["checkpoint"])
            runs[name] = {"method": method, "seed": seed, "nll": round(reference_nll(checkpoint, pairs), 3),
                          **suite_figures(checkpoint), "train_runtime_s": trained["train_runtime_s"],
                          "seconds": round(time.monotonic() - started), "load": round(os.getloadavg()[0], 2)}
            results_path.write_text(json.dumps(report, indent=2) + "\n")
            print(name, runs[name], flush=True)
    print("| method | seeds | held-out NLL (mean, each) | cases passed of 17 (each) "
          "| turns failing a gate of 51 (each) |")
    print("| --- | --- | --- | --- | --- |")
    for method in ("distill", "sft"):
        rows = [r for r in runs.values() if r["method"] == method]
        if not rows:
            continue
        nll = [r["nll"] for r in rows]
        print(f"| {method} | {len(rows)} | {statistics.mean(nll):.3f} ({', '.join(f'{x:.3f}' for x in nll)}) | "
              f"{', '.join(str(r['cases_passed']) for r in rows)} | {', '.join(str(r['turns_gated']) for r in rows)} |")


if __name__ == "__main__":
    main()
