"""Reference similarity written here (no extra dependency): ROUGE-L F1 and chrF, both 0..1.

ROUGE-L: longest common subsequence of lower-cased word tokens, F1 (rouge-score's rougeL with
its default tokenizer, without stemming). chrF: character n-grams 1..6 with spaces removed,
F-beta (beta 2) per order averaged over the orders both sides have, as sacrebleu's CHRF with
word_order=0 computes it, divided by 100.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lcs_length(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    cand, ref = words(candidate), words(reference)
    lcs = _lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(candidate: str, reference: str, max_order: int = 6, beta: float = 2.0) -> float:
    hyp, ref = re.sub(r"\s+", "", candidate), re.sub(r"\s+", "", reference)
    factor = beta**2
    total, effective = 0.0, 0
    for n in range(1, max_order + 1):
        hyp_grams, ref_grams = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        n_hyp, n_ref = sum(hyp_grams.values()), sum(ref_grams.values())
        if n_hyp == 0 or n_ref == 0:
            continue
        effective += 1
        match = sum((hyp_grams & ref_grams).values())
        precision, recall = match / n_hyp, match / n_ref
        if precision + recall > 0:
            total += (1 + factor) * precision * recall / (factor * precision + recall)
    return total / effective if effective else 0.0
