"""`convdistill paths export --strategy all` against Open-Assistant's own reader, side by side.

The baseline is oasst_data's reader as Open-Assistant uses it: parse each tree with its pydantic
schema (``read_message_trees``), then ``visit_threads_depth_first`` collecting every
root-to-leaf thread. It runs from a local checkout of their repository, given here, in a Python
that has their pinned dependencies (pydantic 1.10.7, loguru, datasets); nothing of it is kept in
this project. Runs alternate (ours, theirs, ours, ...) so that load on the machine hits both.

Also measured: peak memory (max RSS) of our export on the file and on one ten times larger.

    python benchmarks/bench_paths_export.py \
        --oa-checkout ../Open-Assistant --oa-python /path/to/python

Without --oa-checkout only our own figures (time, memory) are taken.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAKE_EXPORT = HERE / "make_scaled_export.py"

# Our code, written here, that drives their public API the way load_oasst_export does.
OA_RUNNER = """
import sys, time
t0 = time.perf_counter()
from oasst_data import read_message_trees, visit_threads_depth_first
t1 = time.perf_counter()
threads = []
for tree in read_message_trees(sys.argv[1]):
    visit_threads_depth_first(
        tree.prompt, visitor=threads.append, predicate=lambda t: not t[-1].replies
    )
t2 = time.perf_counter()
print(f"{t2 - t1:.4f} {len(threads)}")
"""

OURS_IN_PROCESS = """
import sys, time
from convdistill.conversation_trees import export_paths
t1 = time.perf_counter()
summary = export_paths(sys.argv[1], sys.argv[2], strategy="all")
t2 = time.perf_counter()
print(f"{t2 - t1:.4f} {sum(summary.written.values())}")
"""


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out


def ensure_export(path: Path, trees: int) -> None:
    if not path.exists():
        subprocess.run(
            [sys.executable, str(MAKE_EXPORT), "--trees", str(trees), "-o", str(path)], check=True
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--oa-checkout", type=Path, help="local checkout of LAION-AI/Open-Assistant"
    )
    parser.add_argument(
        "--oa-python", default=sys.executable, help="Python with pydantic==1.10.7, loguru, datasets"
    )
    parser.add_argument("--trees", type=int, default=13854, help="trees in the oasst2-scale export")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 10x-file memory run")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / f"oasst_scaled_{args.trees}.jsonl"
    ensure_export(export, args.trees)
    out = args.workdir / "paths_all.jsonl"
    cli = [
        sys.executable,
        "-m",
        "convdistill.cli.main",
        "paths",
        "export",
        str(export),
        "-o",
        str(out),
        "--strategy",
        "all",
    ]
    in_process = [sys.executable, "-c", OURS_IN_PROCESS, str(export), str(out)]

    oa_cmd = None
    oa_env = None
    if args.oa_checkout:
        runner = args.workdir / "oa_runner.py"
        runner.write_text(OA_RUNNER)
        oa_cmd = [args.oa_python, str(runner), str(export)]
        oa_env = {**os.environ, "PYTHONPATH": str(args.oa_checkout / "oasst-data")}

    ours_wall, ours_work, oa_wall, oa_work = [], [], [], []
    records = threads = 0
    for i in range(args.repeat):
        wall, _, _ = run_measured(cli)
        ours_wall.append(wall)
        _, _, text = run_measured(in_process)
        seconds, records = text.split()
        ours_work.append(float(seconds))
        if oa_cmd:
            wall, _, text = run_measured(oa_cmd, oa_env)
            seconds, threads = text.split()
            oa_wall.append(wall)
            oa_work.append(float(seconds))
        print(
            f"run {i + 1}: ours {ours_wall[-1]:.2f} s (work {ours_work[-1]:.2f} s)"
            + (
                f", Open-Assistant {oa_wall[-1]:.2f} s (work {oa_work[-1]:.2f} s)" if oa_cmd else ""
            ),
            flush=True,
        )

    med = statistics.median
    print(f"\nexport: {args.trees} trees; ours wrote {records} paths")
    print(f"ours, whole command:       median {med(ours_wall):.2f} s")
    print(f"ours, export_paths() only: median {med(ours_work):.2f} s")
    if oa_cmd:
        print(f"Open-Assistant, whole process:  median {med(oa_wall):.2f} s ({threads} threads)")
        print(f"Open-Assistant, read+visit only: median {med(oa_work):.2f} s")
        print(f"speed-up, whole command vs whole process: {med(oa_wall) / med(ours_wall):.2f}x")
        print(f"speed-up, work vs work:                   {med(oa_work) / med(ours_work):.2f}x")

    if not args.skip_memory:
        big = args.workdir / f"oasst_scaled_{args.trees * 10}.jsonl"
        ensure_export(big, args.trees * 10)
        _, rss_1, _ = run_measured(cli)
        cli_big = [
            *cli[:5],
            str(big),
            "-o",
            str(args.workdir / "paths_all_big.jsonl"),
            "--strategy",
            "all",
        ]
        wall_big, rss_10, _ = run_measured(cli_big)
        size_1, size_10 = export.stat().st_size / 2**20, big.stat().st_size / 2**20
        print(
            f"\npeak memory: {rss_1:.0f} MiB on {size_1:.0f} MiB, "
            f"{rss_10:.0f} MiB on {size_10:.0f} MiB "
            f"({wall_big:.1f} s): ratio {rss_10 / rss_1:.2f}"
        )
        (args.workdir / "paths_all_big.jsonl").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
