"""The configs of `convdistill train distill`: TRL's configs extended by the kd fields, as TRL's
GKDConfig extends SFTConfig.

Off-policy (the default) trains on the paths' own replies: `DistillConfig`, an SFTConfig.
On-policy lets the student write its replies through TRL's DistillationTrainer:
`OnPolicyDistillConfig`, a trl.DistillationConfig. Both carry the fields of `KDFields` once;
every one starts with `kd_`, `teacher` or `distill_` so that it never collides with a field of
TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DistillationConfig, SFTConfig

from convdistill.errors import BadRecipe
from convdistill.trainers.kd_loss import KD_LOSSES

MODES = ("off_policy", "on_policy", "on_policy_conversation")
# TRL's DistillationTrainer selects the divergence with `beta`: 0 forward KL, 1 reverse KL, 0.5 JSD.
TRL_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0}


def refuse_first(problems: dict[str, str]) -> None:
    """Raise BadRecipe for the first field with a problem (field name -> problem, "" for none)."""
    for name, problem in problems.items():
        if problem:
            raise BadRecipe(f"{name} {problem}")


@dataclass
class KDFields:
    """The distillation fields, mixed into a TRL config (see the classes below); `check_kd_fields`
    refuses values that cannot run, naming the field."""

    teacher: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "The teacher: an embedded model's name or a causal checkpoint folder sharing the "
                  "student's vocabulary."},
    )
    teacher_base_url: str | None = field(
        default=None,
        metadata={"help": "A served teacher instead of `teacher`: an OpenAI-compatible endpoint that returns prompt "
                  "log-probabilities by token id (vLLM, `convdistill serve`), e.g. http://gpu-box:8000/v1. It "
                  "builds the logit cache (kd_top_k at most 20, kd_temperature 1); the key comes from "
                  "OPENAI_API_KEY."},
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "The model name at teacher_base_url (required with it)."}
    )
    distill_mode: str = field(
        default="off_policy",
        metadata={"help": "off_policy: match the teacher on the paths' replies (both families, logits cached). "
                  "on_policy: the student generates, the teacher scores (decoder-only; TRL's "
                  "DistillationTrainer). on_policy_conversation: the student writes every assistant turn "
                  "of each conversation after its own earlier replies, the teacher scores each (both "
                  "families).", "choices": list(MODES)},
    )
    kd_loss: str = field(
        default="forward_kl",
        metadata={"help": "Divergence between teacher and student next-token distributions.",
                  "choices": list(KD_LOSSES)},
    )
    kd_jsd_beta: float = field(default=0.5, metadata={"help": "kd_loss jsd: weight of the teacher in the mixture."})
    kd_temperature: float = field(default=1.0, metadata={"help": "Softens both distributions; the loss is "
                                                         "scaled by its square."})
    kd_weight: float = field(
        default=0.5,
        metadata={"help": "Off-policy: loss = kd_weight * distillation + (1 - kd_weight) * cross-entropy on "
                  "the reply tokens. 1.0: distillation only; 0.0: plain SFT."},
    )
    kd_top_k: int = field(default=32, metadata={"help": "Teacher log-probabilities kept per token (cache width)."})
    kd_cache: bool = field(
        default=True,
        metadata={"help": "Off-policy: score the data with the teacher once and train from the on-disk cache "
                  "(teacher not in memory while training). False: run the teacher live on every batch."},
    )
    kd_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where teacher logit caches live (one folder per teacher, data and k); share it "
                  "between runs to reuse them. Default: <output_dir>/teacher-logits."},
    )
    teacher_batch_tokens: int = field(
        default=4096, metadata={"help": "Padded tokens per teacher forward pass while building the cache."}
    )
    kd_max_prompt_length: int = field(
        default=384,
        metadata={"help": "On-policy: most prompt tokens (oldest turns dropped first) before the student "
                  "generates."},
    )

    def check_kd_fields(self) -> None:
        if not 0.0 <= self.kd_weight <= 1.0:
            raise BadRecipe(f"kd_weight must lie in [0, 1], got {self.kd_weight}")
        if self.kd_temperature <= 0:
            raise BadRecipe(f"kd_temperature must be positive, got {self.kd_temperature}")
        if self.kd_top_k < 1:
            raise BadRecipe(f"kd_top_k must be at least 1, got {self.kd_top_k}")
        if self.teacher_base_url:
            problems = {
                "teacher_model": "is required with teacher_base_url" if not self.teacher_model else "",
                "distill_mode": "on_policy needs the teacher's model in memory (TRL); a served teacher fills the "
                                "cache (off_policy) or scores live (on_policy_conversation)"
                                if self.distill_mode == "on_policy" else "",
                "kd_cache": "must be true with teacher_base_url (the served teacher fills the cache)"
                            if not self.kd_cache else "",
                "kd_top_k": f"{self.kd_top_k}: a served teacher returns at most 20 log-probabilities per token"
                            if self.kd_top_k > 20 else "",
                "kd_temperature": f"{self.kd_temperature}: a served teacher's log-probabilities are at "
                                  "temperature 1" if self.kd_temperature != 1.0 else "",
            }
            refuse_first(problems)


@dataclass
class DistillConfig(KDFields, SFTConfig):
    """Off-policy distillation: TRL's SFTConfig and the kd fields."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_kd_fields()


@dataclass
class OnPolicyDistillConfig(KDFields, DistillationConfig):
    """On-policy distillation: TRL's DistillationConfig and the kd fields."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_kd_fields()


@dataclass
class ConversationDistillConfig(DistillConfig):
    """Whole-conversation on-policy distillation (`distill_mode: on_policy_conversation`): the
    off-policy config (an SFTConfig and the kd fields: max_length fits the written conversations
    as it fits the data's) and how the student writes its turns."""

    kd_max_new_tokens: int = field(
        default=64, metadata={"help": "on_policy_conversation: most tokens the student writes per reply."}
    )
    kd_sample_temperature: float = field(
        default=1.0,
        metadata={"help": "on_policy_conversation: sampling temperature of the student's replies (0: greedy)."},
    )
    kd_sample_top_p: float = field(
        default=1.0, metadata={"help": "on_policy_conversation: nucleus sampling of the student's replies."}
    )
    kd_self_fraction: float = field(
        default=1.0,
        metadata={"help": "on_policy_conversation: share of conversations the student writes itself; the rest "
                  "keep the data's replies (off-policy turns, kd_weight mixes in cross-entropy there)."},
    )
    kd_self_warmup_steps: int = field(
        default=0,
        metadata={"help": "on_policy_conversation: steps over which the self-written share rises linearly from 0 "
                  "to kd_self_fraction (a schedule from gold to self history)."},
    )

    def check_kd_fields(self) -> None:
        super().check_kd_fields()
        problems = {
            "kd_max_new_tokens": f"must be at least 1, got {self.kd_max_new_tokens}"
                                 if self.kd_max_new_tokens < 1 else "",
            "kd_sample_temperature": f"must not be negative, got {self.kd_sample_temperature}"
                                     if self.kd_sample_temperature < 0 else "",
            "kd_sample_top_p": f"must lie in (0, 1], got {self.kd_sample_top_p}"
                               if not 0.0 < self.kd_sample_top_p <= 1.0 else "",
            "kd_self_fraction": f"must lie in [0, 1], got {self.kd_self_fraction}"
                                if not 0.0 <= self.kd_self_fraction <= 1.0 else "",
            "kd_self_warmup_steps": f"must not be negative, got {self.kd_self_warmup_steps}"
                                    if self.kd_self_warmup_steps < 0 else "",
        }
        refuse_first(problems)
