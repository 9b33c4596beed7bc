"""What a demo run does and how big it is: the full preset (minutes on a 2-core CPU) and `--quick`.

Sizes are chosen for a laptop-class CPU: the slow parts are the 135M-parameter teacher writing
turns and answering the suite, so the teacher extends only a few trees and every model is
scored on a subset of the shipped suites. Pointed at a real export and a hosted teacher, the
same stages are the start of a real run (raise the sizes in the recipes, not here).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe, Unavailable
from convdistill.files import fingerprint, project_file

SAMPLE = "conversation_trees/oasst_en_100_tree.jsonl"
EMBEDDED_TEACHER = "smollm2-135m-instruct"
FAMILIES = ("t5", "llama")
# The trainers a demo can run, in the order they run: DPO starts from the distilled student.
METHODS = ("distill", "sft", "dpo")


@dataclass(frozen=True)
class EvalSuite:
    """A shipped suite file and how many of its cases (None: all) the demo scores."""

    file: str
    cases: int | None = None


@dataclass(frozen=True)
class Sizes:
    # "teacher": students built from the embedded teacher's layers (`models init --from`), a
    # pruned Llama and a T5Gemma encoder-decoder; "tiny": random-initialised ~5M students
    students: str = "teacher"
    # 24 of the 30 layers, each with 1152 of its 1536 MLP channels: 97.3M parameters (72% of the
    # teacher). Chosen by measurement (benchmarks/RESULTS.md, issue 26): after 30 distillation
    # steps it passes half the teacher's cases, where 6 whole layers (49.6M) only looped.
    llama_layers: int = 24
    llama_mlp_channels: int | None = 1152
    t5_encoder_layers: int = 1  # 64.5M parameters (two 28.3M embedding tables)
    t5_decoder_layers: int = 1
    calibration_conversations: int = 8  # sample conversations the layers are measured on
    # Which trainers run on each student. Distillation (from the corrected teacher) and SFT start
    # from the built student; DPO from the distilled student (or the SFT one without
    # distillation). The full demo distils only: within its 15 minutes on 2 cores there is room
    # for one run of the 97M student, and `--methods sft,dpo,distill` adds the others.
    methods: tuple[str, ...] = ("distill",)
    # Teacher correction (Minitron): the local logit teacher fine-tuned with LoRA on the demo's
    # training paths before it is distilled from; 0 distils from the teacher as it ships. A step
    # costs about 10 s on 2 cores; 40 steps moved the teacher's held-out NLL by 0.1 nats and the
    # distilled student's by nothing measurable (benchmarks/RESULTS.md), so the demo shows the
    # step, briefly.
    correct_steps: int = 5
    # Students that start from knowledge want smaller steps than random ones (the recipes' rates).
    teacher_student_learning_rates: tuple[tuple[str, float], ...] = (("sft", 3e-4), ("dpo", 1e-5),
                                                                     ("distill", 3e-4))
    sample_paths: int = 3  # paths shown from the export
    extend_trees: int = 2  # trees the teacher continues (the others are copied through)
    extend_turns: int = 2  # simulated user turn + teacher answer, per tree
    teacher_max_tokens: int = 64  # per teacher answer while extending
    simulator_max_tokens: int = 32  # per simulated user turn
    max_length: int = 384  # DPO sequence / encoder tokens
    max_target_length: int = 192  # encoder-decoder reply tokens
    max_train_examples: int | None = None  # DPO pairs; None: every pair
    sft_steps: int = 30  # as many as distillation: the report compares the two
    dpo_steps: int = 8
    distill_steps: int = 30
    # Distillation, SFT and teacher correction read the best path of each tree, cut to
    # distill_max_length tokens: 60 paths are two epochs of 30 steps of 4. The 135M teacher
    # scores every distillation example once (about 150 tokens/s on one core).
    distill_examples: int | None = 60
    distill_max_length: int = 256
    # The encoder-decoder student's runs are shorter (steps, examples; None: as the others'). The
    # T5Gemma 1+1 student does not converse after any budget the demo holds (30 steps took 339 s
    # on 2 cores and left it at 0 cases), so its minutes go to the decoder-only student.
    t5_steps: int | None = 8
    t5_examples: int | None = 16
    logging_steps: int = 2  # a point of the loss curve every N steps
    # The teacher answering the suite is the slowest eval: 11 + 6 cases (52 turns, depths 1 to 5).
    eval_suites: tuple[EvalSuite, ...] = (
        EvalSuite("eval/suites/context_memory.jsonl"),
        EvalSuite("eval/suites/anaphora.jsonl", cases=6),
    )
    eval_max_tokens: int = 40
    eval_batch_size: int = 16


FULL = Sizes()
QUICK = Sizes(
    llama_layers=2,
    llama_mlp_channels=768,
    methods=METHODS,
    correct_steps=2,
    t5_steps=None,
    t5_examples=None,
    calibration_conversations=2,
    sample_paths=2,
    extend_trees=1,
    extend_turns=1,
    teacher_max_tokens=24,
    simulator_max_tokens=16,
    max_length=128,
    max_target_length=64,
    max_train_examples=24,
    sft_steps=2,
    dpo_steps=2,
    distill_steps=2,
    distill_examples=4,
    distill_max_length=128,
    logging_steps=1,
    eval_suites=(EvalSuite("eval/suites/context_memory.jsonl", cases=3),),
    eval_max_tokens=12,
    eval_batch_size=16,
)


@dataclass(frozen=True)
class DemoConfig:
    trees: Path
    out: Path = Path("runs/demo")
    teacher_base_url: str | None = None  # None: the embedded SmolLM2, served on 127.0.0.1
    teacher_model: str | None = None
    quick: bool = False
    threads: int = field(default_factory=lambda: idle_cores())  # noqa: PLW0108 (defined below)
    sizes: Sizes = FULL
    seed: int = 0

    @property
    def embedded_teacher(self) -> bool:
        return self.teacher_base_url is None

    @property
    def teacher_name(self) -> str:
        return self.teacher_model or EMBEDDED_TEACHER

    def fingerprint(self) -> str:
        """What the outputs depend on; threads and the output folder do not change them."""
        data: dict[str, Any] = asdict(self)
        for key in ("out", "threads"):
            data.pop(key)
        data["trees"] = str(Path(self.trees).resolve())
        return fingerprint(data)

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"], data["trees"] = str(self.out), str(self.trees)
        return data


def student_label(config: DemoConfig, family: str) -> str:
    """How the report names a family's student: `llama-6L` (built from the teacher) or `llama-tiny`."""
    sizes = config.sizes
    if sizes.students != "teacher":
        return f"{family}-tiny"
    if family == "llama":
        width = f"-m{sizes.llama_mlp_channels}" if sizes.llama_mlp_channels else ""
        return f"llama-{sizes.llama_layers}L{width}"
    return f"t5gemma-{sizes.t5_encoder_layers}+{sizes.t5_decoder_layers}L"


def idle_cores(window_s: float = 0.5) -> int:
    """Cores not busy with other work right now, at least one.

    The stages run one after another, so on a quiet machine each uses every core. On a machine
    shared with other jobs, torch threads beyond the idle cores wait on each other at every
    operation: the quick demo took 4x longer with two threads than with one on two cores
    already carrying two other jobs. Busy cores are measured over `window_s` from /proc/stat
    where there is one: the 1-minute load average lags, and right after `make demo`'s own
    package installs it still counts them, which left a quiet machine's demo on one thread.
    """
    cores = os.cpu_count() or 1
    busy = _busy_cores(window_s)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # no load average on this platform
            busy = 0.0
    return max(1, min(cores, cores - round(busy)))


def _busy_cores(window_s: float) -> float | None:
    """Cores' worth of non-idle CPU time over `window_s` (Linux /proc/stat), or None."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = sample()
    if first is None:
        return None
    time.sleep(window_s)
    second = sample()
    if second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def make_config(
    trees: Path | None = None,
    out: Path = Path("runs/demo"),
    teacher_base_url: str | None = None,
    teacher_model: str | None = None,
    quick: bool = False,
    threads: int | None = None,
    students: str = "teacher",
    methods: str | None = None,
) -> DemoConfig:
    """A checked config: ValueError with one clear line for anything unusable."""
    if students not in ("teacher", "tiny"):
        raise BadRecipe(f"--students {students!r}: choose teacher (built from the embedded teacher's "
                        "layers) or tiny (random-initialised, ~5M parameters)")
    if teacher_base_url and not teacher_model:
        raise BadRecipe("--teacher-model is required with --teacher-base-url")
    if teacher_model and not teacher_base_url:
        raise BadRecipe("--teacher-model names a model at --teacher-base-url; give the URL too "
                        "(without both, the embedded SmolLM2 is the teacher)")
    if trees is None:
        trees = project_file(SAMPLE)
        if not trees.is_file():
            raise Unavailable(f"the bundled sample {SAMPLE} was not found; run from the repository root "
                              "or give --trees FILE")
    elif not Path(trees).is_file():
        raise BadRecipe(f"--trees {trees}: no such file")
    sizes = replace(QUICK if quick else FULL, students=students)
    if methods is not None:
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        unknown = [m for m in chosen if m not in METHODS]
        if unknown or not chosen:
            raise BadRecipe(f"--methods {methods!r}: choose one or more of {', '.join(METHODS)}, comma-separated")
        sizes = replace(sizes, methods=tuple(m for m in METHODS if m in chosen))
    config = DemoConfig(trees=Path(trees), out=Path(out), teacher_base_url=teacher_base_url,
                        teacher_model=teacher_model, quick=quick, sizes=sizes)
    if threads is not None:
        if threads < 1:
            raise BadRecipe("--threads must be at least 1")
        config = replace(config, threads=threads)
    return config
