"""Make an oasst2-scale export by re-identifying the sample's trees.

Each copy of a tree gets fresh, deterministic ids (message, parent and tree ids), so the result
has as many distinct trees and messages as a real export of that size. oasst2's ready file has
13,854 trees; from the 100-tree sample that gives about 162k messages.

    python benchmarks/make_scaled_export.py --trees 13854 -o benchmarks/out/oasst2_scale.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from pathlib import Path

import orjson

SAMPLE = Path(__file__).resolve().parents[1] / "conversation_trees" / "oasst_en_100_tree.jsonl"


def fresh_id(copy: int, old: str) -> str:
    return str(uuid.UUID(bytes=hashlib.blake2b(f"{copy}:{old}".encode(), digest_size=16).digest()))


def reidentify(tree: dict, copy: int) -> dict:
    tree = orjson.loads(orjson.dumps(tree))  # a deep copy
    tree["message_tree_id"] = fresh_id(copy, tree["message_tree_id"])
    stack = [tree["prompt"]]
    while stack:
        m = stack.pop()
        m["message_id"] = fresh_id(copy, m["message_id"])
        if m.get("parent_id"):
            m["parent_id"] = fresh_id(copy, m["parent_id"])
        stack.extend(m.get("replies") or [])
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", type=int, default=13854)
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = [orjson.loads(line) for line in args.sample.read_bytes().splitlines() if line.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    messages = 0
    with open(args.out, "wb") as out:
        for i in range(args.trees):
            tree = reidentify(base[i % len(base)], i // len(base))
            out.write(orjson.dumps(tree) + b"\n")
            stack = [tree["prompt"]]
            while stack:
                m = stack.pop()
                messages += 1
                stack.extend(m.get("replies") or [])
    print(f"wrote {args.trees} trees, {messages} messages to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
