"""The pieces the trainers share across families, on real tiny students: the family of a checkpoint,
logits projected at chosen positions only, the distillation configs on TRL's, override parsing,
and a LoRA config that leaves the recipe's ModelConfig as the user wrote it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from trl import DistillationConfig, ModelConfig, SFTConfig

from convdistill.errors import BadRecipe
from convdistill.experiments.settings import parse_changes
from convdistill.models import init_student
from convdistill.overrides import list_items, typed_value
from convdistill.trainers import DECODER_ONLY, ENCODER_DECODER, RecipeError, family_of, load_recipe
from convdistill.trainers.kd_config import DistillConfig, OnPolicyDistillConfig
from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.projection import position_logits, projects_hidden_states

BASE = {"model_name_or_path": "student:llama-tiny", "train_file": "x.jsonl", "output_dir": "unused",
        "report_to": "none", "use_cpu": True}


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-students")
    return {family: init_student(family, "tiny", root / family).path for family in ("llama", "t5")}


def test_the_family_of_a_checkpoint_decides_model_class_and_lora_task(students: dict[str, Path]) -> None:
    assert family_of(students["llama"]) is DECODER_ONLY and family_of(students["t5"]) is ENCODER_DECODER
    assert (DECODER_ONLY.name, ENCODER_DECODER.name) == ("decoder-only", "encoder-decoder")
    model = load_model(students["t5"], ENCODER_DECODER)
    assert model.config.is_encoder_decoder and type(model).__name__.endswith("ForConditionalGeneration")

    args = ModelConfig(use_peft=True)
    lora = peft_config(args, ENCODER_DECODER)
    assert lora.task_type == "SEQ_2_SEQ_LM" and lora.target_modules == "all-linear"
    assert args.lora_task_type == ModelConfig().lora_task_type and args.lora_target_modules is None  # untouched
    assert peft_config(args, DECODER_ONLY).task_type == "CAUSAL_LM"


def test_projected_positions_equal_the_full_logits_there(students: dict[str, Path]) -> None:
    model = load_model(students["llama"], DECODER_ONLY).eval()
    assert projects_hidden_states(model)
    ids = torch.randint(5, 300, (2, 9))
    mask = torch.ones_like(ids)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 8])
    with torch.no_grad():
        _, projected = position_logits(model, input_ids=ids, attention_mask=mask, project=True)
        _, full = position_logits(model, input_ids=ids, attention_mask=mask, project=False)
        expected = model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        assert torch.allclose(projected((rows, cols)), expected, atol=1e-5)
        assert torch.equal(full((rows, cols)), expected)


def test_distillation_configs_extend_trls_and_keep_the_recipe_keys() -> None:
    _, _, off = load_recipe("distill", {**BASE, "kd_top_k": "8", "learning_rate": "1e-3"}, ["--kd_weight", "1"])
    assert isinstance(off, DistillConfig) and isinstance(off, SFTConfig)
    assert (off.kd_top_k, off.kd_weight, off.learning_rate) == (8, 1.0, 1e-3)
    _, _, on = load_recipe("distill", {**BASE, "distill_mode": "on_policy", "kd_loss": "jsd"})
    assert isinstance(on, OnPolicyDistillConfig) and isinstance(on, DistillationConfig)
    kd_fields = {f.name for f in dataclasses.fields(DistillConfig)} - {f.name for f in dataclasses.fields(SFTConfig)}
    assert all(name.startswith(("kd_", "teacher", "distill_")) for name in kd_fields)
    with pytest.raises(RecipeError, match="kd_weight must lie in"):
        load_recipe("distill", {**BASE, "kd_weight": 2})
    with pytest.raises(BadRecipe, match="kd_top_k must be at least 1"):
        DistillConfig(kd_top_k=0, output_dir="unused", report_to="none", use_cpu=True)


def test_override_values_are_typed_once_for_recipes_and_settings() -> None:
    assert typed_value("lr", "1e-4", float) == 1e-4 and typed_value("lr", 1, float) == 1.0
    assert list_items("q_proj, v_proj") == ["q_proj", "v_proj"] and list_items(3) == [3]
    with pytest.raises(BadRecipe, match="field 'max_steps': cannot read 'many'"):
        typed_value("max_steps", "many", int)
    with pytest.raises(BadRecipe, match="'x' is not one of a, b"):
        typed_value("mode", "x", str, ["a", "b"])
    changes = parse_changes(["seeds=0,1", "real_trees=none", "forced_choice=yes", "max_steps=3", "families=t5"])
    assert changes == {"seeds": (0, 1), "real_trees": None, "forced_choice": True, "max_steps": 3,
                       "families": ("t5",)}
    with pytest.raises(BadRecipe, match="field 'max_steps': cannot read"):
        parse_changes(["max_steps=three"])
    with pytest.raises(BadRecipe, match="expected FIELD=VALUE"):
        parse_changes(["max_stpes=3"])
