"""Throughput of `convdistill serve` with request batching against the same server serving
one request at a time (--max-batch-size 1), side by side: same model, same requests.

    .venv/bin/python benchmarks/serve_throughput.py            # 64 requests, 16 clients, 32 tokens

Each request is a different one-turn question, sampled (temperature 0.7) with its own seed,
so both servers generate the same number of tokens give or take the end-of-turn timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import Server, percentile, running_server

TOPICS = ["the sea", "a city at night", "learning to cook", "the moon", "a long train ride",
          "winter mornings", "a small garden", "friendship", "old books", "mountain weather",
          "coffee", "a school day", "rivers", "music lessons", "bicycles", "the first snow"]


def question(i: int) -> str:
    return f"Write two sentences about {TOPICS[i % len(TOPICS)]}. (request {i})"


def run_load(server: Server, requests: int, clients: int, max_tokens: int) -> dict[str, float]:
    client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=900)

    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": question(i)}],
            max_tokens=max_tokens, temperature=0.7, seed=i,
        )
        return time.perf_counter() - started, reply.usage.completion_tokens

    one(-1)  # warm-up, not timed
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    load = os.getloadavg()[0]
    latencies = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {"wall_s": wall, "requests_per_s": requests / wall, "tokens": tokens,
            "tokens_per_s": tokens / wall, "p50_s": percentile(latencies, 0.5),
            "p95_s": percentile(latencies, 0.95), "server_cpu_s": cpu,
            "cpu_s_per_request": cpu / requests, "load_avg_1min_at_end": load}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="max batch size of the batching server")
    args = parser.parse_args()

    rows = {}
    for label, batch in (("one at a time (--max-batch-size 1)", 1),
                         (f"batching (--max-batch-size {args.batch_size})", args.batch_size)):
        with running_server(args.model, "--max-batch-size", str(batch)) as server:
            rows[label] = run_load(server, args.requests, args.clients, args.max_tokens)
        r = rows[label]
        print(f"{label}: {r['wall_s']:.1f} s, {r['requests_per_s']:.3f} req/s, "
              f"{r['tokens']} tokens, {r['tokens_per_s']:.1f} tokens/s, "
              f"latency p50 {r['p50_s']:.1f} s, p95 {r['p95_s']:.1f} s; server CPU "
              f"{r['server_cpu_s']:.0f} s ({r['cpu_s_per_request']:.2f} s/request); "
              f"load average at the end {r['load_avg_1min_at_end']:.1f}", flush=True)
    single, batched = rows.values()
    print(f"speed-up in requests/s: {batched['requests_per_s'] / single['requests_per_s']:.2f}x; "
          f"in tokens/s: {batched['tokens_per_s'] / single['tokens_per_s']:.2f}x; "
          f"server CPU per request: {single['cpu_s_per_request'] / batched['cpu_s_per_request']:.2f}x"
          " less")


if __name__ == "__main__":
    main()
