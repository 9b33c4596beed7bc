"""Path export of this checkout against another revision of convdistill, side by side.

For a change that must not slow the path export down (the structural pass, issue 17): the other
revision is checked out into a temporary git worktree, and `export_paths(strategy="all")` runs
in fresh processes, alternating the two sides, on the oasst2-scale export. Reported: medians of
wall and CPU time (CPU time moves less when other work shares the machine) and the ratio, with
the load average around the runs; the two outputs are compared byte for byte.

    python benchmarks/bench_paths_revisions.py --before HEAD~1 --rounds 7
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
MAKE_EXPORT = HERE / "make_scaled_export.py"

# Run in a fresh process per side and round: import, then time the work only.
RUNNER = """
import sys, time
from convdistill.conversation_trees import export_paths
wall, cpu = time.perf_counter(), time.process_time()
export_paths(sys.argv[1], sys.argv[2], strategy="all")
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def run_side(src: Path, export: Path, out: Path) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(export), str(out)], env=env, check=True,
                          capture_output=True, text=True)
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="HEAD", help="the revision to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trees", type=int, default=13854, help="trees in the oasst2-scale export")
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / f"scaled_{args.trees}.jsonl"
    if not export.is_file():
        subprocess.run([sys.executable, str(MAKE_EXPORT), "--trees", str(args.trees), "-o", str(export)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", "-f", str(before), args.before],
                       check=True, capture_output=True)
        try:
            sides = {"before": before / "src", "after": CHECKOUT / "src"}
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
            load = [os.getloadavg()[0]]
            for round_ in range(args.rounds):
                for name, src in sides.items():
                    times[name].append(run_side(src, export, Path(tmp) / f"{name}.jsonl"))
                    load.append(os.getloadavg()[0])
                print(f"round {round_ + 1}: " + ", ".join(
                    f"{name} {times[name][-1][0]:.2f} s (cpu {times[name][-1][1]:.2f} s)" for name in sides))
            same = filecmp.cmp(Path(tmp) / "before.jsonl", Path(tmp) / "after.jsonl", shallow=False)
        finally:
            subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(before)], check=False)
    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    print(f"\nmedians of {args.rounds} alternated rounds, {args.trees} trees, load average "
          f"{min(load):.2f} to {max(load):.2f} on {os.cpu_count()} cores")
    print("| side | wall | cpu |\n| --- | --- | --- |")
    for name in times:
        print(f"| {name} ({args.before if name == 'before' else 'this checkout'}) | {wall[name]:.2f} s | "
              f"{cpu[name]:.2f} s |")
    print(f"| after / before | {wall['after'] / wall['before']:.3f} | {cpu['after'] / cpu['before']:.3f} |")
    print(f"outputs byte-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
