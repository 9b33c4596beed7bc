"""Trainers: loss masks, truncation, and real TRL runs on tiny students (both families)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, run_cli, write_jsonl
from convdistill.trainers import TruncationStats, load_recipe, train
from convdistill.trainers.data import train_flags
from convdistill.trainers.family import DECODER_ONLY, ENCODER_DECODER
from convdistill.trainers.loading import load_tokenizer
from convdistill.trainers.recipe import RecipeError
from convdistill.trainers.tokenize import IGNORE, seq2seq_examples, tokenize_path

REPLIES = ["Paris is the capital.", "About two million people.", "The Eiffel Tower, mostly."]
QUESTIONS = ["What is the capital of France?", "How many live there?", "What do tourists see?"]
EOT = "<|im_end|>"


def three_exchanges(system: bool = True) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Answer briefly."}] if system else []
    for question, reply in zip(QUESTIONS, REPLIES, strict=True):
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": reply}]
    synthetic = [False] * len(messages)
    synthetic[-3] = True  # the second reply was written by a teacher
    return {"messages": messages, "synthetic": synthetic, "tree_id": "t"}


EXPECTED = {  # which replies each option trains
    "all": REPLIES,
    "last": REPLIES[2:],
    "teacher": REPLIES[1:2],
    "human": [REPLIES[0], REPLIES[2]],
}


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from convdistill.models import init_student

    root = tmp_path_factory.mktemp("students")
    return {family: init_student(family, "tiny", root / family).path
            for family in ("llama", "t5")}


@pytest.fixture(scope="module")
def tokenizers(students: dict[str, Path]) -> dict[str, Any]:
    return {family: load_tokenizer(path, ENCODER_DECODER if family == "t5" else DECODER_ONLY)
            for family, path in students.items()}


def loss_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Contiguous runs of loss-carrying tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE
    return runs


# -- masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_on", list(EXPECTED))
def test_decoder_only_mask_is_exactly_the_selected_replies(tokenizers: dict, train_on: str):
    tok = tokenizers["llama"]
    record = three_exchanges()
    stats = TruncationStats()
    example = tokenize_path(record["messages"], train_flags(record, train_on), tok, None, stats)
    assert example is not None
    decoded = [tok.decode(run) for run in loss_runs(example["input_ids"], example["labels"])]
    assert decoded == [reply + EOT for reply in EXPECTED[train_on]]
    assert stats.dropped == 0 and stats.truncated == 0
    assert stats.trained_fraction == 1.0


@pytest.mark.parametrize("train_on", list(EXPECTED))
def test_encoder_decoder_targets_are_exactly_the_selected_replies(tokenizers: dict,
                                                                   train_on: str):
    tok = tokenizers["t5"]
    record = three_exchanges()
    stats = TruncationStats()
    examples = seq2seq_examples(record["messages"], train_flags(record, train_on), tok, None,
                                None, stats)
    assert [tok.decode(e["labels"]) for e in examples] == [r + EOT for r in EXPECTED[train_on]]
    for example, reply in zip(examples, EXPECTED[train_on], strict=True):
        source = tok.decode(example["input_ids"])
        index = REPLIES.index(reply)
        assert source.endswith(f"{QUESTIONS[index]}{EOT}\n<|im_start|>assistant\n")
        assert reply not in source  # the reply is the target, never in the encoder input


def test_record_train_flags_win_and_non_assistant_flags_are_ignored():
    record = three_exchanges()
    record["train"] = [True, True, False, False, False, False, True]
    assert train_flags(record, "all") == [False, False, False, False, False, False, True]
    record["train"] = [True]
    with pytest.raises(ValueError, match="1 flags for 7 messages"):
        train_flags(record, "all")


def test_path_without_selected_turn_is_dropped_and_counted(tokenizers: dict):
    record = three_exchanges()
    record["synthetic"] = [False] * 7
    stats = TruncationStats()
    flags = train_flags(record, "teacher")
    assert tokenize_path(record["messages"], flags, tokenizers["llama"], None, stats) is None
    assert stats.dropped == 1 and stats.drop_reasons == {"no turn selected for training": 1}


# -- truncation --------------------------------------------------------------------------------


def test_long_path_drops_oldest_turns_keeps_system_and_trains_last_reply(tokenizers: dict):
    tok = tokenizers["llama"]
    record = three_exchanges()
    full = tokenize_path(record["messages"], train_flags(record, "all"), tok, None,
                         TruncationStats())
    assert full is not None
    limit = len(full["input_ids"]) - 10  # too long by a little: the first exchange must go
    stats = TruncationStats()
    example = tokenize_path(record["messages"], train_flags(record, "all"), tok, limit, stats)
    assert example is not None and len(example["input_ids"]) <= limit
    text = tok.decode(example["input_ids"])
    assert text.startswith("<|im_start|>system\nAnswer briefly.")
    assert QUESTIONS[0] not in text and QUESTIONS[1] in text
    decoded = [tok.decode(r) for r in loss_runs(example["input_ids"], example["labels"])]
    assert decoded == [r + EOT for r in REPLIES[1:]]
    assert (stats.truncated, stats.turns_dropped, stats.context_cut, stats.reply_cut) == (
        1, 2, 0, 0)
    assert 0 < stats.trained_fraction < 1


def test_last_exchange_too_long_cuts_context_tokens_not_the_reply(tokenizers: dict):
    tok = tokenizers["llama"]
    record = three_exchanges()
    record["messages"][-2]["content"] = "Tell me more. " * 40
    stats = TruncationStats()
    example = tokenize_path(record["messages"], train_flags(record, "last"), tok, 48, stats)
    assert example is not None and len(example["input_ids"]) <= 48
    decoded = [tok.decode(r) for r in loss_runs(example["input_ids"], example["labels"])]
    assert decoded == [REPLIES[2] + EOT]
    assert stats.context_cut == 1 and stats.reply_cut == 0


def test_encoder_decoder_source_drops_oldest_turns_and_keeps_reply(tokenizers: dict):
    tok = tokenizers["t5"]
    record = three_exchanges()
    stats = TruncationStats()
    untruncated = seq2seq_examples(record["messages"], train_flags(record, "last"), tok, None,
                                   None, TruncationStats())[0]
    limit = len(untruncated["input_ids"]) - 5
    example = seq2seq_examples(record["messages"], train_flags(record, "last"), tok, limit, None,
                               stats)[0]
    source = tok.decode(example["input_ids"])
    assert len(example["input_ids"]) <= limit
    assert source.startswith("<|im_start|>system\nAnswer briefly.")
    assert QUESTIONS[0] not in source and QUESTIONS[2] in source
    assert tok.decode(example["labels"]) == REPLIES[2] + EOT
    assert stats.truncated == 1 and stats.turns_dropped == 2


# -- training runs -----------------------------------------------------------------------------


def paths_file(tmp_path: Path, n: int = 4) -> Path:
    records = []
    for i in range(n):
        record = three_exchanges(system=False)
        record["messages"][1]["content"] = f"Reply number {i}: {REPLIES[0]}"
        records.append(record)
    return write_jsonl(tmp_path / "paths.jsonl", records)


def pairs_file(tmp_path: Path, n: int = 4) -> Path:
    records = []
    for i in range(n):
        prompt = three_exchanges(system=False)["messages"][:3]
        prompt[0]["content"] = f"Question {i}: {QUESTIONS[0]}"
        records.append({"prompt": prompt,
                        "chosen": [{"role": "assistant", "content": REPLIES[1]}],
                        "rejected": [{"role": "assistant", "content": "I do not know, sorry."}]})
    return write_jsonl(tmp_path / "pairs.jsonl", records)


def recipe(model: Path | str, data: Path, out: Path, **fields: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model), "train_file": str(data), "output_dir": str(out),
        "bf16": False, "gradient_checkpointing": False, "report_to": "none",
        "logging_steps": 1, "save_strategy": "no", "per_device_train_batch_size": 4,
        "max_length": 96, "learning_rate": 3e-3, "lr_scheduler_type": "constant",
        "dataloader_pin_memory": False, "disable_tqdm": True, **fields,
    }


def losses(result: Any, key: str = "loss") -> list[float]:
    return [entry[key] for entry in result.log_history if key in entry]


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_sft_overfits_a_handful_of_paths(students: dict, tmp_path: Path, family: str):
    result = train("sft", recipe(students[family], paths_file(tmp_path), tmp_path / "out",
                                 max_steps=25))
    curve = losses(result)
    assert len(curve) == 25
    assert curve[-1] <= curve[0] / 2, curve
    run_log = json.loads((tmp_path / "out" / "run_log.json").read_text())
    assert run_log["data"]["train"]["trained_fraction"] == 1.0
    assert run_log["data"]["train"]["truncated"] == 0
    # serve loads the checkpoint as it is
    from convdistill.serve.chat_model import ChatModel

    chat = ChatModel(result.checkpoint)
    assert chat.is_encoder_decoder == (family == "t5")
    assert chat.prompt_ids([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_bf16_precision_trains_under_autocast_within_noise_of_fp32(students: dict, tmp_path: Path, family: str):
    """precision bf16 on a CPU: the matrix products run in bf16 (an output layer's activations
    say so), the weights and the saved checkpoint stay fp32, and the loss curve and the trained
    model's reference NLL stay close to an fp32 run of the same recipe. (This CPU may have no
    bf16 units: bf16 is then emulated, slower but the same numbers.)"""
    import torch
    from transformers import TrainerCallback

    from convdistill.eval import LocalBackend

    seen: list[torch.dtype] = []

    class LinearOutputDtype(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))

    data = paths_file(tmp_path)
    fields = recipe(students[family], data, tmp_path / "bf16", max_steps=6)
    del fields["bf16"]
    bf16 = train("sft", {**fields, "precision": "bf16"}, callbacks=[LinearOutputDtype()])
    fp32 = train("sft", recipe(students[family], data, tmp_path / "fp32", max_steps=6))
    assert seen and set(seen) == {torch.bfloat16}
    curves = losses(bf16), losses(fp32)
    assert curves[0][-1] < curves[0][0]
    assert curves[0] == pytest.approx(curves[1], rel=0.05), curves  # bf16's 8-bit mantissa: within a few %
    backend = LocalBackend(bf16.checkpoint, precision="bf16")
    assert next(backend.chat.model.parameters()).dtype == torch.float32
    pairs = [([{"role": "user", "content": QUESTIONS[0]}], REPLIES[0])]
    assert backend.reference_nll(pairs) == pytest.approx(
        LocalBackend(bf16.checkpoint, precision="fp32").reference_nll(pairs), rel=0.02)
    assert backend.generate([pairs[0][0]])  # greedy generation runs under autocast too


def test_token_budget_sampler_covers_every_example_once_within_the_budget():
    from convdistill.trainers.batching import TokenBudgetSampler

    lengths = [12, 300, 40, 41, 39, 120, 8, 500, 64, 66, 9, 10, 700]
    sampler = TokenBudgetSampler(lengths, batch_tokens=256, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        epochs.append(batches)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each once
        for batch in batches:  # within the budget, or one example longer than it alone
            assert len(batch) * max(lengths[i] for i in batch) <= 256 or len(batch) == 1
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])  # same batches, new order
    ranks = [list(TokenBudgetSampler(lengths, 256, seed=3, world=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_a_second_run_reads_the_tokenized_data_back_instead_of_tokenizing(students: dict, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture):
    shared = tmp_path / "tokenized"
    data = paths_file(tmp_path)
    runs = [train("sft", recipe(students["llama"], data, tmp_path / f"run{i}", max_steps=3, data_cache_dir=str(shared),
                                **extra)) for i, extra in enumerate(({}, {}, {"max_length": 64}))]
    err = capsys.readouterr().err
    assert err.count("tokenized data saved") == 2 and err.count("tokenized examples reused") == 1
    assert len(list(shared.iterdir())) == 2  # max_length 64 is another key
    first, second, _ = runs
    assert losses(first) == losses(second)  # the same examples, the same steps
    assert first.data["train"].as_dict() == second.data["train"].as_dict()  # counts come back with them
    off = train("sft", recipe(students["llama"], data, tmp_path / "off", max_steps=1, data_cache=False))
    assert not (tmp_path / "off" / "data" / "tokenized").exists() and off.global_step == 1


def test_batch_tokens_is_refused_where_it_cannot_apply():
    base = {"model_name_or_path": "student:llama-tiny", "train_file": "x.jsonl", "output_dir": "unused"}
    for method, extra, message in (("sft", {"packing": True}, "not both"), ("dpo", {}, "sft and off-policy"),
                                   ("distill", {"teacher": "t", "distill_mode": "on_policy"}, "sft and off-policy"),
                                   ("sft", {"batch_tokens": 4}, "at least 8")):
        with pytest.raises(RecipeError, match=message):
            load_recipe(method, {**base, "batch_tokens": 512, **extra})


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_token_budget_batches_give_the_same_loss_on_the_same_tokens(students: dict, tmp_path: Path, family: str):
    """An epoch of token-budget batches and an epoch of plain batches score the same examples:
    their label-weighted losses agree (the model held fixed), with fewer padded positions; a
    real run with batch_tokens takes one step per budget batch."""
    import torch
    from datasets import Dataset

    from convdistill.trainers.batching import TokenBudgetSampler
    from convdistill.trainers.loading import load_model

    fam = ENCODER_DECODER if family == "t5" else DECODER_ONLY
    tokenizer = load_tokenizer(students[family], fam)
    records = []
    for i in (0, 5, 1, 4, 0, 2, 3, 1):  # replies of very different lengths, in no order
        record = three_exchanges(system=False)
        record["messages"][1]["content"] = " ".join([REPLIES[0]] * (1 + 3 * i))
        records.append(record)
    data = write_jsonl(tmp_path / "paths.jsonl", records)
    examples = [e for r in records for e in fam.sft_examples(r["messages"], train_flags(r, "all"), tokenizer,
                                                             96, 48, TruncationStats())]
    config = load_recipe("sft", recipe(students[family], data, tmp_path / "fixed", max_steps=1))[2]
    model = load_model(students[family], fam).eval()
    trainer = fam.sft_trainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                              processing_class=tokenizer, batch_tokens=160)
    budget = trainer._get_train_sampler()
    assert isinstance(budget, TokenBudgetSampler)
    plain = [list(range(i, min(i + 4, len(examples)))) for i in range(0, len(examples), 4)]

    def epoch(batches: list[list[int]]) -> tuple[float, int, int]:
        total, labels, cells = 0.0, 0, 0
        for batch in batches:
            inputs = trainer.data_collator([examples[i] for i in batch])
            count = int((inputs["labels"] != IGNORE).sum())
            cells += inputs["input_ids"].numel() + (inputs["labels"].numel() if family == "t5" else 0)
            with torch.no_grad():
                total += float(trainer.compute_loss(model, dict(inputs))) * count
            labels += count
        return total / labels, labels, cells

    budget_loss, budget_labels, budget_cells = epoch(list(budget))
    plain_loss, plain_labels, plain_cells = epoch(plain)
    assert budget_labels == plain_labels and budget_loss == pytest.approx(plain_loss, rel=1e-5)
    assert budget_cells < plain_cells
    result = train("sft", recipe(students[family], data, tmp_path / "run", batch_tokens=160, num_train_epochs=1,
                                 max_steps=-1))
    sampler = result.trainer._get_train_sampler()
    assert isinstance(sampler, TokenBudgetSampler) and result.global_step == len(sampler)
    assert losses(result)[-1] < losses(result)[0]


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_dpo_reward_margins_rise(students: dict, tmp_path: Path, family: str):
    result = train("dpo", recipe(students[family], pairs_file(tmp_path), tmp_path / "out",
                                 max_steps=8, learning_rate=1e-3, beta=0.1))
    margins = losses(result, "rewards/margins")
    assert len(margins) == 8
    assert margins[0] == pytest.approx(0.0, abs=1e-3)  # policy == reference at the start
    assert min(margins[-3:]) > 0.5, margins
    assert (tmp_path / "out" / "config.json").is_file()


def test_packing_does_not_mix_sequences(students: dict, tmp_path: Path):
    """bfd_split packing with padding-free attention gives the same first-step loss as padded
    batches: packed sequences do not attend to each other."""
    data = paths_file(tmp_path)
    first = {}
    for packing in (False, True):
        result = train("sft", recipe(students["llama"], data, tmp_path / f"out{packing}",
                                     max_steps=1, packing=packing, packing_strategy="bfd_split",
                                     max_length=256, per_device_train_batch_size=4))
        first[packing] = losses(result)[0]
    assert first[True] == pytest.approx(first[False], rel=1e-4)


def test_lora_sft_saves_merged_weights(students: dict, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    result = train("sft", recipe(students["llama"], paths_file(tmp_path), tmp_path / "out",
                                 max_steps=2, use_peft=True, lora_r=4, lora_alpha=8))
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.checkpoint)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_lora_dpo_encoder_decoder_uses_disabled_adapter_as_reference(students: dict,
                                                                       tmp_path: Path):
    result = train("dpo", recipe(students["t5"], pairs_file(tmp_path), tmp_path / "out",
                                 max_steps=2, use_peft=True, lora_r=4, lora_alpha=8))
    assert result.trainer.ref_model is None
    assert losses(result, "rewards/margins")[0] == pytest.approx(0.0, abs=1e-4)


def test_qlora_sft_runs_on_cpu(students: dict, tmp_path: Path):
    pytest.importorskip("bitsandbytes")
    result = train("sft", recipe(students["llama"], paths_file(tmp_path), tmp_path / "out",
                                 max_steps=2, use_peft=True, load_in_4bit=True, lora_r=4,
                                 lora_alpha=8))
    assert result.global_step == 2
    assert json.loads((tmp_path / "out" / "convdistill.json").read_text())["saved"] == "merged"


def test_resume_continues_from_the_saved_step(students: dict, tmp_path: Path):
    data = paths_file(tmp_path)
    fields = dict(max_steps=4, save_strategy="steps", save_steps=2)
    first = train("sft", recipe(students["llama"], data, tmp_path / "out", **fields))
    checkpoint = tmp_path / "out" / "checkpoint-2"
    # Mark the saved state: a run that silently started over would not carry the mark.
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][-1]["saved_before_resume"] = True
    state_file.write_text(json.dumps(state))
    resumed = train("sft", recipe(students["llama"], data, tmp_path / "out", **fields,
                                  resume_from_checkpoint=str(checkpoint)))
    assert resumed.global_step == 4
    # Steps 1-2 come from the checkpoint's state; steps 3-4 are trained again from the saved
    # weights, optimizer, scheduler and data position, so they repeat the first run's losses.
    steps = {entry["step"]: entry["loss"] for entry in resumed.log_history if "loss" in entry}
    expected = {entry["step"]: entry["loss"] for entry in first.log_history if "loss" in entry}
    assert sorted(steps) == [1, 2, 3, 4]
    assert steps[3] == pytest.approx(expected[3], rel=1e-4)
    assert steps[4] == pytest.approx(expected[4], rel=1e-4)
    assert steps[4] < steps[1]
    assert any(entry.get("saved_before_resume") for entry in resumed.log_history)


# -- recipes and CLI ---------------------------------------------------------------------------


def test_recipe_errors_name_the_field():
    base = {"model_name_or_path": "x", "train_file": "y"}
    with pytest.raises(RecipeError, match="'lerning_rate' \\(did you mean 'learning_rate'"):
        load_recipe("sft", {**base, "lerning_rate": 1})
    with pytest.raises(RecipeError, match="'max_steps': cannot read 'many'"):
        load_recipe("sft", {**base}, ["--max_steps", "many"])
    with pytest.raises(RecipeError, match="'train_on': 'bots' is not one of"):
        load_recipe("dpo", {**base, "train_on": "bots"})
    with pytest.raises(RecipeError, match="'beta'"):
        load_recipe("sft", {**base, "beta": 0.1})  # a DPO field in an SFT recipe
    data, _, args = load_recipe("sft", {**base, "learning_rate": "1e-4"}, ["--max-length=64"])
    assert args.learning_rate == 1e-4 and args.max_length == 64 and data.train_on == "all"


def test_shipped_recipes_load():
    found = sorted((ROOT / "trainers").glob("*.yaml"))
    assert len(found) >= 8
    for path in found:
        method = next((m for m in ("dpo", "distill") if m in path.stem), "sft")
        # GPU recipes ask for bf16, which a CPU-only machine refuses at load time.
        gpu = "bf16: true" in path.read_text()
        parsed = load_recipe(method, path, ["--bf16", "false"] if gpu else [])
        assert parsed[2].output_dir.startswith("runs/"), path
        assert len(parsed) == 3


def test_cli_bad_recipe_is_one_clear_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: student:llama-tiny\ntrain_file: x.jsonl\nlr: 1\n")
    done = run_cli("train", "sft", "--config", str(bad))
    assert done.returncode == 1
    assert "unknown field 'lr'" in done.stderr and "Traceback" not in done.stderr
