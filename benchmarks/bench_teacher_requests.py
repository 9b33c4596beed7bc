"""Teacher request throughput: 200 requests to a server answering after 100 ms, concurrency 32.

The ideal wall time is 200 / 32 x 0.1 s = 0.625 s; the target is at most 1.5x that. The same
requests are then sent again through the same cache: the rerun must send none.

    python benchmarks/bench_teacher_requests.py [--requests 200] [--concurrency 32] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convdistill.teacher.client import ChatRequest, EndpointSettings, TeacherClient
from convdistill.teacher.request_cache import RequestCache

# The tests' fault-injecting OpenAI-compatible server, in a process of its own so that it does
# not share this process's interpreter lock with the client being measured.
SERVER = Path(__file__).resolve().parents[1] / "tests" / "fault_server.py"


async def send_all(endpoint: EndpointSettings, cache: RequestCache, requests: list[ChatRequest]) -> tuple[float, int]:
    async with TeacherClient(endpoint, cache) as client:
        # One request first, not timed: the openai client imports and builds its response types
        # lazily on first use (about 0.3 s here), a one-off cost of any run, not per request.
        await client.complete(ChatRequest((("user", f"warm-up {time.time()}"),), max_tokens=1))
        sent_before = client.usage.requests_sent
        start = time.perf_counter()
        await asyncio.gather(*(client.complete(r) for r in requests))
        return time.perf_counter() - start, client.usage.requests_sent - sent_before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    ideal = args.requests / args.concurrency * args.delay
    walls = []
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay", str(args.delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SERVER.parent)},
    )
    base_url = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = EndpointSettings(base_url, "bench", concurrency=args.concurrency, timeout_s=30)
        for round_ in range(args.repeat):
            requests = [
                ChatRequest((("user", f"round {round_} question {i}"),), max_tokens=32, seed=i)
                for i in range(args.requests)
            ]
            cache = RequestCache(Path(tmp) / f"cache{round_}.sqlite")
            wall, sent = asyncio.run(send_all(endpoint, cache, requests))
            rerun_wall, rerun_sent = asyncio.run(send_all(endpoint, cache, requests))
            cache.close()
            walls.append(wall)
            print(
                f"round {round_ + 1}: {sent} requests in {wall:.3f} s ({wall / ideal:.2f}x ideal); "
                f"rerun sent {rerun_sent} in {rerun_wall:.3f} s"
            )
    server.stdin.close()
    server.wait(10)
    best, median = min(walls), sorted(walls)[len(walls) // 2]
    print(
        f"ideal {ideal:.3f} s; median {median:.3f} s = {median / ideal:.2f}x ideal (best {best / ideal:.2f}x); "
        f"target <= 1.5x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
