"""A bounded load test of `convdistill serve`: N requests from C concurrent clients, a mix of
valid requests (plain, streamed, multi-turn, n=2) and malformed or oversized ones.

    .venv/bin/python benchmarks/serve_load.py                       # 1000 requests, 32 clients

Passes (exit 0) when every valid request got a complete answer, every bad one a 4xx with an
OpenAI-style error body, nothing got a 5xx or a broken connection, and the server is still
alive and idle at the end. Bounded: each request has a timeout, the whole run has --max-seconds.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import percentile, running_server

HI = [{"role": "user", "content": "Say hello in one short sentence."}]
MULTI = [*HI, {"role": "assistant", "content": "Hello there!"},
         {"role": "user", "content": "Now say goodbye."}]

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
    if i % 10 == 7:
        body["n"] = 2
    return body


def check_valid(response: httpx.Response, body: dict[str, Any]) -> str | None:
    """None when the response is a complete answer, else what is wrong with it."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:200]}"
    want = body.get("n", 1)
    if body.get("stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return "stream did not end with [DONE]"
        finished = sum(1 for e in events[:-1] for c in orjson.loads(e)["choices"] if c["finish_reason"])
        return None if finished == want else f"{finished} of {want} choices finished"
    choices = response.json()["choices"]
    if len(choices) != want or any(c["finish_reason"] not in ("stop", "length") for c in choices):
        return f"bad choices: {choices}"
    return None


def check_bad(response: httpx.Response) -> str | None:
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}"
    try:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and "type" in error
    except Exception:  # any shape problem is the finding
        return f"no OpenAI error body: {response.text[:200]}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--bad-every", type=int, default=5, help="every k-th request is malformed")
    parser.add_argument("--max-seconds", type=float, default=280, help="stop sending after this")
    args = parser.parse_args()

    statuses: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    latencies: list[float] = []
    with running_server(args.model) as server:
        url = server.url
        deadline = time.monotonic() + args.max_seconds
        local = __import__("threading").local()

        def one(i: int) -> None:
            if time.monotonic() > deadline:
                statuses["not sent (time bound)"] += 1
                return
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=120)
            bad = i % args.bad_every == args.bad_every - 1
            name, content = BAD[(i // args.bad_every) % len(BAD)] if bad else ("valid", b"")
            body = None if bad else valid_request(i, args.max_tokens)
            started = time.perf_counter()
            try:
                response = local.client.post(
                    f"{url}/chat/completions", content=content if bad else orjson.dumps(body),
                    headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                failures.append(f"request {i} ({name}): {type(exc).__name__}: {exc}")
                statuses["connection error"] += 1
                return
            latencies.append(time.perf_counter() - started)
            statuses[f"{'bad' if bad else 'valid'} -> {response.status_code}"] += 1
            problem = check_bad(response) if bad else check_valid(response, body)
            if problem:
                failures.append(f"request {i} ({name}): {problem}")

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.monotonic() - started
        health = httpx.get(url.removesuffix("/v1") + "/health").json()

    print(f"{args.requests} requests from {args.clients} clients in {wall:.1f} s "
          f"({args.requests / wall:.1f} req/s); latency p50 {percentile(latencies, 0.5):.2f} s, "
          f"p95 {percentile(latencies, 0.95):.2f} s")
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    print(f"server after the run: {health}")
    for failure in failures[:20]:
        print(f"FAIL {failure}")
    ok = not failures and health["pending"] == 0 and "not sent (time bound)" not in statuses
    print("PASS" if ok else f"FAILED ({len(failures)} failures)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
