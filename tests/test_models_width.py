"""Width pruning (`models init --from ... --mlp-channels N --heads H`): the chosen channels and
heads are exactly what the student holds, dead channels and heads are the ones dropped, the
key/value groups stay consistent, and the checkpoint loads and trains like any other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli, save_tiny_llama
from convdistill.models.from_teacher import sample_conversations
from convdistill.models.width_pruning import WidthChoice, WidthImportance, choose_width, measure_width, prune_width

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
PROMPT = "<|im_start|>user\nWhat is a tree?<|im_end|>\n<|im_start|>assistant\nA tree is"


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    return sample_conversations(SAMPLE, 4)


@pytest.fixture(scope="module")
def gqa_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer Llama on SmolLM2's tokenizer with grouped-query attention: 6 query heads in 3
    key/value groups of 2 (SmolLM2: 9 in 3 of 3), MLPs of 128 channels; weights large enough
    that the heads and channels differ clearly."""
    out = save_tiny_llama(tmp_path_factory.mktemp("gqa-teacher"), 5, hidden_size=96, intermediate_size=128,
                          num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3, head_dim=16,
                          initializer_range=0.1)
    return out


def load(folder: Path) -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def logits(model: object, tokenizer: object) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits


def assert_holds_exactly(student: object, teacher: object, layers: list[int], choice: WidthChoice) -> None:
    """Every weight of the student is the teacher's at the chosen rows and columns."""
    size = 16
    for k, index in enumerate(layers):
        ours, theirs = student.model.layers[k], teacher.model.layers[index]
        channels = choice.mlp_channels[k]
        queries = [h * size + d for h in choice.query_heads[k] for d in range(size)]
        kv = [h * size + d for h in choice.kv_heads[k] for d in range(size)]
        assert torch.equal(ours.mlp.gate_proj.weight, theirs.mlp.gate_proj.weight[channels])
        assert torch.equal(ours.mlp.up_proj.weight, theirs.mlp.up_proj.weight[channels])
        assert torch.equal(ours.mlp.down_proj.weight, theirs.mlp.down_proj.weight[:, channels])
        assert torch.equal(ours.self_attn.q_proj.weight, theirs.self_attn.q_proj.weight[queries])
        assert torch.equal(ours.self_attn.k_proj.weight, theirs.self_attn.k_proj.weight[kv])
        assert torch.equal(ours.self_attn.v_proj.weight, theirs.self_attn.v_proj.weight[kv])
        assert torch.equal(ours.self_attn.o_proj.weight, theirs.self_attn.o_proj.weight[:, queries])
        assert torch.equal(ours.input_layernorm.weight, theirs.input_layernorm.weight)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)


def test_keeping_every_channel_and_head_is_the_teacher(gqa_teacher: Path, conversations: list) -> None:
    teacher, tokenizer = load(gqa_teacher)
    importance = measure_width(teacher, tokenizer, conversations[:2], max_tokens=64)
    student = prune_width(teacher, choose_width(importance, teacher.config)).eval()
    assert torch.equal(logits(student, tokenizer), logits(teacher, tokenizer))


def test_dead_channels_and_a_dead_group_are_dropped_and_nothing_changes(gqa_teacher: Path,
                                                                        conversations: list) -> None:
    """Channels that never activate and a key/value group whose values are zero add nothing to
    the residual stream: they score zero, are the ones dropped, and the pruned model computes what
    the teacher does. The dropped group is the middle one, so the kept query heads of the last
    group must be remapped to the student's second key/value head."""
    teacher, tokenizer = load(gqa_teacher)
    dead = [3, 17, 40, 41, 99, 127]
    with torch.no_grad():
        for layer in teacher.model.layers:
            layer.mlp.gate_proj.weight[dead] = 0  # silu(0) * up = 0
            layer.self_attn.v_proj.weight[16:32] = 0  # key/value head 1 (query heads 2, 3) outputs 0
    importance = measure_width(teacher, tokenizer, conversations[:2], max_tokens=64)
    assert importance.tokens > 0
    for mlp, heads in zip(importance.mlp, importance.heads, strict=True):
        assert mlp[dead].abs().max() == 0 and mlp.min() == 0 and (mlp > 0).sum() == 128 - len(dead)
        assert heads[2] == heads[3] == 0 and (heads > 0).sum() == 4
    choice = choose_width(importance, teacher.config, mlp_channels=128 - len(dead), heads=4, kv_heads=2)
    assert all(channels == [c for c in range(128) if c not in dead] for channels in choice.mlp_channels)
    assert choice.kv_heads == [[0, 2]] * 3 and choice.query_heads == [[0, 1, 4, 5]] * 3
    student = prune_width(teacher, choice).eval()
    assert (student.config.intermediate_size, student.config.num_attention_heads,
            student.config.num_key_value_heads, student.config.head_dim) == (122, 4, 2, 16)
    assert_holds_exactly(student, teacher, [0, 1, 2], choice)
    assert torch.allclose(logits(student, tokenizer), logits(teacher, tokenizer), atol=1e-5)


def test_heads_within_a_group_by_importance(gqa_teacher: Path, conversations: list) -> None:
    """--heads 3 keeps all 3 groups and the stronger query head of each."""
    teacher, tokenizer = load(gqa_teacher)
    importance = measure_width(teacher, tokenizer, conversations[:2], max_tokens=64)
    choice = choose_width(importance, teacher.config, heads=3)
    for k, heads in enumerate(choice.query_heads):
        scores = importance.heads[k]
        assert heads == [g * 2 + int(scores[g * 2 + 1] > scores[g * 2]) for g in range(3)]
    assert choice.kv_heads == [[0, 1, 2]] * 3


def test_on_smollm2_the_important_half_beats_the_other_half(conversations: list) -> None:
    """On the real teacher the measure means something: half the MLP channels and 6 of 9 heads
    chosen by importance lose far less held-out language than the least important ones."""
    from convdistill.models import resolve_model

    teacher, tokenizer = load(resolve_model("smollm2-135m-instruct"))
    importance = measure_width(teacher, tokenizer, conversations[:2], max_tokens=128)
    best = choose_width(importance, teacher.config, mlp_channels=768, heads=6)
    flipped = WidthImportance([-m for m in importance.mlp], [-h for h in importance.heads], importance.tokens)
    worst = choose_width(flipped, teacher.config, mlp_channels=768, heads=6)
    assert all(not set(b) & set(w) for b, w in zip(best.mlp_channels, worst.mlp_channels, strict=True))
    text = tokenizer.apply_chat_template(conversations[3], tokenize=False)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :160]

    def nll(model: object) -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    teacher_nll, best_nll, worst_nll = nll(teacher), nll(prune_width(teacher, best).eval()), nll(
        prune_width(teacher, worst).eval())
    assert teacher_nll < best_nll < worst_nll - 1.0, (teacher_nll, best_nll, worst_nll)


def test_cli_depth_and_width_together_then_a_short_run(gqa_teacher: Path, tmp_path: Path) -> None:
    """`models init --from T --layers 2 --mlp-channels 64 --heads 4 --kv-heads 2`: a plain
    checkpoint holding the recorded layers, channels and heads of the teacher; it trains."""
    from transformers import AutoModelForCausalLM

    from convdistill.trainers import train

    out = tmp_path / "student"
    done = run_cli("models", "init", "--from", str(gqa_teacher), "--family", "llama", "--layers", "2",
                   "--mlp-channels", "64", "--heads", "4", "--kv-heads", "2", "--sample", str(SAMPLE),
                   "--sample-size", "3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "64 MLP channels, 4 heads (2 key/value)" in done.stdout
    record = json.loads((out / "convdistill.json").read_text())
    width = record["width"]
    assert (width["mlp_channels"], width["heads"], width["kv_heads"]) == (64, 4, 2)
    kept = WidthChoice(width["kept"]["mlp_channels"], width["kept"]["query_heads"], width["kept"]["kv_heads"])
    assert len(record["layers"]) == 2 and all(len(c) == 64 for c in kept.mlp_channels)
    assert all(len(q) == 4 and len(kv) == 2 and [h // 2 for h in q] == [g for g in kv for _ in (0, 1)]
               for q, kv in zip(kept.query_heads, kept.kv_heads, strict=True))
    student = AutoModelForCausalLM.from_pretrained(out).eval()  # a stock checkpoint
    teacher, tokenizer = load(gqa_teacher)
    assert_holds_exactly(student, teacher, record["layers"], kept)
    assert record["parameters"] == sum(p.numel() for p in student.parameters())
    assert torch.isfinite(logits(student, tokenizer)).all()

    recipe = {"model_name_or_path": str(out), "train_file": str(SAMPLE), "path_strategy": "best",
              "output_dir": str(tmp_path / "run"), "max_train_examples": 6, "max_steps": 2,
              "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 128, "bf16": False,
              "save_strategy": "no", "logging_steps": 1, "report_to": "none", "disable_tqdm": True}
    result = train("sft", recipe)
    assert all(math.isfinite(h["loss"]) for h in result.log_history if "loss" in h)
    trained = AutoModelForCausalLM.from_pretrained(result.checkpoint).eval()
    assert trained.config.intermediate_size == 64 and not torch.equal(logits(trained, tokenizer),
                                                                      logits(student, tokenizer))


def test_a_recipe_builds_a_width_pruned_student(gqa_teacher: Path, tmp_path: Path) -> None:
    """`model_name_or_path: student:llama-from-<teacher>` with student_mlp_channels and
    student_heads (no student_layers: every layer) builds the student into student-init."""
    from convdistill.trainers import train

    recipe = {"model_name_or_path": f"student:llama-from-{gqa_teacher}", "student_mlp_channels": 32,
              "student_heads": 3, "train_file": str(SAMPLE), "path_strategy": "best",
              "output_dir": str(tmp_path / "run"), "max_train_examples": 2, "max_steps": 1,
              "per_device_train_batch_size": 2, "max_length": 64, "bf16": False, "save_strategy": "no",
              "report_to": "none", "disable_tqdm": True}
    train("sft", recipe)
    config = json.loads((tmp_path / "run" / "student-init" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"], config["num_attention_heads"],
            config["num_key_value_heads"]) == (3, 32, 3, 3)


@pytest.mark.parametrize(("options", "message"), [
    ({"heads": 4}, "--heads 4: the teacher groups its 6 query heads by 3 key/value heads"),
    ({"heads": 6, "kv_heads": 2}, "every key/value head keeps the same number of query heads, at most its 2"),
    ({"mlp_channels": 500}, "--mlp-channels 500: the teacher's MLPs have 128 channels"),
    ({"kv_heads": 4, "heads": 4}, "--kv-heads 4: the teacher has 3 key/value heads"),
    ({"family": "t5", "mlp_channels": 64}, "width pruning builds decoder-only students"),
])
def test_width_errors_name_the_option(gqa_teacher: Path, tmp_path: Path, options: dict, message: str) -> None:
    from convdistill.errors import BadRecipe
    from convdistill.models.from_teacher import init_from_teacher

    family = options.pop("family", "llama")
    with pytest.raises(BadRecipe) as error:
        init_from_teacher(gqa_teacher, family, tmp_path / "x", sample_size=1, **options)
    assert message in str(error.value)
    assert not (tmp_path / "x").exists()


def test_a_width_error_is_one_line_on_the_command_line(gqa_teacher: Path, tmp_path: Path) -> None:
    done = run_cli("models", "init", "--from", str(gqa_teacher), "--family", "llama", "--heads", "4",
                   "-o", str(tmp_path / "x"))
    assert done.returncode == 1 and "--heads 4" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
