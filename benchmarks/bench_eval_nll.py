"""Teacher-forced reference NLL of a decoder-only model: reply-position logits only vs the whole
sequence's logits.

The eval backend scores a reference reply after its gold history. The baseline right-pads each
batch and computes the output layer at every position (history included), as the backend did
before; the backend now left-pads and asks for the last (longest reply + 1) positions only
(`logits_to_keep`). Both score every turn of held-out context-memory conversations from the eval
generator (long histories, short replies: the forced-choice metric of the experiment scores
this shape hundreds of times per student). Runs alternate; medians of `--rounds`; the NLLs must
agree to 1e-4.

    python benchmarks/bench_eval_nll.py [--model student:llama-tiny] [--cases 4] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from convdistill.eval import LocalBackend, backends
from convdistill.eval.generator import generate_recall_suite
from convdistill.eval.runner import turn_history
from convdistill.eval.suite import parse_case
from convdistill.models import init_student, resolve_model
from convdistill.padding import pad_with_mask


def whole_sequence_logits(model: Any, sources: list[list[int]], targets: list[list[int]], pad: int,
                          can_keep: bool) -> tuple[Any, Any]:
    """The baseline: right-padded rows, the output layer at every position."""
    rows = [s + t for s, t in zip(sources, targets, strict=True)]
    ids, mask = pad_with_mask(rows, pad)
    labels = torch.full_like(ids, -100)
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        labels[i, len(s) : len(s) + len(t)] = torch.tensor(t)
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1], labels[:, 1:]


def pairs_of(cases: list[dict[str, Any]]) -> list[tuple[list[dict[str, str]], str]]:
    """(gold history, reference) for every turn, the history as the suite runner builds it."""
    parsed = [parse_case(c, "generated") for c in cases]
    return [(turn_history(case, k, [None] * len(case.turns), "gold"), turn.reference)
            for case in parsed for k, turn in enumerate(case.turns)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="student:llama-tiny",
                        help="student:llama-tiny (random, SmolLM2 vocabulary) or a causal model name/folder")
    parser.add_argument("--cases", type=int, default=4, help="recall cases per distance 1..6")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = pairs_of(generate_recall_suite(args.cases, (1, 6), 7, "train"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model.startswith("student:"):
            family = args.model.removeprefix("student:").removesuffix("-tiny")
            folder = init_student(family, "tiny", Path(tmp) / family).path
        else:
            folder = resolve_model(args.model)
        backend = LocalBackend(folder, batch_size=args.batch_size)
        if backend.chat.is_encoder_decoder:
            raise SystemExit("bench_eval_nll: a decoder-only model, please (encoder-decoder scoring is unchanged)")
        reply_only = backends._causal_reply_logits
        times: dict[str, list[float]] = {"whole sequence": [], "reply positions only": []}
        results: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, method in (("whole sequence", whole_sequence_logits), ("reply positions only", reply_only)):
                backends._causal_reply_logits = method
                started = time.perf_counter()
                results[name] = backend.reference_nll(pairs)
                times[name].append(time.perf_counter() - started)
        backends._causal_reply_logits = reply_only
    gap = max(abs(a - b) for a, b in zip(results["whole sequence"], results["reply positions only"], strict=True))
    base, new = (statistics.median(times[k]) for k in ("whole sequence", "reply positions only"))
    tokens = sum(len(backend.chat.prompt_ids(h)) for h, _ in pairs)
    print(f"{args.model}: {len(pairs)} replies after {tokens} history tokens in all, batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.rounds}")
    print("| method | seconds | runs |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"speed-up {base / new:.2f}x; largest NLL difference {gap:.2e}")
    return 0 if gap < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
