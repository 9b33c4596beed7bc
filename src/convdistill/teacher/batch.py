"""Batch files: the teacher's requests as OpenAI Batch / vLLM run-batch input, and their answers.

    write_batch_requests(FILE, pending)       one line per request: custom_id, method, url, body
    read_batch_answers(FILE, cache)           an output file's answers into the request cache
    run_batch_file(IN, OUT, model)            the same format run locally (`teacher batch run`)

A teacher run with `--batch-out` sends nothing: every request without an answer goes into the
file (custom_id = the request key of its payload), and whatever depends on it waits. After the
file has been run (OpenAI's Batch API, `vllm run-batch`, or `convdistill teacher batch run`),
`--batch-in` stores its answers; the next run takes them from there as if they had arrived
live, checks them as it checks live answers, and goes as far as they carry it. Extension over
K turns needs one round per dependent request (user turn, then answer, then the next user turn).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from convdistill.files import write_jsonl
from convdistill.teacher.client import completion_fields
from convdistill.teacher.request_cache import CachedAnswer, RequestCache

if TYPE_CHECKING:
    from convdistill.serve.chat_model import ChatModel

CHAT_URL = "/v1/chat/completions"
URLS = (CHAT_URL, "/v1/completions")
SHOWN = 20  # problems listed one by one; the rest are counted


def write_batch_requests(path: Path, pending: dict[str, dict[str, Any]]) -> int:
    """The pending chat requests as a batch input file, in custom_id order (reproducible)."""
    # plain lines whatever the name: the Batch API and vLLM read them so, and so do our readers
    write_jsonl(path, ({"custom_id": key, "method": "POST", "url": CHAT_URL, "body": pending[key]}
                       for key in sorted(pending)), gzip_by_name=False)
    return len(pending)


@dataclass
class BatchFileReport:
    """What a batch file held: lines read, kept, and each problem with its line number."""

    path: str
    lines: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> lines
    problems: list[str] = field(default_factory=list)

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        self.problems.append(f"{self.path}:{line}: {reason}{f' ({detail})' if detail else ''}")

    def summary(self, kept_as: str) -> str:
        parts = [f"{self.path}: {self.lines} lines read, {self.kept} {kept_as}"]
        if self.rejected:
            parts.append(f"{sum(self.rejected.values())} rejected (" +
                         ", ".join(f"{n} {reason}" for reason, n in self.rejected.most_common()) + ")")
        lines = ["; ".join(parts)]
        lines += self.problems[:SHOWN]
        if len(self.problems) > SHOWN:
            lines.append(f"... and {len(self.problems) - SHOWN} more")
        return "\n".join(lines)


def _json_lines(path: Path, report: BatchFileReport) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each JSON-object line; the others are reported."""
    out = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            report.lines += 1
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                report.reject(number, "not JSON (a truncated line?)", str(exc)[:80])
                continue
            if not isinstance(item, dict):
                report.reject(number, "not a JSON object")
                continue
            if not isinstance(item.get("custom_id"), str) or not item["custom_id"]:
                report.reject(number, "no custom_id")
                continue
            out.append((number, item))
    return out


def _created(body: dict[str, Any]) -> str:
    created = body.get("created")
    when = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else datetime.now(UTC)
    return when.isoformat(timespec="seconds")


def read_batch_answers(path: Path, cache: RequestCache) -> BatchFileReport:
    """Store a batch output file's usable answers for the requests our batch files asked.

    Foreign custom_ids (not from one of our `--batch-out` files), duplicates (the first
    usable answer is kept), error lines, non-200 responses and bodies that are not chat
    completions are each reported with their line and leave their request pending (a later
    round asks it again). The answers go into the cache in one transaction, so a file that
    cannot be read to its end changes nothing."""
    report = BatchFileReport(str(path))
    answers: dict[str, CachedAnswer] = {}
    first_line: dict[str, int] = {}
    for number, item in _json_lines(path, report):
        key = item["custom_id"]
        if key in first_line:
            report.reject(number, "duplicate custom_id", f"first on line {first_line[key]}")
            if key in answers:
                continue
        else:
            first_line[key] = number
        if not cache.is_batch_request(key):
            report.reject(number, "foreign custom_id", f"{key[:24]} is not in any of our batch files")
            continue
        error, response = item.get("error"), item.get("response")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            report.reject(number, "error line, left pending", str(message)[:120])
            continue
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if status != 200:
            detail = orjson.dumps(body).decode()[:120] if body is not None else ""
            report.reject(number, f"status {status}, left pending", detail)
            continue
        fields = completion_fields(body)
        if fields is None or not isinstance(body, dict):
            report.reject(number, "not a chat completion, left pending")
            continue
        text, prompt_tokens, completion_tokens = fields
        answers[key] = CachedAnswer(text, prompt_tokens, completion_tokens, _created(body))
    cache.put_batch_answers(answers)
    report.kept = len(answers)
    return report


def read_batch_requests(path: Path) -> tuple[list[dict[str, Any]], BatchFileReport]:
    """A batch input file's valid request lines; each bad one reported with its line."""
    report = BatchFileReport(str(path))
    requests: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, item in _json_lines(path, report):
        key = item["custom_id"]
        if key in seen:
            report.reject(number, "duplicate custom_id", f"first on line {seen[key]}")
            continue
        if item.get("method", "POST") != "POST":
            report.reject(number, "method is not POST")
            continue
        if item.get("url") not in URLS:
            report.reject(number, "unsupported url", f"{item.get('url')!r}; one of {', '.join(URLS)}")
            continue
        if not isinstance(item.get("body"), dict):
            report.reject(number, "no request body")
            continue
        seen[key] = number
        requests.append(item)
    report.kept = len(requests)
    return requests, report


async def _answer_all(root: str, requests: list[dict[str, Any]], concurrency: int, timeout_s: float
                      ) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)

    async def answer(client: httpx.AsyncClient, index: int, item: dict[str, Any]) -> dict[str, Any]:
        line: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": item["custom_id"]}
        async with gate:
            try:
                response = await client.post(root + item["url"], content=orjson.dumps(item["body"]),
                                             headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                return {**line, "response": None,
                        "error": {"code": "request_failed", "message": f"{type(exc).__name__}: {exc}"}}
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {"error": {"message": response.text[:200]}}
        return {**line, "response": {"status_code": response.status_code, "request_id": f"req_{index}",
                                     "body": body}, "error": None}

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return list(await asyncio.gather(*(answer(client, i, item) for i, item in enumerate(requests))))


def run_batch_file(in_path: Path, out_path: Path, model: str | Path | ChatModel, concurrency: int = 8,
                   timeout_s: float = 900.0) -> BatchFileReport:
    """Answer a batch input file with `model` (a checkpoint folder, an embedded model, or one
    already loaded) served on 127.0.0.1, and write the output file in OpenAI's format, in input
    order. A request the server refuses gets its 4xx as the line's response, as OpenAI's output
    files have it."""
    from convdistill.serve.chat_model import ChatModel
    from convdistill.serve.server import BackgroundServer, ServeSettings, load_chat_model

    requests, report = read_batch_requests(in_path)
    chat_model = model if isinstance(model, ChatModel) else load_chat_model(model)
    with BackgroundServer(chat_model, ServeSettings(host="127.0.0.1", port=0)) as server:
        root = server.base_url.removesuffix("/v1")
        lines = asyncio.run(_answer_all(root, requests, concurrency, timeout_s))
    write_jsonl(out_path, lines, gzip_by_name=False)
    return report
