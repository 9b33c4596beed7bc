"""Token-level distillation losses between a student and a teacher's top-k distribution.

The teacher is kept as its k most likely tokens with their log-probabilities (what the logit
cache stores). Both distributions are compared on k + 1 outcomes: the teacher's top-k tokens and
one "everything else" bucket holding the remaining mass (the teacher's: 1 - its top-k mass; the
student's: the log-sum-exp of its logits outside those k ids). Each side is then a proper
distribution, so forward KL, reverse KL and JSD are all defined, are exactly zero when the
student equals the teacher, and equal the full-vocabulary divergences when k covers the
vocabulary. Renormalising the top-k alone (the usual shortcut) would let a student that puts
half its mass outside the teacher's top-k score a zero loss.
"""

from __future__ import annotations

from typing import Literal

import torch

from convdistill.errors import BadRecipe

KDLossKind = Literal["forward_kl", "reverse_kl", "jsd"]
KD_LOSSES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")
# Log-probabilities are floored here (about log 1e-30) instead of reaching -inf: an empty bucket
# then contributes ~0 to every divergence without inf - inf = nan in values or gradients.
_LOG_FLOOR = -69.0
# The teacher's rest mass below this is float32 rounding of 1 - sum(top-k), not probability.
_REST_NOISE = 1e-5


def teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, log-probabilities) of the k most likely tokens at `temperature`, per row."""
    log_probs = (logits.float() / temperature).log_softmax(-1)
    values, ids = log_probs.topk(min(k, log_probs.size(-1)), dim=-1)
    return ids, values


def _with_rest(topk_log_probs: torch.Tensor, rest_log_prob: torch.Tensor) -> torch.Tensor:
    return torch.cat([topk_log_probs, rest_log_prob.unsqueeze(-1)], dim=-1)


def bucket_log_probs(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float,
    student_lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities over the k + 1 buckets, shape (tokens, k + 1).

    Only the student's log-normaliser and its k logits are needed, never a full log-softmax:
    on a 49k vocabulary the full (tokens x vocab) copies and their backward passes cost ~7x a
    plain cross-entropy. `student_lse`: the logsumexp of the logits at this temperature, when
    the caller has it already (the cross-entropy at temperature 1 shares it)."""
    logits = student_logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = logits.logsumexp(-1) if student_lse is None else student_lse
    student_topk = logits.gather(-1, teacher_ids) - lse.unsqueeze(-1)
    student_rest = _rest(student_topk.logsumexp(-1).exp())
    teacher_log_probs = teacher_log_probs.float().clamp(min=_LOG_FLOOR)
    teacher_rest = _rest(teacher_log_probs.exp().sum(-1))
    return _with_rest(teacher_log_probs, teacher_rest), _with_rest(student_topk.clamp(min=_LOG_FLOOR), student_rest)


def _rest(top_mass: torch.Tensor) -> torch.Tensor:
    """log(1 - top-k mass), floored: a residual below float32 rounding is an empty bucket (and
    the floor keeps the gradient finite when the top-k holds everything)."""
    residual = 1.0 - top_mass
    return torch.where(residual > _REST_NOISE, residual.clamp(min=_REST_NOISE).log(),
                       torch.full_like(residual, _LOG_FLOOR))


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row (both floored, so an empty bucket adds ~1e-30 at most)."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def divergence(teacher_log: torch.Tensor, student_log: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Per-token divergence between bucketed teacher and student distributions.

    forward_kl: KL(teacher || student), mass-covering (the classic KD loss);
    reverse_kl: KL(student || teacher), mode-seeking;
    jsd: generalised Jensen-Shannon with weight `beta` on the teacher (0.5: the symmetric JSD).
    """
    if kind == "forward_kl":
        return _kl(teacher_log, student_log)
    if kind == "reverse_kl":
        return _kl(student_log, teacher_log)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise BadRecipe(f"kd_jsd_beta must lie strictly between 0 and 1, got {beta}")
        mixture = torch.logsumexp(
            torch.stack([teacher_log + torch.log(torch.tensor(beta)), student_log + torch.log(torch.tensor(1 - beta))]),
            dim=0,
        )
        return beta * _kl(teacher_log, mixture) + (1 - beta) * _kl(student_log, mixture)
    raise BadRecipe(f"kd_loss {kind!r}: choose one of {', '.join(KD_LOSSES)}")


def kd_token_loss(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    kind: str,
    temperature: float = 1.0,
    beta: float = 0.5,
    student_lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token distillation loss, scaled by temperature squared so that its gradients keep
    the same size as the temperature changes (Hinton et al.)."""
    teacher_log, student_log = bucket_log_probs(student_logits, teacher_ids, teacher_log_probs, temperature,
                                                student_lse)
    return divergence(teacher_log, student_log, kind, beta) * temperature**2


def full_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per token over the whole vocabulary at temperature 1: the held-out
    measure of how close a student came to its teacher."""
    teacher = teacher_logits.float().log_softmax(-1)
    student = student_logits.float().log_softmax(-1)
    return (teacher.exp() * (teacher - student)).sum(-1)
