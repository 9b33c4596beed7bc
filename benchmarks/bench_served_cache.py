"""Building the teacher's logit cache over HTTP from `convdistill serve` against building it
locally (issue 16).

The same student examples (the sample's best paths, tokenised for a decoder-only student that
shares SmolLM2's vocabulary) are scored by SmolLM2 with top-20 log-probabilities: locally
(`LocalTeacher`, the model already in memory) and through a `convdistill serve` subprocess
(`ServedScorer`: /tokenize check, then /v1/completions with echo + logprobs by token id, a few
requests in flight so the server batches them). Loading is left out of both: the server is
started once, the local model loaded once. Runs alternate (local, served, local, ...) so that
the shared machine's load falls on both alike; medians are compared. The caches must be equal
(log-probabilities within 1e-4; top-k ids row by row, but for candidates tied to float rounding,
whose order can differ between batches). Target: served at most 1.5x the local time.

    python benchmarks/bench_served_cache.py [--examples 40] [--runs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from serve_common import running_server

TEACHER = "smollm2-135m-instruct"
SAMPLE = Path(__file__).resolve().parents[1] / "conversation_trees" / "oasst_en_100_tree.jsonl"


def student_views(examples: int, max_length: int) -> tuple[list, object]:
    """The teacher's views of a decoder-only student's SFT examples (best paths of the sample)."""
    from convdistill.models import resolve_model
    from convdistill.trainers.data import load_records
    from convdistill.trainers.family import DECODER_ONLY
    from convdistill.trainers.loading import load_tokenizer
    from convdistill.trainers.steps import sft_examples

    tokenizer = load_tokenizer(resolve_model(TEACHER), DECODER_ONLY)
    with tempfile.TemporaryDirectory() as work:
        records, _ = load_records(SAMPLE, "paths", Path(work), "best", examples)
    built, _ = sft_examples(records, tokenizer, DECODER_ONLY, "all", max_length, max_length)
    return [DECODER_ONLY.teacher_view(e) for e in built], tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for both sides")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from convdistill.models import resolve_model
    from convdistill.trainers.logit_cache import LocalTeacher, ServedScorer, build_or_open
    from convdistill.trainers.served_teacher import ServedTeacher
    from convdistill.trainers.teacher_model import load_teacher

    views, tokenizer = student_views(args.examples, args.max_length)
    folder = resolve_model(TEACHER)
    vocab = len(tokenizer.get_vocab())
    model = load_teacher(folder)
    tokens = sum(len(v.input_ids) for v in views)
    targets = sum(len(v.positions) for v in views)
    loads: list[str] = [Path("/proc/loadavg").read_text().split()[0]]
    times: dict[str, list[float]] = {"local": [], "served": []}
    caches = {}
    quiet = lambda line: None  # noqa: E731 - the benchmark prints its own lines
    with running_server(TEACHER, "--threads", str(args.threads)) as server, tempfile.TemporaryDirectory() as tmp:
        scorers = {
            "local": LocalTeacher(folder, lambda: model, tokenizer.pad_token_id, vocab),
            "served": ServedScorer(ServedTeacher(server.url, TEACHER), tokenizer),
        }
        build_or_open(Path(tmp) / "warm", scorers["served"], views[:2], 20, 1.0, vocab, quiet)  # first-call costs
        for run in range(args.runs):
            for name, scorer in scorers.items():
                start = time.perf_counter()
                caches[name] = build_or_open(Path(tmp) / f"{name}-{run}", scorer, views, 20, 1.0, vocab, quiet)
                times[name].append(time.perf_counter() - start)
                loads.append(Path("/proc/loadavg").read_text().split()[0])
        ids = {name: np.asarray(cache.token_ids) for name, cache in caches.items()}
        values = {name: np.asarray(cache.log_probs) for name, cache in caches.items()}
        same_rows = int((ids["local"] == ids["served"]).all(axis=1).sum())
        # Where two candidates are tied to float rounding, their order (or, at rank k, which of
        # them is kept) may differ between a batch of one padding and another's: compare values.
        gap = float(np.abs(values["local"] - values["served"]).max())
    local, served = statistics.median(times["local"]), statistics.median(times["served"])
    print(f"{len(views)} examples, {tokens} tokens, {targets} targets, top-20, SmolLM2-135M teacher, "
          f"threads {args.threads}, {args.runs} alternating runs; load average (1 min) {', '.join(loads)}")
    for name in ("local", "served"):
        values = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:>6}: median {statistics.median(times[name]):6.2f} s ({values}); "
              f"{tokens / statistics.median(times[name]):6.0f} tokens/s")
    ratio = served / local
    print(f"served / local: {ratio:.2f}x (target <= 1.5x); identical top-20 id rows: {same_rows}/{targets} "
          f"(the rest: near-ties in another order); max log-prob gap {gap:.2e}")
    return 0 if ratio <= 1.5 and gap <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
