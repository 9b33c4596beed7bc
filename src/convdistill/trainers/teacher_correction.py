"""Teacher correction (Minitron, NVIDIA 2024): fine-tune the teacher on the distillation data
before its logits are taken. A teacher off the data's distribution teaches its own habits, not
the data: distilling SmolLM2 as it ships *cost* a student recall (ARCHITECTURE.md, issue 26).

A correction run is the SFT recipe applied to the teacher, with what a distillation teacher
needs checked first: a decoder-only model (distillation scores text token by token with a
causal teacher) and a plain checkpoint at the end (LoRA merged), so that a distillation recipe
takes it as `teacher: <output_dir>` and `serve` / `eval` load it as they are.

    correct_teacher(config, overrides)   the run; `train correct-teacher` on the command line
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe
from convdistill.files import write_json
from convdistill.models import resolve_model
from convdistill.resources import shipped_file
from convdistill.trainers.family import DECODER_ONLY, family_of
from convdistill.trainers.recipe import load_recipe
from convdistill.trainers.steps import TrainResult

# LoRA (merged) on the embedded SmolLM2, on the sample the distillation recipes read.
DEFAULT_RECIPE = "trainers/smollm2-correct-teacher.yaml"


def correct_teacher(config: str | Path | dict[str, Any] | None = None,
                    overrides: list[str] | dict[str, Any] | None = None,
                    callbacks: list[Any] | None = None) -> TrainResult:
    """Fine-tune the teacher named by the recipe's `model_name_or_path` on its `train_file` (the
    distillation data) and save a plain checkpoint in `output_dir`; its convdistill.json records
    which teacher it corrects. `config`: a recipe file or mapping (default: the shipped
    smollm2-correct-teacher.yaml); `overrides`: `--key value` tokens or a mapping."""
    from convdistill.launch import check_distributed_launch
    from convdistill.trainers.sft import train_sft

    recipe = config if config is not None else shipped_file(DEFAULT_RECIPE)
    data, model_args, args = load_recipe("sft", recipe, overrides)
    name = model_args.model_name_or_path
    if name.startswith("student:"):
        raise BadRecipe(f"model_name_or_path {name}: teacher correction fine-tunes an existing teacher "
                        "(an embedded name or a checkpoint folder), not a new student")
    if model_args.use_peft and not data.save_merged:
        raise BadRecipe("save_merged: false: a corrected teacher must be a full checkpoint for distillation "
                        "to load; keep save_merged true (the adapter is saved beside it as well)")
    if model_args.load_in_4bit or model_args.load_in_8bit:
        # merging into a quantized base is refused by save_checkpoint's full-precision reload anyway;
        # say it before minutes of training
        raise BadRecipe("load_in_4bit / load_in_8bit: a corrected teacher is merged into full precision; "
                        "correct it with LoRA or full fine-tuning on the unquantized teacher")
    if family_of(resolve_model(name)) is not DECODER_ONLY:
        raise BadRecipe(f"model_name_or_path {name}: an encoder-decoder model; a distillation teacher is "
                        "decoder-only (causal), so there is nothing to correct for `train distill`")
    check_distributed_launch(bool(getattr(args, "use_cpu", False)))
    result = train_sft(data, model_args, args, callbacks=callbacks)
    info_path = Path(result.checkpoint) / "convdistill.json"
    info = json.loads(info_path.read_text())
    info["corrected_teacher"] = {
        "teacher": name, "train_file": data.train_file, "path_strategy": data.path_strategy,
        "train_on": data.train_on, "examples": data.max_train_examples, "steps": result.global_step,
        "learning_rate": args.learning_rate, "lora": bool(model_args.use_peft),
    }
    write_json(info_path, info)
    return result
