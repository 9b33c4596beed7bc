"""Train/validation split by tree: a tree's paths and pairs all land on one side.

The side is a pure function of (seed, tree id), so it needs no memory, streams, and gives the
same answer for a tree whichever file or format it was read from.
"""

from __future__ import annotations

import hashlib

from convdistill.errors import BadRecipe

TRAIN, VALIDATION = "train", "validation"


def split_of(tree_id: str, validation_fraction: float, seed: int = 0) -> str:
    if not 0.0 <= validation_fraction < 1.0:
        raise BadRecipe(f"validation fraction must be in [0, 1), got {validation_fraction}")
    digest = hashlib.blake2b(f"{seed}:{tree_id}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64
    return VALIDATION if position < validation_fraction else TRAIN
