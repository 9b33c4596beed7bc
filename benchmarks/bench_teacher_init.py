"""Teacher-initialised vs random-initialised students of the same shape (issue 14).

For each family, a student built from SmolLM2-135M-Instruct's layers (`models init --from`) and
the same shape with random weights are given the same logit-distillation run (same data, batches,
steps; teacher top-32 cache, kd_weight 0.5) and scored on held-out reference NLL: the mean
per-token NLL of every assistant reply of the best paths of trees 70..99 of the bundled sample,
teacher-forced after its history (what `eval run` reports). Training uses the first 60 trees.
The random students get the learning rate that suits them best of `--random-lrs` (training
from scratch wants a larger one; default the tiny recipes' 1e-3); the teacher-initialised ones
use `--lr`. Finished runs are reused (their run_log.json), so a rerun only adds what is missing.
Also reported: trained tokens per second of each run on this machine.

    python benchmarks/bench_teacher_init.py [--families llama,t5] [--steps 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
TEACHER = "smollm2-135m-instruct"
TRAIN_TREES = 60
HELDOUT = (70, 100)
# The equal-size pair (docs/models.md): 84.95M vs 88.50M parameters.
SHAPES: dict[str, dict[str, int]] = {"llama": {"layers": 16}, "t5": {"layers": 4, "encoder_layers": 4}}


def heldout_pairs(tokenizer: Any, max_tokens: int = 512) -> list[tuple[list[dict[str, str]], str]]:
    """(history, reply) for every assistant turn of the held-out trees' best paths that fits in
    `max_tokens` (the students train on 256-token histories; a CPU scores 60-layer students on
    2,000-token histories for minutes)."""
    from convdistill.conversation_trees import Selection, read_trees, tree_paths
    from convdistill.conversation_trees.records import chat_messages

    def fits(history: list[dict[str, str]], reply: str) -> bool:
        text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True) + reply
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens

    pairs = []
    for graph in read_trees(SAMPLE)[HELDOUT[0]:HELDOUT[1]]:
        best = next(tree_paths(graph, Selection(), "best"), None)
        if best is None:
            continue
        messages = chat_messages(graph, best.message_ids)
        pairs += [(messages[:i], m["content"]) for i, m in enumerate(messages)
                  if m["role"] == "assistant" and i > 0 and fits(messages[:i], m["content"])]
    return pairs


def reference_nll(folder: Path, pairs: list[tuple[list[dict[str, str]], str]]) -> float:
    from convdistill.eval import LocalBackend

    values = LocalBackend(folder, batch_size=8).reference_nll(pairs)
    return sum(values) / len(values)


def build(family: str, folder: Path, random_init: bool) -> int:
    from convdistill.models.from_teacher import init_from_teacher

    if (folder / "config.json").is_file():
        return json.loads((folder / "convdistill.json").read_text())["parameters"]
    return init_from_teacher(TEACHER, family, folder, random_init=random_init, **SHAPES[family]).parameters


def distill(student: Path, out: Path, steps: int, lr: float, cache: Path, teacher: str = TEACHER,
            seed: int = 0, method: str = "distill") -> dict[str, Any]:
    """One distillation run, or the finished one in `out` (its run_log.json) when there is one:
    an interrupted benchmark goes on where it stopped. `method="sft"`: the same run without the
    teacher (same data, steps, rate and seed), the control that shows what the logits add."""
    from convdistill.trainers import train

    log = out / "run_log.json"
    if not log.is_file():
        values: dict[str, Any] = {
            "model_name_or_path": str(student), "train_file": str(SAMPLE),
            "path_strategy": "best", "train_on": "all", "max_train_examples": TRAIN_TREES,
            "output_dir": str(out), "max_length": 256,
            "max_target_length": 128, "max_steps": steps, "per_device_train_batch_size": 4,
            "learning_rate": lr, "lr_scheduler_type": "cosine", "warmup_steps": max(1, steps // 10),
            "train_sampling_strategy": "group_by_length", "bf16": False,
            "gradient_checkpointing": False, "logging_steps": max(1, steps // 5),
            "save_strategy": "no", "report_to": "none", "dataloader_pin_memory": False,
            "disable_tqdm": True, "seed": seed,
        }
        if method == "distill":
            values.update({"teacher": teacher, "kd_loss": "forward_kl", "kd_weight": 0.5, "kd_top_k": 32,
                           "kd_temperature": 1.0, "kd_cache_dir": str(cache)})
        train(method, values)
    run = json.loads(log.read_text())
    history = run["log_history"]
    epochs = next((h.get("epoch", 0.0) for h in reversed(history) if "train_loss" in h), 0.0)
    runtime = next((h["train_runtime"] for h in reversed(history) if "train_runtime" in h), run["seconds"])
    tokens = run["data"]["train"]["trained_tokens"] * epochs
    return {"checkpoint": str(out), "seconds": run["seconds"], "train_runtime_s": round(runtime, 1),
            "trained_tokens": round(tokens), "trained_tokens_per_s": round(tokens / runtime, 1) if runtime else None,
            "losses": [h["loss"] for h in history if "loss" in h]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="llama,t5")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--random-lrs", default="1e-3", help="comma-separated; the best is reported")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-teacher-init")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from convdistill.models import resolve_model

    torch.set_num_threads(args.threads)
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    pairs = heldout_pairs(AutoTokenizer.from_pretrained(resolve_model(TEACHER)))
    report: dict[str, Any] = {"steps": args.steps, "heldout_replies": len(pairs), "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()[0], "families": {}}
    report["teacher_nll"] = reference_nll(resolve_model(TEACHER), pairs)
    print(f"teacher held-out NLL {report['teacher_nll']:.3f} on {len(pairs)} replies", flush=True)
    for family in args.families.split(","):
        runs: dict[str, Any] = {}
        for init, lrs in (("teacher", [args.lr]), ("random", [float(x) for x in args.random_lrs.split(",")])):
            folder = work / f"{family}-{init}-init"
            parameters = build(family, folder, random_init=init == "random")
            before = reference_nll(folder, pairs)
            tried = []
            for lr in lrs:
                trained = distill(folder, work / f"{family}-{init}-lr{lr:g}", args.steps, lr, work / "kd-cache")
                trained["lr"] = lr
                trained["nll_after"] = reference_nll(Path(trained["checkpoint"]), pairs)
                tried.append(trained)
                print(f"{family} {init}-init lr {lr:g}: NLL {before:.3f} -> {trained['nll_after']:.3f}, "
                      f"{trained['trained_tokens_per_s']} trained tokens/s", flush=True)
            best = min(tried, key=lambda t: t["nll_after"])
            runs[init] = {"parameters": parameters, "nll_before": before, "best": best, "tried": tried}
        gap = runs["random"]["best"]["nll_after"] - runs["teacher"]["best"]["nll_after"]
        runs["gap_nats"] = gap
        report["families"][family] = runs
        print(f"{family}: teacher-init is {gap:.2f} nats/token lower after {args.steps} steps", flush=True)
    report["load_after"] = os.getloadavg()[0]
    (work / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({f: {"gap": r["gap_nats"], "teacher": r["teacher"]["best"]["nll_after"],
                          "random": r["random"]["best"]["nll_after"]} for f, r in report["families"].items()}))


if __name__ == "__main__":
    main()
