"""What decides the numbers of `multiturn_vs_singleturn`: its settings, the presets (FULL, the
tiny baseline TINY, QUICK for tests), `--set` parsing, and where a run keeps things."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe
from convdistill.files import fingerprint
from convdistill.overrides import typed_value

NAME = "multiturn_vs_singleturn"
REGIMES: dict[str, str] = {
    "a": "single-turn",
    "b": "multi-turn",
    "c": "+ teacher turns",
    "d": "+ logit distillation",
    "e": "conversations, gold history",
    "f": "conversations, own history",
}
# The experiment's question (a to d). Regimes e and f (issue 27) ask another: both distil c/d's
# data as whole conversations with the conversation trainer (distill_mode on_policy_conversation),
# e keeping the data's replies as history (off-policy), f with the student writing every turn after
# its own earlier replies (on-policy). Same trainer, batches, steps, loss and teacher: whose
# history it is is the one difference, so f vs e is their paired comparison.
MAIN_REGIMES = ("a", "b", "c", "d")
CONVERSATION_REGIMES = ("e", "f")
FAMILIES = ("t5", "llama")
TEACHER_FAMILIES = ("t5", "llama", "smollm2-lora")  # students of the teacher-initialised run
STUDENT_KINDS = ("teacher", "tiny")
SAMPLE = "conversation_trees/oasst_en_100_tree.jsonl"
# The hand-written shipped suites: real-text multi-turn cases (the synthetic one is left out,
# the controlled task has its own held-out suites).
REAL_SUITES = (
    "eval/suites/context_memory.jsonl",
    "eval/suites/anaphora.jsonl",
    "eval/suites/topic_shift.jsonl",
    "eval/suites/self_correction.jsonl",
    "eval/suites/format_following.jsonl",
    "eval/suites/refusal_consistency.jsonl",
)


@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers. Units are cached under a fingerprint of these."""

    families: tuple[str, ...] = FAMILIES
    regimes: tuple[str, ...] = MAIN_REGIMES
    seeds: tuple[int, ...] = (0, 1, 2)
    # "teacher": students built from the teacher's layers (+ SmolLM2 LoRA); "tiny": random tiny ones.
    # The field defaults are the tiny baseline run's settings (TINY); FULL changes what differs.
    students: str = "tiny"
    llama_layers: int = 10  # depth-pruned Llama: 63.7M parameters
    llama_mlp_channels: int | None = None  # width pruning as well: MLP channels kept per layer (None: all)
    t5_encoder_layers: int = 1  # T5Gemma 1+1: 64.5M (two embedding tables of 28.3M each)
    t5_decoder_layers: int = 1
    t5_architecture: str = "t5gemma"  # or "t5gemma2": one embedding table, merged attention
    lora_r: int = 16
    lora_learning_rate: float = 1e-3
    calibration_conversations: int = 16  # sample conversations the students' layers are measured on
    # controlled task: training conversations (values disjoint from the unseen-fact suite)
    train_conversations: int = 128
    train_seed: int = 1000
    train_distances: tuple[int, int] = (1, 7)
    train_max_lead: int = 1
    # held-out recall suites: per distance 1..6; "seen" draws facts from the training value
    # pool (new conversations), "unseen" from values that never occur in training
    eval_per_distance: int = 16
    unseen_per_distance: int = 4
    eval_distances: tuple[int, int] = (1, 6)
    eval_seed: int = 7
    # real text: the first real_trees trees of the sample export, replies cut to max_reply_words;
    # the teacher continues the best path of the extend_trees shortest of them by extend_turns
    # exchanges
    export: str = SAMPLE
    real_strategy: str = "best"
    real_trees: int | None = 40
    max_reply_words: int | None = 48
    extend_trees: int = 12
    extend_turns: int = 1
    teacher: str = "smollm2-135m-instruct"
    teacher_max_tokens: int = 96
    simulator_max_tokens: int = 48
    teacher_seed: int = 0
    # teacher correction (Minitron): LoRA steps on regime c/d's records before regime d takes the
    # teacher's logits (0: distil from the teacher as it ships)
    correct_teacher_steps: int = 0
    correct_teacher_learning_rate: float = 2e-4
    # training (identical for every unit)
    max_steps: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-2
    warmup_steps: int = 20
    max_length: int = 384
    max_target_length: int = 96
    # regime d
    kd_weight: float = 0.5
    kd_top_k: int = 32
    kd_temperature: float = 1.0
    kd_loss: str = "forward_kl"
    # True: score regime d's whole file with the teacher once per family and share it across seeds;
    # False: the teacher runs live on the batches a unit trains on (cheaper when a unit visits a
    # small part of its file)
    kd_cache: bool = True
    # regimes e and f: a batch is `batch_size` whole conversations; in f the student writes each
    # reply (at most conversation_max_new_tokens, sampled) and its share of self-written
    # conversations rises from 0 to 1 over conversation_warmup_steps
    conversation_max_new_tokens: int = 48
    conversation_warmup_steps: int = 0
    conversation_sample_temperature: float = 1.0
    # evaluation
    real_suites: tuple[str, ...] = REAL_SUITES
    real_cases: int | None = None  # cases per real suite (None: all)
    memory_max_tokens: int = 16
    real_max_tokens: int = 48
    eval_batch_size: int = 32
    teacher_per_distance: int = 4  # the teacher answers this many recall cases per distance (0: skip)
    # held-out memory test: "heldout" states and asks in words no training conversation uses
    unseen_wording: str = "train"
    forced_choice: bool = True  # forced-choice recall over the seen suite (one NLL per candidate value)
    # turn 1 of real Open-Assistant conversations the students never train on: reference NLL of the
    # first reply of the best paths of these trees of the sample (0: skip)
    heldout_first_turns: int = 0
    heldout_from_tree: int = 60
    # also score the unseen recall suite and the real suites on the model's OWN history (every
    # turn generated, later turns reading the model's replies): how the student is used
    self_history: bool = False

    def fingerprint(self) -> str:
        """Of the settings that change a unit's numbers (not seeds/families/regimes: those name units)."""
        return self._fingerprint_without(NAMING)

    def data_fingerprint(self) -> str:
        """Of the settings the data stage may read: all but those only the units read, so that a
        change of steps, learning rate or evaluation reuses the data, the teacher's extension and
        its correction (about ten minutes) instead of redoing them. A field missing from
        UNIT_ONLY merely rebuilds the data when it changes."""
        return self._fingerprint_without((*NAMING, *UNIT_ONLY))

    def _fingerprint_without(self, left_out: tuple[str, ...]) -> str:
        return fingerprint({k: v for k, v in asdict(self).items() if k not in left_out})


# Settings that name units rather than change their numbers.
NAMING = ("families", "regimes", "seeds")


# Settings that only the units read (training, regime d-f's distillation, the units' evaluation);
# the students' shapes and calibration too: they are built after the data stage, in folders named
# by them.
UNIT_ONLY = (
    "students", "llama_layers", "llama_mlp_channels", "t5_encoder_layers", "t5_decoder_layers",
    "t5_architecture", "lora_r", "lora_learning_rate", "calibration_conversations", "max_steps",
    "learning_rate", "warmup_steps", "max_target_length", "kd_weight", "kd_top_k", "kd_temperature", "kd_loss",
    "kd_cache", "conversation_max_new_tokens", "conversation_warmup_steps", "conversation_sample_temperature",
    "real_suites", "real_cases", "real_max_tokens", "forced_choice", "self_history",
)


# The first run (tiny random-initialised students), kept as a documented baseline: --preset tiny.
TINY = Settings()
# Students that start from knowledge: 3 students x 4 regimes x 2 seeds on 2 CPU cores
# (docs/experiments.md gives the measured wall and unit times).
FULL = replace(
    TINY,
    students="teacher",
    families=TEACHER_FAMILIES,
    # the demo's decoder-only student (issue 26), a Llama of 24 layers at 1152 MLP channels
    # (97.3M), and a T5Gemma2 of equal size, 4+15 layers (95.6M: it measured 0.31 nats below a
    # T5Gemma 5+5 of 96.5M after 30 distillation steps, benchmarks/RESULTS.md); regime d distils
    # from the teacher corrected on its data. 97M students cost about 2.5x the first run's 64M
    # ones per step and per evaluated token: two seeds of 16 steps took 80.2 min on the idle
    # 2-core machine (docs/experiments.md), over the hour; evaluation is most of a unit.
    llama_layers=24,
    llama_mlp_channels=1152,
    t5_encoder_layers=4,
    t5_decoder_layers=15,
    t5_architecture="t5gemma2",
    correct_teacher_steps=20,
    conversation_warmup_steps=4,  # regime f: a quarter of the steps from gold to own history
    # A unit trains on 64 of regime d's 511 records: the teacher scoring them live costs about an
    # eighth of a cache of the whole file (313 s per family, measured) for each unit.
    kd_cache=False,
    seeds=(0, 1),
    train_conversations=64,
    real_trees=24,
    extend_trees=6,
    max_steps=16,
    batch_size=4,
    learning_rate=3e-4,
    warmup_steps=2,
    max_length=224,
    max_target_length=48,
    eval_per_distance=1,
    unseen_per_distance=4,
    unseen_wording="heldout",
    forced_choice=False,
    real_cases=1,
    memory_max_tokens=12,
    real_max_tokens=32,
    eval_batch_size=16,
    teacher_per_distance=2,
    heldout_first_turns=8,
)
# Seconds, not minutes: every stage for real (teacher, every student, all regimes, one seed) on a
# handful of records, for tests/test_experiment.py and a first look.
QUICK = replace(
    FULL,
    llama_layers=2,
    t5_encoder_layers=1,
    t5_decoder_layers=1,
    correct_teacher_steps=1,
    calibration_conversations=2,
    heldout_first_turns=2,
    forced_choice=True,
    seeds=(0,),
    train_conversations=3,
    eval_per_distance=1,
    unseen_per_distance=1,
    eval_distances=(1, 2),
    real_trees=2,
    extend_trees=1,
    teacher_max_tokens=12,
    simulator_max_tokens=12,
    max_steps=2,
    batch_size=4,
    warmup_steps=0,
    max_length=160,
    max_target_length=32,
    real_cases=1,
    real_suites=REAL_SUITES[:2],
    memory_max_tokens=6,
    real_max_tokens=6,
    teacher_per_distance=1,
    conversation_max_new_tokens=6,
    conversation_warmup_steps=0,  # two steps: regime f writes from the first
)


@dataclass
class Layout:
    """Where a run keeps things: `results/` (small, committed) and `work/` (data, checkpoints,
    caches; not committed)."""

    root: Path
    results: Path = field(init=False)
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        self.results = self.root / "results"
        self.work = self.root / "work"

    @property
    def data(self) -> Path:
        return self.work / "data"

    def unit(self, family: str, regime: str, seed: int) -> str:
        return f"{family}-{regime}-s{seed}"


def _reader(like: Any) -> Callable[[str], Any]:
    """How a setting whose default is `like` reads its text: `none` is None; a bool is true for
    1/true/yes; an int or float as its type, an int where the default is None (the optional
    counts); anything else as text."""

    def read(text: str) -> Any:
        if text.lower() == "none":
            return None
        if isinstance(like, bool):
            return text.lower() in ("1", "true", "yes")
        if isinstance(like, (int, float)) or like is None:
            return (type(like) if like is not None else int)(text)
        return text

    return read


def parse_changes(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings (the CLI's --set) as Settings fields; tuples comma-separated
    (`families=t5`, `eval_distances=1,4`, `seeds=0,1,2,3,4`). Raises BadRecipe naming the field."""
    defaults = asdict(FULL)  # (the same fields in every preset)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in defaults:
            raise BadRecipe(f"--set {item!r}: expected FIELD=VALUE, FIELD one of {', '.join(defaults)}")
        like = defaults[key]
        if isinstance(like, tuple):
            # commas only, unlike a recipe's lists: a suite path may hold a space
            out[key] = tuple(typed_value(key, x, _reader(like[0])) for x in raw.split(",") if x)
        else:
            out[key] = typed_value(key, raw, _reader(like))
    return out


# Issue 27's question: distilled on its own history (f) against the data's (e), is the student
# better where it is used, on its own history? SmolLM2 LoRA, the one student here that recalls at
# all (the built students' f units would take over 20 minutes each on 2 cores, where the
# student's re-reading of the growing conversation before every turn is most of the step), three
# seeds, scored on both histories; 16 tokens per written reply (the memory task's replies and
# questions need fewer).
OWN_HISTORY = replace(FULL, families=("smollm2-lora",), regimes=CONVERSATION_REGIMES, seeds=(0, 1, 2),
                      self_history=True, unseen_per_distance=6, real_cases=2, conversation_max_new_tokens=16)

PRESETS: dict[str, Settings] = {"full": FULL, "tiny": TINY, "own_history": OWN_HISTORY}


def settings_for(quick: bool, seeds: tuple[int, ...] | None = None, changes: list[str] | None = None,
                 preset: str = "full") -> Settings:
    """The full (or tiny-baseline) or quick preset, with other seeds and `--set` changes."""
    if preset not in PRESETS:
        raise BadRecipe(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    values = parse_changes(changes or [])
    if seeds:
        values["seeds"] = tuple(seeds)
    settings = replace(QUICK if quick else PRESETS[preset], **values)
    for name, given, known in (("regimes", settings.regimes, tuple(REGIMES)),
                               ("families", settings.families, TEACHER_FAMILIES)):
        unknown = [x for x in given if x not in known]
        if unknown or not given:
            raise BadRecipe(f"--set {name}={','.join(given)}: choose from {', '.join(known)}")
    if settings.students == "tiny" and "smollm2-lora" in settings.families:
        raise BadRecipe("families: smollm2-lora needs students built from the teacher (preset full)")
    return settings
