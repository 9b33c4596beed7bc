"""Logit distillation: the loss, the cache, both families, on-policy, and the vocabulary check.

The teacher here is a tiny Llama trained for a few steps on the sample (it shares SmolLM2's
vocabulary with both tiny students), so every test runs real TRL trainers in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import SAMPLE, run_cli, write_jsonl
from convdistill.trainers import train
from convdistill.trainers.kd_loss import KD_LOSSES, kd_token_loss, teacher_topk

COMMON = {
    "bf16": False, "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1,
    "save_strategy": "no", "dataloader_pin_memory": False, "disable_tqdm": True,
    "lr_scheduler_type": "constant", "max_length": 160, "max_target_length": 96,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample's best paths, split by tree: 70 to train on, the rest held out."""
    from convdistill.conversation_trees import export_paths

    root = tmp_path_factory.mktemp("kd-data")
    export_paths(SAMPLE, root / "all.jsonl", strategy="best")
    records = [json.loads(line) for line in (root / "all.jsonl").read_text().splitlines()]
    return {"train": write_jsonl(root / "train.jsonl", records[:70]),
            "heldout": write_jsonl(root / "heldout.jsonl", records[70:])}


@pytest.fixture(scope="module")
def teacher(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kd-teacher")
    result = train("sft", {**COMMON, "model_name_or_path": "student:llama-tiny", "student_seed": 7,
                           "train_file": str(data["train"]), "output_dir": str(out), "max_steps": 30,
                           "per_device_train_batch_size": 4, "learning_rate": 2e-3})
    return result.checkpoint


def distill(teacher: Path, data: Path, out: Path, family: str, **fields: Any) -> Any:
    common = dict(COMMON)
    if fields.get("distill_mode") == "on_policy":
        del common["max_length"]  # an SFTConfig field; on-policy prompts fit kd_max_prompt_length
    return train("distill", {**common, "model_name_or_path": f"student:{family}-tiny", "teacher": str(teacher),
                             "train_file": str(data), "output_dir": str(out), "per_device_train_batch_size": 4,
                             "learning_rate": 2e-3, "seed": 3, **fields})


# -- the loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KD_LOSSES)
@pytest.mark.parametrize("k", [1, 8, 50])
def test_kd_loss_is_zero_for_the_teacher_itself_and_positive_otherwise(kind: str, k: int):
    torch.manual_seed(0)
    teacher_logits = torch.randn(6, 50) * 3
    for temperature in (1.0, 2.0):
        ids, log_probs = teacher_topk(teacher_logits, k, temperature)
        same = kd_token_loss(teacher_logits.clone(), ids, log_probs, kind, temperature)
        assert same.abs().max().item() < 1e-5, (kind, k, same)
        other = kd_token_loss(teacher_logits + torch.randn(6, 50), ids, log_probs, kind, temperature)
        # k = 1 compares two buckets (top token, rest): a perturbation can nearly keep their masses
        assert (other > -1e-6).all() and other.mean() > 1e-3, (kind, k, other)


@pytest.mark.parametrize("kind", KD_LOSSES)
def test_kd_loss_gradients_flow_and_move_the_student_towards_the_teacher(kind: str):
    torch.manual_seed(1)
    ids, log_probs = teacher_topk(torch.randn(4, 30) * 2, 5, 1.0)
    student = torch.zeros(4, 30, requires_grad=True)
    optimizer = torch.optim.Adam([student], lr=0.1)
    first = None
    for _ in range(60):
        loss = kd_token_loss(student, ids, log_probs, kind).mean()
        optimizer.zero_grad()
        loss.backward()
        assert student.grad is not None and student.grad.abs().sum() > 0
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < first / 2


def test_full_vocabulary_top_k_is_the_exact_kl():
    from convdistill.trainers.kd_loss import full_kl

    torch.manual_seed(2)
    teacher_logits, student_logits = torch.randn(5, 40), torch.randn(5, 40)
    ids, log_probs = teacher_topk(teacher_logits, 40, 1.0)
    sparse = kd_token_loss(student_logits, ids, log_probs, "forward_kl")
    assert torch.allclose(sparse, full_kl(teacher_logits, student_logits), atol=1e-5)


# -- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_cached_and_live_teacher_give_the_same_loss_on_the_same_batch(teacher: Path, data: dict, tmp_path: Path,
                                                                      family: str):
    runs = {}
    for cached in (True, False):
        result = distill(teacher, data["train"], tmp_path / f"{cached}", family, max_steps=2, kd_cache=cached,
                         max_train_examples=12)
        runs[cached] = [(e["loss"], e["kd_loss"], e["ce_loss"]) for e in result.log_history if "kd_loss" in e]
    assert len(runs[True]) == 2
    for cached, live in zip(runs[True], runs[False], strict=True):
        assert cached == pytest.approx(live, rel=1e-4)
    assert runs[True][0][1] > 0  # a random student is far from the trained teacher
    assert (tmp_path / "True" / "teacher-logits").is_dir() and not (tmp_path / "False" / "teacher-logits").exists()


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_bf16_distillation_runs_student_and_live_teacher_under_autocast(teacher: Path, data: dict, tmp_path: Path,
                                                                      family: str):
    """precision bf16: the student's matrix products and the live teacher's run in bf16 (the loss
    calls the decoder stack and the head apart, outside the model's own forward, so the trainer
    must cast around it), and the losses stay within a few % of fp32 on the same batches."""
    import torch
    from transformers import TrainerCallback

    student: set[int] = set()
    seen: dict[str, set[torch.dtype]] = {"student": set(), "teacher": set()}

    class StudentModules(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            student.update(id(m) for m in model.modules())

    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear) and student:  # from the first training step on
            seen["student" if id(module) in student else "teacher"].add(output.dtype)

    fields = dict(max_steps=2, kd_cache=False, max_train_examples=8)
    common = {k: v for k, v in COMMON.items() if k != "bf16"}
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    bf16 = train("distill", {**common, "model_name_or_path": f"student:{family}-tiny", "teacher": str(teacher),
                             "train_file": str(data["train"]), "output_dir": str(tmp_path / "bf16"),
                             "per_device_train_batch_size": 4, "learning_rate": 2e-3, "seed": 3,
                             "precision": "bf16", **fields}, callbacks=[StudentModules()])
    handle.remove()
    fp32 = distill(teacher, data["train"], tmp_path / "fp32", family, **fields)
    assert seen == {"student": {torch.bfloat16}, "teacher": {torch.bfloat16}}
    curves = [[(e["kd_loss"], e["ce_loss"]) for e in r.log_history if "kd_loss" in e] for r in (bf16, fp32)]
    for got, want in zip(*curves, strict=True):
        assert got == pytest.approx(want, rel=0.05)


def test_t5_student_distilled_from_a_llama_teacher_gets_closer_than_cross_entropy(teacher: Path, data: dict,
                                                                                   tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture):
    """Decoder-only teacher -> encoder-decoder student: same student, same steps, same data; only
    the loss differs. The distilled one ends nearer the teacher on held-out paths."""
    from convdistill.trainers.kd_eval import heldout_kl

    shared = tmp_path / "cache"
    kd = distill(teacher, data["train"], tmp_path / "kd", "t5", max_steps=30, kd_weight=1.0, kd_cache_dir=str(shared),
                 kd_top_k=256)
    ce = distill(teacher, data["train"], tmp_path / "ce", "t5", max_steps=30, kd_weight=0.0, kd_cache_dir=str(shared),
                 kd_top_k=256)
    assert "reusing" in capsys.readouterr().err  # the second run read the first one's cache
    info = [json.loads((r.checkpoint / "convdistill.json").read_text()) for r in (kd, ce)]
    assert info[0]["logit_cache"] == info[1]["logit_cache"] and info[0]["method"] == "distill"
    kl = {name: heldout_kl(r.checkpoint, teacher, data["heldout"], max_length=160, max_target_length=96)
          for name, r in (("kd", kd), ("ce", ce))}
    assert kl["kd"]["tokens"] == kl["ce"]["tokens"] > 500
    assert kl["kd"]["kl"] < 0.95 * kl["ce"]["kl"], kl  # measured: 3.01 vs 3.31


def test_on_policy_distillation_trains_a_decoder_only_student(teacher: Path, data: dict, tmp_path: Path):
    result = distill(teacher, data["train"], tmp_path / "op", "llama", distill_mode="on_policy", max_steps=2,
                     max_completion_length=8, max_train_examples=4, per_device_train_batch_size=2,
                     kd_loss="jsd", kd_max_prompt_length=96)
    assert [e["step"] for e in result.log_history if "loss" in e] == [1, 2]
    assert (result.checkpoint / "config.json").is_file()
    assert json.loads((result.checkpoint / "convdistill.json").read_text())["beta"] == 0.5
    stats = result.data["train"]
    assert stats.examples > 0 and stats.selected_tokens == 0  # prompts only: the student writes the replies
    assert "prompts only" in stats.summary() and "trained tokens 0/0" not in stats.summary()
    with pytest.raises(ValueError, match=r"on_policy.*causal students only"):
        distill(teacher, data["train"], tmp_path / "op5", "t5", distill_mode="on_policy", max_steps=1)


def test_teacher_with_another_vocabulary_is_refused_with_advice(teacher: Path, data: dict, tmp_path: Path):
    from convdistill.models import init_student

    student = init_student("llama", "tiny", tmp_path / "own-bpe", tokenizer=data["train"], vocab_size=400).path
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {student}\nteacher: {teacher}\ntrain_file: {data['train']}\n"
                      f"output_dir: {tmp_path / 'out'}\nmax_steps: 1\nreport_to: none\n")
    done = run_cli("train", "distill", "--config", recipe)
    assert done.returncode == 1, done.stderr
    assert "do not share a vocabulary" in done.stderr and "GOLD" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "teacher-logits").exists()  # refused before the teacher ran
