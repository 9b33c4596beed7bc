"""The multi-turn vs single-turn experiment: its data transforms, the recall generator, and the
whole pipeline run for real at a tiny scale (teacher, both families, SFT and distillation,
eval, tables, plots, the generated doc block, resume)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_cli, write_jsonl
from convdistill.eval import load_suite, run_checks
from convdistill.eval.generator import FACTS, TRAIN_VALUES, case_messages, generate_recall_suite, recall_case
from convdistill.experiments.regimes import (
    check_disjoint,
    conversations,
    single_turn,
    synthetic_paths,
    turn_records,
)


def test_recall_cases_put_the_question_exactly_distance_turns_after_the_fact(tmp_path: Path) -> None:
    cases = generate_recall_suite(3, (1, 6), seed=4)
    assert cases == generate_recall_suite(3, (1, 6), seed=4) and len(cases) == 18
    for case in cases:
        distance = int(next(t for t in case["tags"] if t.startswith("distance-")).removeprefix("distance-"))
        value = case["turns"][-1]["checks"]["recall_of"][0]
        stated = next(i for i, t in enumerate(case["turns"]) if value in t["user"])
        assert len(case["turns"]) - 1 - stated == distance
        assert all(t.get("reference") for t in case["turns"])  # gold history is one wave
    suite = load_suite(write_jsonl(tmp_path / "recall.jsonl", cases))  # recall_of facts given earlier
    last = suite.cases[0].turns[-1]
    assert run_checks(last.checks, f"{last.checks.recall_of[0]}.")[0].passed
    with pytest.raises(ValueError, match="distance"):
        recall_case(0, 0, random.Random(0))


def test_training_values_never_meet_the_eval_values() -> None:
    eval_values = {v.casefold() for *_, values in FACTS for v in values}
    train_values = {v.casefold() for values in TRAIN_VALUES.values() for v in values}
    assert not eval_values & train_values  # across slots too: a pet and a colour may share a word
    assert not any(e in t or t in e for e in eval_values for t in train_values)
    case = recall_case(0, 4, random.Random(1), lead=1, value_set="train", ask_all=True)
    asked = [t["checks"]["recall_of"][0] for t in case["turns"] if "recall_of" in t["checks"]]
    stated = [t["reference"].removeprefix("Noted, I'll remember ").rstrip(".") for t in case["turns"]
              if t["reference"].startswith("Noted")]
    assert sorted(asked) == sorted(stated) and all(v in {x for vs in TRAIN_VALUES.values() for x in vs} for v in asked)
    messages = case_messages(case)
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(case["turns"])


def test_turn_records_give_one_reply_each_and_single_turn_drops_only_the_history() -> None:
    system = {"role": "system", "content": "Be brief."}
    turns = [{"role": r, "content": f"{r} {i}"} for i in range(3) for r in ("user", "assistant")]
    paths = [
        {"messages": [system, *turns], "tree_id": "t", "message_ids": ["s", "u0", "a0", "u1", "a1", "u2", "a2"]},
        # a sibling path sharing the first exchange: that turn is kept once
        {"messages": [system, *turns[:2], {"role": "user", "content": "other"},
                      {"role": "assistant", "content": "other reply " + "word " * 50}],
         "tree_id": "t", "message_ids": ["s", "u0", "a0", "u9", "a9"]},
    ]
    records = turn_records(paths, "sample", max_reply_words=10)
    assert [len(r["messages"]) for r in records] == [3, 5, 7, 5]
    for record in records:
        assert record["train"] == [False] * (len(record["messages"]) - 1) + [True]
    assert len(records[-1]["messages"][-1]["content"].split()) == 10  # long replies cut
    single = [single_turn(r) for r in records]
    assert [m["content"] for m in single[2]["messages"]] == ["Be brief.", "user 2", "assistant 2"]
    assert [s["messages"][-1] for s in single] == [r["messages"][-1] for r in records]  # same replies
    assert single[1]["train"] == [False, False, True]
    # regimes e and f: the same replies, one record per conversation, every assistant turn trained
    whole = conversations([*paths, paths[0]], "sample", max_reply_words=10)  # a repeated path adds nothing
    assert [len(r["messages"]) for r in whole] == [7, 5] and all("train" not in r for r in whole)
    replies = {m["content"] for r in whole for m in r["messages"] if m["role"] == "assistant"}
    assert replies == {r["messages"][-1]["content"] for r in records}


def test_disjointness_is_checked() -> None:
    train = synthetic_paths(20, seed=3, distances=(1, 4), max_lead=1, value_set="train")
    seen = generate_recall_suite(2, (1, 3), seed=9, value_set="train")
    unseen = generate_recall_suite(2, (1, 3), seed=9, value_set="eval")
    counts = check_disjoint(train, {"seen": seen, "unseen": unseen}, unseen=("unseen",))
    assert counts["cases"] == 12 and counts["unseen_values"] > 0
    leak = {"messages": [{"role": "user", "content": u["user"]} for u in seen[0]["turns"]]}
    with pytest.raises(ValueError, match="occurs in the training data"):
        check_disjoint([*train, leak], {"seen": seen})
    with pytest.raises(ValueError, match="unseen-fact suites"):
        check_disjoint(train, {"seen": seen}, unseen=("seen",))  # seen values are training values


def test_the_pipeline_runs_for_real_at_a_tiny_scale(tmp_path: Path) -> None:
    from convdistill.experiments import multiturn

    settings = replace(multiturn.QUICK, seeds=(0,), regimes=("a", "d"), self_history=True)
    lines: list[str] = []
    doc = tmp_path / "experiments.md"
    doc.write_text("# Experiments\n\nWritten by people, kept.\n")
    outcome = multiturn.run(tmp_path / "run", settings, jobs=1, doc=doc, command="test", log=lines.append)
    results = outcome.results
    for name in ("summary.json", "tables.md", "recall_by_distance.png", "real_by_depth.png", "first_turn.png"):
        assert (results / name).is_file(), name
    assert (results / "recall_by_distance.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((results / "summary.json").read_text())
    assert sorted(u["unit"] for u in summary["units"]) == ["llama-a-s0", "llama-d-s0", "smollm2-lora-a-s0",
                                                           "smollm2-lora-d-s0", "t5-a-s0", "t5-d-s0"]
    for unit in summary["units"]:
        assert unit["train"]["steps"] == settings.max_steps and unit["train"]["trained_tokens"] > 0
        assert set(unit["recall_seen"]["accuracy_by_distance"]) == {"1", "2"}
        assert set(unit["recall_seen"]["choice_by_distance"]) == {"1", "2"}
        assert unit["real"]["first_turn"]["nll"] > 0 and unit["heldout_first_turn_nll"] > 0
        assert set(unit["recall_unseen"]["accuracy_by_distance"]) == {"1", "2"}
        # on the model's own history too (self_history)
        assert set(unit["recall_unseen_self"]["accuracy_by_distance"]) == {"1", "2"}
        assert unit["real_self"]["cases"] == len(settings.real_suites) * settings.real_cases
    assert {u["method"] for u in summary["units"] if u["regime"] == "d"} == {"distill"}
    counts = summary["data"]["counts"]
    assert counts["records"]["a"] == counts["records"]["b"] and counts["teacher_written_replies"] > 0
    assert summary["data"]["teacher_recall"]["cases"] == 2
    # regime d distils from the teacher corrected on its own records, whose recall is reported too
    corrected = summary["data"]["corrected_teacher"]
    assert corrected["steps"] == settings.correct_teacher_steps
    assert summary["data"]["corrected_teacher_recall"]["cases"] == 2
    assert {u["teacher"] for u in summary["units"] if u["regime"] == "d"} == {corrected["checkpoint"]}
    record = json.loads((Path(corrected["checkpoint"]) / "convdistill.json").read_text())
    assert record["corrected_teacher"]["steps"] == settings.correct_teacher_steps
    built_folder, = (tmp_path / "run" / "work" / "students").glob(f"llama-2-{settings.llama_mlp_channels}-*")
    students = json.loads((built_folder / "convdistill.json").read_text())
    assert students["initialised"] == "teacher" and len(students["layers"]) == 2
    assert students["width"]["mlp_channels"] == settings.llama_mlp_channels
    built = summary["data"]["students"]
    assert built["llama"]["mlp_channels"] == settings.llama_mlp_channels and built["t5"]["encoder_layers"]
    unseen = tmp_path / "run" / "work" / "data" / "recall_unseen.jsonl"
    held = [json.loads(line) for line in unseen.read_text().splitlines()]
    assert all("-heldout-" in case["id"] for case in held)
    text = doc.read_text()
    assert "Written by people, kept." in text and "| T5 (enc-dec) | a single-turn |" in text
    assert "Students built from the teacher: T5 (enc-dec): T5Gemma" in text
    assert "corrected teacher (1 LoRA steps" in text
    assert "recall_by_distance.png" in text

    # A rerun with the same settings reuses the data and every unit, and rewrites only the block.
    again: list[str] = []
    multiturn.run(tmp_path / "run", settings, jobs=1, doc=doc, command="test", log=again.append)
    assert any("reusing" in line for line in again) and any("6 finished earlier" in line for line in again)
    assert doc.read_text().count("generated:multiturn_vs_singleturn:begin") == 1
    # ... and, having trained nothing, keeps the timing of the run that trained the units
    rebuilt = json.loads((results / "summary.json").read_text())["timing"]
    assert summary["timing"]["units_trained"] == 6
    assert rebuilt["wall_s"] == summary["timing"]["wall_s"] and "report_rebuilt_s" in rebuilt
    assert "rebuilt from the cached units" in doc.read_text()
    # the paired differences of recall shares carry the error the number of questions gives them
    choice = next(c for c in summary["comparisons"] if c["metric"] == "choice_seen")
    assert choice["se_questions"] is not None and choice["se_questions"] >= 0
    assert "On the model's own history" in (results / "tables.md").read_text()

    # Regimes e and f (the same data and built students, reused): c/d's replies as whole
    # conversations through the conversation trainer, e on the data's history, f writing its own.
    data = tmp_path / "run" / "work" / "data"
    whole = [json.loads(line) for line in (data / "ef-conversations.jsonl").read_text().splitlines()]
    turns = [json.loads(line) for line in (data / "c-teacher-turns.jsonl").read_text().splitlines()]
    assert {m["content"] for r in whole for m in r["messages"][1:] if m["role"] == "assistant"} == {
        r["messages"][-1]["content"] for r in turns}
    # (an evaluation setting changed too: the data stage reads none, so its output is reused)
    conversation = replace(settings, families=("llama",), regimes=("e", "f"), forced_choice=False)
    ef_lines: list[str] = []
    outcome = multiturn.run(tmp_path / "run", conversation, jobs=1, command="test", log=ef_lines.append)
    assert any("reusing" in line for line in ef_lines)
    units = {u["regime"]: u for u in outcome.summary["units"]}
    for unit in units.values():
        assert unit["method"] == "distill" and unit["teacher"] == corrected["checkpoint"]
        assert unit["train"]["steps"] == settings.max_steps and unit["train"]["trained_tokens"] > 0
        assert set(unit["recall_unseen_self"]["accuracy_by_distance"]) == {"1", "2"}
    assert units["e"]["train"]["generation"]["generate_seconds"] == 0  # e writes nothing
    assert units["f"]["train"]["generation"]["generate_seconds"] > 0
    assert {c["pair"] for c in outcome.summary["comparisons"]} == {"Llama (dec-only): f vs e"}
    assert any(c["metric"] == "recall_self" for c in outcome.summary["comparisons"])


def test_cli_lists_experiments_and_refuses_unknown_names_and_fields() -> None:
    listed = run_cli("experiment", "list")
    assert listed.returncode == 0 and "multiturn_vs_singleturn" in listed.stdout
    unknown = run_cli("experiment", "run", "nope", "--quick")
    assert unknown.returncode == 1 and "unknown experiment 'nope'" in unknown.stderr
    bad = run_cli("experiment", "run", "multiturn_vs_singleturn", "--quick", "--set", "max_stpes=3")
    assert bad.returncode == 1 and "max_stpes=3" in bad.stderr and "max_steps" in bad.stderr
    # a value of the wrong type and an unknown preset: one line each, no traceback
    for args, expected in ((("--set", "seeds=0,x"), "field 'seeds'"), (("--preset", "huge"), "unknown preset 'huge'"),
                           (("--set", "regimes=a,x"), "choose from a, b, c, d, e, f")):
        refused = run_cli("experiment", "run", "multiturn_vs_singleturn", "--quick", *args)
        assert refused.returncode == 1 and expected in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and "bug" not in refused.stderr
