"""Batched local generation over a suite against case-by-case generation (issue 7).

Both runs generate every turn of the shipped suites with the same tiny random student, greedy,
in gold history mode. Case by case: one case at a time, one turn at a time (batch size 1), as
a loop over `generate` would. Batched: the runner's waves, `--batch-size` rows at a time. The
replies must be the same (greedy decoding); the target is batched at least 3x faster.

    python benchmarks/bench_eval_batching.py [--family llama] [--batch-size 32] [--max-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from convdistill.eval import LocalBackend, generate_replies, load_suites
from convdistill.models import init_student

SUITES = sorted((Path(__file__).resolve().parents[1] / "eval" / "suites").glob("*.jsonl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="llama", choices=("llama", "t5"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--cases", type=int, default=0, help="Use only the first N cases (0: all).")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = load_suites(SUITES)
    cases = list(suite.cases[: args.cases] if args.cases else suite.cases)
    turns = sum(len(c.turns) for c in cases)
    with tempfile.TemporaryDirectory() as tmp:
        folder = init_student(args.family, "tiny", Path(tmp) / args.family).path
        batched = LocalBackend(folder, max_tokens=args.max_tokens, batch_size=args.batch_size)
        single = LocalBackend(folder, max_tokens=args.max_tokens, batch_size=1)
        single.generate([[{"role": "user", "content": "warm up"}]])  # first-call costs are not per turn

        start = time.perf_counter()
        one_by_one = [generate_replies([case], single, "gold")[0][0] for case in cases]
        single_s = time.perf_counter() - start

        start = time.perf_counter()
        together, _ = generate_replies(cases, batched, "gold")
        batched_s = time.perf_counter() - start

    same = sum(a == b for x, y in zip(one_by_one, together, strict=True) for a, b in zip(x, y, strict=True))
    print(f"{args.family} tiny, {len(cases)} cases, {turns} turns, max_tokens {args.max_tokens}, "
          f"threads {args.threads}")
    print(f"case by case:        {single_s:7.2f} s  ({turns / single_s:6.1f} turns/s)")
    print(f"batched (size {args.batch_size:>3}): {batched_s:7.2f} s  ({turns / batched_s:6.1f} turns/s)")
    print(f"speed-up: {single_s / batched_s:.2f}x (target >= 3x); identical replies: {same}/{turns}")
    return 0 if single_s / batched_s >= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
