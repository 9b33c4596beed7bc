"""An exported student in llama.cpp against the same checkpoint in `convdistill serve`.

    # speed: tokens/s, llama.cpp one chat at a time (2 threads) vs serve one at a time and batched
    .venv/bin/python benchmarks/bench_gguf_speed.py speed --model smollm2-135m-instruct
    # quality of the quantised files: suite score and reference NLL next to the checkpoint's
    .venv/bin/python benchmarks/bench_gguf_speed.py quality --model runs/demo/4-llama-sft

speed: the checkpoint is exported once per --types (not timed). Each round runs, in turn, every
GGUF file in llama.cpp (one chat after another, the way a local user runs it), then `convdistill
serve --threads T --max-batch-size 1` with one client, then the batching server with --clients
clients, all on the same requests (benchmarks/serve_throughput.py's questions, sampled at 0.7
with a seed each); rounds alternate and the medians are reported with /proc/loadavg. Decoder-only
files go through llama-cpp-python's own chat API (Llama.create_chat_completion); T5 files through
convdistill.export.llamacpp (llama_encode, then greedy decoding: the high-level API cannot run an
encoder-decoder model).
quality: the shipped suites (default: the demo's two) through eval's runner, greedy, gold history,
for the checkpoint (LocalBackend) and every file (LlamaCppBackend).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convdistill.export import GGUF_TYPES, export_gguf
from serve_common import running_server
from serve_throughput import question, run_load

DEMO_SUITES = ("eval/suites/context_memory.jsonl", "eval/suites/anaphora.jsonl")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def export_all(model: str, types: list[str], folder: Path, threads: int) -> dict[str, Path]:
    files = {}
    for kind in types:
        done = export_gguf(model, folder / f"student-{kind}.gguf", kind, modelfile=False, threads=threads)
        print(f"exported {kind}: {done.size_bytes / 1e6:.1f} MB ({done.architecture}, {done.quantized_by})",
              flush=True)
        files[kind] = done.path
    return files


def llama_cpp_chats(path: Path, requests: int, max_tokens: int, threads: int) -> dict[str, float]:
    """One chat after another in llama.cpp: generated tokens per second of wall time."""
    import llama_cpp

    from convdistill.export.llamacpp import LlamaCppModel

    probe = LlamaCppModel(path, threads=threads)
    if probe.is_encoder_decoder:
        def chat(i: int) -> int:
            prompt = probe.tokenize(probe.render([{"role": "user", "content": question(i)}]))
            return len(probe.greedy(prompt, max_tokens))
    else:
        probe.close()
        llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                              verbose=False)

        def chat(i: int) -> int:
            reply = llm.create_chat_completion([{"role": "user", "content": question(i)}],
                                               max_tokens=max_tokens, temperature=0.7, seed=i)
            return reply["usage"]["completion_tokens"]
    chat(-1)  # warm-up, not timed
    started = time.perf_counter()
    tokens = sum(chat(i) for i in range(requests))
    wall = time.perf_counter() - started
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def speed(args: argparse.Namespace) -> None:
    types = args.types.split(",")
    rows: dict[str, list[dict[str, float]]] = {}
    print(f"load average before: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as folder:
        files = export_all(args.model, types, Path(folder), args.threads)
        for round_ in range(args.rounds):
            for kind, path in files.items():
                rows.setdefault(f"llama.cpp {kind}, one chat at a time", []).append(
                    llama_cpp_chats(path, args.requests, args.max_tokens, args.threads))
            for label, batch, clients in (("serve float32, one at a time", 1, 1),
                                          (f"serve float32, batched ({args.clients} clients)",
                                           args.clients, args.clients)):
                with running_server(args.model, "--max-batch-size", str(batch),
                                    "--threads", str(args.threads)) as server:
                    rows.setdefault(label, []).append(
                        run_load(server, args.requests, clients, args.max_tokens))
            print(f"round {round_ + 1}: load average {loadavg()}", flush=True)
    print(f"\n{args.model}: {args.requests} requests of at most {args.max_tokens} tokens, "
          f"{args.threads} threads, medians of {args.rounds} alternating rounds; load average after: {loadavg()}")
    baseline = statistics.median(r["tokens_per_s"] for r in rows["serve float32, one at a time"])
    for label, runs in rows.items():
        rate = statistics.median(r["tokens_per_s"] for r in runs)
        tokens = statistics.median(r["tokens"] for r in runs)
        print(f"| {label} | {rate:.1f} | {rate / baseline:.2f}x | {tokens:.0f} |")


def quality(args: argparse.Namespace) -> None:
    from convdistill.eval.backends import LocalBackend
    from convdistill.eval.runner import run_suite
    from convdistill.eval.suite import load_suites
    from convdistill.export.llamacpp import LlamaCppBackend

    suite = load_suites(args.suites)
    types = args.types.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as folder:
        files = export_all(args.model, types, Path(folder), args.threads)
        backends: list[tuple[str, Any]] = [
            ("checkpoint (transformers, float32)", LocalBackend(args.model, max_tokens=args.max_tokens))]
        backends += [(f"llama.cpp {kind}", LlamaCppBackend(path, max_tokens=args.max_tokens,
                                                           threads=args.threads))
                     for kind, path in files.items()]
        base_replies: list[str] | None = None
        for label, backend in backends:
            started = time.perf_counter()
            result = run_suite(suite, backend)
            replies = [t["reply"] for c in result["cases"] for t in c["turns"]]
            base_replies = base_replies or replies
            same = sum(a == b for a, b in zip(replies, base_replies, strict=True))
            s = result["summary"]
            print(f"| {label} | {s['score']:.3f} | {s['turns_passed']}/{s['turns']} | "
                  f"{s['mean_reference_nll']:.3f} | {same}/{len(replies)} | "
                  f"{time.perf_counter() - started:.0f} s |", flush=True)
    print(f"suites: {', '.join(args.suites)} ({s['cases']} cases, {s['turns']} turns, gold history, "
          f"greedy, at most {args.max_tokens} tokens); load average after: {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("speed", "quality"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="smollm2-135m-instruct")
        p.add_argument("--types", default=",".join(GGUF_TYPES))
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--max-tokens", type=int, default=32 if name == "speed" else 64)
    speed_args = sub.choices["speed"]
    speed_args.add_argument("--requests", type=int, default=16)
    speed_args.add_argument("--clients", type=int, default=16)
    speed_args.add_argument("--rounds", type=int, default=2)
    sub.choices["quality"].add_argument("--suites", nargs="+", default=list(DEMO_SUITES))
    args = parser.parse_args()
    speed(args) if args.command == "speed" else quality(args)


if __name__ == "__main__":
    main()
