"""bf16 against fp32 on this CPU (issue 29): training speed, loss, and the teacher's top-k.

Side by side in one process, alternating, on SmolLM2-135M-Instruct (the embedded teacher) and
the sample export's paths:
- SFT and logit distillation (self-distillation, live teacher, so both models run under the
  precision), `train sft|distill` with `precision: fp32` and `precision: bf16`: the median
  seconds per step after the warm-up steps (the same seed gives both the same batches, so the
  ratio of step times is the ratio of trained tokens/s) and the largest relative difference of
  their loss curves;
- the teacher's top-k log-probabilities on held-out paths, fp32 against bf16 autocast: the share
  of top-k ids both agree on, and the largest difference of the top-1 log-probability.
The line `auto picks ...` says what `precision: auto` chooses on this CPU, and why.

    python benchmarks/bench_precision.py [--steps 6 --warmup 2 --rounds 2 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench_sft_common import StepClock, sample_paths

TEACHER = "smollm2-135m-instruct"


def run(method: str, precision: str, paths: Path, opts: argparse.Namespace, work: Path) -> tuple[float, list[float]]:
    """Median seconds per step after the warm-up, and the loss curve."""
    from convdistill.trainers import train

    clock = StepClock()
    recipe: dict[str, Any] = {
        "model_name_or_path": TEACHER, "train_file": str(paths), "output_dir": str(work / f"{method}-{precision}"),
        "precision": precision, "max_steps": opts.steps, "per_device_train_batch_size": opts.batch,
        "max_length": opts.max_length, "learning_rate": 1e-5, "lr_scheduler_type": "constant", "seed": 0,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False,
        "dataloader_pin_memory": False, "disable_tqdm": True, "save_merged": False,
    }
    if method == "distill":
        recipe.update({"teacher": TEACHER, "kd_cache": False, "kd_weight": 0.5, "kd_top_k": 32})
    result = train(method, recipe, callbacks=[clock])
    steps = [b - a for a, b in zip(clock.ends[opts.warmup:], clock.ends[opts.warmup + 1:], strict=False)]
    return statistics.median(steps), [h["loss"] for h in result.log_history if "loss" in h]


def topk_agreement(paths: Path, k: int, rows: int, max_length: int) -> tuple[float, float]:
    """Share of the teacher's top-k ids that fp32 and bf16 autocast agree on, over every position
    of `rows` paths, and the largest difference of the top-1 log-probability."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from convdistill.models import resolve_model

    folder = resolve_model(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    records = [json.loads(line) for line in paths.read_text().splitlines()[-rows:]]  # the last paths
    shared, total, worst = 0, 0, 0.0
    for record in records:
        ids = tokenizer.apply_chat_template(record["messages"], return_tensors="pt", return_dict=True)["input_ids"]
        ids = ids[:, :max_length]
        with torch.inference_mode():
            fp32 = model(input_ids=ids).logits.float().log_softmax(-1)[0]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(input_ids=ids).logits.float().log_softmax(-1)[0]
        top_fp32, top_bf16 = fp32.topk(k, -1).indices, bf16.topk(k, -1).indices
        for a, b in zip(top_fp32.tolist(), top_bf16.tolist(), strict=True):
            shared += len(set(a) & set(b))
            total += k
        best = top_fp32[:, 0]
        worst = max(worst, float((fp32.gather(-1, best[:, None]) - bf16.gather(-1, best[:, None])).abs().max()))
    return shared / total, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--methods", default="sft,distill")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--topk-rows", type=int, default=8)
    opts = parser.parse_args(argv)

    import torch

    from convdistill.precision import resolve_precision

    torch.set_num_threads(opts.threads)
    auto = resolve_precision("auto")
    print(f"auto picks {auto.name} on this machine ({auto.reason}); torch threads {opts.threads}")
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = sample_paths(work)
        for method in opts.methods.split(","):
            seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
            curves: dict[str, list[float]] = {}
            for _ in range(opts.rounds):
                for precision in seconds:
                    step, curves[precision] = run(method, precision, paths, opts, work)
                    seconds[precision].append(step)
                    loads.append(Path("/proc/loadavg").read_text().split()[0])
            fp32, bf16 = (statistics.median(v) for v in seconds.values())
            gap = max(abs(a - b) / abs(a) for a, b in zip(curves["fp32"], curves["bf16"], strict=True))
            print(f"{method}: fp32 {fp32:.2f} s/step ({', '.join(f'{v:.2f}' for v in seconds['fp32'])}), "
                  f"bf16 {bf16:.2f} s/step ({', '.join(f'{v:.2f}' for v in seconds['bf16'])}): "
                  f"bf16 speed {fp32 / bf16:.2f}x fp32; loss curves within {gap:.2%} "
                  f"(fp32 {curves['fp32'][0]:.4f} -> {curves['fp32'][-1]:.4f}, "
                  f"bf16 {curves['bf16'][0]:.4f} -> {curves['bf16'][-1]:.4f})")
        agree, worst = topk_agreement(paths, 32, opts.topk_rows, opts.max_length)
        print(f"teacher top-32 under bf16 autocast: {agree:.1%} of ids shared with fp32; "
              f"top-1 log-probability differs by at most {worst:.3f}")
    print(f"load average (1 min): {', '.join(loads)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
