"""A seeded generator of synthetic context-memory conversations of any depth.

Facts about the user are given in the first turns, unrelated requests follow as distractors,
and the last turns ask for the facts back. Every check is deterministic (`recall_of` the fact),
so no judge is needed and the same seed always gives the same suite.
"""

from __future__ import annotations

import random
from typing import Any

# (slot, how the user states it, how the user asks for it later, values)
FACTS: list[tuple[str, str, str, list[str]]] = [
    ("pet", "My cat is called {v}.", "What is my cat called?",
     ["Biscuit", "Marlowe", "Pepper", "Juniper", "Tofu", "Sable", "Ziggy", "Clementine"]),
    ("city", "I live in {v}.", "Which city do I live in?",
     ["Tromso", "Valparaiso", "Ljubljana", "Hobart", "Kraków", "Oaxaca", "Tbilisi", "Dunedin"]),
    ("colour", "My favourite colour is {v}.", "What is my favourite colour?",
     ["teal", "ochre", "magenta", "olive", "crimson", "lavender", "amber", "cobalt"]),
    ("job", "I work as a {v}.", "What do I do for a living?",
     ["glassblower", "cartographer", "beekeeper", "radiographer", "luthier", "sommelier", "archivist"]),
    ("number", "My locker number is {v}.", "What is my locker number?",
     ["417", "2381", "96", "7042", "583", "1260", "39"]),
    ("sister", "My sister's name is {v}.", "What is my sister's name?",
     ["Ingrid", "Priya", "Esperanza", "Wilhelmina", "Noor", "Tamsin", "Odalys"]),
    ("book", "The book I'm reading is called {v}.", "What is the title of the book I'm reading?",
     ["The Salt Road", "Winter Orchards", "Copper Tides", "A Map of Fog", "Lanterns Below"]),
    ("flight", "My flight code is {v}.", "What is my flight code?",
     ["KL1742", "AZ309", "QF88", "LH4410", "NZ127", "TP1805"]),
]

DISTRACTORS: list[str] = [
    "Give me one tip for sleeping better.",
    "What is the boiling point of water in Celsius?",
    "Suggest a name for a small bakery.",
    "How many legs does a spider have?",
    "Name one planet in the solar system.",
    "What is a synonym for 'happy'?",
    "Tell me a fun fact about octopuses.",
    "What is 12 times 3?",
]


def memory_case(index: int, depth: int, rng: random.Random) -> dict[str, Any]:
    """One case of `depth` turns: facts first, then distractors, then questions about the facts."""
    if depth < 2:
        raise ValueError("a context-memory case needs at least 2 turns (give a fact, ask for it)")
    n_facts = max(1, min(len(FACTS), depth // 2))
    n_distract = depth - 2 * n_facts
    facts = rng.sample(FACTS, n_facts)
    chosen = [(slot, say.format(v=value), ask, value) for (slot, say, ask, values), value in
              zip(facts, (rng.choice(f[3]) for f in facts), strict=True)]
    turns: list[dict[str, Any]] = []
    for _slot, statement, _ask, value in chosen:
        turns.append({
            "user": f"{statement} Please remember that; a short acknowledgement is enough.",
            "reference": f"Noted, I'll remember {value}.",
            "checks": {"max_words": 40},
        })
    for question in rng.sample(DISTRACTORS, min(n_distract, len(DISTRACTORS))) + ["Thanks."] * max(
        0, n_distract - len(DISTRACTORS)
    ):
        turns.append({"user": question, "checks": {"max_words": 80}})
    order = list(chosen)
    rng.shuffle(order)
    for _slot, _statement, ask, value in order:
        turns.append({"user": ask, "reference": f"{value}.", "checks": {"recall_of": [value], "max_words": 30}})
    slots = "-".join(c[0] for c in chosen)
    return {"id": f"synthetic-memory-d{depth}-{index:03d}-{slots}", "tags": ["context_memory", "synthetic"],
            "turns": turns}


def generate_memory_suite(count: int, depth: int | tuple[int, int], seed: int = 0) -> list[dict[str, Any]]:
    """`count` cases; `depth` is a fixed number of turns or a (low, high) range drawn per case."""
    rng = random.Random(seed)
    low, high = (depth, depth) if isinstance(depth, int) else depth
    if low < 2 or high < low:
        raise ValueError(f"depth must be >= 2 (and low <= high), got {depth}")
    return [memory_case(i, rng.randint(low, high), rng) for i in range(count)]
