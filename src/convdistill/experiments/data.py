"""Stage 1, the data: training files per regime (synthetic memory conversations, the sample
export, the sample extended by the teacher), the held-out suites, and their counts. Cached under
the fingerprint of the settings it reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe
from convdistill.experiments.evaluation import teacher_recall
from convdistill.experiments.regimes import cut_words
from convdistill.experiments.settings import Layout, Settings
from convdistill.files import DoneMarker, project_file, write_jsonl
from convdistill.progress_log import Log
from convdistill.trainers.data import read_jsonl


def extend_export(settings: Settings, source: Path, out: Path, threads: int, log: Log) -> dict[str, Any]:
    """The embedded teacher continues the best path of the first `extend_trees` trees (served on
    127.0.0.1 for the call; answers cached in SQLite, so a rerun sends nothing)."""
    import torch

    from convdistill.conversation_trees import Selection
    from convdistill.teacher.client import EndpointSettings
    from convdistill.teacher.operations import TeacherSettings
    from convdistill.teacher.run import RunOptions, run_teacher, teacher_endpoint

    torch.set_num_threads(threads)
    teacher = TeacherSettings(
        operation="extend", turns=settings.extend_turns, strategy="best",
        selection=Selection(min_assistant_turns=0), seed=settings.teacher_seed, temperature=0.7,
        max_tokens=settings.teacher_max_tokens, simulator_max_tokens=settings.simulator_max_tokens,
    )
    options = RunOptions(max_trees=settings.extend_trees, cache_path=out.parent / "teacher_cache.sqlite",
                         created_date="2024-01-01T00:00:00+00:00")
    started = time.perf_counter()
    log(f"teacher: {settings.teacher} extends {settings.extend_trees} trees by {settings.extend_turns} exchange(s)")
    with teacher_endpoint(None, settings.teacher) as (url, model):
        report = run_teacher(source, out, teacher, EndpointSettings(url, model, timeout_s=900.0), options=options)
    seconds = time.perf_counter() - started
    op, use = report.operation, report.usage
    log(f"teacher: {op.messages_added.get('assistant', 0)} assistant and {op.messages_added.get('prompter', 0)} "
        f"user messages added, {use.requests_sent} requests sent, {use.cache_hits} from the cache ({seconds:.0f} s)")
    return {"seconds": round(seconds, 1), "trees_changed": op.trees_changed,
            "assistant_added": op.messages_added.get("assistant", 0),
            "user_added": op.messages_added.get("prompter", 0),
            "requests_sent": use.requests_sent, "cache_hits": use.cache_hits, "failures": len(op.failures)}


def sample_subset(export: Path, out: Path, trees: int | None) -> int:
    """The first `trees` trees of the export, those with the shortest best path first.

    The teacher continues the first `extend_trees` of them: on a CPU its time goes into reading
    the conversation (a simulated-user prompt holds all of it), so short conversations make the
    extension minutes instead of tens of minutes. The set of trees is the same for every regime.
    """
    from convdistill.conversation_trees import Selection, read_trees, tree_paths, write_trees

    graphs = read_trees(export)[:trees]

    def length(graph: Any) -> int:
        best = next(tree_paths(graph, Selection(min_assistant_turns=0), "best", open_ends=True), None)
        return sum(len(graph.nodes[m]["text"]) for m in best.message_ids) if best else 0

    return write_trees(out, sorted(graphs, key=length))


def _real_paths(settings: Settings, export: Path, out: Path) -> list[dict[str, Any]]:
    from convdistill.conversation_trees import export_paths

    export_paths(export, out, strategy=settings.real_strategy)  # type: ignore[arg-type]
    return read_jsonl(out)


def prepare_data(settings: Settings, layout: Layout, threads: int, log: Log) -> dict[str, Any]:
    """Training files per regime, the held-out suites, and their counts. Cached: a second run
    with the same settings reuses everything (the teacher's answers come from its cache)."""
    from convdistill.eval.generator import generate_recall_suite
    from convdistill.experiments.regimes import (
        check_disjoint,
        conversations,
        single_turn,
        synthetic_paths,
        turn_records,
    )

    data = layout.data
    marker = DoneMarker(data / "data.json", settings.data_fingerprint(), field="fingerprint")
    done = marker.done()
    if done is not None:
        log("data: reusing " + str(data))
        return done
    data.mkdir(parents=True, exist_ok=True)
    low, high = settings.eval_distances
    suites = {
        "recall_seen": generate_recall_suite(settings.eval_per_distance, (low, high), settings.eval_seed, "train"),
        "recall_unseen": generate_recall_suite(settings.unseen_per_distance, (low, high), settings.eval_seed + 1,
                                               "eval", wording=settings.unseen_wording),
    }
    synthetic = synthetic_paths(settings.train_conversations, settings.train_seed, settings.train_distances,
                                settings.train_max_lead, "train")
    disjoint = check_disjoint(synthetic, suites, unseen=("recall_unseen",))
    for name, cases in suites.items():
        write_jsonl(data / f"{name}.jsonl", cases)

    export = data / "sample.jsonl"
    sample_subset(project_file(settings.export), export, settings.real_trees)
    extended = data / "extended.jsonl"
    teacher = extend_export(settings, export, extended, threads, log)
    human = _real_paths(settings, export, data / "human_paths.jsonl")
    with_teacher = _real_paths(settings, extended, data / "extended_paths.jsonl")

    teacher_memory = teacher_recall(settings, data / "recall_seen.jsonl", threads, log)
    words = settings.max_reply_words
    memory = turn_records(synthetic, "synthetic")
    multi = memory + turn_records(human, "sample", words)
    teacher_multi = memory + turn_records(with_teacher, "sample+teacher", words)
    files = {
        "a": write_jsonl(data / "a-single-turn.jsonl", [single_turn(r) for r in multi]),
        "b": write_jsonl(data / "b-multi-turn.jsonl", multi),
        "c": write_jsonl(data / "c-teacher-turns.jsonl", teacher_multi),
    }
    files["d"] = files["c"]  # the same records; the teacher's logits are the difference
    # e and f: c/d's replies as whole conversations (whose history is the difference between them)
    files["e"] = files["f"] = write_jsonl(data / "ef-conversations.jsonl", conversations(synthetic, "synthetic")
                                          + conversations(with_teacher, "sample+teacher", words))
    corrected = correct_teacher(settings, files["c"], layout.work / "teacher-corrected", threads, log)
    corrected_memory = (teacher_recall(settings, data / "recall_seen.jsonl", threads, log, corrected["checkpoint"])
                        if corrected else None)
    first_turns = heldout_first_turns(settings, data / "heldout_first_turns.jsonl")
    counts = {
        "synthetic_conversations": len(synthetic),
        "synthetic_records": len(memory),
        "sample_records": len(multi) - len(memory),
        "sample_teacher_records": len(teacher_multi) - len(memory),
        "teacher_written_replies": sum(1 for r in teacher_multi if r["synthetic"][-1]),
        "records": {k: len(read_jsonl(v)) for k, v in files.items()},
        "eval_cases": {name: len(cases) for name, cases in suites.items()},
        "disjoint": disjoint,
        "heldout_first_turns": len(first_turns),
    }
    done = {"fingerprint": settings.data_fingerprint(), "files": {k: str(v) for k, v in files.items()},
            "first_turns": str(data / "heldout_first_turns.jsonl"),
            "suites": {name: str(data / f"{name}.jsonl") for name in suites}, "counts": counts,
            "teacher": teacher, "teacher_recall": teacher_memory,
            "corrected_teacher": corrected, "corrected_teacher_recall": corrected_memory}
    marker.mark(done)
    log(f"data: {counts['synthetic_records']} synthetic + {counts['sample_records']} sample records "
        f"(c/d: {counts['sample_teacher_records']} sample records, {counts['teacher_written_replies']} teacher "
        f"replies); held-out recall cases {counts['eval_cases']}")
    return done


def correct_teacher(settings: Settings, train_file: Path, out: Path, threads: int,
                    log: Log) -> dict[str, Any] | None:
    """Teacher correction before regime d: the teacher fine-tuned with LoRA (merged) on regime
    c/d's records for `correct_teacher_steps`, with the units' batch size and length. A teacher
    distilled off its students' distribution cost the first run's LoRA student 0.52 of recall."""
    if settings.correct_teacher_steps <= 0:
        return None
    import shutil

    import torch

    from convdistill.trainers.teacher_correction import correct_teacher as run_correction

    torch.set_num_threads(threads)
    shutil.rmtree(out, ignore_errors=True)  # an interrupted correction starts over
    steps = settings.correct_teacher_steps
    started = time.perf_counter()
    result = run_correction(overrides={
        "model_name_or_path": settings.teacher, "train_file": str(train_file), "train_on": "all",
        "max_train_examples": None, "output_dir": str(out), "max_steps": steps,
        "per_device_train_batch_size": settings.batch_size, "learning_rate": settings.correct_teacher_learning_rate,
        "warmup_steps": max(1, steps // 10), "max_length": settings.max_length,
        "logging_steps": max(1, steps // 5), "seed": settings.teacher_seed, "disable_tqdm": True,
    })
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    seconds = round(time.perf_counter() - started, 1)
    log(f"teacher correction: {steps} LoRA steps on {train_file.name}, loss "
        f"{losses[0]:.3f} -> {losses[-1]:.3f} ({seconds:.0f} s)" if losses else f"teacher correction: {seconds:.0f} s")
    return {"checkpoint": str(result.checkpoint), "steps": steps, "seconds": seconds,
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}


def heldout_first_turns(settings: Settings, out: Path) -> list[dict[str, Any]]:
    """The first exchange of the best path of sample trees from `heldout_from_tree` on: real
    Open-Assistant prompts no unit trains on (training takes the first `real_trees` trees)."""
    from convdistill.conversation_trees import Selection, read_trees, tree_paths
    from convdistill.conversation_trees.records import chat_messages

    if settings.real_trees is not None and settings.heldout_from_tree < settings.real_trees:
        raise BadRecipe(f"heldout_from_tree {settings.heldout_from_tree} overlaps the {settings.real_trees} "
                        "training trees")
    pairs: list[dict[str, Any]] = []
    if settings.heldout_first_turns > 0:
        for graph in read_trees(project_file(settings.export))[settings.heldout_from_tree:]:
            best = next(tree_paths(graph, Selection(), "best"), None)
            if best is None:
                continue
            messages = chat_messages(graph, best.message_ids)
            first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
            if first is not None:
                pairs.append({"history": messages[:first],
                              "reply": cut_words(messages[first]["content"], settings.max_reply_words)})
            if len(pairs) >= settings.heldout_first_turns:
                break
    write_jsonl(out, pairs)
    return pairs
