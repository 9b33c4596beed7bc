"""The suite format: one JSON object per line, one multi-turn case each (schema: suite.schema.json).

    {"id": "memory-001", "tags": ["context_memory"], "system": "optional",
     "turns": [{"user": "...", "reference": "optional gold reply",
                "checks": {"contains": ["x", ["y", "or y"]], "not_contains": [...], "regex": [...],
                           "format_regex": [...], "recall_of": ["fact from an earlier turn"], "max_words": 40,
                           "rouge_l": 0.3, "chrf": 0.4, "judge": 6, "nll": 4.0,
                           "no_loops": true}}, ...],
     "history": "self",                       optional: this case's history mode, over the run's
     "benchmark": {"name": "mt-bench", "group": "math", "reference_guided": true, "source_id": "111"}}

`benchmark` marks a case imported from MT-Bench or MT-Bench-101 (eval/mt_bench.py): its judge
checks are judged with that benchmark's prompt and rating convention and summarised on its scale.

Validation is hand-written rather than jsonschema-driven so that every error names the file,
the line and the field (`suite.jsonl:12: turns[1].checks.regex[0]: bad pattern ...`), and so
that checks which cannot hold (recall of a fact never given, similarity without a reference)
are caught when the suite is read, not when a model is blamed for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convdistill.errors import BadInput
from convdistill.eval.mt_bench_tasks import MT_BENCH_101_TASKS

SCHEMA_PATH = Path(__file__).with_name("suite.schema.json")
CHECK_NAMES = (
    "contains", "not_contains", "regex", "format_regex", "recall_of", "max_words", "rouge_l", "chrf", "judge", "nll",
    "no_loops",
)
_CASE_KEYS = {"id", "tags", "system", "turns", "description", "history", "benchmark"}
_BENCHMARK_KEYS = {"name", "group", "reference_guided", "source_id"}
BENCHMARK_NAMES = ("mt-bench", "mt-bench-101")
HISTORY_MODES = ("gold", "self")
_TURN_KEYS = {"user", "reference", "checks"}

# contains entries: a string, or a list of alternatives of which one must appear.
Needle = str | tuple[str, ...]


class SuiteError(BadInput):
    """A suite file that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Checks:
    contains: tuple[Needle, ...] = ()
    not_contains: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    format_regex: tuple[str, ...] = ()  # a gate on the form: every pattern must match
    recall_of: tuple[str, ...] = ()
    max_words: int | None = None
    rouge_l: float | None = None  # minimum ROUGE-L F1 against the reference, 0..1
    chrf: float | None = None  # minimum chrF against the reference, 0..1 (sacrebleu's / 100)
    judge: float | None = None  # minimum judge rating, 1..10
    nll: float | None = None  # maximum mean NLL per reference token (local models)
    no_loops: bool = False  # a degenerate reply (empty, looping, echoing the user) scores 0
    case_sensitive: bool = False

    def has_content(self) -> bool:
        """Whether a check of what the reply says is set (not only gates on its form)."""
        return bool(self.contains or self.regex or self.recall_of) or any(
            getattr(self, n) is not None for n in ("rouge_l", "chrf", "judge", "nll"))

    def names(self) -> list[str]:
        out = [n for n in ("contains", "not_contains", "regex", "format_regex", "recall_of", "no_loops")
               if getattr(self, n)]
        return out + [n for n in ("max_words", "rouge_l", "chrf", "judge", "nll") if getattr(self, n) is not None]


@dataclass(frozen=True)
class Turn:
    user: str
    reference: str | None = None
    checks: Checks = field(default_factory=Checks)


@dataclass(frozen=True)
class Benchmark:
    """Where an imported case comes from and how that benchmark judges it."""

    name: str  # one of BENCHMARK_NAMES
    group: str  # MT-Bench's category, MT-Bench-101's task code
    reference_guided: bool = False  # the judge sees the turn's reference (math, reasoning, ...)
    source_id: str = ""  # question_id / id in the benchmark's file


@dataclass(frozen=True)
class Case:
    id: str
    tags: tuple[str, ...]
    turns: tuple[Turn, ...]
    system: str | None = None
    source: str = ""  # file:line, for messages
    history: str | None = None  # gold | self: this case's history mode; None: the run's
    benchmark: Benchmark | None = None

    def to_dict(self) -> dict[str, Any]:
        return case_to_dict(self)


@dataclass(frozen=True)
class Suite:
    path: str
    cases: tuple[Case, ...]

    @property
    def name(self) -> str:
        return Path(self.path).name.removesuffix(".jsonl")


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SuiteError(f"{where}: not valid JSON ({exc})") from None
        case = parse_case(data, where)
        if case.id in seen:
            raise SuiteError(f"{where}: id: {case.id!r} is already used on line {seen[case.id]}")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise SuiteError(f"{path}: the suite has no cases")
    return Suite(str(path), tuple(cases))


def load_suites(paths: Iterable[str | Path]) -> Suite:
    """Several suite files as one suite (case ids must stay unique across them)."""
    suites = [load_suite(p) for p in paths]
    if len(suites) == 1:
        return suites[0]
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for suite in suites:
        for case in suite.cases:
            if case.id in seen:
                raise SuiteError(f"{case.source}: id: {case.id!r} is already used at {seen[case.id]}")
            seen[case.id] = case.source
            cases.append(case)
    return Suite("+".join(s.path for s in suites), tuple(cases))


def _no_unknown_fields(data: dict[str, Any], allowed: set[str], where: str) -> None:
    """`where` ends where a field's name follows ("file:3: ", "file:3 (id): turns[0].")."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SuiteError(f"{where}{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def parse_case(data: Any, where: str) -> Case:
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: a case must be a JSON object, got {type(data).__name__}")
    _no_unknown_fields(data, _CASE_KEYS, f"{where}: ")
    case_id = data.get("id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise SuiteError(f"{where}: id: a non-empty string is required")
    where = f"{where} ({case_id})"
    tags = data.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
        raise SuiteError(f"{where}: tags: a non-empty list of strings is required (the abilities tested)")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise SuiteError(f"{where}: system: must be a string")
    turns_data = data.get("turns")
    if not isinstance(turns_data, list) or not turns_data:
        raise SuiteError(f"{where}: turns: a non-empty list is required")
    history = data.get("history")
    if history is not None and history not in HISTORY_MODES:
        raise SuiteError(f"{where}: history: {' or '.join(HISTORY_MODES)} is required, got {history!r}")
    benchmark = _parse_benchmark(data["benchmark"], f"{where}: benchmark") if "benchmark" in data else None
    turns: list[Turn] = []
    for index, turn_data in enumerate(turns_data):
        earlier = [system or ""] + [t.user for t in turns] + [t.reference or "" for t in turns]
        turns.append(_parse_turn(turn_data, f"{where}: turns[{index}]", earlier))
    return Case(case_id, tuple(tags), tuple(turns), system, where.split(" (")[0], history, benchmark)


def _parse_benchmark(data: Any, where: str) -> Benchmark:
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: an object with name, group (and reference_guided, source_id) is required")
    _no_unknown_fields(data, _BENCHMARK_KEYS, f"{where}.")
    name = data.get("name")
    if name not in BENCHMARK_NAMES:
        raise SuiteError(f"{where}.name: one of {', '.join(BENCHMARK_NAMES)} is required, got {name!r}")
    group = data.get("group")
    if not isinstance(group, str) or not group:
        raise SuiteError(f"{where}.group: a non-empty string is required (the category or task)")
    if name == "mt-bench-101" and group not in MT_BENCH_101_TASKS:
        known = ", ".join(MT_BENCH_101_TASKS)
        raise SuiteError(f"{where}.group: unknown MT-Bench-101 task {group!r} (known: {known})")
    guided = data.get("reference_guided", False)
    if not isinstance(guided, bool):
        raise SuiteError(f"{where}.reference_guided: must be true or false")
    source_id = data.get("source_id", "")
    if not isinstance(source_id, str):
        raise SuiteError(f"{where}.source_id: must be a string")
    return Benchmark(name, group, guided, source_id)


def _parse_turn(data: Any, where: str, earlier: list[str]) -> Turn:
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: a turn must be an object with 'user' (and optional 'reference', 'checks')")
    _no_unknown_fields(data, _TURN_KEYS, f"{where}.")
    user = data.get("user")
    if not isinstance(user, str) or not user.strip():
        raise SuiteError(f"{where}.user: a non-empty string is required")
    reference = data.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise SuiteError(f"{where}.reference: must be a string")
    checks = _parse_checks(data.get("checks", {}), f"{where}.checks", reference, earlier)
    return Turn(user, reference, checks)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(f"{where}: a string or a list of non-empty strings is required")
    return tuple(value)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SuiteError(f"{where}: a number from {low:g} to {high:g} is required, got {value!r}")
    return float(value)


def _parse_checks(data: Any, where: str, reference: str | None, earlier: list[str]) -> Checks:
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: must be an object")
    allowed = (*CHECK_NAMES, "case_sensitive")
    for key in data:
        if key not in allowed:
            raise SuiteError(f"{where}.{key}: unknown check (known: {', '.join(CHECK_NAMES)})")
    fields: dict[str, Any] = {}
    case_sensitive = data.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise SuiteError(f"{where}.case_sensitive: must be true or false")
    fields["case_sensitive"] = case_sensitive
    if "contains" in data:
        value = data["contains"]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise SuiteError(f"{where}.contains: a string or a non-empty list is required")
        needles: list[Needle] = []
        for i, item in enumerate(items):
            if isinstance(item, list):
                needles.append(_strings(item, f"{where}.contains[{i}]"))
            else:
                needles.append(_strings(item, f"{where}.contains[{i}]")[0])
        fields["contains"] = tuple(needles)
    if "not_contains" in data:
        fields["not_contains"] = _strings(data["not_contains"], f"{where}.not_contains")
    for name in ("regex", "format_regex"):
        if name in data:
            patterns = _strings(data[name], f"{where}.{name}")
            for i, pattern in enumerate(patterns):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise SuiteError(f"{where}.{name}[{i}]: bad pattern {pattern!r} ({exc})") from None
            fields[name] = patterns
    if "recall_of" in data:
        facts = _strings(data["recall_of"], f"{where}.recall_of")
        context = "\n".join(earlier).casefold()
        for i, fact in enumerate(facts):
            if fact.casefold() not in context:
                raise SuiteError(f"{where}.recall_of[{i}]: {fact!r} is not given in any earlier turn of the case")
        fields["recall_of"] = facts
    if "max_words" in data:
        value = data["max_words"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SuiteError(f"{where}.max_words: a positive integer is required, got {value!r}")
        fields["max_words"] = value
    for name in ("rouge_l", "chrf"):
        if name in data:
            fields[name] = _number(data[name], f"{where}.{name}", 0.0, 1.0)
            if reference is None:
                raise SuiteError(f"{where}.{name}: needs a reference reply in this turn")
    if "no_loops" in data:
        if not isinstance(data["no_loops"], bool):
            raise SuiteError(f"{where}.no_loops: must be true or false")
        fields["no_loops"] = data["no_loops"]
    if "judge" in data:
        fields["judge"] = _number(data["judge"], f"{where}.judge", 1.0, 10.0)
    if "nll" in data:
        fields["nll"] = _number(data["nll"], f"{where}.nll", 0.0, 1000.0)
        if reference is None:
            raise SuiteError(f"{where}.nll: needs a reference reply in this turn")
    return Checks(**fields)


def case_to_dict(case: Case) -> dict[str, Any]:
    """The JSONL object for a case (inverse of parse_case), defaults left out."""
    out: dict[str, Any] = {"id": case.id, "tags": list(case.tags)}
    if case.system is not None:
        out["system"] = case.system
    if case.history is not None:
        out["history"] = case.history
    if case.benchmark is not None:
        out["benchmark"] = asdict(case.benchmark)
    turns = []
    for turn in case.turns:
        item: dict[str, Any] = {"user": turn.user}
        if turn.reference is not None:
            item["reference"] = turn.reference
        checks: dict[str, Any] = {}
        for name in turn.checks.names():
            value = getattr(turn.checks, name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            checks[name] = value
        if turn.checks.case_sensitive:
            checks["case_sensitive"] = True
        if checks:
            item["checks"] = checks
        turns.append(item)
    out["turns"] = turns
    return out
