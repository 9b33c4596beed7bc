"""Experiment `multiturn_vs_singleturn`: does multi-turn tree distillation beat single-turn
distillation, and which student family wins?

Students that start from knowledge: built from the teacher's own layers (`models init --from`), an
encoder-decoder (T5Gemma) and a decoder-only (depth-pruned Llama) at matched parameter counts, and
SmolLM2-135M-Instruct itself with LoRA (the upper reference). `students="tiny"` runs the first
version instead: tiny random-initialised T5 and Llama students (about 5.2M parameters), kept as a
documented baseline. Every student of a run gets the same records, batch size, steps and learning
rate under four regimes:

    a  single_turn     every assistant turn as an independent prompt -> reply (LaMini style)
    b  multi_turn      every assistant turn with its whole conversation before it
    c  teacher_turns   (b) on the sample export extended by the embedded teacher
    d  distill         (c) plus logit distillation from the teacher (top-k cache, kd_weight mix)

Data: context-memory conversations from the eval generator (the controlled task; training
conversations use other seeds, and held-out cases are checked not to occur in them) mixed with
the Open-Assistant sample export (real text). Each (family, regime, seed) unit is trained with
`convdistill.trainers.train` and scored with `convdistill.eval.run_suite`; see docs/experiments.md.

Stages, in order: data (+ teacher extension, cached), units (in `jobs` worker processes, each
resumable: a finished unit's metrics are kept when its settings are unchanged), summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from convdistill.experiments.regimes import cut_words

if TYPE_CHECKING:
    from convdistill.eval.suite import Case

NAME = "multiturn_vs_singleturn"
REGIMES: dict[str, str] = {
    "a": "single-turn",
    "b": "multi-turn",
    "c": "+ teacher turns",
    "d": "+ logit distillation",
}
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
Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers. Units are cached under a fingerprint of these."""

    families: tuple[str, ...] = FAMILIES
    regimes: tuple[str, ...] = tuple(REGIMES)
    seeds: tuple[int, ...] = (0, 1, 2)
    # "teacher": students built from the teacher's layers (+ SmolLM2 LoRA); "tiny": random tiny ones.
    # The field defaults are the tiny baseline run's settings (TINY); FULL changes what differs.
    students: str = "tiny"
    llama_layers: int = 10  # depth-pruned Llama: 63.7M parameters
    t5_encoder_layers: int = 1  # T5Gemma 1+1: 64.5M (two embedding tables of 28.3M each)
    t5_decoder_layers: int = 1
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

    def fingerprint(self) -> str:
        """Of the settings that change a unit's numbers (not seeds/families/regimes: those name units)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("families", "regimes", "seeds")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# The first run (tiny random-initialised students), kept as a documented baseline: --preset tiny.
TINY = Settings()
# Students that start from knowledge, sized so that 3 students x 4 regimes x 3 seeds fit an hour
# on 2 CPU cores (docs/experiments.md gives the measured unit times).
FULL = replace(
    TINY,
    students="teacher",
    families=TEACHER_FAMILIES,
    train_conversations=64,
    real_trees=24,
    extend_trees=8,
    max_steps=20,
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
    heldout_first_turns=12,
)
# Seconds, not minutes: every stage for real (teacher, every student, all regimes, one seed) on a
# handful of records, for tests/test_experiment.py and a first look.
QUICK = replace(
    FULL,
    llama_layers=2,
    t5_encoder_layers=1,
    t5_decoder_layers=1,
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


def _stderr(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _project_file(name: str) -> Path:
    """A path as given when it exists, else the shipped file (the sample, the suites) wherever
    the package keeps it."""
    from convdistill.resources import shipped_file

    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return shipped_file(name)


# -- stage 1: data -------------------------------------------------------------------------------


def extend_export(settings: Settings, source: Path, out: Path, threads: int, log: Log) -> dict[str, Any]:
    """The embedded teacher continues the best path of the first `extend_trees` trees (served on
    127.0.0.1 for the call; answers cached in SQLite, so a rerun sends nothing)."""
    import torch

    from convdistill.conversation_trees import Selection
    from convdistill.teacher.client import EndpointSettings
    from convdistill.teacher.operations import TeacherSettings
    from convdistill.teacher.run import RunOptions, run_teacher, teacher_endpoint

    torch.set_num_threads(threads)
    teacher = TeacherSettings(
        operation="extend", turns=settings.extend_turns, strategy="best",
        selection=Selection(min_assistant_turns=0), seed=settings.teacher_seed, temperature=0.7,
        max_tokens=settings.teacher_max_tokens, simulator_max_tokens=settings.simulator_max_tokens,
    )
    options = RunOptions(max_trees=settings.extend_trees, cache_path=out.parent / "teacher_cache.sqlite",
                         created_date="2024-01-01T00:00:00+00:00")
    started = time.perf_counter()
    log(f"teacher: {settings.teacher} extends {settings.extend_trees} trees by {settings.extend_turns} exchange(s)")
    with teacher_endpoint(None, settings.teacher) as (url, model):
        report = run_teacher(source, out, teacher, EndpointSettings(url, model, timeout_s=900.0), options=options)
    seconds = time.perf_counter() - started
    op, use = report.operation, report.usage
    log(f"teacher: {op.messages_added.get('assistant', 0)} assistant and {op.messages_added.get('prompter', 0)} "
        f"user messages added, {use.requests_sent} requests sent, {use.cache_hits} from the cache ({seconds:.0f} s)")
    return {"seconds": round(seconds, 1), "trees_changed": op.trees_changed,
            "assistant_added": op.messages_added.get("assistant", 0),
            "user_added": op.messages_added.get("prompter", 0),
            "requests_sent": use.requests_sent, "cache_hits": use.cache_hits, "failures": len(op.failures)}


def sample_subset(export: Path, out: Path, trees: int | None) -> int:
    """The first `trees` trees of the export, those with the shortest best path first.

    The teacher continues the first `extend_trees` of them: on a CPU its time goes into reading
    the conversation (a simulated-user prompt holds all of it), so short conversations make the
    extension minutes instead of tens of minutes. The set of trees is the same for every regime.
    """
    from convdistill.conversation_trees import Selection, read_trees, tree_paths, write_trees

    graphs = read_trees(export)[:trees]

    def length(graph: Any) -> int:
        best = next(tree_paths(graph, Selection(min_assistant_turns=0), "best", open_ends=True), None)
        return sum(len(graph.nodes[m]["text"]) for m in best.message_ids) if best else 0

    return write_trees(out, sorted(graphs, key=length))


def _real_paths(settings: Settings, export: Path, out: Path) -> list[dict[str, Any]]:
    from convdistill.conversation_trees import export_paths

    export_paths(export, out, strategy=settings.real_strategy)  # type: ignore[arg-type]
    return _read_jsonl(out)


def prepare_data(settings: Settings, layout: Layout, threads: int, log: Log) -> dict[str, Any]:
    """Training files per regime, the held-out suites, and their counts. Cached: a second run
    with the same settings reuses everything (the teacher's answers come from its cache)."""
    from convdistill.eval.generator import generate_recall_suite
    from convdistill.experiments.regimes import check_disjoint, single_turn, synthetic_paths, turn_records

    data = layout.data
    marker = data / "data.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("fingerprint") == settings.fingerprint():
            log("data: reusing " + str(data))
            return done
    data.mkdir(parents=True, exist_ok=True)
    low, high = settings.eval_distances
    suites = {
        "recall_seen": generate_recall_suite(settings.eval_per_distance, (low, high), settings.eval_seed, "train"),
        "recall_unseen": generate_recall_suite(settings.unseen_per_distance, (low, high), settings.eval_seed + 1,
                                               "eval", wording=settings.unseen_wording),
    }
    synthetic = synthetic_paths(settings.train_conversations, settings.train_seed, settings.train_distances,
                                settings.train_max_lead, "train")
    disjoint = check_disjoint(synthetic, suites, unseen=("recall_unseen",))
    for name, cases in suites.items():
        _write_jsonl(data / f"{name}.jsonl", cases)

    export = data / "sample.jsonl"
    sample_subset(_project_file(settings.export), export, settings.real_trees)
    extended = data / "extended.jsonl"
    teacher = extend_export(settings, export, extended, threads, log)
    human = _real_paths(settings, export, data / "human_paths.jsonl")
    with_teacher = _real_paths(settings, extended, data / "extended_paths.jsonl")

    teacher_memory = teacher_recall(settings, data / "recall_seen.jsonl", threads, log)
    words = settings.max_reply_words
    memory = turn_records(synthetic, "synthetic")
    multi = memory + turn_records(human, "sample", words)
    teacher_multi = memory + turn_records(with_teacher, "sample+teacher", words)
    files = {
        "a": _write_jsonl(data / "a-single-turn.jsonl", [single_turn(r) for r in multi]),
        "b": _write_jsonl(data / "b-multi-turn.jsonl", multi),
        "c": _write_jsonl(data / "c-teacher-turns.jsonl", teacher_multi),
    }
    files["d"] = files["c"]  # the same records; the teacher's logits are the difference
    first_turns = heldout_first_turns(settings, data / "heldout_first_turns.jsonl")
    counts = {
        "synthetic_conversations": len(synthetic),
        "synthetic_records": len(memory),
        "sample_records": len(multi) - len(memory),
        "sample_teacher_records": len(teacher_multi) - len(memory),
        "teacher_written_replies": sum(1 for r in teacher_multi if r["synthetic"][-1]),
        "records": {k: len(_read_jsonl(v)) for k, v in files.items()},
        "eval_cases": {name: len(cases) for name, cases in suites.items()},
        "disjoint": disjoint,
        "heldout_first_turns": len(first_turns),
    }
    done = {"fingerprint": settings.fingerprint(), "files": {k: str(v) for k, v in files.items()},
            "first_turns": str(data / "heldout_first_turns.jsonl"),
            "suites": {name: str(data / f"{name}.jsonl") for name in suites}, "counts": counts,
            "teacher": teacher, "teacher_recall": teacher_memory}
    marker.write_text(json.dumps(done, indent=2) + "\n")
    log(f"data: {counts['synthetic_records']} synthetic + {counts['sample_records']} sample records "
        f"(c/d: {counts['sample_teacher_records']} sample records, {counts['teacher_written_replies']} teacher "
        f"replies); held-out recall cases {counts['eval_cases']}")
    return done


def heldout_first_turns(settings: Settings, out: Path) -> list[dict[str, Any]]:
    """The first exchange of the best path of sample trees from `heldout_from_tree` on: real
    Open-Assistant prompts no unit trains on (training takes the first `real_trees` trees)."""
    from convdistill.conversation_trees import Selection, read_trees, tree_paths
    from convdistill.conversation_trees.records import chat_messages

    if settings.real_trees is not None and settings.heldout_from_tree < settings.real_trees:
        raise ValueError(f"heldout_from_tree {settings.heldout_from_tree} overlaps the {settings.real_trees} "
                         "training trees")
    pairs: list[dict[str, Any]] = []
    if settings.heldout_first_turns > 0:
        for graph in read_trees(_project_file(settings.export))[settings.heldout_from_tree:]:
            best = next(tree_paths(graph, Selection(), "best"), None)
            if best is None:
                continue
            messages = chat_messages(graph, best.message_ids)
            first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
            if first is not None:
                pairs.append({"history": messages[:first],
                              "reply": cut_words(messages[first]["content"], settings.max_reply_words)})
            if len(pairs) >= settings.heldout_first_turns:
                break
    _write_jsonl(out, pairs)
    return pairs


def teacher_recall(settings: Settings, suite: Path, threads: int, log: Log) -> dict[str, Any] | None:
    """The teacher's own recall on the first `teacher_per_distance` held-out cases per distance
    (greedy, gold history): what regime d can hope to pass on to the students."""
    if settings.teacher_per_distance <= 0:
        return None
    import torch

    from convdistill.eval import LocalBackend, RunOptions, Suite, load_suite, run_suite
    from convdistill.models import resolve_model

    torch.set_num_threads(threads)
    cases = load_suite(suite).cases
    kept: dict[str, int] = {}
    chosen = []
    for case in cases:
        distance = _distance(case.tags)
        if kept.get(distance, 0) < settings.teacher_per_distance:
            kept[distance] = kept.get(distance, 0) + 1
            chosen.append(case)
    started = time.perf_counter()
    backend = LocalBackend(resolve_model(settings.teacher), settings.teacher, settings.eval_batch_size,
                           settings.memory_max_tokens)
    results = run_suite(Suite(str(suite), tuple(chosen)), backend, RunOptions(history="gold", nll=False))
    by = recall_accuracy(results)
    out = {"cases": len(chosen), "accuracy_by_distance": by, "accuracy": sum(by.values()) / len(by),
           "copy": copy_accuracy(results), "seconds": round(time.perf_counter() - started, 1)}
    log(f"teacher: recall {out['accuracy']:.3f} on {len(chosen)} held-out cases ({out['seconds']:.0f} s)")
    return out


# -- stage 2: one unit = train + evaluate one (family, regime, seed) -----------------------------


def recipe(settings: Settings, family: str, regime: str, seed: int, train_file: str, output_dir: Path,
           kd_cache_dir: Path, student: str | None = None) -> tuple[str, dict[str, Any]]:
    """The trainer method and recipe mapping of a unit: the same for every regime but the data
    file (and, for d, the distillation fields). `student`: the checkpoint a teacher-initialised
    unit starts from (built once in the data stage)."""
    values: dict[str, Any] = {
        "seed": seed,  # data order: the same across regimes of equal size
        "train_file": train_file,
        "train_on": "all",  # records carry their own `train` flags: exactly one reply each
        "output_dir": str(output_dir),
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": settings.warmup_steps,
        "max_length": settings.max_length,
        "bf16": False,
        "gradient_checkpointing": False,  # TRL's default is on: recomputation, no memory to save here
        # Batches of similar lengths: a batch is padded to its longest record (one long sample reply
        # among short synthetic ones multiplies the output-layer work of the whole batch).
        "train_sampling_strategy": "group_by_length",
        "logging_steps": max(1, settings.max_steps // 10),
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
    }
    if settings.students == "tiny":
        values["model_name_or_path"] = f"student:{family}-tiny"
        values["student_seed"] = seed  # a different random student per seed, the same across regimes
    elif family == "smollm2-lora":
        values.update({"model_name_or_path": settings.teacher, "use_peft": True, "lora_r": settings.lora_r,
                       "lora_alpha": 2 * settings.lora_r, "lora_dropout": 0.0,
                       "learning_rate": settings.lora_learning_rate})
    else:
        if student is None:
            raise ValueError(f"unit {family}/{regime}: no teacher-initialised student was built")
        values["model_name_or_path"] = student
    if family == "t5":
        values["max_target_length"] = settings.max_target_length
    if regime != "d":
        return "sft", values
    values.update({"teacher": settings.teacher, "kd_weight": settings.kd_weight, "kd_top_k": settings.kd_top_k,
                   "kd_temperature": settings.kd_temperature, "kd_loss": settings.kd_loss,
                   "kd_cache_dir": str(kd_cache_dir)})
    return "distill", values


def build_students(settings: Settings, layout: Layout, threads: int, log: Log) -> dict[str, str]:
    """The teacher-initialised starting points, built once and shared by every unit of a family
    (they are deterministic: the seeds vary the data order)."""
    if settings.students == "tiny":
        return {}
    import torch

    from convdistill.models.from_teacher import init_from_teacher

    torch.set_num_threads(threads)
    shapes = {"llama": {"layers": settings.llama_layers},
              "t5": {"layers": settings.t5_decoder_layers, "encoder_layers": settings.t5_encoder_layers}}
    built: dict[str, str] = {}
    for family in settings.families:
        if family not in shapes:
            continue
        folder = layout.work / "students" / f"{family}-{'-'.join(str(v) for v in shapes[family].values())}"
        if not (folder / "convdistill.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            info = init_from_teacher(settings.teacher, family, folder, sample=_project_file(settings.export),
                                     sample_size=settings.calibration_conversations, **shapes[family])
            log(f"students: {family} from {settings.teacher}, {info.parameters:,} parameters, "
                f"{info.layout()}")
        built[family] = str(folder)
    return built


def copy_accuracy(results: dict[str, Any]) -> float | None:
    """Share of fact turns whose acknowledgement names the value just given in the same user turn:
    copying within a turn, which every regime trains alike (recall needs it across turns)."""
    from convdistill.eval.generator import ACK

    hits = [t["reference"].removeprefix(ACK).rstrip(".").casefold() in t["reply"].casefold()
            for c in results["cases"] for t in c["turns"] if (t["reference"] or "").startswith(ACK)]
    return sum(hits) / len(hits) if hits else None


def recall_accuracy(results: dict[str, Any]) -> dict[str, float]:
    """Share of recall questions answered right, by the distance (in turns) from the fact."""
    by: dict[str, list[bool]] = {}
    for case in results["cases"]:
        distance = _distance(case["tags"])
        for turn in case["turns"]:
            for check in turn["checks"]:
                if check["name"] == "recall_of":
                    by.setdefault(distance, []).append(bool(check["passed"]))
    return {d: sum(v) / len(v) for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))}


def first_turn(results: dict[str, Any]) -> dict[str, float | None]:
    scores = [c["turns"][0]["score"] for c in results["cases"] if c["turns"][0]["score"] is not None]
    nlls = [c["turns"][0]["nll"] for c in results["cases"] if c["turns"][0].get("nll") is not None]
    return {"score": sum(scores) / len(scores) if scores else None,
            "nll": sum(nlls) / len(nlls) if nlls else None}


def _distance(tags: Sequence[str]) -> str:
    """The `distance-<d>` tag of a recall case, as "<d>"."""
    return next(t.removeprefix("distance-") for t in tags if t.startswith("distance-"))


def forced_choice(backend: Any, cases: Sequence[Case], value_set: str) -> dict[str, float]:
    """Share of recall questions where the student gives the right value the highest likelihood
    among all values of the asked slot (the gold conversation before the question, the answer
    "<value>." teacher-forced, summed over its tokens). Greedy answers need the whole value right;
    this shows a student starting to use its context earlier, and a student that ignores the
    conversation stays at 1 / (values of the slot) here, whatever it learned."""
    from convdistill.eval.generator import FACTS, HELDOUT_WORDING, _values
    from convdistill.eval.runner import _history
    from convdistill.models import seq2seq_format

    slots = {ask: slot for slot, _say, ask, _values in FACTS}
    slots.update({ask: slot for slot, (_say, ask) in HELDOUT_WORDING.items()})
    tokenizer = backend.chat.tokenizer
    items: list[tuple[str, int, list[str]]] = []  # (distance, index of the right value, candidates)
    pairs: list[tuple[list[dict[str, str]], str]] = []
    for case in cases:
        distance = _distance(case.tags)
        for k, turn in enumerate(case.turns):
            if not turn.checks.recall_of:
                continue
            history = _history(case, k, [None] * len(case.turns), "gold")  # what generation sees
            candidates = _values(slots[turn.user], value_set)
            items.append((distance, candidates.index(turn.checks.recall_of[0]), candidates))
            pairs += [(history, f"{c}.") for c in candidates]
    means = backend.reference_nll(pairs)
    lengths = [len(tokenizer(seq2seq_format.target_text(ref, tokenizer), add_special_tokens=False)["input_ids"])
               for _, ref in pairs]
    totals = iter(m * n for m, n in zip(means, lengths, strict=True))
    by: dict[str, list[bool]] = {}
    for distance, right, candidates in items:
        scores = [next(totals) for _ in candidates]
        by.setdefault(distance, []).append(min(range(len(scores)), key=scores.__getitem__) == right)
    return {d: sum(v) / len(v) for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))}


def evaluate(checkpoint: Path, settings: Settings, suites: dict[str, str], out: Path,
             first_turns: str | None = None) -> dict[str, Any]:
    """The held-out recall suites and the shipped real-text suites, gold history, greedy."""
    from convdistill.eval import LocalBackend, RunOptions, Suite, load_suite, run_suite

    backend = LocalBackend(checkpoint, batch_size=settings.eval_batch_size, max_tokens=settings.memory_max_tokens)
    metrics: dict[str, Any] = {}
    started = time.perf_counter()
    for name, path in suites.items():
        suite = load_suite(path)
        results = run_suite(suite, backend, RunOptions(history="gold", nll=False))
        (out / f"{name}.json").write_bytes(orjson.dumps(results))
        metrics[name] = {"accuracy_by_distance": recall_accuracy(results), "copy": copy_accuracy(results),
                         "score": results["summary"]["score"], "by_depth": results["summary"]["by_depth"]}
        # Forced choice among the unseen values would rank output rows no training ever touched.
        wanted = settings.forced_choice and name == "recall_seen"
        choice = forced_choice(backend, suite.cases, "train") if wanted else {}
        metrics[name]["choice_by_distance"] = choice
        for key, by in (("accuracy", metrics[name]["accuracy_by_distance"]), ("choice", choice)):
            metrics[name][key] = sum(by.values()) / len(by) if by else None
    parts = [load_suite(_project_file(p)) for p in settings.real_suites]
    real = Suite("+".join(s.path for s in parts),
                 tuple(c for s in parts for c in (s.cases[: settings.real_cases] if settings.real_cases else s.cases)))
    backend.max_tokens = settings.real_max_tokens
    results = run_suite(real, backend, RunOptions(history="gold"))
    (out / "real.json").write_bytes(orjson.dumps(results))
    s = results["summary"]
    metrics["real"] = {"score": s["score"], "turns_passed": s["turns_passed"], "turns": s["turns"],
                       "by_depth": s["by_depth"], "by_tag": s["by_tag"], "nll": s["mean_reference_nll"],
                       "first_turn": first_turn(results)}
    if first_turns and Path(first_turns).is_file():
        pairs = [(p["history"], p["reply"]) for p in _read_jsonl(Path(first_turns))]
        nlls = backend.reference_nll(pairs) if pairs else []
        metrics["heldout_first_turn_nll"] = sum(nlls) / len(nlls) if nlls else None
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def run_unit(settings: Settings, family: str, regime: str, seed: int, data: dict[str, Any], root: str,
             threads: int, keep_checkpoint: bool = False) -> dict[str, Any]:
    """Train and evaluate one unit; returns (and writes) its metrics. Runs in a worker process."""
    import torch

    from convdistill.trainers import train

    torch.set_num_threads(threads)
    layout = Layout(Path(root))
    name = layout.unit(family, regime, seed)
    work = layout.work / "units" / name
    if work.exists():
        shutil.rmtree(work)  # a unit interrupted earlier starts over
    work.mkdir(parents=True)
    method, values = recipe(settings, family, regime, seed, data["files"][regime], work / "model",
                            layout.work / "kd-cache", data.get("students", {}).get(family))
    started = time.perf_counter()
    result = train(method, values)
    train_seconds = time.perf_counter() - started
    stats = result.data["train"].as_dict()
    final = [h for h in result.log_history if "train_loss" in h]
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    epochs = final[-1].get("epoch", 0.0) if final else 0.0
    metrics: dict[str, Any] = {
        "unit": name, "family": family, "regime": regime, "seed": seed, "method": method,
        "fingerprint": settings.fingerprint(),
        "train": {"seconds": round(train_seconds, 1), "steps": result.global_step, "epochs": round(epochs, 3),
                  "examples": stats["examples"], "truncated": stats["truncated"], "dropped": stats["dropped"],
                  "dataset_trained_tokens": stats["trained_tokens"],
                  # the steps' share of the data times its trained tokens (the sampler shuffles
                  # whole epochs, so this is exact for whole epochs and an estimate for a part)
                  "trained_tokens": round(stats["trained_tokens"] * epochs),
                  "final_loss": losses[-1] if losses else None,
                  "train_loss": final[-1].get("train_loss") if final else None},
    }
    metrics.update(evaluate(result.checkpoint, settings, data["suites"], work, data.get("first_turns")))
    if not keep_checkpoint:
        shutil.rmtree(work / "model", ignore_errors=True)
    out = layout.results / "units" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# -- the whole run ---------------------------------------------------------------------------------


def _cached_unit(layout: Layout, settings: Settings, name: str) -> dict[str, Any] | None:
    path = layout.results / "units" / f"{name}.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("fingerprint") == settings.fingerprint() else None


def _unit_order(settings: Settings) -> list[tuple[str, str, int]]:
    """Distillation units of the first seed go first: each builds its family's teacher-logit
    cache, which the other seeds then reuse (they wait for it rather than build it twice)."""
    units = [(f, r, s) for s in settings.seeds for r in settings.regimes for f in settings.families]
    return sorted(units, key=lambda u: (not (u[1] == "d" and u[2] == settings.seeds[0]),))


def run_units(settings: Settings, layout: Layout, data: dict[str, Any], jobs: int, threads: int,
              keep_checkpoints: bool, log: Log) -> tuple[list[dict[str, Any]], int]:
    """Every unit's metrics (finished ones kept), and how many units this call trained."""
    done: dict[str, dict[str, Any]] = {}
    todo = []
    for family, regime, seed in _unit_order(settings):
        name = layout.unit(family, regime, seed)
        cached = _cached_unit(layout, settings, name)
        if cached is not None:
            done[name] = cached
        else:
            todo.append((family, regime, seed))
    if done:
        log(f"units: {len(done)} finished earlier with the same settings, kept")
    log(f"units: {len(todo)} to train and evaluate, {jobs} at a time, {threads} torch thread(s) each")
    total = len(done) + len(todo)

    def finished(metrics: dict[str, Any]) -> None:
        done[metrics["unit"]] = metrics
        log(f"unit {metrics['unit']} done ({len(done)}/{total}): "
            f"recall {metrics['recall_seen']['accuracy']:.3f}, real score {metrics['real']['score']:.3f}, "
            f"train {metrics['train']['seconds']:.0f} s, eval {metrics['eval_seconds']:.0f} s")

    args = (data, str(layout.root), threads, keep_checkpoints)
    if jobs <= 1:
        for family, regime, seed in todo:
            finished(run_unit(settings, family, regime, seed, *args))
        return [done[layout.unit(*u)] for u in _unit_order(settings)], len(todo)

    import multiprocessing

    # A distillation unit waits until its family's cache is built (by the first seed's unit).
    first_seed = settings.seeds[0]
    builders = {f for f, r, s in todo if r == "d" and s == first_seed}
    waiting = [u for u in todo if u[1] == "d" and u[0] in builders and u[2] != first_seed]
    ready = [u for u in todo if u not in waiting]
    running: dict[Future, tuple[str, str, int]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while ready or waiting or running:
            while ready and len(running) < jobs:
                unit = ready.pop(0)
                running[pool.submit(run_unit, settings, *unit, *args)] = unit
            future = next(iter(_first_done(running)))
            family, regime, seed = running.pop(future)
            finished(future.result())
            if regime == "d" and seed == first_seed:
                ready += [u for u in waiting if u[0] == family]
                waiting = [u for u in waiting if u[0] != family]
    return [done[layout.unit(*u)] for u in _unit_order(settings)], len(todo)


def _first_done(running: dict[Future, Any]) -> set[Future]:
    from concurrent.futures import FIRST_COMPLETED, wait

    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
    return finished


@dataclass
class Outcome:
    summary: dict[str, Any]
    results: Path
    doc: Path | None
    wall_s: float


def run(root: str | Path, settings: Settings = FULL, jobs: int = 2, threads: int = 1, doc: str | Path | None = None,
        keep_checkpoints: bool = False, command: str = "", log: Log = _stderr) -> Outcome:
    """The whole experiment: data (+ teacher), every unit, the summary table and plots, and
    (with `doc`) the generated part of docs/experiments.md."""
    from convdistill.experiments.report import summarize, write_doc, write_results

    layout = Layout(Path(root))
    layout.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    log(f"{NAME}: {len(settings.families)} families x {len(settings.regimes)} regimes x {len(settings.seeds)} seeds, "
        f"{settings.max_steps} steps of {settings.batch_size}; load average {load_before[0]:.2f}")
    stage = time.perf_counter()
    # The teacher stages get the units' thread count, not all cores: with other work on the
    # machine, oversubscribed threads slowed the 135M teacher 3-4x here (10 s -> 38 s).
    data = prepare_data(settings, layout, threads, log)
    data["students"] = build_students(settings, layout, threads * max(1, jobs), log)
    data_s = time.perf_counter() - stage
    stage = time.perf_counter()
    units, trained = run_units(settings, layout, data, jobs, threads, keep_checkpoints, log)
    units_s = time.perf_counter() - stage
    wall = time.perf_counter() - started
    timing = {"wall_s": round(wall, 1), "data_s": round(data_s, 1), "units_s": round(units_s, 1),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
              "cpus": os.cpu_count(), "jobs": jobs, "threads": threads, "units_trained": trained}
    earlier = _earlier_timing(layout, settings, [u["unit"] for u in units]) if trained == 0 else None
    if earlier is not None:
        # Nothing was trained: this run only rebuilt the report. Its wall time says nothing about
        # the experiment, so the report keeps the timing of the run that trained the units.
        log(f"{NAME}: every unit was cached; the report keeps the timing of the run that trained them "
            f"({earlier['wall_s'] / 60:.1f} min)")
        timing = {**earlier, "report_rebuilt_s": round(wall, 1)}
    summary = summarize(settings, data, units, timing, command)
    write_results(summary, layout.results)
    written = write_doc(summary, Path(doc), layout.results) if doc else None
    log(f"{NAME}: done in {wall / 60:.1f} min; results in {layout.results}" + (f", doc {written}" if written else ""))
    return Outcome(summary, layout.results, written, wall)


def _earlier_timing(layout: Layout, settings: Settings, names: list[str]) -> dict[str, Any] | None:
    """The timing of the last summary written for exactly these units with these settings."""
    path = layout.results / "summary.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    units = {u["unit"]: u.get("fingerprint") for u in earlier.get("units", [])}
    if units != {name: settings.fingerprint() for name in names} or "timing" not in earlier:
        return None
    timing = earlier["timing"]
    return timing if timing.get("units_trained", len(names)) > 0 else None


def _convert(text: str, like: Any) -> Any:
    """`text` as the type of `like` (a field's default); `none` for None; an int where the
    default is None (the optional counts)."""
    if text.lower() == "none":
        return None
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(like, (int, float)) or like is None:
        return (type(like) if like is not None else int)(text)
    return text


def parse_changes(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings (the CLI's --set) as Settings fields; tuples comma-separated
    (`families=t5`, `eval_distances=1,4`, `seeds=0,1,2,3,4`)."""
    defaults = asdict(FULL)  # (the same fields in every preset)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, FIELD one of {', '.join(defaults)}")
        like = defaults[key]
        if isinstance(like, tuple):
            out[key] = tuple(_convert(x, like[0]) for x in raw.split(",") if x)
        else:
            out[key] = _convert(raw, like)
    return out


PRESETS: dict[str, Settings] = {"full": FULL, "tiny": TINY}


def settings_for(quick: bool, seeds: tuple[int, ...] | None = None, changes: list[str] | None = None,
                 preset: str = "full") -> Settings:
    """The full (or tiny-baseline) or quick preset, with other seeds and `--set` changes."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    values = parse_changes(changes or [])
    if seeds:
        values["seeds"] = tuple(seeds)
    return replace(QUICK if quick else PRESETS[preset], **values)
