"""Write a synthetic chat dataset of path records at the size users hold (ultrachat_200k has
200k conversations), for the data-pipeline figures of issue 29.

Every conversation is 1 to 6 exchanges (a system message in a fifth of them); each message is a
run of sentences drawn from the sample export's own messages (user turns from prompter
messages, replies from assistant messages), so lengths and vocabulary are those of real
Open-Assistant text. Deterministic for a seed; the same --conversations and --seed always give
the same bytes.

    python benchmarks/make_synthetic_chats.py --conversations 200000 -o benchmarks/out/chats_200k.jsonl
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import orjson

SAMPLE = Path(__file__).resolve().parents[1] / "conversation_trees" / "oasst_en_100_tree.jsonl"
SYSTEM = ["You are a helpful assistant.", "Answer briefly and precisely.", "You are a patient tutor."]


def sentences_by_role() -> dict[str, list[str]]:
    """The sample's sentences, by the role of the message they come from."""
    out: dict[str, list[str]] = {"prompter": [], "assistant": []}
    for line in SAMPLE.read_bytes().splitlines():
        stack = [orjson.loads(line)["prompt"]]
        while stack:
            message = stack.pop()
            parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+", message["text"]) if p.strip()]
            out[message["role"]].extend(parts)
            stack.extend(message.get("replies") or [])
    return out


def conversation(rng: random.Random, pool: dict[str, list[str]]) -> dict:
    messages = [{"role": "system", "content": rng.choice(SYSTEM)}] if rng.random() < 0.2 else []
    for _ in range(rng.randint(1, 6)):
        messages.append({"role": "user", "content": " ".join(rng.choices(pool["prompter"], k=rng.randint(1, 3)))})
        messages.append({"role": "assistant",
                         "content": " ".join(rng.choices(pool["assistant"], k=rng.randint(1, 8)))})
    return {"messages": messages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    pool = sentences_by_role()
    rng = random.Random(args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("wb") as out:
        for _ in range(args.conversations):
            out.write(orjson.dumps(conversation(rng, pool)) + b"\n")
    print(f"{args.conversations} conversations -> {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
