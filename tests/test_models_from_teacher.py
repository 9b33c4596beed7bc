"""Students built from a teacher's layers (`models init --from`): the exact copy, the layer
selection, both constructions, and a short real training run of each family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli, save_tiny_llama
from convdistill.models.from_teacher import (
    choose_layers,
    llama_student,
    measure_layers,
    sample_conversations,
    t5_student,
    t5gemma2_student,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"


@pytest.fixture(scope="module")
def smollm2() -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from convdistill.models import resolve_model

    folder = resolve_model("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    return sample_conversations(SAMPLE, 40)


@pytest.fixture(scope="module")
def stats(smollm2: tuple[object, object], conversations: list[list[dict[str, str]]]) -> object:
    model, tokenizer = smollm2
    return measure_layers(model, tokenizer, conversations[:4], max_tokens=256)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer Llama on SmolLM2's tokenizer, saved as a checkpoint folder (a user's own
    Llama-family teacher, small enough for training runs in a test)."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-teacher"), 3, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def heldout_nll(model: object, tokenizer: object, conversations: list[list[dict[str, str]]],
                encoder_decoder: bool) -> float:
    """Mean per-token NLL of every assistant reply, teacher-forced after its history."""
    total, count = 0.0, 0
    with torch.no_grad():
        for messages in conversations:
            for i, message in enumerate(messages):
                if message["role"] != "assistant" or i == 0:
                    continue
                prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
                source = tokenizer(prompt, add_special_tokens=False)["input_ids"][-256:]
                target = tokenizer(message["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"][:64]
                if encoder_decoder:
                    start = model.config.decoder_start_token_id
                    logits = model(input_ids=torch.tensor([source]),
                                   decoder_input_ids=torch.tensor([[start, *target[:-1]]])).logits[0]
                else:
                    ids = torch.tensor([source + target])
                    logits = model(input_ids=ids).logits[0, len(source) - 1: -1]
                total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum"))
                count += len(target)
    return total / count


def test_every_layer_kept_reproduces_the_teacher_exactly(smollm2: tuple[object, object]) -> None:
    model, tokenizer = smollm2
    student = llama_student(model, list(range(model.config.num_hidden_layers))).eval()
    ids = tokenizer("<|im_start|>user\nWhat is a tree?<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(student(**ids).logits, model(**ids).logits)


def test_block_influence_drops_a_layer_that_does_nothing(tiny_teacher: Path,
                                                         conversations: list[list[dict[str, str]]]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    with torch.no_grad():  # layer 2 adds nothing to the residual stream: output = input
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    stats = measure_layers(model, tokenizer, conversations[:2], max_tokens=64)
    assert stats.influence[2] == pytest.approx(0.0, abs=1e-9)
    assert all(stats.influence[i] > 1e-4 for i in (0, 1, 3))
    assert 2 not in choose_layers(stats.influence, 3)
    assert choose_layers(stats.influence, 4) == [0, 1, 2, 3]


def test_smollm2_layer_selection(stats: object) -> None:
    influence = stats.influence
    assert len(influence) == 30 and all(0.0 <= x <= 2.0 for x in influence)
    # the first layer rewrites the embedding completely; it is always kept
    assert influence[0] == max(influence)
    keep = choose_layers(influence, 8)
    assert len(keep) == 8 and keep == sorted(keep) and 0 in keep
    assert min(influence[i] for i in keep) >= max(influence[i] for i in range(30) if i not in keep)
    with pytest.raises(ValueError, match="keep 1 to 30"):
        choose_layers(influence, 31)


def test_t5_construction_maps_the_teacher(smollm2: tuple[object, object], stats: object) -> None:
    """The pieces that can be exact are: embedding and head (through the scaled final norm), the
    pre-norms, and cross-attention keys read from a unit-gain encoder output."""
    from convdistill.models.from_teacher import t5gemma_config

    model, tokenizer = smollm2
    student = t5_student(model, stats, [0, 1], [0, 29], decoder_start_token_id=198, pad_token_id=0).eval()
    assert student.config.is_encoder_decoder
    assert t5gemma_config(model.config, 2, 2, 198, 0).decoder.query_pre_attn_scalar == 64
    ids = tokenizer("Hello there, how are you?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        embedded = model.model.embed_tokens(ids)
        decoder = student.model.decoder
        assert torch.allclose(decoder.embed_tokens(ids) * math.sqrt(576), embedded, atol=1e-6)
        assert torch.allclose(student.model.encoder.embed_tokens(ids) * math.sqrt(576), embedded, atol=1e-6)
        hidden = torch.randn(1, 5, 576) * 3
        assert torch.allclose(student.lm_head(decoder.norm(hidden)), model.lm_head(model.model.norm(hidden)),
                              rtol=1e-4, atol=1e-3)
        teacher_layer, layer = model.model.layers[29], decoder.layers[1]
        assert torch.allclose(layer.pre_self_attn_layernorm(hidden), teacher_layer.input_layernorm(hidden), atol=1e-5)
        assert torch.allclose(layer.pre_feedforward_layernorm(hidden),
                              teacher_layer.post_attention_layernorm(hidden), atol=1e-5)
        encoder_out = student.model.encoder.norm(hidden)
        assert torch.allclose(layer.cross_attn.k_proj(encoder_out),
                              teacher_layer.self_attn.k_proj(teacher_layer.input_layernorm(hidden)), atol=1e-4)


def test_t5gemma2_construction_maps_the_teacher(smollm2: tuple[object, object], stats: object) -> None:
    """T5Gemma2: one embedding table for encoder, decoder and head; no cross-attention weights
    (the decoder's merged attention is the teacher layer's own); the query/key norms' gains are
    the teacher's mean head RMS; no vision tower worth the name; Gemma 3's token ids replaced."""
    model, tokenizer = smollm2
    student = t5gemma2_student(model, stats, [0, 1], [0, 29], decoder_start_token_id=198, pad_token_id=0).eval()
    names = set(student.state_dict())
    assert not any("cross_attn" in n for n in names)
    encoder, decoder = student.model.encoder.text_model, student.model.decoder
    assert encoder.embed_tokens.weight is decoder.embed_tokens.weight is student.lm_head.out_proj.weight
    vision = sum(p.numel() for n, p in student.named_parameters() if "vision_tower" in n or "multi_modal" in n)
    assert vision < 50_000
    assert student.config.eoi_token_index >= model.config.vocab_size
    assert student.config.decoder.bos_token_id == 198 and student.config.decoder.vocab_size == 49152
    ids = tokenizer("Hello there, how are you?", return_tensors="pt")["input_ids"]
    teacher_layer, layer = model.model.layers[29], decoder.layers[1]
    with torch.no_grad():
        embedded = model.model.embed_tokens(ids)
        assert torch.allclose(encoder.embed_tokens(ids), embedded, atol=1e-5)  # scaled back by sqrt(576)
        hidden = torch.randn(1, 5, 576) * 3
        assert torch.allclose(student.lm_head(decoder.norm(hidden)), model.lm_head(model.model.norm(hidden)),
                              rtol=1e-4, atol=1e-3)
        assert torch.allclose(layer.pre_self_attn_layernorm(hidden), teacher_layer.input_layernorm(hidden), atol=1e-5)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert torch.equal(getattr(layer.self_attn, proj).weight, getattr(teacher_layer.self_attn, proj).weight)
        assert torch.equal(encoder.layers[1].mlp.down_proj.weight, model.model.layers[1].mlp.down_proj.weight)
        # a head vector comes out of the query norm at the teacher's mean query-head RMS
        query = torch.randn(3, 64)
        normed = layer.self_attn.q_norm(query)
        assert torch.allclose(normed.pow(2).mean(-1).sqrt(), torch.full((3,), stats.query_rms[29]), rtol=1e-3)
        assert torch.allclose(layer.self_attn.k_norm(query).pow(2).mean(-1).sqrt(),
                              torch.full((3,), stats.key_rms[29]), rtol=1e-3)
        mean_gain = (model.model.layers[0].input_layernorm.weight + teacher_layer.input_layernorm.weight) / 2
        assert torch.allclose(encoder.norm.weight + 1, mean_gain, atol=1e-6)


def test_t5_student_keeps_the_teachers_knowledge(smollm2: tuple[object, object], stats: object,
                                                 conversations: list[list[dict[str, str]]]) -> None:
    """Every layer in both stacks: far below a random student of the same shape on held-out
    replies, before any training (measured: teacher 2.1, this student 5.0, random ~10.9)."""
    model, tokenizer = smollm2
    heldout = conversations[30:33]
    every = list(range(30))
    student = t5_student(model, stats, every, every, decoder_start_token_id=198, pad_token_id=0).eval()
    built = heldout_nll(student, tokenizer, heldout, encoder_decoder=True)
    torch.manual_seed(0)
    random = type(student)(student.config).eval()
    control = heldout_nll(random, tokenizer, heldout, encoder_decoder=True)
    teacher = heldout_nll(model, tokenizer, heldout, encoder_decoder=False)
    assert teacher < built < control - 3.0, (teacher, built, control)


@pytest.mark.parametrize(("family", "architecture"), [("llama", None), ("t5", "t5gemma"), ("t5", "t5gemma2")])
def test_init_from_teacher_cli_and_a_short_run(family: str, architecture: str | None, tiny_teacher: Path,
                                               tmp_path: Path) -> None:
    """`models init --from` writes a checkpoint that the trainers, the eval runner and the
    server load like any other (a stock AutoModelForSeq2SeqLM for both T5 builds); a few SFT
    steps change it."""
    from convdistill.eval import LocalBackend
    from convdistill.trainers import train

    out = tmp_path / "student"
    sample = tmp_path / "paths.jsonl"
    from convdistill.conversation_trees import export_paths

    export_paths(SAMPLE, sample, strategy="best")
    args = ["models", "init", "--from", str(tiny_teacher), "--family", family, "--layers", "2",
            "--sample", str(sample), "--sample-size", "4", "-o", str(out)]
    if architecture:
        args += ["--architecture", architecture]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "convdistill.json").read_text())
    assert record["initialised"] == "teacher" and record["teacher_layers"] == 4
    assert len(record["block_influence"]) == 4
    kept = record["layers"] if family == "llama" else record["decoder_layers"]
    assert kept == choose_layers(record["block_influence"], 2)
    assert str(out) in done.stdout and "parameters" in done.stdout
    if architecture == "t5gemma2":
        from transformers import AutoModelForSeq2SeqLM

        assert record["architecture"] == "T5Gemma2ForConditionalGeneration"
        assert record["encoder_layers"] == [0, 1]  # the teacher's first layers
        assert type(AutoModelForSeq2SeqLM.from_pretrained(out)).__name__ == "T5Gemma2ForConditionalGeneration"

    recipe = {"model_name_or_path": str(out), "train_file": str(sample), "output_dir": str(tmp_path / "run"),
              "max_train_examples": 8, "max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
              "max_length": 128, "bf16": False, "save_strategy": "no", "logging_steps": 1, "report_to": "none",
              "gradient_checkpointing": False, "disable_tqdm": True,
              **({"max_target_length": 48} if family == "t5" else {})}
    result = train("sft", recipe)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    history = [{"role": "user", "content": "Name a colour."}]
    before = LocalBackend(out, batch_size=2, max_tokens=6).reference_nll([(history, "Blue.")])[0]
    after = LocalBackend(result.checkpoint, batch_size=2, max_tokens=6).reference_nll([(history, "Blue.")])[0]
    assert before != after
    reply = LocalBackend(result.checkpoint, batch_size=2, max_tokens=6).generate([history])[0]
    assert isinstance(reply, str)


def test_init_from_teacher_errors(tiny_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    bad = run_cli("models", "init", "--from", str(tiny_teacher), "--family", "llama", "--keep", "0,9", "-o", str(out))
    assert bad.returncode == 1 and "--keep: layers [9] do not exist" in bad.stderr and "Traceback" not in bad.stderr
    words = run_cli("models", "init", "--from", str(tiny_teacher), "--family", "llama", "--keep", "a,b", "-o", str(out))
    assert words.returncode == 1 and "expected layer numbers" in words.stderr
    missing = run_cli("models", "init", "--from", str(tiny_teacher), "--family", "llama", "-o", str(out))
    assert missing.returncode == 1 and "--layers N or --keep" in missing.stderr
    no_teacher = run_cli("models", "init", "--family", "llama", "--layers", "2", "-o", str(out))
    assert no_teacher.returncode == 1 and "need --from" in no_teacher.stderr
    decoder_only = run_cli("models", "init", "--from", str(tiny_teacher), "--family", "llama", "--layers", "2",
                           "--architecture", "t5gemma2", "-o", str(out))
    assert decoder_only.returncode == 1 and "use --family t5" in decoder_only.stderr
    assert not out.exists()


@pytest.mark.parametrize("recipe", ["smollm2-135m-sft", "smollm2-135m-lora-sft"])
def test_the_pretrained_student_trains_by_the_same_recipes(recipe: str, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct itself, fully and with LoRA: the reference the built students are
    compared with. Two real steps each; the saved checkpoint is plain (LoRA merged) and differs
    from the embedded model."""
    from convdistill.eval import LocalBackend
    from convdistill.models import resolve_model
    from convdistill.trainers import train

    result = train("sft", ROOT / "trainers" / f"{recipe}.yaml",
                   {"output_dir": str(tmp_path / "run"), "max_steps": 2, "max_train_examples": 4,
                    "per_device_train_batch_size": 2, "max_length": 128, "logging_steps": 1,
                    "save_strategy": "no", "disable_tqdm": True})
    assert [h["loss"] for h in result.log_history if "loss" in h]
    assert not (Path(result.checkpoint) / "adapter_config.json").exists()  # merged, loads as it is
    pair = [([{"role": "user", "content": "Name a colour."}], "Blue.")]
    before = LocalBackend(resolve_model("smollm2-135m-instruct")).reference_nll(pair)[0]
    after = LocalBackend(result.checkpoint).reference_nll(pair)[0]
    assert after != before
