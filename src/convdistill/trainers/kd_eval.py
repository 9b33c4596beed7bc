"""How close a student came to its teacher: KL(teacher || student) on held-out paths.

Measured over the whole vocabulary at temperature 1, on exactly the tokens training would
label (the same tokenisation and truncation), so students of either family, trained with or
without distillation, are compared on one footing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from convdistill.padding import pad_with_mask
from convdistill.trainers.kd_loss import full_kl
from convdistill.trainers.teacher_scoring import teacher_logits_at


@torch.inference_mode()
def heldout_kl(student: str | Path, teacher: str | Path, paths_file: str | Path, max_length: int = 384,
               max_target_length: int | None = None, limit: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """Mean per-token KL(teacher || student) over every assistant reply of `paths_file`'s paths
    (path records or a tree export); returns {"kl": ..., "tokens": ...}."""
    from convdistill.trainers.data import load_records
    from convdistill.trainers.family import family_of
    from convdistill.trainers.loading import load_model, load_tokenizer
    from convdistill.trainers.steps import sft_examples
    from convdistill.trainers.teacher_model import load_teacher, teacher_vocabulary

    student, teacher = Path(student), Path(teacher)
    family = family_of(student)
    tokenizer = load_tokenizer(student, family)
    model = load_model(student, family).eval()
    vocab = teacher_vocabulary(teacher, tokenizer, model, str(student))
    teacher_model = load_teacher(teacher)
    with tempfile.TemporaryDirectory() as work:  # a tree export is turned into paths here first
        records, _ = load_records(paths_file, "paths", Path(work), "all", limit)
    examples, _ = sft_examples(records, tokenizer, family, "all", max_length, max_target_length or max_length)
    collate = family.collator(tokenizer.pad_token_id, model)
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start: start + batch_size]
        logits, _ = family.labelled_logits(model, collate(batch))
        views = [family.teacher_view(e) for e in batch]
        ids, mask = pad_with_mask([v.input_ids for v in views], tokenizer.pad_token_id)
        rows = torch.tensor([r for r, v in enumerate(views) for _ in v.positions], dtype=torch.long)
        cols = torch.tensor([p for v in views for p in v.positions], dtype=torch.long)
        teacher_logits = teacher_logits_at(teacher_model, ids, mask, rows, cols)
        kl = full_kl(teacher_logits[:, :vocab], logits[:, :vocab])
        total += float(kl.sum())
        tokens += kl.numel()
    return {"kl": total / max(tokens, 1), "tokens": float(tokens)}
