"""A fair encoder-decoder (issue 26): the T5 student built as T5Gemma (two embedding tables, a
cross-attention started from self-attention) against T5Gemma2 (one table, merged attention) at
equal parameters, both against the demo's decoder-only student, after the same distillation.

Per build: parameters, held-out reference NLL untrained and after bench_teacher_init's `distill`
(the first 60 trees' best paths, 30 steps of 4, lr 3e-4 cosine, top-32 forward KL from SmolLM2 as
it ships, kd_weight 0.5; histories 256 tokens, replies 128), and trained tokens/s. Held-out NLL:
the 30 assistant replies of the best paths of trees 70..99 (teacher 2.106).

`--qk-norm`: what T5Gemma2's per-head query and key norms alone cost the teacher (the teacher
itself with its query and/or key head vectors RMS-normalised to their mean RMS, as the builder
sets the norms' gains), the part of the gap no layer choice removes.

Finished builds and runs are reused (bench_teacher_init's `distill`), so an interrupted run goes on.

    python benchmarks/bench_t5_build.py [--builds t5gemma-5+5,t5gemma2-4+15] [--qk-norm] [--threads 1]
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
from bench_teacher_init import TEACHER, distill, heldout_pairs, reference_nll

ROOT = Path(__file__).resolve().parents[1]
# name -> init_from_teacher options. t5gemma2-4+15's decoder layers are the 13 of highest block
# influence and layers 2 and 3 (the prototype's choice, kept so its figures reproduce).
BUILDS: dict[str, dict[str, Any]] = {
    "t5gemma-5+5": {"architecture": "t5gemma", "layers": 5, "encoder_layers": 5},
    "t5gemma2-4+15": {"architecture": "t5gemma2", "encoder_keep": [0, 1, 2, 3],
                      "keep": [0, 1, 2, 3, 8, 18, 19, 20, 21, 22, 23, 24, 27, 28, 29]},
    "t5gemma2-4+15-ranked": {"architecture": "t5gemma2", "layers": 15, "encoder_layers": 4},
}


def build(name: str, folder: Path) -> int:
    from convdistill.models.from_teacher import init_from_teacher

    if not (folder / "config.json").is_file():
        init_from_teacher(TEACHER, "t5", folder, **BUILDS[name])
    return json.loads((folder / "convdistill.json").read_text())["parameters"]


def qk_norm_cost(pairs: list[Any]) -> dict[str, float]:
    """The teacher's held-out NLL with its query and/or key heads normalised to their mean RMS."""
    import torch

    from convdistill.eval import LocalBackend
    from convdistill.models import resolve_model
    from convdistill.models.from_teacher import DEFAULT_SAMPLE, measure_layers, sample_conversations
    from convdistill.resources import shipped_file

    backend = LocalBackend(resolve_model(TEACHER), batch_size=8)
    model, tokenizer = backend.chat.model, backend.chat.tokenizer
    stats = measure_layers(model, tokenizer, sample_conversations(shipped_file(DEFAULT_SAMPLE), 16))
    mean_rms = {"q": stats.query_rms, "k": stats.key_rms}
    head_dim = model.config.hidden_size // model.config.num_attention_heads

    def normalise(kind: str, index: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> Any:
            heads = output.reshape(*output.shape[:-1], -1, head_dim)
            heads = heads * torch.rsqrt(heads.pow(2).mean(-1, keepdim=True) + 1e-6) * mean_rms[kind][index]
            return heads.reshape(output.shape)
        return hook

    out: dict[str, float] = {}
    for label, kinds in (("none", ()), ("query", ("q",)), ("key", ("k",)), ("both", ("q", "k"))):
        hooks = [getattr(layer.self_attn, f"{kind}_proj").register_forward_hook(normalise(kind, i))
                 for i, layer in enumerate(model.model.layers) for kind in kinds]
        values = backend.reference_nll(pairs)
        for hook in hooks:
            hook.remove()
        out[label] = round(sum(values) / len(values), 3)
        print(f"teacher with {label} head norms: held-out NLL {out[label]:.3f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", default="t5gemma-5+5,t5gemma2-4+15")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--qk-norm", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-t5-build")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from convdistill.models import resolve_model

    torch.set_num_threads(args.threads)
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    pairs = heldout_pairs(AutoTokenizer.from_pretrained(resolve_model(TEACHER)))

    def save() -> None:  # after every stage: an interrupted run keeps what it measured
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    if args.qk_norm:
        results["qk_norm"] = qk_norm_cost(pairs)
        save()
    for name in args.builds.split(","):
        started = time.perf_counter()
        folder = work / name
        parameters = build(name, folder)
        before = reference_nll(folder, pairs)
        run = distill(folder, work / f"{name}-distilled", args.steps, 3e-4, work / "kd-cache")
        after = reference_nll(Path(run["checkpoint"]), pairs)
        results[name] = {"parameters": parameters, "nll_untrained": round(before, 3), "nll_after": round(after, 3),
                         "steps": args.steps, "trained_tokens_per_s": run["trained_tokens_per_s"],
                         "train_runtime_s": run["train_runtime_s"], "seconds": round(time.perf_counter() - started),
                         "load": round(os.getloadavg()[0], 2), "threads": args.threads}
        print(f"{name}: {parameters / 1e6:.1f}M, NLL {before:.3f} -> {after:.3f} after {args.steps} steps, "
              f"{run['trained_tokens_per_s']} trained tokens/s", flush=True)
        save()


if __name__ == "__main__":
    main()
