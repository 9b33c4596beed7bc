"""`convdistill train sft|dpo --config trainers/RECIPE.yaml [--key value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import err_console

app = typer.Typer(
    help="Train a student (T5-family or decoder-only) with SFT, DPO or logit distillation, on TRL. "
    "A recipe is a YAML file of SFTConfig/DPOConfig, trl.ModelConfig and convdistill fields; any "
    "field can be overridden as --field value. Works under `accelerate launch -m convdistill.cli.main`.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", exists=True, dir_okay=False, readable=True,
                 help="Recipe YAML, e.g. trainers/t5-tiny-sft.yaml."),
]
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _run(method: str, config: Path, overrides: list[str]) -> None:
    from convdistill.trainers import train

    # expected errors (a bad recipe, a missing model, a launch that cannot train together) print
    # one line through the root group's friendly_errors; train() checks the launch first
    result = train(method, config, overrides)
    stats = result.data["train"]
    err_console.print(
        f"trained {result.family.name} {method} for {result.global_step} steps; "
        f"{stats.truncated} truncated, {stats.dropped} dropped, "
        f"{stats.trained_fraction:.1%} of selected assistant tokens trained; "
        f"run log {result.output_dir / 'run_log.json'}",
        markup=False,
    )
    typer.echo(str(result.checkpoint))


@app.command("sft", context_settings=EXTRA)
def sft(ctx: typer.Context, config: ConfigOpt) -> None:
    """Supervised fine-tuning on path records (or a tree export): loss on assistant turns."""
    _run("sft", config, list(ctx.args))


@app.command("dpo", context_settings=EXTRA)
def dpo(ctx: typer.Context, config: ConfigOpt) -> None:
    """DPO on pair records (or a tree export), with an explicit reference model."""
    _run("dpo", config, list(ctx.args))


@app.command("distill", context_settings=EXTRA)
def distill(ctx: typer.Context, config: ConfigOpt) -> None:
    """Token-level distillation from a causal teacher sharing the student's vocabulary.

    Off-policy (default, both families): the teacher's top-k log-probabilities for every reply
    token are computed once and cached on disk; the student then matches them (forward KL,
    reverse KL or JSD, mixed with cross-entropy by kd_weight). On-policy (distill_mode:
    on_policy, decoder-only students): TRL's DistillationTrainer on the paths' multi-turn prompts.

    Example: convdistill train distill --config trainers/t5-tiny-distill.yaml --kd_weight 1.0
    """
    _run("distill", config, list(ctx.args))


@app.command("correct-teacher", context_settings=EXTRA)
def correct_teacher(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", exists=True, dir_okay=False, readable=True,
        help="Recipe YAML (an SFT recipe whose model_name_or_path is the teacher). Default: "
        "trainers/smollm2-correct-teacher.yaml (LoRA on the embedded SmolLM2, merged).")] = None,
) -> None:
    """Teacher correction (Minitron): fine-tune the teacher on the distillation data first.

    A teacher off the data's distribution teaches its own habits; fine-tuned on the same paths
    the students are distilled on, it teaches the data. Saves a plain checkpoint (LoRA merged) to
    output_dir; give that folder as `teacher:` to `train distill`.

    Example: convdistill train correct-teacher --train_file paths.jsonl --output_dir runs/teacher
    --max_steps 40, then convdistill train distill --config RECIPE --teacher runs/teacher
    """
    from convdistill.trainers.teacher_correction import correct_teacher as run

    result = run(config, list(ctx.args))
    info = result.data["train"]
    err_console.print(f"corrected the teacher in {result.global_step} steps ({info.trained_fraction:.1%} of "
                      f"selected assistant tokens trained); distil from it with --teacher {result.checkpoint}",
                      markup=False)
    typer.echo(str(result.checkpoint))
