"""Refusing teacher/student pairs that do not share a vocabulary.

Token-level distillation compares distributions over token ids: it is only meaningful when id i
is the same string for both models. Matching sizes are not enough (two BPEs of 32k tokens
disagree almost everywhere), so the whole token -> id maps are compared.
"""

from __future__ import annotations

from typing import Any

from convdistill.errors import BadRecipe

ADVICE = (
    "Token-level distillation needs one vocabulary. For this pair use sequence-level "
    "distillation instead: have the teacher write the replies (`convdistill extend` / "
    "`convdistill regenerate` with the teacher as endpoint) and train on them with "
    "`convdistill train sft`; or TRL's GOLD trainer (trl.experimental.gold), which aligns "
    "different tokenizers."
)


class VocabularyMismatch(BadRecipe):
    """Teacher and student tokenizers map tokens to ids differently."""


def shared_vocab_size(teacher_tokenizer: Any, student_tokenizer: Any, teacher_width: int, student_width: int,
                      teacher_name: str, student_name: str) -> int:
    """The number of leading logit columns both models give the same meaning; raises
    VocabularyMismatch, naming both models and examples of the difference, otherwise."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    student_vocab = student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        only_teacher = sorted(set(teacher_vocab) - set(student_vocab))
        only_student = sorted(set(student_vocab) - set(teacher_vocab))
        moved = sorted(t for t in set(teacher_vocab) & set(student_vocab) if teacher_vocab[t] != student_vocab[t])
        details = [f"teacher {len(teacher_vocab)} tokens, student {len(student_vocab)}"]
        if only_teacher:
            details.append(f"{len(only_teacher)} only in the teacher's (e.g. {only_teacher[:3]})")
        if only_student:
            details.append(f"{len(only_student)} only in the student's (e.g. {only_student[:3]})")
        if moved:
            details.append(f"{len(moved)} with other ids (e.g. {moved[:3]})")
        raise VocabularyMismatch(
            f"teacher {teacher_name} and student {student_name} do not share a vocabulary "
            f"({'; '.join(details)}). {ADVICE}"
        )
    size = len(teacher_vocab)
    widths = {"teacher": teacher_width, "student": student_width}
    short = [name for name, width in widths.items() if width < size]
    if short:
        raise VocabularyMismatch(
            f"the {short[0]}'s output layer has {widths[short[0]]} rows for a vocabulary of {size} tokens "
            f"(teacher {teacher_name}, student {student_name}); resize its embeddings first"
        )
    # Padded output layers (rows past the vocabulary, e.g. for tensor-core alignment) hold no token:
    # both sides are compared on the vocabulary's columns only.
    return size
