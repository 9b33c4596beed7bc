"""Which student of at most 101M parameters to build from SmolLM2-135M-Instruct (issue 26):
depth pruning, width pruning (MLP channels, heads) and both, measured.

For every shape: parameters; held-out reference NLL untrained (the mean per-token NLL of every
assistant reply of the best paths of trees 70..99 of the bundled sample, teacher-forced after
its history, as `eval run` reports it; bench_teacher_init's split and scorer); trained tokens/s
(one fixed batch of 4 x 256 tokens, forward + backward + AdamW step, shapes timed back to back
in turns so that other load on the machine weighs on all alike); and, for the `--train` shapes,
held-out NLL after the same logit-distillation run (bench_teacher_init's: the first 60 trees,
top-32 teacher logits cached, kd_weight 0.5, `--steps` steps, batch 4, lr 3e-4, cosine).
`--corrected` also corrects the teacher (`train correct-teacher`, trainers/smollm2-correct-teacher.yaml,
`--correct-steps` steps of LoRA on those 60 trees), scores it, and distils the `--corrected`
shapes from it with the same run. Finished units are reused (their files), so a rerun only
adds what is missing.

    python benchmarks/bench_student_shapes.py [--train d20,d24-m1152] [--steps 30]
        [--corrected d24-m1152] [--correct-steps 40] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_teacher_init import SAMPLE, TEACHER, TRAIN_TREES, distill, heldout_pairs, reference_nll

ROOT = Path(__file__).resolve().parents[1]
# name -> models init options; every one at most 101M parameters (SmolLM2: 134.5M, 30 layers,
# MLP 1536 channels, 9 heads in 3 key/value groups; a layer 3.54M, the embedding 28.3M)
SHAPES: dict[str, dict[str, int]] = {
    "d20": {"layers": 20},                                   # depth only (the 20 layers)
    "d22-m1280": {"layers": 22, "mlp_channels": 1280},
    "d24-m1152": {"layers": 24, "mlp_channels": 1152},       # MLP at 75%
    "d26-m1024": {"layers": 26, "mlp_channels": 1024},
    "w30-m864": {"mlp_channels": 864},                       # width only, MLP at 56%
    "d24-h6-m1280": {"layers": 24, "heads": 6, "mlp_channels": 1280},
    "w30-h6-m1000": {"heads": 6, "mlp_channels": 1000},      # width only, heads too
}


def build(name: str, folder: Path) -> int:
    from convdistill.models.from_teacher import init_from_teacher

    if not (folder / "config.json").is_file():
        init_from_teacher(TEACHER, "llama", folder, **SHAPES[name])
    return json.loads((folder / "convdistill.json").read_text())["parameters"]


def speed_batch(tokenizer: Any, size: int = 4, length: int = 256) -> Any:
    """`size` training paths rendered with the chat template, cut to `length` tokens (all long
    enough: no padding), the same batch for every shape."""
    import torch

    from convdistill.conversation_trees import Selection, read_trees, tree_paths
    from convdistill.conversation_trees.records import chat_messages

    rows = []
    for graph in read_trees(SAMPLE)[:TRAIN_TREES]:
        best = next(tree_paths(graph, Selection(), "best"), None)
        if best is None:
            continue
        text = tokenizer.apply_chat_template(chat_messages(graph, best.message_ids), tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            rows.append(ids[:length])
        if len(rows) == size:
            break
    return torch.tensor(rows)


def train_speed(folders: dict[str, Path], batch: Any, steps: int = 2) -> dict[str, float]:
    """Trained tokens/s of each model on `batch` (forward, backward, AdamW step): two rounds over
    the models, the second in reverse order so that a change of load on the machine weighs on
    all alike; in each, one warm-up step and `steps` timed ones; the median step of each model.
    One model in memory at a time."""
    import gc
    import statistics

    import torch
    from transformers import AutoModelForCausalLM

    times: dict[str, list[float]] = {name: [] for name in folders}
    for order in (list(folders), list(reversed(folders))):
        for name in order:
            model = AutoModelForCausalLM.from_pretrained(folders[name], dtype=torch.float32).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            for index in range(steps + 1):
                started = time.perf_counter()
                model(input_ids=batch, labels=batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if index:  # the first step warms up (allocations, optimizer state)
                    times[name].append(time.perf_counter() - started)
            del model, optimizer
            gc.collect()
    return {name: round(batch.numel() / statistics.median(t), 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="shapes built and scored untrained")
    parser.add_argument("--train", default="d20,d24-m1152,d22-m1280,w30-m864,d24-h6-m1280",
                        help="shapes distilled from the teacher")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--corrected", default="", help="shapes also distilled from the corrected teacher")
    parser.add_argument("--correct-steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-student-shapes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the fixed-batch timing (12 training steps of 100M models: about 2 minutes a "
                        "model on a busy 2-core machine); the distillation runs still report their tokens/s")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from convdistill.models import resolve_model

    torch.set_num_threads(args.threads)
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    report: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    report.update({"steps": args.steps, "lr": args.lr, "cpus": os.cpu_count(), "threads": args.threads})
    loads = report.setdefault("load_averages", [])

    def save(stage: str) -> None:
        loads.append([stage, round(os.getloadavg()[0], 2)])
        results_path.write_text(json.dumps(report, indent=2) + "\n")

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TEACHER))
    pairs = heldout_pairs(tokenizer)
    report["heldout_replies"] = len(pairs)
    if "teacher_nll" not in report:
        report["teacher_nll"] = reference_nll(resolve_model(TEACHER), pairs)
        save("teacher")
    print(f"teacher held-out NLL {report['teacher_nll']:.3f} on {len(pairs)} replies", flush=True)
    shapes = report.setdefault("shapes", {})
    folders = {}
    for name in args.shapes.split(","):
        folder = work / "students" / name
        row = shapes.setdefault(name, {"options": SHAPES[name]})
        row["parameters"] = build(name, folder)
        folders[name] = folder
        if "nll_untrained" not in row:
            row["nll_untrained"] = reference_nll(folder, pairs)
            save(f"untrained {name}")
        print(f"{name}: {row['parameters'] / 1e6:.1f}M, untrained NLL {row['nll_untrained']:.3f}", flush=True)
    if not args.no_speed and any("tokens_per_s" not in shapes[name] for name in folders):
        speeds = train_speed({"teacher": resolve_model(TEACHER), **folders}, speed_batch(tokenizer))
        report["teacher_tokens_per_s"] = speeds.pop("teacher")
        for name, value in speeds.items():
            shapes[name]["tokens_per_s"] = value
        save("speed")
        print(f"trained tokens/s: {speeds} (teacher {report['teacher_tokens_per_s']})", flush=True)
    for name in filter(None, args.train.split(",")):
        row = shapes[name]
        if "distilled" not in row:
            trained = distill(folders[name], work / "runs" / name, args.steps, args.lr, work / "kd-cache")
            trained["nll_after"] = reference_nll(Path(trained["checkpoint"]), pairs)
            row["distilled"] = trained
            save(f"distilled {name}")
        print(f"{name}: NLL {row['nll_untrained']:.3f} -> {row['distilled']['nll_after']:.3f} after "
              f"{args.steps} steps ({row['distilled']['trained_tokens_per_s']} trained tokens/s in the run)",
              flush=True)
    if args.corrected:
        from convdistill.trainers.teacher_correction import correct_teacher

        corrected = work / "teacher-corrected"
        if "corrected_teacher" not in report:
            started = time.monotonic()
            correct_teacher(overrides={"output_dir": str(corrected), "max_steps": args.correct_steps,
                                       "disable_tqdm": True})
            report["corrected_teacher"] = {"steps": args.correct_steps, "seconds": round(time.monotonic() - started),
                                           "nll": reference_nll(corrected, pairs)}
            save("corrected teacher")
        print(f"corrected teacher ({args.correct_steps} steps): held-out NLL "
              f"{report['corrected_teacher']['nll']:.3f}", flush=True)
        for name in args.corrected.split(","):
            row = shapes[name]
            if "distilled_corrected" not in row:
                trained = distill(folders[name], work / "runs" / f"{name}-corrected", args.steps, args.lr,
                                  work / "kd-cache-corrected", teacher=str(corrected))
                trained["nll_after"] = reference_nll(Path(trained["checkpoint"]), pairs)
                row["distilled_corrected"] = trained
                save(f"distilled {name} from the corrected teacher")
            print(f"{name} from the corrected teacher: NLL after {row['distilled_corrected']['nll_after']:.3f}",
                  flush=True)
    save("end")
    print("| student | parameters | held-out NLL untrained | after distillation | from corrected teacher "
          "| trained tokens/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in shapes.items():
        after = row.get("distilled", {}).get("nll_after")
        fixed = row.get("distilled_corrected", {}).get("nll_after")
        print(f"| {name} | {row['parameters'] / 1e6:.1f}M | {row['nll_untrained']:.3f} | "
              f"{'' if after is None else f'{after:.3f}'} | {'' if fixed is None else f'{fixed:.3f}'} | "
              f"{row.get('tokens_per_s', '')} |")


if __name__ == "__main__":
    main()
