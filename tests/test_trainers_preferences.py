"""`train dpo` on preference data as people hold it: TRL's format (conversational or plain,
explicit or implicit prompt), JSON lines or the Hub's parquet, as ultrafeedback_binarized ships it.

The fixtures in tests/fixtures/preferences were written for this project from TRL's dataset-format
documentation and the columns of the Hub's preference datasets, not copied. The DPO runs use TRL's
real DPOTrainer on the project's tiny random students, both families.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, write_jsonl
from convdistill.conversation_trees.exports import export_pairs
from convdistill.conversation_trees.preferences import read_preferences
from convdistill.errors import BadInput
from convdistill.trainers import train
from convdistill.trainers.data import file_kind, load_pairs
from convdistill.trainers.family import DECODER_ONLY, ENCODER_DECODER
from convdistill.trainers.loading import load_tokenizer
from convdistill.trainers.steps import pair_examples

FIXTURES = ROOT / "tests" / "fixtures" / "preferences"
CONVERSATIONAL = FIXTURES / "trl_conversational.jsonl"
PLAIN = FIXTURES / "trl_plain.jsonl"
ULTRAFEEDBACK = FIXTURES / "ultrafeedback_rows.jsonl"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def sides(record: dict[str, Any]) -> tuple:
    return record["prompt"], record["chosen"], record["rejected"]


@pytest.fixture(scope="module")
def ultrafeedback_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ultrafeedback-like rows in the Hub's layout: data/<split>-00000-of-00001.parquet."""
    data = tmp_path_factory.mktemp("ultrafeedback") / "data"
    data.mkdir()
    rows = [orjson.loads(line) for line in ULTRAFEEDBACK.read_bytes().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), data / "train_prefs-00000-of-00001.parquet")
    return data


def test_conversational_records_explicit_and_implicit_prompts():
    rejects = []
    records, report = read_preferences(CONVERSATIONAL, on_reject=rejects.append)
    assert (report.records_read, report.records_kept, report.records_rejected) == (9, 3, 6) and report.balanced
    prompt, chosen, _ = sides(records[0])  # explicit: the whole multi-turn prompt as given
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert chosen == [assistant("About two million in the city itself.")]
    # implicit (trl-lib/ultrafeedback_binarized): the shared question becomes the prompt
    assert sides(records[1]) == ([user("Name a colour of the sky.")], [assistant("Blue.")], [assistant("Seven.")])
    assert records[1]["score_chosen"] == 8.0  # the record's other fields ride along
    assert [(r.line, r.kind) for r in rejects] == [(4, "schema"), (5, "schema"), (6, "schema"), (7, "schema"),
                                                   (8, "schema"), (9, "malformed_json")]
    assert [r.reason.split(":")[0] for r in rejects[:4]] == ["rejected", "prompt", "chosen[0].role", "chosen, rejected"]
    assert all(r.file == str(CONVERSATIONAL) for r in rejects)


def test_plain_records_become_one_user_turn_and_one_reply():
    rejects = []
    records, report = read_preferences(PLAIN, on_reject=rejects.append)
    assert (report.records_read, report.records_kept, report.records_rejected) == (3, 2, 1)
    assert sides(records[0]) == ([user("The sky is")], [assistant(" blue.")], [assistant(" green.")])
    # implicit plain prompt: the shared start, the space before the difference going with the replies
    assert sides(records[1]) == ([user("Water boils at")], [assistant(" 100 degrees Celsius.")],
                                 [assistant(" 50 degrees Celsius.")])
    assert rejects[0].line == 3 and "both conversations or both strings" in rejects[0].reason


def test_ultrafeedback_layout_jsonl_and_parquet_read_alike(ultrafeedback_parquet: Path):
    # prompt is a string beside conversational completions: TRL takes the prompt from them.
    from_lines, _ = read_preferences(ULTRAFEEDBACK)
    from_parquet, parquet_report = read_preferences(ultrafeedback_parquet)
    assert [sides(r) for r in from_lines] == [sides(r) for r in from_parquet]
    assert sides(from_lines[0]) == ([user("Which planet is closest to the Sun?")], [assistant("Mercury.")],
                                    [assistant("Jupiter.")])
    assert (parquet_report.records_read, parquet_report.records_kept, parquet_report.records_rejected) == (4, 3, 1)
    assert file_kind(ultrafeedback_parquet) == "pairs" and file_kind(ULTRAFEEDBACK) == "pairs"  # not `messages`


def test_our_own_pair_records_read_unchanged(tmp_path: Path, sample_path: Path):
    out = tmp_path / "pairs.jsonl"
    export_pairs(sample_path, out)
    ours = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    records, report = read_preferences(out)
    assert report.records_rejected == 0 and records == ours


def test_same_fitting_and_counting_as_our_pairs(tmp_path: Path):
    """A TRL record and the same pair written as ours give the same tokens and the same counts,
    truncation included."""
    from convdistill.models import init_student

    long_history = [user("Tell me about rivers. " * 6), assistant("Rivers flow to the sea. " * 6)]
    question = [user("Which is the longest?")]
    trl = [{"chosen": [*long_history, *question, assistant("The Nile, by most measures.")],
            "rejected": [*long_history, *question, assistant("A short one.")]}]
    ours = [{"prompt": [*long_history, *question], "chosen": [assistant("The Nile, by most measures.")],
             "rejected": [assistant("A short one.")]}]
    trl_records, _ = read_preferences(write_jsonl(tmp_path / "trl.jsonl", trl))
    for family, kind in (("llama", DECODER_ONLY), ("t5", ENCODER_DECODER)):
        student = init_student(family, "tiny", tmp_path / family).path
        tokenizer = load_tokenizer(student, kind)
        got, got_stats = pair_examples(trl_records, tokenizer, kind, 48, None)
        want, want_stats = pair_examples(ours, tokenizer, kind, 48, None)
        assert got == want and got_stats.as_dict() == want_stats.as_dict()
        assert got_stats.truncated == 1  # the long history did not fit: the oldest exchange went


def test_a_file_with_no_usable_pair_is_one_clear_error(tmp_path: Path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"chosen": "same", "rejected": "same"}])
    with pytest.raises(BadInput, match=r"bad\.jsonl: no usable pair records .*rejected 1"):
        load_pairs(bad, tmp_path)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_dpo_trains_on_a_hub_preference_dataset(tmp_path: Path, ultrafeedback_parquet: Path, family: str):
    import torch

    from convdistill.models import init_student

    torch.set_num_threads(1)
    student = init_student(family, "tiny", tmp_path / "student").path
    out = tmp_path / "out"
    result = train("dpo", {
        "model_name_or_path": str(student), "train_file": str(ultrafeedback_parquet), "output_dir": str(out),
        "bf16": False, "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1,
        "save_strategy": "no", "per_device_train_batch_size": 3, "max_length": 64, "learning_rate": 1e-3,
        "dataloader_pin_memory": False, "disable_tqdm": True, "max_steps": 2, "beta": 0.1,
    })
    margins = [entry["rewards/margins"] for entry in result.log_history if "rewards/margins" in entry]
    assert len(margins) == 2 and margins[0] == pytest.approx(0.0, abs=1e-3)  # policy == reference at first
    data = json.loads((out / "run_log.json").read_text())["data"]["train"]
    # 4 rows read: 3 pairs trained, the row whose two replies are the same counted as dropped at read
    assert (data["records"], data["examples"], data["dropped"]) == (4, 3, 1)
    assert data["drop_reasons"] == {"rejected at read: schema": 1}
    assert (out / "config.json").is_file()
