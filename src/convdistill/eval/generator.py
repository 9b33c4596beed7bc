"""A seeded generator of synthetic context-memory conversations of any depth.

Facts about the user are given in the first turns, unrelated requests follow as distractors,
and the last turns ask for the facts back. Every check is deterministic (`recall_of` the fact),
so no judge is needed and the same seed always gives the same suite.
"""

from __future__ import annotations

import random
from typing import Any

from convdistill.errors import BadInput, BadRecipe

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


# How a fact turn's reference acknowledges the value (a reply naming the value copies it).
ACK = "Noted, I'll remember "


def _fact_turn(statement: str, value: str, remember: str = "Please remember that; a short acknowledgement is enough."
               ) -> dict[str, Any]:
    return {
        "user": f"{statement} {remember}",
        "reference": f"{ACK}{value}.",
        "checks": {"max_words": 40, "no_loops": True},
    }


def _question_turn(ask: str, value: str) -> dict[str, Any]:
    return {"user": ask, "reference": f"{value}.", "checks": {"recall_of": [value], "max_words": 30, "no_loops": True}}


def memory_case(index: int, depth: int, rng: random.Random) -> dict[str, Any]:
    """One case of `depth` turns: facts first, then distractors, then questions about the facts."""
    if depth < 2:
        raise BadRecipe("a context-memory case needs at least 2 turns (give a fact, ask for it)")
    n_facts = max(1, min(len(FACTS), depth // 2))
    n_distract = depth - 2 * n_facts
    facts = rng.sample(FACTS, n_facts)
    chosen = [(slot, say.format(v=value), ask, value) for (slot, say, ask, values), value in
              zip(facts, (rng.choice(f[3]) for f in facts), strict=True)]
    turns: list[dict[str, Any]] = [_fact_turn(statement, value) for _slot, statement, _ask, value in chosen]
    questions = rng.sample(DISTRACTORS, min(n_distract, len(DISTRACTORS)))
    questions += ["Thanks."] * max(0, n_distract - len(DISTRACTORS))
    turns.extend({"user": question, "checks": {"max_words": 80, "no_loops": True}} for question in questions)
    order = list(chosen)
    rng.shuffle(order)
    turns += [_question_turn(ask, value) for _slot, _statement, ask, value in order]
    slots = "-".join(c[0] for c in chosen)
    return {"id": f"synthetic-memory-d{depth}-{index:03d}-{slots}", "tags": ["context_memory", "synthetic"],
            "turns": turns}


def generate_memory_suite(count: int, depth: int | tuple[int, int], seed: int = 0) -> list[dict[str, Any]]:
    """`count` cases; `depth` is a fixed number of turns or a (low, high) range drawn per case."""
    rng = random.Random(seed)
    low, high = (depth, depth) if isinstance(depth, int) else depth
    if low < 2 or high < low:
        raise BadRecipe(f"depth must be >= 2 (and low <= high), got {depth}")
    return [memory_case(i, rng.randint(low, high), rng) for i in range(count)]


# Short replies to the distractor requests. Eval cases may leave distractor turns without a
# reference (gold history then continues with the model's reply), but training conversations
# need an assistant turn after every user turn, and recall cases give one so a gold-history run
# is a single wave.
DISTRACTOR_REPLIES: dict[str, str] = {
    "Give me one tip for sleeping better.": "Keep the same bedtime every night.",
    "What is the boiling point of water in Celsius?": "100 degrees Celsius at sea level.",
    "Suggest a name for a small bakery.": "How about The Rolling Pin?",
    "How many legs does a spider have?": "A spider has eight legs.",
    "Name one planet in the solar system.": "Mars.",
    "What is a synonym for 'happy'?": "Cheerful.",
    "Tell me a fun fact about octopuses.": "An octopus has three hearts.",
    "What is 12 times 3?": "36.",
}

# Values that occur nowhere in FACTS, for training conversations: a student trained on them and
# tested on FACTS' values can pass a recall check only by reading the fact from its context.
TRAIN_VALUES: dict[str, list[str]] = {
    "pet": ["Rascal", "Pickle", "Nimbus", "Waffles", "Mochi", "Barnaby", "Truffle", "Crumpet"],
    "city": ["Bergen", "Cusco", "Gdansk", "Nairobi", "Porto", "Hanoi", "Adelaide", "Quebec"],
    "colour": ["maroon", "turquoise", "beige", "indigo", "scarlet", "mint", "coral", "navy"],
    "job": ["blacksmith", "florist", "locksmith", "surveyor", "baker", "translator", "welder"],
    "number": ["815", "3072", "64", "5209", "147", "9931", "28"],
    "sister": ["Greta", "Amara", "Lucinda", "Rosalind", "Yara", "Beatrix", "Maren"],
    "book": ["The Quiet Harbour", "Iron Gardens", "Paper Comets", "The Last Lighthouse", "Silver Moss"],
    "flight": ["BA2291", "AF644", "SK903", "EK1450", "JL77", "IB3318"],
}
VALUE_SETS = ("eval", "train")

# Other words for the same facts, questions and requests: a memory test in this wording (with the
# eval values) shares neither phrasing nor values with training conversations written in the
# default one, so a student passes it only by reading the conversation, not by recognising it.
HELDOUT_WORDING: dict[str, tuple[str, str]] = {
    "pet": ("We named our cat {v}.", "Remind me, what's the name of my cat?"),
    "city": ("These days I'm based in {v}.", "Where am I based these days?"),
    "colour": ("The colour I like best is {v}.", "Which colour do I like best?"),
    "job": ("By trade I'm a {v}.", "What's my trade?"),
    "number": ("The number on my locker is {v}.", "Which number is on my locker?"),
    "sister": ("I have a sister called {v}.", "What is my sister called?"),
    "book": ("Right now I'm reading {v}.", "Which book am I reading right now?"),
    "flight": ("I'm booked on flight {v}.", "Which flight am I booked on?"),
}
HELDOUT_REMEMBER = "Keep that in mind; just confirm briefly."
HELDOUT_DISTRACTORS: dict[str, str] = {
    "Recommend a houseplant that needs little light.": "A snake plant.",
    "What is the chemical symbol for gold?": "Au.",
    "Give me a word that rhymes with 'light'.": "Night.",
    "How many minutes are in two hours?": "120 minutes.",
    "Name a river in Africa.": "The Nile.",
    "What colour do you get by mixing blue and yellow?": "Green.",
    "Suggest a title for a short poem about rain.": "Silver Threads.",
    "What is 15 plus 27?": "42.",
}
WORDINGS = ("train", "heldout")


def slot_values(slot: str, value_set: str) -> list[str]:
    """The values a fact `slot` takes: "train" the training pool, "eval" values no training
    conversation uses (the unseen-fact suites)."""
    if value_set not in VALUE_SETS:
        raise BadRecipe(f"value set {value_set!r}: choose {' or '.join(VALUE_SETS)}")
    return TRAIN_VALUES[slot] if value_set == "train" else next(f[3] for f in FACTS if f[0] == slot)




def recall_case(
    index: int, distance: int, rng: random.Random, lead: int = 0, value_set: str = "eval", ask_all: bool = False,
    wording: str = "train",
) -> dict[str, Any]:
    """A case whose question about one fact comes exactly `distance` turns after the fact was given.

    `lead` filler turns come first, then the fact, then `distance - 1` filler turns, then the
    question. A filler turn states another fact (a different slot, so the question can only be
    answered by finding the right one) or is a distractor request; every turn has a reference.
    With `ask_all` the other stated facts are asked for afterwards too (more recall per
    conversation, for training data). The case is tagged `distance-<d>` for its first question.
    `wording="heldout"` states and asks with HELDOUT_WORDING and its own requests.
    """
    if distance < 1 or lead < 0:
        raise BadRecipe(f"distance must be >= 1 and lead >= 0, got {distance} and {lead}")
    if wording not in WORDINGS:
        raise BadRecipe(f"wording {wording!r}: choose {' or '.join(WORDINGS)}")
    fillers = lead + distance - 1
    slots = rng.sample(FACTS, min(len(FACTS), 1 + fillers))
    if wording == "heldout":
        slots = [(slot, *HELDOUT_WORDING[slot], values) for slot, _say, _ask, values in slots]
    target, others = slots[0], slots[1:]
    kinds = [rng.random() < 0.5 and bool(others) for _ in range(fillers)]  # True: another fact
    replies = HELDOUT_DISTRACTORS if wording == "heldout" else DISTRACTOR_REPLIES
    remember = (HELDOUT_REMEMBER,) if wording == "heldout" else ()
    pool = list(replies)
    rng.shuffle(pool)
    turns: list[dict[str, Any]] = []
    stated: list[tuple[str, str]] = []  # (question, value) of the fillers' facts, in order

    def filler(is_fact: bool) -> dict[str, Any]:
        if is_fact and len(stated) < len(others):
            slot, say, ask, _ = others[len(stated)]
            value = rng.choice(slot_values(slot, value_set))
            stated.append((ask, value))
            return _fact_turn(say.format(v=value), value, *remember)
        question = pool.pop() if pool else "Thanks."
        return {"user": question, "reference": replies.get(question, "You're welcome."),
                "checks": {"max_words": 80, "no_loops": True}}

    turns += [filler(kinds[k]) for k in range(lead)]
    slot, say, ask, _ = target
    value = rng.choice(slot_values(slot, value_set))
    turns.append(_fact_turn(say.format(v=value), value, *remember))
    turns += [filler(kinds[k]) for k in range(lead, fillers)]
    turns.append(_question_turn(ask, value))
    if ask_all:
        rng.shuffle(stated)
        turns += [_question_turn(q, v) for q, v in stated]
    name = value_set if wording == "train" else f"{value_set}-{wording}"
    return {"id": f"synthetic-recall-{name}-d{distance}-{index:03d}-{slot}",
            "tags": ["context_memory", "synthetic", f"distance-{distance}"], "turns": turns}


def generate_recall_suite(
    per_distance: int, distances: tuple[int, int] = (1, 6), seed: int = 0, value_set: str = "eval",
    wording: str = "train",
) -> list[dict[str, Any]]:
    """`per_distance` recall cases at each distance from low to high (a balanced memory test);
    the same seed always gives the same cases."""
    rng = random.Random(seed)
    low, high = distances
    if low < 1 or high < low:
        raise BadRecipe(f"distances must be >= 1 (and low <= high), got {distances}")
    return [recall_case(i, d, rng, lead=rng.randint(0, 1), value_set=value_set, wording=wording)
            for d in range(low, high + 1) for i in range(per_distance)]


def case_messages(case: dict[str, Any]) -> list[dict[str, str]]:
    """A case with a reference for every turn as a conversation (path-record messages), for training."""
    messages = [{"role": "system", "content": case["system"]}] if case.get("system") else []
    for number, turn in enumerate(case["turns"], 1):
        if turn.get("reference") is None:
            raise BadInput(f"case {case['id']}: turn {number} has no reference to train on")
        messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn["reference"]}]
    return messages
