"""Teacher correction (`train correct-teacher`): a short real run of the embedded SmolLM2 whose
logits differ from the teacher as it ships, saved as a plain checkpoint that a distillation
recipe takes as its teacher; and the settings it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from convdistill.errors import BadRecipe

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
PROMPT = [{"role": "user", "content": "What should I pack for a week of hiking?"}]


def logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_a_short_correction_run_changes_the_teacher_and_distils(tmp_path: Path) -> None:
    from convdistill.models import resolve_model
    from convdistill.trainers import train

    out = tmp_path / "corrected"
    done = run_cli("train", "correct-teacher", "--output_dir", out, "--max_steps", "2", "--max_train_examples", "4",
                   "--per_device_train_batch_size", "2", "--max_length", "128", "--learning_rate", "1e-3",
                   "--disable_tqdm", "true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out) and f"--teacher {out}" in done.stderr
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()  # merged
    record = json.loads((out / "convdistill.json").read_text())
    assert record["corrected_teacher"]["teacher"] == "smollm2-135m-instruct"
    assert record["corrected_teacher"]["steps"] == 2 and record["corrected_teacher"]["lora"] is True
    before, after = logits(resolve_model("smollm2-135m-instruct")), logits(out)
    assert before.shape == after.shape and (after - before).abs().max() > 1e-2

    # the corrected checkpoint is a teacher as any other: one distillation step from it
    result = train("distill", ROOT / "trainers" / "llama-tiny-distill.yaml",
                   {"teacher": str(out), "train_file": str(SAMPLE), "path_strategy": "best",
                    "output_dir": str(tmp_path / "student"), "max_train_examples": 2, "max_steps": 1,
                    "per_device_train_batch_size": 2, "max_length": 96, "save_strategy": "no",
                    "disable_tqdm": True})
    assert result.global_step == 1
    assert json.loads((tmp_path / "student" / "run_log.json").read_text())["teacher"] == str(out)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model_name_or_path": "student:llama-tiny"}, "not a new student"),
    ({"save_merged": False}, "save_merged: false"),
    ({"load_in_4bit": True}, "load_in_4bit"),
    ({"learning_rat": 1e-3}, "did you mean 'learning_rate'"),
])
def test_settings_a_correction_cannot_use(overrides: dict, message: str, tmp_path: Path) -> None:
    from convdistill.trainers.teacher_correction import correct_teacher

    with pytest.raises(BadRecipe, match=message):
        correct_teacher(overrides={"output_dir": str(tmp_path / "x"), **overrides})
    assert not (tmp_path / "x").exists()


def test_an_encoder_decoder_teacher_is_refused_in_one_line(tmp_path: Path) -> None:
    student = tmp_path / "t5"
    assert run_cli("models", "init", "--family", "t5", "-o", student).returncode == 0
    done = run_cli("train", "correct-teacher", "--model_name_or_path", student, "--output_dir", tmp_path / "x")
    assert done.returncode == 1 and "an encoder-decoder model" in done.stderr and "Traceback" not in done.stderr
