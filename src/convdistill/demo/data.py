"""Data stages: what is in the export, teacher turns where humans stopped, paths and pairs.

    stats_stage    statistics of the export and a few sampled paths
    extend_stage   the teacher continues a few trees (trees in, trees out)
    export_stage   SFT paths and DPO pairs from the extended trees
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

from convdistill.conversation_trees import Selection, TreeReader, collect_stats, sample_paths, tree_paths
from convdistill.conversation_trees.exports import export_pairs, export_paths
from convdistill.conversation_trees.ingest_report import Reject
from convdistill.conversation_trees.records import path_record
from convdistill.conversation_trees.tree_graph import tree_id
from convdistill.demo.config import DemoConfig
from convdistill.demo.progress import Heartbeat
from convdistill.demo.stages import Log
from convdistill.errors import BadInput, Unavailable
from convdistill.files import write_json, write_jsonl


def conversation_markdown(messages: list[dict[str, str]], marks: list[str] | None = None, limit: int = 400) -> str:
    """A conversation as Markdown quotes, each turn cut to `limit` characters."""
    lines = []
    for i, message in enumerate(messages):
        text = " ".join(message["content"].split())
        if len(text) > limit:
            text = text[:limit] + " [...]"
        mark = f" ({marks[i]})" if marks and marks[i] else ""
        lines.append(f"> **{message['role']}**{mark}: {text}\n>")
    return "\n".join(lines).rstrip(">\n") + "\n"


def stats_stage(config: DemoConfig, workdir: Path, log: Log) -> dict[str, Any]:
    rejects: list[Reject] = []
    reader = TreeReader(config.trees, on_error="skip", on_reject=rejects.append)
    stats = collect_stats(reader).to_dict()
    if not stats["trees"]:
        report = reader.report
        first = f"; first problem: {rejects[0].describe()}" if rejects else ""
        raise BadInput(f"{config.trees}: no usable trees (read {report.records_read} lines, rejected "
                       f"{report.records_rejected}){first}")
    stats["read"] = {"records_read": reader.report.records_read, "records_kept": reader.report.records_kept,
                     "records_rejected": reader.report.records_rejected, "format": reader.report.format}
    write_json(workdir / "stats.json", stats)
    log(f"    {stats['trees']} trees, {stats['messages']} messages, {stats['ranked_fraction']:.1%} of assistant "
        f"replies ranked; paths per strategy: "
        + ", ".join(f"{k} {v}" for k, v in stats["paths_per_strategy"].items()))
    paths, _ = sample_paths(config.trees, config.sizes.sample_paths, seed=config.seed)
    samples = [path_record(p) for p in paths]
    write_jsonl(workdir / "samples.jsonl", samples)
    parts = [f"# {len(samples)} paths sampled by score from {config.trees}\n"]
    for i, record in enumerate(samples, 1):
        ranks = [f"rank {r}" if r is not None else "" for r in record["ranks"]]
        parts.append(f"## Path {i}: tree `{record['tree_id']}`, score {record['score']:.3f}\n")
        parts.append(conversation_markdown(record["messages"], ranks))
    (workdir / "samples.md").write_text("\n".join(parts))
    log(f"    sampled {len(samples)} paths -> {workdir / 'samples.md'}")
    return {
        "trees": stats["trees"],
        "messages": stats["messages"],
        "roles": stats["roles"],
        "ranked_fraction": stats["ranked_fraction"],
        "trees_by_lang": stats["trees_by_lang"],
        "depth_histogram": stats["depth_histogram"],
        "paths_per_strategy": stats["paths_per_strategy"],
        "ranked_prefixes": stats["ranked_prefixes"],
        "records_rejected": stats["read"]["records_rejected"],
        "samples": [{"tree_id": r["tree_id"], "score": r["score"], "messages": len(r["messages"]),
                     "first_user": r["messages"][0]["content"][:120]} for r in samples],
    }


def _message_ids(path: Path) -> set[str]:
    ids: set[str] = set()
    for graph in TreeReader(path, on_error="skip"):
        ids.update(graph.nodes)
    return ids


def extend_stage(config: DemoConfig, workdir: Path, log: Log, total_trees: int | None = None) -> dict[str, Any]:
    from convdistill.teacher import Budget, EndpointSettings, RunOptions, TeacherSettings, run_teacher, teacher_endpoint

    sizes = config.sizes
    out = workdir / "extended.jsonl"
    settings = TeacherSettings(
        operation="extend", turns=sizes.extend_turns, strategy="best",
        selection=Selection(min_assistant_turns=0), seed=config.seed, temperature=0.7,
        max_tokens=sizes.teacher_max_tokens, simulator_max_tokens=sizes.simulator_max_tokens,
    )
    # The cache lives beside the stages, not in this stage's folder: it is keyed by the request
    # itself, so it stays valid when settings change, and an interrupted run replays its answers.
    options = RunOptions(max_trees=sizes.extend_trees, cache_path=config.out / "teacher_cache.sqlite")
    if config.embedded_teacher:
        log("    starting the embedded teacher (SmolLM2-135M-Instruct) on 127.0.0.1 ...")
    else:
        check_endpoint(config.teacher_base_url or "", os.environ.get("OPENAI_API_KEY"))
    written = [0]

    def status() -> str:
        if total_trees is None:
            return f"{written[0]} trees written, the teacher is writing turns"
        # Trees the teacher does not work on are copied through at once; the rest finish as it answers.
        selected = min(sizes.extend_trees, total_trees)
        return f"{max(0, written[0] - (total_trees - selected))}/{selected} trees extended"

    with teacher_endpoint(config.teacher_base_url, config.teacher_model) as (url, model):
        # A small CPU model answering a batch of long conversations is slow: a retry would only add load.
        timeout = 900.0 if config.embedded_teacher else 120.0
        endpoint = EndpointSettings(url, model, os.environ.get("OPENAI_API_KEY"), concurrency=8, timeout_s=timeout)
        log(f"    teacher {model} at {url}: extending the best path of {sizes.extend_trees} tree(s) by "
            f"{sizes.extend_turns} exchange(s) each")
        with Heartbeat(log, status):
            report = run_teacher(config.trees, out, settings, endpoint, Budget(), options,
                                 progress=lambda n: written.__setitem__(0, written[0] + n))
    summary = report.summary()
    (workdir / "report.txt").write_text(summary + "\n")
    if report.trees_selected and not report.operation.trees_changed:
        # Every request failed: going on would train and score students on no teacher data.
        raise Unavailable(f"the teacher changed none of the {report.trees_selected} trees it was given: "
                         + "; ".join(summary.splitlines()[2:]))
    for line in summary.splitlines()[1:]:
        log(f"    {line}")
    op, use = report.operation, report.usage
    result: dict[str, Any] = {
        "teacher": model, "endpoint": url if not config.embedded_teacher else "embedded, served on 127.0.0.1",
        "trees_selected": report.trees_selected, "trees_changed": op.trees_changed,
        "user_added": op.messages_added.get("prompter", 0), "assistant_added": op.messages_added.get("assistant", 0),
        "exchanges_added": op.exchanges_added, "leaves_answered": op.leaves_answered,
        "requests_sent": use.requests_sent, "cache_hits": use.cache_hits, "failed_requests": use.failed_requests,
        "prompt_tokens": use.prompt_tokens, "completion_tokens": use.completion_tokens,
        "output": str(out),
    }
    result["examples"] = _extended_examples(config.trees, out, workdir / "examples.md")
    return result


def check_endpoint(base_url: str, api_key: str | None) -> None:
    """Fail at once, in one line, when a hosted teacher cannot be reached or refuses the key;
    the client would otherwise retry every request with backoff for minutes first."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=20.0)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the teacher at {base_url}: {type(exc).__name__}: {exc}") from None
    if response.status_code in (401, 403):
        raise Unavailable(f"the teacher at {base_url} refuses the API key (HTTP {response.status_code}); "
                          "set OPENAI_API_KEY")
    # Other answers (some servers have no /models) say nothing about chat completions: go on.


def _extended_examples(original: Path, extended: Path, markdown: Path) -> list[dict[str, Any]]:
    """The longest path through each changed tree that contains teacher-written messages."""
    before = _message_ids(original)
    examples: list[dict[str, Any]] = []
    parts = ["# Conversations the teacher continued\n", "Turns marked *teacher* are new nodes "
             "(`synthetic: true`, `model_name` = the teacher); the rest are the human tree.\n"]
    for graph in TreeReader(extended, on_error="skip"):
        new = set(graph.nodes) - before
        if not new:
            continue
        candidates = [p for p in tree_paths(graph, Selection(min_assistant_turns=0), "all") if new & set(p.message_ids)]
        if not candidates:
            continue
        path = max(candidates, key=lambda p: (len(p.message_ids), p.score))
        record = path_record(path)
        marks = ["teacher" if m in new else "" for m in path.message_ids]
        parts.append(f"## Tree `{tree_id(graph)}`: {len(marks)} messages, {sum(bool(m) for m in marks)} new\n")
        parts.append(conversation_markdown(record["messages"], marks, limit=600))
        examples.append({"tree_id": tree_id(graph), "messages": record["messages"], "new": marks})
    markdown.write_text("\n".join(parts))
    return examples


def export_stage(config: DemoConfig, trees: Path, workdir: Path, log: Log) -> dict[str, Any]:
    paths = export_paths(trees, workdir / "paths.jsonl", strategy="all")
    log(f"    paths: {paths.summary()}")
    # Distillation and teacher correction read one path per tree (the best): the same number of
    # examples then covers more conversations than the first trees' every branch.
    best = export_paths(trees, workdir / "best_paths.jsonl", strategy="best")
    log(f"    best paths: {best.summary()}")
    pairs = export_pairs(trees, workdir / "pairs.jsonl", pairing="adjacent")
    log(f"    pairs: {pairs.summary()}")
    teacher_turns = with_teacher = 0
    longest = 0
    with open(workdir / "paths.jsonl", "rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            longest = max(longest, len(record["messages"]))
            extended = [m for m, s in zip(record["model_names"], record["synthetic"], strict=True)
                        if s and m == config.teacher_name]
            teacher_turns += len(extended)
            with_teacher += bool(extended)
    result = {
        "paths": sum(paths.written.values()), "pairs": sum(pairs.written.values()), "prefixes": pairs.prefixes,
        "paths_with_teacher_turns": with_teacher, "teacher_messages_in_paths": teacher_turns,
        "longest_path": longest, "paths_file": str(workdir / "paths.jsonl"),
        "best_paths_file": str(workdir / "best_paths.jsonl"), "pairs_file": str(workdir / "pairs.jsonl"),
    }
    (workdir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
