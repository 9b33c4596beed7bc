"""A bounded load test of `convdistill serve` at realistic lengths: N requests from C concurrent
clients, a mix of valid requests (plain, streamed, multi-turn, n=2), clients that hang up
mid-request, and malformed or oversized requests.

    .venv/bin/python benchmarks/serve_load.py                       # 1000 requests, 32 clients, max_tokens 64
    .venv/bin/python benchmarks/serve_load.py --model DIR           # a student checkpoint

Of every 10 requests, one is malformed (--bad-per-10) and one comes from a client that hangs up
(--hangups-per-10): a plain request abandoned after 0.1 to 1.5 s, or a stream closed after its
first tokens, some while still queued. Passes (exit 0) when every valid request got a complete
answer, every bad one a 4xx with an OpenAI-style error body, nothing got a 5xx or a broken
connection, the server's memory (RSS) at the end is within 10% of what it was after warm-up,
and the server is idle (nothing pending, no token sampled) within 2 s of the last client.
Bounded: each request has a timeout, the whole run has --max-seconds; if the CPU is too slow
for 1,000 requests, lower --requests, not --max-tokens, and say so.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import Server, percentile, running_server

HI = [{"role": "user", "content": "Tell me about the history of the bicycle."}]
MULTI = [{"role": "user", "content": "Say hello in one short sentence."},
         {"role": "assistant", "content": "Hello there!"},
         {"role": "user", "content": "Now tell me a short story about a cat."}]

# The request kinds of tests/test_serve_errors.py, abridged: each must get a 4xx.
BAD: list[tuple[str, bytes]] = [
    ("not json", b"{"),
    ("empty body", b""),
    ("invalid utf-8", b'{"messages": "\xff"}'),
    ("deep nesting", b"[" * 5000 + b"]" * 5000),
    ("json array", b"[]"),
    ("no messages", b'{"max_tokens": 2}'),
    ("empty messages", b'{"messages": []}'),
    ("unknown role", b'{"messages": [{"role": "robot", "content": "x"}]}'),
    ("numeric content", b'{"messages": [{"role": "user", "content": 5}]}'),
    ("string temperature", b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}'),
    ("zero max_tokens", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}'),
    ("huge max_tokens", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999}'),
    ("huge n", b'{"messages": [{"role": "user", "content": "x"}], "n": 1000}'),
    ("tools", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}'),
    ("too many messages", orjson.dumps({"messages": HI * 300})),
    ("too many characters", orjson.dumps({"messages": [{"role": "user", "content": "a" * 200_000}]})),
    ("body too large", orjson.dumps({"messages": HI, "pad": "b" * 2_000_000})),
    ("prompt too many tokens", orjson.dumps({"messages": [{"role": "user", "content": "w " * 20_000}]})),
]


def valid_request(i: int, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": MULTI if i % 3 == 0 else HI,
                            "max_tokens": max_tokens, "temperature": 0.8, "seed": i}
    if i % 4 == 1:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if i % 20 == 7:
        body["n"] = 2
    return body


def check_valid(response: httpx.Response, body: dict[str, Any]) -> tuple[str | None, int]:
    """(None when the response is a complete answer, else what is wrong; completion tokens)."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:200]}", 0
    want = body.get("n", 1)
    if body.get("stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return "stream did not end with [DONE]", 0
        chunks = [orjson.loads(e) for e in events[:-1]]
        finished = sum(1 for c in chunks for choice in c["choices"] if choice["finish_reason"])
        tokens = sum(c["usage"]["completion_tokens"] for c in chunks if c.get("usage"))
        return (None if finished == want else f"{finished} of {want} choices finished"), tokens
    data = response.json()
    choices = data["choices"]
    if len(choices) != want or any(c["finish_reason"] not in ("stop", "length") for c in choices):
        return f"bad choices: {choices}", 0
    return None, data["usage"]["completion_tokens"]


def check_bad(response: httpx.Response) -> str | None:
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}"
    try:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and "type" in error
    except Exception:  # any shape problem is the finding
        return f"no OpenAI error body: {response.text[:200]}"
    return None


def hang_up(url: str, body: dict[str, Any], rng: random.Random) -> str:
    """Send `body` and go away before the answer is complete; what happened, for the tally."""
    if body.get("stream"):
        with httpx.Client(timeout=120) as client, client.stream(
            "POST", f"{url}/chat/completions", json=body
        ) as response:
            if response.status_code != 200:
                return f"hang-up stream -> {response.status_code}"
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # the first generated text: leave now
        return "hang-up stream -> closed after its first tokens"
    patience = rng.uniform(0.1, 1.5)
    with httpx.Client(timeout=httpx.Timeout(120, read=patience)) as client:
        try:
            response = client.post(f"{url}/chat/completions", json=body)
        except httpx.ReadTimeout:
            return "hang-up plain -> closed before the answer"
    return f"hang-up plain -> answered ({response.status_code}) within {patience:.1f} s"


def rss_mb(server: Server) -> float:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_idle(base: str, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
    """Seconds until nothing is pending and no token was sampled for 0.2 s; the health then."""
    started = time.monotonic()
    last = httpx.get(f"{base}/health").json()
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        now = httpx.get(f"{base}/health").json()
        if now["pending"] == 0 and now["tokens"] == last["tokens"]:
            return time.monotonic() - started - 0.2, now  # it was idle at the previous poll
        last = now
    return float("inf"), last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--bad-per-10", type=int, default=1, help="malformed requests in every 10")
    parser.add_argument("--hangups-per-10", type=int, default=1, help="clients that hang up, in every 10")
    parser.add_argument("--warmup", type=int, default=32, help="valid requests before RSS is measured")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this")
    args = parser.parse_args()

    statuses: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    latencies: list[float] = []
    tokens: list[int] = []
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        return local.client

    def valid(url: str, i: int) -> None:
        body = valid_request(i, args.max_tokens)
        started = time.perf_counter()
        try:
            response = client().post(f"{url}/chat/completions", content=orjson.dumps(body),
                                     headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            failures.append(f"request {i} (valid): {type(exc).__name__}: {exc}")
            statuses["connection error"] += 1
            return
        latencies.append(time.perf_counter() - started)
        statuses[f"valid -> {response.status_code}"] += 1
        problem, count = check_valid(response, body)
        tokens.append(count)
        if problem:
            failures.append(f"request {i} (valid): {problem}")

    with running_server(args.model) as server:
        url, base = server.url, server.url.removesuffix("/v1")
        with ThreadPoolExecutor(max_workers=args.clients) as pool:  # warm-up, not counted
            list(pool.map(lambda i: client().post(f"{url}/chat/completions", json=valid_request(i, args.max_tokens)),
                          range(args.warmup)))
        wait_idle(base)
        rss_warm = rss_mb(server)
        before = httpx.get(f"{base}/health").json()
        deadline = time.monotonic() + args.max_seconds

        def one(i: int) -> None:
            if time.monotonic() > deadline:
                statuses["not sent (time bound)"] += 1
                return
            kind = i % 10
            if kind >= 10 - args.bad_per_10:
                name, content = BAD[(i // 10) % len(BAD)]
                try:
                    response = client().post(f"{url}/chat/completions", content=content,
                                             headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    failures.append(f"request {i} ({name}): {type(exc).__name__}: {exc}")
                    statuses["connection error"] += 1
                    return
                statuses[f"bad -> {response.status_code}"] += 1
                problem = check_bad(response)
                if problem:
                    failures.append(f"request {i} ({name}): {problem}")
            elif kind < args.hangups_per_10:
                body = valid_request(i, args.max_tokens)
                body["stream"] = bool((i // 10) % 2)  # every other one streams
                try:
                    statuses[hang_up(url, body, random.Random(i))] += 1
                except httpx.HTTPError as exc:
                    failures.append(f"request {i} (hang-up): {type(exc).__name__}: {exc}")
            else:
                valid(url, i)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.monotonic() - started
        idle_after, health = wait_idle(base)
        rss_end = rss_mb(server)
    # (running_server raises here if the server died during the run)

    sampled = health["tokens"] - before["tokens"]
    answered = sum(tokens)
    print(f"{args.requests} requests from {args.clients} clients, max_tokens {args.max_tokens}, "
          f"in {wall:.1f} s ({args.requests / wall:.2f} req/s)")
    print(f"valid requests: latency p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s; "
          f"{answered} completion tokens answered, {answered / wall:.1f} tokens/s; "
          f"{sampled} sampled in all ({sampled - answered} for clients that hung up)")
    print(f"server RSS {rss_warm:.0f} MB after warm-up, {rss_end:.0f} MB at the end "
          f"({(rss_end / rss_warm - 1) * 100:+.1f}%); idle {idle_after:.2f} s after the last client")
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    print(f"server after the run: {health}")
    for failure in failures[:20]:
        print(f"FAIL {failure}")
    problems = list(failures[:1])
    if rss_end > 1.10 * rss_warm:
        problems.append("RSS grew by more than 10%")
    if idle_after > 2.0:
        problems.append(f"not idle within 2 s of the last client ({idle_after:.1f} s)")
    if "not sent (time bound)" in statuses:
        problems.append("the time bound cut the run short")
    print("PASS" if not problems else f"FAILED: {'; '.join(problems)} ({len(failures)} request failures)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
