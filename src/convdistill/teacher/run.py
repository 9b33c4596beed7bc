"""A whole teacher run: trees in, trees out, with a cache, a budget, progress and a report.

Trees stream from the input; a bounded window of them is worked on concurrently (requests are
bounded separately by the client); finished trees are written in input order to
a partial file beside ``OUT`` as they complete, and the file becomes ``OUT`` atomically at the end. Every
answer is in the request cache the moment it arrives, so after a crash (even kill -9) the same
command replays what was answered, sends only what was not, and writes the same output.
Trees that the selection does not pick are copied through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import networkx as nx
import orjson

from convdistill.conversation_trees.ingest_report import IngestReport, OnError, RejectSink
from convdistill.conversation_trees.readers import TreeReader
from convdistill.conversation_trees.writers import (
    nested_tree_bytes,
    tree_to_messages,
)
from convdistill.errors import BadRecipe
from convdistill.files import StagedFile, open_binary
from convdistill.teacher.batch import BatchFileReport, read_batch_answers, write_batch_requests
from convdistill.teacher.client import (
    Budget,
    BudgetExhausted,
    EndpointSettings,
    TeacherClient,
    Usage,
)
from convdistill.teacher.operations import (
    OperationReport,
    TeacherSettings,
    TreeJob,
    has_work,
    plan_threads,
    plan_unranked_groups,
    plan_user_turns,
)
from convdistill.teacher.prompt_templates import PromptSet, load_prompts
from convdistill.teacher.request_cache import RequestCache

EMBEDDED_TEACHER = "smollm2-135m-instruct"


@dataclass
class RunReport:
    read: IngestReport
    operation: OperationReport = field(default_factory=OperationReport)
    usage: Usage = field(default_factory=Usage)
    trees_selected: int = 0
    output: str = ""  # empty when the output was not written (requests wait in a batch file)
    batch_in: BatchFileReport | None = None
    batch_out: str = ""
    batch_requests: int = 0

    def summary(self, price_in: float = 0.0, price_out: float = 0.0) -> str:
        op, use = self.operation, self.usage
        lines = []
        if self.batch_in is not None:
            lines.append("batch in: " + self.batch_in.summary("answers stored"))
        lines += [
            self.read.summary(),
            f"trees worked on: {self.trees_selected}, changed: {op.trees_changed}; "
            f"messages added: {op.messages_added.get('prompter', 0)} user, "
            f"{op.messages_added.get('assistant', 0)} assistant",
        ]
        if op.exchanges_added or op.leaves_answered or op.ended_by_simulator:
            lines.append(
                f"extend: {op.leaves_answered} open user turns answered, {op.exchanges_added} exchanges "
                f"added, {op.ended_by_simulator} conversations ended by the simulator"
            )
        if op.groups_ranked:
            lines.append(f"rank: {op.groups_ranked} groups of replies ranked")
        lines.append(
            f"requests: {use.requests_sent} sent ({use.retries} retries, {use.failed_requests} failed), "
            f"{use.cache_hits} answered from the cache; tokens: {use.prompt_tokens} prompt + "
            f"{use.completion_tokens} completion ({use.cached_tokens} saved by the cache)"
        )
        if price_in or price_out:
            lines.append(f"cost: {use.cost(price_in, price_out):.4f} (at the given prices per 1k tokens)")
        if use.errors:
            lines.append("errors met: " + ", ".join(f"{n} x {k}" for k, n in use.errors.most_common()))
        for failure in op.failures[:10]:
            lines.append(f"failed: {failure}")
        if len(op.failures) > 10:
            lines.append(f"... and {len(op.failures) - 10} more failures")
        if op.stopped_by_budget:
            lines.append("stopped: the request/token budget is spent; rerun with a larger one to go on")
        if self.batch_requests:
            lines.append(
                f"batch out: {self.batch_requests} requests of this round written to {self.batch_out} "
                f"({op.waiting} pieces of work wait for them); run the file (`convdistill teacher batch run`, "
                "OpenAI's Batch API or vLLM's run-batch), then rerun with --batch-in OUTPUT_FILE; "
                "the trees are written once nothing is pending"
            )
        elif self.batch_out:
            lines.append(f"batch out: nothing pending, every request has its answer ({self.batch_out} not written)")
        if self.output:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunOptions:
    max_trees: int | None = None  # work on the first N selected trees only
    cache_path: Path | None = None  # None: no cache (and no resume)
    created_date: str | None = None  # pin new nodes' created_date (reproducible exports)
    prompts_dir: Path | None = None
    on_error: OnError = "skip"
    on_reject: RejectSink | None = None
    window: int = 64  # trees in flight at once
    batch_in: Path | None = None  # a batch output file whose answers go into the cache first
    batch_out: Path | None = None  # send nothing: write this round's requests to this batch file


class OrderedTreeWriter:
    """Writes trees in input order as they finish, to a partial file beside OUT; ``commit``
    renames it to OUT, ``discard`` removes it."""

    def __init__(self, out: Path):
        self.out = out
        # one fixed partial name: a run killed and started again overwrites what it left
        self.staged = StagedFile(out, per_process=False)
        self.stream: IO[bytes] | None = None
        self.fmt = "trees"
        self.next_index = 0
        self.done: dict[int, nx.DiGraph] = {}

    def finish(self, index: int, graph: nx.DiGraph) -> None:
        self.done[index] = graph
        while self.next_index in self.done:
            self._write(self.done.pop(self.next_index))
            self.next_index += 1

    def _open(self) -> IO[bytes]:
        if self.stream is None:
            self.stream = open_binary(self.staged.partial, "wb")
        return self.stream

    def _write(self, graph: nx.DiGraph) -> None:
        stream = self._open()
        if self.fmt == "trees":
            stream.write(nested_tree_bytes(graph) + b"\n")
        else:
            for row in tree_to_messages(graph):
                stream.write(orjson.dumps(row) + b"\n")
        stream.flush()

    def commit(self) -> None:
        self._open().close()
        self.staged.commit()

    def discard(self) -> None:
        """The trees are incomplete (requests wait in a batch file, or the run failed): OUT is
        not written."""
        if self.stream is not None:
            self.stream.close()
        self.staged.discard()


async def run_async(
    input_path: Path,
    out: Path,
    settings: TeacherSettings,
    client: TeacherClient,
    prompts: PromptSet,
    options: RunOptions,
    progress: Callable[[int], None] | None = None,
) -> RunReport:
    reader = TreeReader(input_path, on_error=options.on_error, on_reject=options.on_reject)
    report = RunReport(read=reader.report, usage=client.usage)
    writer = OrderedTreeWriter(out)
    window = asyncio.Semaphore(options.window)
    tasks: set[asyncio.Task] = set()
    stop = asyncio.Event()  # set when the budget is spent: the rest is copied through

    async def work(index: int, graph: nx.DiGraph, selected: bool) -> None:
        try:
            if selected and not stop.is_set():
                try:
                    await TreeJob(graph, client, prompts, settings, report.operation).run()
                except BudgetExhausted:
                    stop.set()
            writer.finish(index, graph)
            if progress is not None:
                progress(1)
        finally:
            window.release()

    for index, graph in enumerate(reader):
        writer.fmt = reader.report.format
        selected = options.max_trees is None or report.trees_selected < options.max_trees
        selected = selected and has_work(graph, settings)
        report.trees_selected += selected
        await window.acquire()
        task = asyncio.create_task(work(index, graph, selected))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        # Surface the first unexpected error at once rather than after the whole file.
        for done in [t for t in tasks if t.done()]:
            done.result()
    if tasks:
        await asyncio.gather(*tasks)
    if client.pending:
        writer.discard()
    else:
        writer.commit()
        report.output = str(out)
    return report


@contextlib.contextmanager
def teacher_endpoint(base_url: str | None, model: str | None, serve: bool = True) -> Iterator[tuple[str, str]]:
    """The given endpoint, or the embedded SmolLM2 served on 127.0.0.1 for the run's duration;
    not started when `serve` is false (a `--batch-out` run sends nothing)."""
    if base_url:
        if not model:
            raise BadRecipe("--model is required with --base-url")
        yield base_url, model
        return
    if not serve:
        yield "", model or EMBEDDED_TEACHER
        return
    from convdistill.serve.server import BackgroundServer, ServeSettings, load_chat_model

    chat_model = load_chat_model(model or EMBEDDED_TEACHER)
    with BackgroundServer(chat_model, ServeSettings(host="127.0.0.1", port=0)) as server:
        yield server.base_url, chat_model.name


def run_teacher(
    input_path: str | Path,
    out: str | Path,
    settings: TeacherSettings,
    endpoint: EndpointSettings,
    budget: Budget | None = None,
    options: RunOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunReport:
    """Run one operation over a file against a ready endpoint (see ``teacher_endpoint``)."""
    options = options or RunOptions()
    prompts = load_prompts(options.prompts_dir)
    if (options.batch_in or options.batch_out) and not options.cache_path:
        raise BadRecipe("--batch-in and --batch-out keep their requests and answers in the request cache; "
                        "drop --no-cache")
    cache = RequestCache(options.cache_path) if options.cache_path else None
    batch_in = None

    async def main() -> RunReport:
        async with TeacherClient(endpoint, cache, budget, options.created_date) as client:
            client.collect_pending = options.batch_out is not None
            report = await run_async(Path(input_path), Path(out), settings, client, prompts, options, progress)
        report.batch_in = batch_in
        if options.batch_out is not None:
            report.batch_out = str(options.batch_out)
            if client.pending:
                assert cache is not None
                cache.add_batch_requests(client.pending)
                report.batch_requests = write_batch_requests(options.batch_out, client.pending)
        return report

    try:
        if options.batch_in is not None:
            assert cache is not None
            batch_in = read_batch_answers(options.batch_in, cache)
        return asyncio.run(main())
    finally:
        if cache is not None:
            cache.close()


@dataclass
class RunEstimate:
    trees_selected: int = 0
    max_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def summary(self) -> str:
        return (
            f"dry run: {self.trees_selected} trees to work on; at most {self.max_requests} requests, "
            f"about {self.prompt_tokens + self.completion_tokens} tokens ({self.prompt_tokens} prompt, "
            f"up to {self.completion_tokens} completion), before cache hits"
        )


def estimate_run(input_path: str | Path, settings: TeacherSettings, options: RunOptions) -> RunEstimate:
    """What a run would send at most, without sending anything (about 4 characters a token)."""
    prompts = load_prompts(options.prompts_dir)
    base = len(prompts.teacher_system) // 4
    estimate = RunEstimate()
    for graph in TreeReader(input_path, on_error=options.on_error):
        if options.max_trees is not None and estimate.trees_selected >= options.max_trees:
            break
        if not has_work(graph, settings):
            continue
        estimate.trees_selected += 1
        nodes = graph.nodes
        if settings.operation == "extend":
            for thread in plan_threads(graph, settings):
                context = base + sum(len(nodes[m]["text"]) for m in thread) // 4
                open_end = nodes[thread[-1]]["role"] == "prompter"
                if open_end:
                    estimate.max_requests += 1
                    estimate.prompt_tokens += context
                    estimate.completion_tokens += settings.max_tokens
                    context += settings.max_tokens
                for _ in range(settings.turns):
                    estimate.max_requests += 2
                    sim = len(prompts.simulator.template) // 4
                    estimate.prompt_tokens += context + sim + context + settings.simulator_max_tokens
                    estimate.completion_tokens += settings.simulator_max_tokens + settings.max_tokens
                    context += settings.simulator_max_tokens + settings.max_tokens
        elif settings.operation == "regenerate":
            for thread in plan_user_turns(graph, settings):
                context = base + sum(len(nodes[m]["text"]) for m in thread) // 4
                estimate.max_requests += settings.answers
                estimate.prompt_tokens += context * settings.answers
                estimate.completion_tokens += settings.max_tokens * settings.answers
        else:
            for _, replies in plan_unranked_groups(graph, settings):
                reply_tokens = sum(len(nodes[c]["text"]) for c in replies) // 4
                estimate.max_requests += 1
                estimate.prompt_tokens += base + reply_tokens + len(prompts.rank.template) // 4
                estimate.completion_tokens += 48
    return estimate
