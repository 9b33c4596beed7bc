"""Peak memory of reading flat inputs (flat JSONL, Hub parquet) at 1x and 10x the size (issue 15).

Flat rows of a tree may be anywhere in a file, so grouping them used to hold every row. Now the
rows spill to tree buckets on disk once they pass 16 MB (``flat_groups``). This script writes the
sample's trees, re-identified (benchmarks/make_scaled_export.py), as shuffled flat messages and as
a Hub parquet file at two sizes, then runs ``convdistill paths export`` on each in a fresh process
and reads its peak resident memory (VmHWM). The same runs with spilling disabled give
the old behaviour for comparison.

    python benchmarks/bench_flat_memory.py --trees 1000 --out benchmarks/out/flat_memory
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_scaled_export import SAMPLE, reidentify

# A child that runs the CLI, optionally with spilling switched off (the old, in-memory grouping).
# Peak memory is the child's VmHWM, printed at exit: rusage's ru_maxrss would also count the
# parent's pages, as Linux keeps maxrss across fork and exec.
CHILD = """
import atexit, sys

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK " + line.split()[1] + "\\n")

atexit.register(peak)
from convdistill.conversation_trees import readers
if sys.argv[1] == "memory":
    readers.TreeReader.__init__.__kwdefaults__["spill_bytes"] = 1 << 62
sys.argv = ["convdistill", *sys.argv[2:]]
from convdistill.cli.main import app
app()
"""


def write_inputs(trees: int, out: Path, seed: int = 0) -> tuple[Path, Path, int]:
    from convdistill.conversation_trees.hub import write_hub_parquet
    from convdistill.conversation_trees.tree_graph import tree_from_nested
    from convdistill.conversation_trees.writers import tree_to_messages

    base = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]
    graphs = [tree_from_nested(reidentify(base[i % len(base)], i // len(base))) for i in range(trees)]
    rows = [row for g in graphs for row in tree_to_messages(g)]
    random.Random(seed).shuffle(rows)  # a tree's rows anywhere in the file: the hard case
    flat = out / f"flat_{trees}.jsonl"
    flat.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    parquet = out / f"hub_{trees}.parquet"
    write_hub_parquet(parquet, graphs)
    return flat, parquet, len(rows)


def peak_rss_mb(mode: str, source: Path, target: Path) -> tuple[float, float, str]:
    args = [sys.executable, "-c", CHILD, mode, "paths", "export", str(source), "-o", str(target)]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[3:])} failed:\n{done.stderr}")
    lines = done.stderr.strip().splitlines()
    peak_kb = int(next(line for line in lines if line.startswith("PEAK ")).split()[1])
    summary = [line for line in lines if line.startswith("wrote")][-1]
    return peak_kb / 1024, seconds, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=1000, help="trees of the 1x input")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/flat_memory"))
    parser.add_argument("--modes", default="spill,memory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for scale in (1, args.factor):
        flat, parquet, messages = write_inputs(args.trees * scale, args.out)
        inputs[scale] = (flat, parquet, messages)
        print(f"{scale}x: {args.trees * scale} trees, {messages} messages, "
              f"flat {flat.stat().st_size / 2**20:.1f} MB, parquet {parquet.stat().st_size / 2**20:.1f} MB",
              flush=True)
    print("| input | grouping | 1x peak RSS | 10x peak RSS | ratio | 1x time | 10x time | same paths |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, index in (("flat JSONL", 0), ("Hub parquet", 1)):
        for mode in args.modes.split(","):
            results = []
            for scale in (1, args.factor):
                source = inputs[scale][index]
                target = args.out / f"paths_{mode}_{index}_{scale}.jsonl"
                results.append((*peak_rss_mb(mode, source, target), target))
            (small, t_small, _, _), (large, t_large, summary, out_large) = results
            # Spilled output comes bucket by bucket: compare the sets of lines with the memory run.
            same = ""
            other = args.out / f"paths_memory_{index}_{args.factor}.jsonl"
            if mode == "spill" and other.exists():
                same = "yes" if sorted(out_large.read_bytes().splitlines()) == sorted(
                    other.read_bytes().splitlines()) else "NO"
            print(f"| {kind} | {mode} | {small:.0f} MB | {large:.0f} MB | {large / small:.2f}x | "
                  f"{t_small:.1f} s | {t_large:.1f} s | {same} |", flush=True)
            print(f"<!-- {summary} -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
