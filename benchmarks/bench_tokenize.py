"""Conversations to a tokenized training set (issue 29): convdistill's data stage against the
floor of `datasets.map` with the fast tokenizer's batched call alone, and a second run that
reads the tokenized examples back (`data_cache`).

For each size (conversations from make_synthetic_chats.py), each measurement runs in a fresh
process (so its peak RSS is its own): the wall time and peak resident memory of
- floor: `load_dataset("json")` and `map(batched=True, num_proc=2)` calling the SmolLM2 fast
  tokenizer on each conversation's messages joined (no chat template, no loss masks, no
  truncation, no cache reuse);
- ours: `steps.build_datasets` as `train sft` runs it (chat template, loss masks, fitting to
  max_length, counts), writing the tokenized cache;
- ours again: the same call with the same cache folder (a second run of the recipe).

    python benchmarks/bench_tokenize.py --sizes 20000,200000 [--max-length 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m-instruct"


def child(mode: str, data: Path, cache: Path, max_length: int) -> dict[str, float]:
    started = time.perf_counter()
    if mode == "floor":
        from datasets import load_dataset
        from transformers import AutoTokenizer

        from convdistill.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
        dataset = load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))

        def encode(batch: dict) -> dict:
            texts = ["\n".join(m["content"] for m in messages) for messages in batch["messages"]]
            return tokenizer(texts)

        out = dataset.map(encode, batched=True, num_proc=2, remove_columns=["messages"], load_from_cache_file=False)
        rows = len(out)
    else:
        from convdistill.models import resolve_model
        from convdistill.trainers import load_recipe
        from convdistill.trainers.family import DECODER_ONLY
        from convdistill.trainers.loading import load_tokenizer
        from convdistill.trainers.steps import build_datasets

        folder = resolve_model(MODEL)
        config, _, args = load_recipe("sft", {"model_name_or_path": str(folder), "train_file": str(data),
                                              "output_dir": str(cache / "run"), "max_length": max_length,
                                              "data_cache_dir": str(cache / "tokenized"), "report_to": "none"})
        train, _, _ = build_datasets("sft", config, args, load_tokenizer(folder, DECODER_ONLY), DECODER_ONLY)
        rows = len(train)
    seconds = time.perf_counter() - started
    usage = (resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    peak = max(usage)  # kilobytes; the children are map's worker processes
    return {"seconds": seconds, "peak_mb": peak / 1024, "rows": rows}


def measure(mode: str, data: Path, cache: Path, max_length: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(data), str(cache), str(max_length)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, data, cache, max_length = args.child
        print(json.dumps(child(mode, Path(data), Path(cache), int(max_length))))
        return 0
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / f"chats_{size}.jsonl"
            subprocess.run([sys.executable, str(HERE / "make_synthetic_chats.py"), "--conversations", str(size),
                            "-o", str(data)], check=True, capture_output=True)
            floor = measure("floor", data, Path(tmp) / "floor", args.max_length)
            first = measure("ours", data, Path(tmp) / "ours", args.max_length)
            again = measure("ours", data, Path(tmp) / "ours", args.max_length)
            loads.append(Path("/proc/loadavg").read_text().split()[0])
        print(f"{size} conversations: floor {floor['seconds']:.1f} s ({floor['peak_mb']:.0f} MB peak), "
              f"ours {first['seconds']:.1f} s ({first['peak_mb']:.0f} MB, {first['rows']} examples) = "
              f"{first['seconds'] / floor['seconds']:.2f}x the floor; second run {again['seconds']:.1f} s "
              f"({again['peak_mb']:.0f} MB) = {again['seconds'] / first['seconds']:.1%} of the first")
    print(f"load average (1 min): {', '.join(loads)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
