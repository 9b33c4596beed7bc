"""The jobs behind ``convdistill paths export`` and ``convdistill pairs export``, as functions.

Each reads one export (streaming), selects paths or pairs, and writes records; the returned
summary carries the read counts (read = kept + rejected) and what was written where.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from convdistill.conversation_trees.ingest_report import IngestReport, OnError, RejectSink
from convdistill.conversation_trees.oasst_compat import (
    DEFAULT_LANGS,
    compat_rm_prefixes,
    compat_sft_threads,
)
from convdistill.conversation_trees.pairs import Pairing, PreferencePair, pair_up, tree_pairs
from convdistill.conversation_trees.paths import DialogPath, PathSampler, Strategy, tree_paths
from convdistill.conversation_trees.readers import ProgressCallback, TreeReader
from convdistill.conversation_trees.record_output import (
    PAIR_SCHEMA,
    PATH_SCHEMA,
    OutputFormat,
    RecordSink,
    split_path,
)
from convdistill.conversation_trees.records import PathRecordEncoder, pair_record, path_record
from convdistill.conversation_trees.redact import Redactor
from convdistill.conversation_trees.scoring import ScoreWeights, TreeScorer
from convdistill.conversation_trees.selection import Selection
from convdistill.conversation_trees.shown_branch import rank_shown_branch
from convdistill.conversation_trees.splits import split_of
from convdistill.conversation_trees.tree_graph import tree_id


@dataclass
class ExportSummary:
    report: IngestReport
    written: Counter = field(default_factory=Counter)  # split -> records
    outputs: list[str] = field(default_factory=list)
    prefixes: int = 0  # pairs only: prompts with two or more ranked replies

    def summary(self) -> str:
        parts = ", ".join(f"{n} {split}" for split, n in sorted(self.written.items()))
        total = sum(self.written.values())
        text = f"wrote {total} records ({parts or 'none'}) to {', '.join(self.outputs)}"
        if self.prefixes:
            text += f" from {self.prefixes} prefixes"
        return text


@dataclass(frozen=True)
class ReadOptions:
    on_error: OnError = "skip"
    on_reject: RejectSink | None = None
    progress: ProgressCallback | None = None
    split: str | None = None  # the Hub layouts: one split of a folder (default: all)
    redact: Redactor | None = None  # personal data replaced as trees are read

    def reader(self, path: str | Path) -> TreeReader:
        """A reader of `path` with these options."""
        return TreeReader(path, on_error=self.on_error, on_reject=self.on_reject, progress=self.progress,
                          split=self.split, redact=self.redact)


def iter_paths(
    trees: Iterator[nx.DiGraph],
    selection: Selection,
    strategy: Strategy,
    weights: ScoreWeights,
    oasst_compat: bool,
) -> Iterator[DialogPath]:
    for graph in trees:
        if oasst_compat:
            langs = selection.langs or DEFAULT_LANGS
            scorer = TreeScorer(graph, weights)
            nodes = graph.nodes
            for ids in compat_sft_threads(graph, selection.top_k, langs):
                yield DialogPath(graph, ids, scorer.path_score(ids), tuple(nodes[m] for m in ids))
        else:
            yield from tree_paths(graph, selection, strategy, weights)


def export_paths(
    input_path: str | Path,
    out: str | Path,
    *,
    selection: Selection | None = None,
    strategy: Strategy = "all",
    weights: ScoreWeights | None = None,
    oasst_compat: bool = False,
    validation_fraction: float | None = None,
    seed: int = 0,
    sample_n: int | None = None,
    temperature: float = 1.0,
    fmt: OutputFormat | None = None,
    read: ReadOptions | None = None,
) -> ExportSummary:
    selection = selection or Selection()
    weights = weights or ScoreWeights()
    reader = (read or ReadOptions()).reader(input_path)
    paths = iter_paths(iter(reader), selection, strategy, weights, oasst_compat)
    if strategy == "sample" and not oasst_compat:
        sampler = PathSampler(sample_n or 1000, seed=seed, temperature=temperature)
        for path in paths:
            sampler.offer(path)
        paths = iter(sampler.result())
    summary = ExportSummary(reader.report)
    split = bool(validation_fraction)  # None or 0: no validation split
    fraction = validation_fraction or 0.0
    encoder = PathRecordEncoder()
    with RecordSink(out, PATH_SCHEMA, fmt, split=split) as sink:
        for path in paths:
            side = split_of(tree_id(path.tree), fraction, seed) if split else "train"
            if sink.fmt == "jsonl":
                sink.write_json_line(encoder.encode(path), side)
            else:
                sink.write(path_record(path), side)
    summary.written = sink.counts
    summary.outputs = _outputs(sink)
    return summary


def export_pairs(
    input_path: str | Path,
    out: str | Path,
    *,
    selection: Selection | None = None,
    pairing: Pairing = "all",
    oasst_compat: bool = False,
    validation_fraction: float | None = None,
    seed: int = 0,
    fmt: OutputFormat | None = None,
    read: ReadOptions | None = None,
    shown_branch_ranks: bool = False,
) -> ExportSummary:
    """``shown_branch_ranks``: rank unranked regenerated replies of chat exports by the branch the
    interface showed (see ``shown_branch``), so that they give pairs marked ``ranked_by``."""
    selection = selection or Selection()
    reader = (read or ReadOptions()).reader(input_path)
    summary = ExportSummary(reader.report)
    split = bool(validation_fraction)  # None or 0: no validation split
    fraction = validation_fraction or 0.0
    trees: Iterator[nx.DiGraph] = iter(reader)
    if shown_branch_ranks:
        trees = _with_shown_branch_ranks(trees)
    with RecordSink(out, PAIR_SCHEMA, fmt, split=split) as sink:
        for pair in iter_pairs(trees, selection, pairing, oasst_compat, summary):
            side = split_of(tree_id(pair.tree), fraction, seed) if split else "train"
            sink.write(pair_record(pair), side)
    summary.written = sink.counts
    summary.outputs = _outputs(sink)
    return summary


def _with_shown_branch_ranks(trees: Iterator[nx.DiGraph]) -> Iterator[nx.DiGraph]:
    for graph in trees:
        rank_shown_branch(graph)
        yield graph


def iter_pairs(
    trees: Iterator[nx.DiGraph],
    selection: Selection,
    pairing: Pairing,
    oasst_compat: bool,
    summary: ExportSummary | None = None,
) -> Iterator[PreferencePair]:
    for graph in trees:
        if oasst_compat:
            langs = selection.langs or DEFAULT_LANGS
            for prefix in compat_rm_prefixes(graph, selection.top_k, langs):
                if summary is not None:
                    summary.prefixes += 1
                yield from pair_up(prefix, pairing)
        else:
            seen_prefix = None
            for pair in tree_pairs(graph, selection, pairing):
                if summary is not None and pair.prefix_ids != seen_prefix:
                    summary.prefixes += 1
                    seen_prefix = pair.prefix_ids
                yield pair


def _outputs(sink: RecordSink) -> list[str]:
    if sink.fmt == "datasets" or not sink.split:
        return [str(sink.out)]
    return [str(split_path(sink.out, s)) for s in sorted(sink.counts or {"train": 0})]


def sample_paths(
    input_path: str | Path,
    n: int,
    *,
    selection: Selection | None = None,
    strategy: Strategy = "all",
    weights: ScoreWeights | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    read: ReadOptions | None = None,
) -> tuple[list[DialogPath], IngestReport]:
    """n paths drawn by score (see PathSampler) from the paths a strategy gives."""
    reader = (read or ReadOptions()).reader(input_path)
    base: Strategy = "all" if strategy == "sample" else strategy
    sampler = PathSampler(n, seed=seed, temperature=temperature)
    for path in iter_paths(
        iter(reader), selection or Selection(), base, weights or ScoreWeights(), False
    ):
        sampler.offer(path)
    return sampler.result(), reader.report
