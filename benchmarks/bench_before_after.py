"""Every benchmark of benchmarks/RESULTS.md on this checkout and on an earlier revision, side by side.

For a change that must leave every measured ratio where it was (the structural pass, issue 17):
the earlier revision is checked out into a temporary git worktree, and each benchmark runs from
its own revision's `benchmarks/` folder against its own revision's `src/` (PYTHONPATH), in this
checkout's virtual environment, alternating before and after for `--rounds` rounds. From each
run the benchmark's own ratio (its speed-up, its ratio to a baseline) is read off its output;
reported are the medians per side, after / before, and whether the change made the ratio worse
by more than `--tolerance`. The load average is recorded around every run.

A benchmark that did not exist yet at `--before` is compared with the commit that added it.
Sizes are cut down from RESULTS.md's (see each entry's arguments) so that the whole table runs in
about an hour on two cores; both sides run the same sizes.

    python benchmarks/bench_before_after.py --before 0205e71 --rounds 2
    python benchmarks/bench_before_after.py --before 0205e71 --only eval-batching-llama,paths
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
FLOAT = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class Ratio:
    """One figure a benchmark prints: a regex whose first group is the number."""

    name: str
    pattern: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str  # below benchmarks/
    args: tuple[str, ...]
    ratios: tuple[Ratio, ...]
    most_rounds: int | None = None  # the slowest (training) benchmarks: fewer alternations


SPEED_UP = Ratio("speed-up", rf"speed-up(?: in requests/s)?:? {FLOAT}x")
BENCHMARKS = (
    Benchmark("eval-batching-llama", "bench_eval_batching.py",
              ("--family", "llama", "--batch-size", "32", "--max-tokens", "32", "--threads", "1"),
              (SPEED_UP,)),
    Benchmark("eval-batching-t5", "bench_eval_batching.py",
              ("--family", "t5", "--batch-size", "32", "--max-tokens", "32", "--threads", "1"),
              (SPEED_UP,)),
    Benchmark("eval-nll", "bench_eval_nll.py", ("--rounds", "2"), (SPEED_UP,)),
    Benchmark("sft-decoder", "bench_sft_decoder.py",
              ("--steps", "4", "--warmup", "1", "--rounds", "1", "--runs", "ours,trl-defaults", "--out", "/dev/null"),
              (Ratio("ours / trl-defaults", rf"\| ours \| [0-9]+ \| [0-9, ]+ \| {FLOAT}x \|"),)),
    Benchmark("sft-seq2seq", "bench_sft_seq2seq.py",
              ("--steps", "4", "--warmup", "1", "--rounds", "1", "--out", "/dev/null"),
              (Ratio("ours / seq2seq-trainer", rf"\| ours[^|]* \| [0-9]+ \| [0-9, ]+ \| {FLOAT}x \|"),)),
    Benchmark("teacher-requests", "bench_teacher_requests.py",
              ("--requests", "200", "--concurrency", "32", "--delay", "0.1", "--repeat", "3"),
              (Ratio("median / ideal", rf"= {FLOAT}x ideal", higher_is_better=False),)),
    Benchmark("serve-throughput", "serve_throughput.py",
              ("--model", "smollm2-135m-instruct", "--requests", "32", "--clients", "16", "--max-tokens", "16"),
              (SPEED_UP,)),
    Benchmark("distill-cache", "bench_distill.py",
              ("--families", "llama", "--rounds", "1", "--steps", "4", "--skip-kl"),
              (Ratio("live / cached s/step", rf'"speedup": {FLOAT}'),), most_rounds=1),
    Benchmark("flat-memory", "bench_flat_memory.py", ("--trees", "1000", "--modes", "spill"),
              (Ratio("10x / 1x peak RSS (flat)", rf"\| flat[^|]* \| spill \| [0-9]+ MB \| [0-9]+ MB \| {FLOAT}x",
                     higher_is_better=False),)),
    Benchmark("served-cache", "bench_served_cache.py", ("--examples", "16", "--runs", "2"),
              (Ratio("served / local", rf"served / local: {FLOAT}x", higher_is_better=False),)),
    Benchmark("completions-batching", "bench_completions_batching.py", ("--questions", "16", "--runs", "2"),
              (SPEED_UP,)),
    Benchmark("serve-load", "serve_load.py",
              ("--model", "smollm2-135m-instruct", "--requests", "100", "--max-tokens", "2", "--max-seconds", "600"),
              (Ratio("latency p50 (s)", rf"latency p50 {FLOAT} s", higher_is_better=False),)),
    Benchmark("teacher-init", "bench_teacher_init.py", ("--families", "llama", "--steps", "10"),
              (Ratio("teacher-init NLL gap (nats)", rf"teacher-init is {FLOAT} nats/token lower"),), most_rounds=1),
    Benchmark("gguf-speed", "bench_gguf_speed.py",
              ("speed", "--model", "smollm2-135m-instruct", "--types", "f16", "--requests", "8", "--clients", "8",
               "--rounds", "1", "--max-tokens", "16"),
              (Ratio("serve batched / serve one at a time",
                     rf"\| serve float32, batched[^|]*\| [0-9.]+ \| {FLOAT}x"),)),
)


def revision_with(script: str, before: str) -> str:
    """`before` when the script exists there, else the commit that added it."""
    found = subprocess.run(["git", "-C", str(CHECKOUT), "cat-file", "-e", f"{before}:benchmarks/{script}"],
                           capture_output=True)
    if found.returncode == 0:
        return before
    added = subprocess.run(["git", "-C", str(CHECKOUT), "log", "--diff-filter=A", "--format=%h", "--",
                            f"benchmarks/{script}"], capture_output=True, text=True, check=True)
    return added.stdout.split()[-1]


def run_once(bench: Benchmark, root: Path, log: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / bench.script), *bench.args], cwd=root,
                          env=env, capture_output=True, text=True)
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    found = {}
    for ratio in bench.ratios:
        match = re.search(ratio.pattern, done.stdout)
        if match:
            found[ratio.name] = float(match.group(1))
    if len(found) < len(bench.ratios):
        print(f"  {bench.name} in {root}: exit {done.returncode}, figures not found; output in {log}", flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--logs", type=Path, default=HERE / "out" / "before_after")
    args = parser.parse_args(argv)

    chosen = [b for b in BENCHMARKS if (not args.only or b.name in args.only.split(","))]
    args.logs.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    worse: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        worktrees: dict[str, Path] = {}
        try:
            for bench in chosen:
                revision = revision_with(bench.script, args.before)
                if revision not in worktrees:
                    worktrees[revision] = Path(tmp) / revision
                    subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", "-f",
                                    str(worktrees[revision]), revision], check=True, capture_output=True)
                sides = {"before": worktrees[revision], "after": CHECKOUT}
                figures: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
                load = [os.getloadavg()[0]]
                started = time.perf_counter()
                rounds = min(args.rounds, bench.most_rounds or args.rounds)
                for round_ in range(rounds):
                    for side, root in sides.items():
                        found = run_once(bench, root, args.logs / f"{bench.name}-{side}-{round_ + 1}.log")
                        for name, value in found.items():
                            figures[side].setdefault(name, []).append(value)
                        load.append(os.getloadavg()[0])
                minutes = (time.perf_counter() - started) / 60
                for ratio in bench.ratios:
                    before = figures["before"].get(ratio.name)
                    after = figures["after"].get(ratio.name)
                    if not before or not after:
                        rows.append(f"| {bench.name} | {ratio.name} | {revision} | not measured (see logs) | | | |")
                        worse.append(f"{bench.name}: not measured")
                        continue
                    b, a = statistics.median(before), statistics.median(after)
                    change = a / b
                    bad = change < 1 - args.tolerance if ratio.higher_is_better else change > 1 + args.tolerance
                    if bad:
                        worse.append(f"{bench.name} {ratio.name}")
                    rows.append(f"| {bench.name} | {ratio.name} ({'higher' if ratio.higher_is_better else 'lower'} "
                                f"is better) | {revision} | {b:.2f} ({', '.join(f'{v:.2f}' for v in before)}) | "
                                f"{a:.2f} ({', '.join(f'{v:.2f}' for v in after)}) | {change:.3f} | "
                                f"{'WORSE' if bad else 'ok'} |")
                print(f"{rows[-1]}  <!-- {minutes:.1f} min, load {min(load):.1f}-{max(load):.1f} -->", flush=True)
        finally:
            for path in worktrees.values():
                subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(path)], check=False)
    print(f"\n{args.rounds} alternated rounds per benchmark (fewer where most_rounds says), {os.cpu_count()} cores")
    print(
        "| benchmark | figure | before (revision) | before: median (runs) | after: median (runs) | after / before | |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"worse by more than {args.tolerance:.0%}: {', '.join(worse) if worse else 'none'}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
