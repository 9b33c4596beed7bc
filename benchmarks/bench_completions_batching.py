"""`/v1/completions` log-likelihood scoring of a multiple-choice task: batched against one
request at a time (issue 16).

The requests are lm-evaluation-harness's `local-completions` log-likelihood requests
(token-id prompt = context + choice, `max_tokens: 1`, `echo`, `logprobs: 1`, temperature 0),
for questions made from the sample export's first user turns (context cut to `--context`
tokens) and four choices each. One at a time: each request carries one prompt and waits for its
answer (lm-eval's default, batch_size 1). Batched: `--batch` prompts per request (lm-eval's
`--batch_size`), which the server runs as one batch. Runs alternate; medians are compared; the
log-likelihoods of both must agree. Target: batched at least 3x the one-at-a-time throughput.

    python benchmarks/bench_completions_batching.py [--model smollm2-135m-instruct] [--questions 32] [--batch 16]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from serve_common import running_server

SAMPLE = Path(__file__).resolve().parents[1] / "conversation_trees" / "oasst_en_100_tree.jsonl"
CHOICES = [" yes", " no, not at all", " it depends on the case", " I do not know"]


def requests(tokenizer: object, questions: int, context: int) -> list[list[int]]:
    """Context + choice token ids, four per question, as lm-eval builds them."""
    prompts = []
    for line in SAMPLE.read_bytes().splitlines()[:questions]:
        text = orjson.loads(line)["prompt"]["text"]
        ids = tokenizer(f"Question: {text}", add_special_tokens=False)["input_ids"][:context]
        ids += tokenizer("\nAnswer:", add_special_tokens=False)["input_ids"]
        prompts += [ids + tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in CHOICES]
    # lm-eval's order (TemplateAPI's loglikelihood collator): longest first, ties by token ids
    return sorted(prompts, key=lambda ids: (-len(ids), tuple(ids)))


def score(client: httpx.Client, url: str, prompts: list[list[int]], batch: int) -> tuple[float, list[float]]:
    """Seconds, and each prompt's summed log-probability (from its second token on)."""
    totals: list[float] = []
    start = time.perf_counter()
    for first in range(0, len(prompts), batch):
        body = {"prompt": prompts[first: first + batch], "max_tokens": 1, "temperature": 0, "logprobs": 1,
                "echo": True, "seed": 1234}
        answer = client.post(f"{url}/completions", content=orjson.dumps(body),
                             headers={"Content-Type": "application/json"})
        answer.raise_for_status()
        choices = sorted(answer.json()["choices"], key=lambda c: c["index"])
        # each prompt token's log-probability but the first's (none) and the generated token's (last)
        totals.extend(sum(choice["logprobs"]["token_logprobs"][1:-1]) for choice in choices)
    return time.perf_counter() - start, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="an embedded model, a checkpoint folder, or tiny-llama (a random tiny student)")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--context", type=int, default=64, help="context tokens per question (at most)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--no-prefix-sharing", action="store_true",
                        help="serve with --no-prefix-sharing (each prompt of a batch runs its whole prefix)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from convdistill.models import init_student, resolve_model

    work = tempfile.TemporaryDirectory()
    model = str(init_student("llama", "tiny", Path(work.name) / "tiny").path) if args.model == "tiny-llama" \
        else args.model
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    prompts = requests(tokenizer, args.questions, args.context)
    tokens = sum(map(len, prompts))
    times: dict[str, list[float]] = {"one at a time": [], f"batched ({args.batch})": []}
    scores: dict[str, list[float]] = {}
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    # TCP_NODELAY, as lm-eval's clients (requests, aiohttp) have it: with Nagle's algorithm on, a
    # POST whose headers and body go out apart waits ~40 ms for a delayed ACK.
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    sharing = ["--no-prefix-sharing"] if args.no_prefix_sharing else []
    with running_server(model, "--threads", str(args.threads), *sharing) as server, \
            httpx.Client(timeout=600, transport=nodelay) as client:
        score(client, server.url, prompts[:4], 4)  # first-call costs
        for _ in range(args.runs):
            for name, batch in zip(times, (1, args.batch), strict=True):
                seconds, scores[name] = score(client, server.url, prompts, batch)
                times[name].append(seconds)
                loads.append(Path("/proc/loadavg").read_text().split()[0])
    single, batched = (statistics.median(t) for t in times.values())
    gap = max(abs(a - b) for a, b in zip(*scores.values(), strict=True))
    print(f"{args.model}{' (no prefix sharing)' if args.no_prefix_sharing else ''}, "
          f"{args.questions} questions x {len(CHOICES)} choices = {len(prompts)} requests, "
          f"{tokens} tokens, server threads {args.threads}, {args.runs} alternating runs; "
          f"load average (1 min) {', '.join(loads)}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>15}: median {median:6.2f} s ({', '.join(f'{v:.2f}' for v in values)}); "
              f"{len(prompts) / median:6.1f} requests/s, {tokens / median:6.0f} tokens/s")
    print(f"speed-up: {single / batched:.2f}x (target >= 3x); largest log-likelihood difference {gap:.1e}")
    return 0 if single / batched >= 3 and gap <= 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
