"""Embedded-model registry, cache location, chat templates, tiny students, seq2seq format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from conftest import run_cli
from convdistill.errors import BadRecipe, Unavailable
from convdistill.models import (
    SIZES_IN_PARAMS,
    STUDENT_TEMPLATE,
    convdistill_home,
    count_parameters,
    init_student,
    model_table,
    resolve_model,
    seq2seq_format,
)
from convdistill.models.smollm2 import find_gguf

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
]


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {f: init_student(f, "tiny", root / f).path for f in ("llama", "t5")}


def test_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVDISTILL_HOME", str(tmp_path / "home"))
    assert convdistill_home() == tmp_path / "home"
    monkeypatch.delenv("CONVDISTILL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert convdistill_home() == tmp_path / "xdg" / "convdistill"


def test_the_embedded_gguf_is_installed_and_listed() -> None:
    assert find_gguf().stat().st_size > 50_000_000
    (row,) = model_table()
    assert row["name"] == "smollm2-135m-instruct" and row["source_installed"]


def test_resolve_model_refuses_unknown_names_and_non_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="not an embedded model"):
        resolve_model("gpt-17")
    with pytest.raises(BadRecipe, match=r"no config\.json"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_tiny_students_load_back_with_their_documented_size(
    students: dict[str, Path], family: str
) -> None:
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    model = auto.from_pretrained(students[family])
    assert count_parameters(model) == SIZES_IN_PARAMS[(family, "tiny")]
    tokenizer = AutoTokenizer.from_pretrained(students[family])
    assert len(tokenizer) == model.config.vocab_size == 49152  # shared with SmolLM2
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    info = json.loads((students[family] / "convdistill.json").read_text())
    assert info["family"] == family and info["initialised"] == "random"


def test_small_students_have_the_documented_sizes() -> None:
    from convdistill.models import build_student, prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepare_tokenizer())
    tokenizer.pad_token = "<|endoftext|>"
    for family in ("llama", "t5"):
        model = build_student(family, "small", tokenizer)
        assert count_parameters(model) == SIZES_IN_PARAMS[(family, "small")]


def test_student_template_marks_assistant_turns_with_end_of_turn(
    students: dict[str, Path],
) -> None:
    """What TRL's assistant_only_loss needs: exactly the replies and their <|im_end|>."""
    tokenizer = AutoTokenizer.from_pretrained(students["llama"])
    assert tokenizer.chat_template == STUDENT_TEMPLATE
    out = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "Hello!<|im_end|>Blue.<|im_end|>"
    text = tokenizer.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        init_student("llama", "tiny", tmp_path)
    assert (tmp_path / "x").read_text() == "keep me"


def test_student_with_a_tokenizer_trained_on_an_export(sample_path: Path, tmp_path: Path) -> None:
    info = init_student("t5", "tiny", tmp_path / "t5", tokenizer=sample_path, vocab_size=2000)
    tokenizer = AutoTokenizer.from_pretrained(info.path)
    assert info.vocab_size == len(tokenizer) <= 2000
    specials = tokenizer.convert_ids_to_tokens([0, 1, 2])
    assert specials == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    model = AutoModelForSeq2SeqLM.from_pretrained(info.path)
    assert model.config.vocab_size == len(tokenizer)


def test_seq2seq_format_one_example_per_assistant_turn(students: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(students["t5"])
    examples = list(seq2seq_format.turn_examples(CONVERSATION, tokenizer))
    assert len(examples) == 2
    assert tokenizer.decode(examples[1]["labels"]) == "Blue.<|im_end|>"
    source = tokenizer.decode(examples[1]["input_ids"])
    assert source.endswith("Name a colour.<|im_end|>\n<|im_start|>assistant\n")
    assert "Hello!" in source
    cut = seq2seq_format.encode_source(CONVERSATION[:4], tokenizer, max_tokens=5)
    assert cut == examples[1]["input_ids"][-5:]  # the oldest tokens go first
    with pytest.raises(ValueError, match="end with an assistant"):
        seq2seq_format.encode_example(CONVERSATION[:2], tokenizer)


def test_cli_models_list_init_and_errors(tmp_path: Path) -> None:
    listed = run_cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["models"][0]["name"] == "smollm2-135m-instruct"
    made = run_cli("models", "init", "--family", "llama", "--size", "tiny", "-o", tmp_path / "s")
    assert made.returncode == 0, made.stderr
    assert "5,272,416 parameters" in made.stdout
    again = run_cli("models", "init", "--family", "llama", "-o", tmp_path / "s")
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
    bad = run_cli("models", "init", "--family", "gpt", "-o", tmp_path / "g")
    assert bad.returncode == 2 and "t5, llama" in bad.stderr
    unknown = run_cli("models", "prepare", "gpt-17")
    assert unknown.returncode == 1 and "smollm2-135m-instruct" in unknown.stderr
