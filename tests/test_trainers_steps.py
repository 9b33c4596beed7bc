"""The shared training steps that need no model: a derived TRL setting is never dropped in silence."""

from __future__ import annotations

import pytest
from trl import DistillationConfig, SFTConfig

from convdistill.trainers.recipe import set_derived

CPU = {"output_dir": "unused", "report_to": "none", "bf16": False, "use_cpu": True}


def test_a_derived_field_that_replaces_the_recipes_value_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    chosen = DistillationConfig(beta=0.3, **CPU)
    set_derived(chosen, "beta", 0.0, "set by kd_loss forward_kl")
    assert chosen.beta == 0.0
    assert "recipe: beta 0.3 -> 0.0 (set by kd_loss forward_kl)" in capsys.readouterr().err

    # a field left at its default, or already at the derived value, is set quietly
    default = SFTConfig(**CPU)
    set_derived(default, "assistant_only_loss", False, "masks from train_on")
    same = SFTConfig(assistant_only_loss=True, **CPU)
    set_derived(same, "assistant_only_loss", True, "unchanged")
    assert capsys.readouterr().err == "" and same.assistant_only_loss is True
