"""Whole-conversation on-policy distillation (`distill_mode: on_policy_conversation`): the student
writes every assistant turn after its own earlier replies, the teacher scores each one, the loss
covers every written turn; both families, a local and a served teacher, and resuming.

The teacher is a tiny random Llama on SmolLM2's vocabulary (what is checked is which history
each side reads and which tokens carry loss, not what the teacher knows), so every run is real
and takes seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import SAMPLE, write_jsonl
from convdistill.trainers import RecipeError, load_recipe, train
from convdistill.trainers.tokenize import IGNORE

ROOT = Path(__file__).resolve().parents[1]
COMMON = {
    "bf16": False, "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1,
    "save_strategy": "no", "dataloader_pin_memory": False, "disable_tqdm": True, "lr_scheduler_type": "constant",
    "max_length": 384, "max_target_length": 64, "per_device_train_batch_size": 3, "learning_rate": 1e-3,
    "distill_mode": "on_policy_conversation", "kd_max_new_tokens": 6, "kd_weight": 1.0, "kd_loss": "jsd",
    "seed": 3,
}


@pytest.fixture(scope="module")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Short best paths of the sample with at least two assistant turns."""
    from convdistill.conversation_trees import export_paths

    root = tmp_path_factory.mktemp("conv-data")
    export_paths(SAMPLE, root / "all.jsonl", strategy="best")
    records = [json.loads(line) for line in (root / "all.jsonl").read_text().splitlines()]
    multi = [r for r in records if sum(m["role"] == "assistant" for m in r["messages"]) >= 2
             and sum(len(m["content"]) for m in r["messages"]) < 2500]
    assert len(multi) >= 6
    return write_jsonl(root / "train.jsonl", multi[:6])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convdistill.models import init_student

    return init_student("llama", "tiny", tmp_path_factory.mktemp("conv-teacher") / "t", seed=11).path


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Generation is many small operations: on two busy cores, two threads waiting on each other
    made it 25x slower than one (5 s against 0.2 s for 6 tokens of the tiny student)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def distill(data: Path, out: Path, family: str, **fields: Any) -> Any:
    return train("distill", {**COMMON, "model_name_or_path": f"student:{family}-tiny", "train_file": str(data),
                             "output_dir": str(out), **fields})


def reference(data: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in data.read_text().splitlines()]


def spans(labels: list[int]) -> list[list[int]]:
    """The runs of labelled tokens of a decoder-only example, in order."""
    runs: list[list[int]] = []
    previous = IGNORE
    for label in labels:
        if label != IGNORE:
            if previous == IGNORE:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_every_turn_is_written_after_the_students_own_replies_and_every_one_is_trained(
        conversations: Path, teacher: Path, tmp_path: Path, family: str):
    result = distill(conversations, tmp_path / family, family, teacher=str(teacher), max_steps=2)
    trainer = result.trainer
    tokenizer = trainer.processing_class
    data = reference(conversations)
    rollouts = trainer.last_rollouts
    assert len(rollouts) == 3 and all(r.self_written for r in rollouts)
    written_turns = 0
    for rollout in rollouts:
        gold = data[rollout.conversation]
        written = sorted(rollout.prompts)
        assert written == [i for i, m in enumerate(rollout.messages) if m["role"] == "assistant"]
        assert len(written) >= 2
        for k, index in enumerate(written):
            # turn k read the data's user turns and the student's own replies to the turns before it
            history = rollout.messages[:index]
            assert [m for m in history if m["role"] == "user"] == [
                {"role": "user", "content": m["content"]} for m in gold[:index] if m["role"] == "user"]
            assert rollout.prompts[index] == trainer.family.prompt_ids(history, tokenizer)
            prompt_text = tokenizer.decode(rollout.prompts[index])
            for earlier in written[:k]:
                assert rollout.messages[earlier]["content"] != gold[earlier]["content"]
                assert gold[earlier]["content"][:40] not in prompt_text  # not the reference reply
                assert f"assistant\n{rollout.messages[earlier]['content']}<|im_end|>" in prompt_text
        written_turns += len(written)
    # the loss covers every written turn: its reply and end-of-turn token, nothing else
    replies = [r.messages[i]["content"] + tokenizer.eos_token for r in rollouts for i in sorted(r.prompts)]
    if family == "llama":
        assert len(trainer.last_examples) == len(rollouts)
        trained = [tokenizer.decode(run) for e in trainer.last_examples for run in spans(e["labels"])]
    else:  # one example per turn; its encoder input holds the student's earlier replies (checked above)
        trained = [tokenizer.decode(e["labels"]) for e in trainer.last_examples]
    assert trained == replies and len(replies) == written_turns
    steps = [e for e in result.log_history if "kd_loss" in e]
    assert [e["step"] for e in steps] == [1, 2]
    assert all(e["kd_loss"] > 0 and e["self_written"] == 1.0 and 0 < e["generate_share"] < 1 for e in steps)
    log = json.loads((tmp_path / family / "run_log.json").read_text())
    assert log["distill_mode"] == "on_policy_conversation" and 0 < log["generation"]["generate_share"] < 1
    assert log["data"]["rollouts"]["records"] == 6  # two steps of three written conversations
    assert (result.checkpoint / "config.json").is_file()
    # held out: the student writes every conversation; eval_loss is the divergence on its own history
    metrics = trainer.evaluate(trainer.train_dataset)
    assert metrics["eval_loss"] > 0 and metrics["eval_self_written"] == 1.0


def test_a_resumed_run_continues_where_it_stopped(conversations: Path, teacher: Path, tmp_path: Path):
    whole = distill(conversations, tmp_path / "whole", "llama", teacher=str(teacher), max_steps=2,
                    save_strategy="steps", save_steps=1, per_device_train_batch_size=2)
    resumed = distill(conversations, tmp_path / "resumed", "llama", teacher=str(teacher), max_steps=2,
                      resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-1"),
                      per_device_train_batch_size=2)
    assert resumed.global_step == 2
    losses = {name: {e["step"]: e["loss"] for e in r.log_history if "loss" in e}
              for name, r in (("whole", whole), ("resumed", resumed))}
    assert resumed.trainer.generation_report()["steps"] == 1  # step 1 came from the checkpoint
    # the same conversations, the same draws and the same sampled replies: the same step 2
    assert losses["resumed"][2] == pytest.approx(losses["whole"][2], rel=1e-4)
    assert losses["resumed"][1] == losses["whole"][1]  # the checkpoint's own log history
    assert [r.messages for r in resumed.trainer.last_rollouts] == [r.messages for r in whole.trainer.last_rollouts]


def test_gold_and_self_written_conversations_mix_at_the_ratio(conversations: Path, teacher: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from convdistill.trainers.conversation_policy import conversation_rows, roll_out, self_share, writes_itself
    from convdistill.trainers.data import read_jsonl
    from convdistill.trainers.family import DECODER_ONLY
    from convdistill.trainers.rollout import Sampling
    from convdistill.trainers.truncation import TruncationStats

    assert [self_share(s, 0.5, 4) for s in (0, 2, 4, 9)] == [0.0, 0.25, 0.5, 0.5]
    draws = [writes_itself(3, 7, c, 0.5) for c in range(400)]
    assert draws == [writes_itself(3, 7, c, 0.5) for c in range(400)] and 160 < sum(draws) < 240
    assert not any(writes_itself(3, s, c, 0.0) for s in range(5) for c in range(20))
    rows = conversation_rows(read_jsonl(conversations), "all", TruncationStats())
    model, tokenizer = AutoModelForCausalLM.from_pretrained(teacher), AutoTokenizer.from_pretrained(teacher)
    torch.manual_seed(0)
    rollouts = roll_out(model, DECODER_ONLY, tokenizer, rows[:2], [True, False], Sampling(4), 256, TruncationStats())
    assert rollouts[1].messages == rows[1]["messages"] and not rollouts[1].prompts  # gold: the data's replies
    assert rollouts[0].messages != rows[0]["messages"] and rollouts[0].prompts


@pytest.fixture(scope="module")
def served(teacher: Path) -> Iterator[str]:
    from convdistill.serve import BackgroundServer, load_chat_model

    with BackgroundServer(load_chat_model(teacher, "tiny-teacher")) as server:
        yield server.base_url


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_a_served_teacher_scores_the_written_turns_as_the_local_one_does(conversations: Path, teacher: Path,
                                                                        served: str, tmp_path: Path, family: str):
    """Same student, seed and conversations: the student writes the same replies, and the teacher's
    top-20 over /v1/completions (echo + log-probabilities by token id) gives the local loss. For
    the encoder-decoder student, the teacher reads its encoder input and reply as one sequence."""
    runs = {}
    for name, fields in (("local", {"teacher": str(teacher)}),
                         ("served", {"teacher_base_url": served, "teacher_model": "tiny-teacher"})):
        result = distill(conversations, tmp_path / name, family, max_steps=1, kd_top_k=20, **fields)
        runs[name] = result
    local, remote = (next(e for e in r.log_history if "kd_loss" in e) for r in runs.values())
    assert [r.messages for r in runs["local"].trainer.last_rollouts] == [
        r.messages for r in runs["served"].trainer.last_rollouts]
    assert remote["kd_loss"] == pytest.approx(local["kd_loss"], rel=1e-3)
    log = json.loads((tmp_path / "served" / "run_log.json").read_text())
    assert log["teacher"] == f"tiny-teacher at {served}"


@pytest.mark.parametrize(("fields", "named"), [
    ({"kd_self_fraction": 1.5}, "kd_self_fraction"),
    ({"kd_max_new_tokens": 0}, "kd_max_new_tokens"),
    ({"kd_sample_top_p": 0.0}, "kd_sample_top_p"),
    ({"kd_self_warmup_steps": -1}, "kd_self_warmup_steps"),
    ({"distill_mode": "on_policy_conversations"}, "distill_mode"),
])
def test_bad_fields_are_refused_naming_them(tmp_path: Path, fields: dict, named: str):
    values = {"model_name_or_path": "student:llama-tiny", "train_file": str(SAMPLE), "output_dir": str(tmp_path),
              "distill_mode": "on_policy_conversation", **fields}
    with pytest.raises(RecipeError, match=named):
        load_recipe("distill", values)


@pytest.mark.parametrize("recipe", ["llama-tiny-distill-conversation.yaml", "t5-tiny-distill-conversation.yaml"])
def test_the_shipped_recipes_load(recipe: str):
    _, _, args = load_recipe("distill", ROOT / "trainers" / recipe)
    assert args.distill_mode == "on_policy_conversation" and type(args).__name__ == "ConversationDistillConfig"
