"""Differential check of `--oasst-compat` against Open-Assistant's own `load_oasst_export`.

Random exports (deleted, synthetic, unranked and region-tagged messages, failed reviews, other
tree states) are written to disk; their code (run from a local checkout, in a Python with their
pinned pydantic 1.10.7 and torch) and ours select SFT threads and RM prefixes from the same
files, for several languages and top_k values; every count, and the text of every
thread and prefix with its ranked replies, must agree.

    python benchmarks/oasst_compat_check.py --oa-checkout ../Open-Assistant --oa-python /path/to/python

Nothing of their code is kept in this project: it is loaded from the checkout at run time.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from convdistill.conversation_trees import Selection, export_pairs, export_paths

# Our code, run in their environment: loads their two modules from the checkout by path (their
# package __init__ imports every data set of theirs, with dependencies we do not need).
OA_RUNNER = r"""
import importlib.util, json, sys, types
checkout, export = sys.argv[1], sys.argv[2]
sys.path.insert(0, checkout + "/oasst-data")
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
for pkg in ("model_training", "model_training.custom_datasets"):
    sys.modules[pkg] = types.ModuleType(pkg)
folder = checkout + "/model/model_training/custom_datasets/"
load("model_training.custom_datasets.formatting", folder + "formatting.py")
oa = load("model_training.custom_datasets.oasst_dataset", folder + "oasst_dataset.py")
out = {}
for lang in ("en", "pt", "pt-BR,de"):
    for top_k in (None, 1, 2):
        sft = oa.load_oasst_export(input_file_path=export, val_split=0.0, lang=lang, top_k=top_k, mode="sft")
        rm = oa.load_oasst_export(input_file_path=export, val_split=0.0, lang=lang, top_k=top_k, mode="rm")
        rm_entries = list(rm[0]) + list(rm[1])
        out[f"{lang}|{top_k}"] = {
            "sft": len(sft[0]) + len(sft[1]),
            "rm_prefixes": len(rm_entries),
            "rm_pairs": sum(len(replies) * (len(replies) - 1) // 2 for _, replies in rm_entries),
            "sft_texts": sorted([u.text for u in e.conversation] for d in sft for e in d),
            "rm_texts": sorted([list(prefix), list(replies)] for prefix, replies in rm_entries),
        }
print(json.dumps(out))
"""


def random_export(rng: random.Random, trees: int) -> list[dict]:
    out = []
    for t in range(trees):
        count = rng.randint(1, 16)
        nodes: list[dict] = []
        for i in range(count):
            parent = None if i == 0 else rng.randrange(i)
            depth = 0 if parent is None else nodes[parent]["_depth"] + 1
            node = {
                "message_id": f"t{t}m{i}",
                "text": f"text {t}/{i}",
                "role": "prompter" if depth % 2 == 0 else "assistant",
                "lang": rng.choice(["en", "en", "pt-BR", "pt", "de"]) if i == 0 else "en",
                "review_result": rng.random() > 0.1,
                "deleted": rng.random() < 0.08,
                "synthetic": rng.random() < 0.08,
                "_depth": depth,
                "replies": [],
            }
            if parent is not None:
                node["parent_id"] = nodes[parent]["message_id"]
                nodes[parent]["replies"].append(node)
            nodes.append(node)
        for node in nodes:
            assistants = [r for r in node["replies"] if r["role"] == "assistant"]
            if len(assistants) > 1 and rng.random() < 0.85:
                ranked = [r for r in assistants if rng.random() < 0.9]  # some stay unranked
                for rank, reply in enumerate(rng.sample(ranked, len(ranked))):
                    reply["rank"] = rank
        for node in nodes:
            del node["_depth"]
        state = rng.choice(["ready_for_export"] * 5 + ["growing", "aborted_low_grade"])
        out.append({"message_tree_id": nodes[0]["message_id"], "tree_state": state, "prompt": nodes[0]})
    return out


def our_counts(export: Path, tmp: Path) -> dict:
    out = {}
    for lang in ("en", "pt", "pt-BR,de"):
        langs = tuple(lang.split(","))
        for top_k in (None, 1, 2):
            sel = Selection(langs=langs, top_k=top_k)
            sft = export_paths(export, tmp / "sft.jsonl", selection=sel, oasst_compat=True)
            rm = export_pairs(export, tmp / "rm.jsonl", selection=sel, oasst_compat=True, pairing="all")
            sft_records = [orjson.loads(x) for x in (tmp / "sft.jsonl").read_bytes().splitlines()]
            rm_records = [orjson.loads(x) for x in (tmp / "rm.jsonl").read_bytes().splitlines()]
            # Each prefix with its replies best first, rebuilt from the "all" pairs (i < j).
            prefixes: dict[str, list] = {}
            for r in rm_records:
                key = orjson.dumps(r["prompt_ids"]).decode()
                entry = prefixes.setdefault(key, [[m["content"] for m in r["prompt"]], []])
                for reply in (r["chosen"][0]["content"], r["rejected"][0]["content"]):
                    if reply not in entry[1]:
                        entry[1].append(reply)
            out[f"{lang}|{top_k}"] = {
                "sft": sum(sft.written.values()),
                "rm_prefixes": rm.prefixes,
                "rm_pairs": sum(rm.written.values()),
                "sft_texts": sorted([m["content"] for m in r["messages"]] for r in sft_records),
                "rm_texts": sorted(prefixes.values()),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oa-checkout", type=Path, required=True)
    parser.add_argument("--oa-python", required=True, help="Python with pydantic==1.10.7, loguru, datasets, torch")
    parser.add_argument("--exports", type=int, default=5)
    parser.add_argument("--trees", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    mismatches = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runner = tmp / "oa_runner.py"
        runner.write_text(OA_RUNNER)
        for e in range(args.exports):
            export = tmp / f"export{e}.jsonl"
            export.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in random_export(rng, args.trees)))
            theirs = orjson.loads(
                subprocess.run(
                    [args.oa_python, str(runner), str(args.oa_checkout), str(export)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.splitlines()[-1]
            )
            ours = our_counts(export, tmp)
            for key in theirs:
                same = theirs[key] == ours[key]
                mismatches += not same
                counts = {k: v for k, v in theirs[key].items() if not k.endswith("_texts")}
                print(
                    f"export {e} lang={key.split('|')[0]:9} top_k={key.split('|')[1]:4}: {counts} "
                    f"{'same counts and same texts' if same else 'MISMATCH: ours ' + str(ours[key])[:300]}"
                )
    print(f"{mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
