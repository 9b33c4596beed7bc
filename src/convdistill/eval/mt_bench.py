"""MT-Bench and MT-Bench-101 question files as regression-suite cases, judged as they judge.

    import_mt_bench(path)        question.jsonl: {"question_id", "category", "turns": [q1, q2],
                                 "reference": [a1, a2] (optional)} -> one case per question;
                                 reference=FastChat's reference_answer/gpt-4.jsonl for the
                                 math, reasoning and coding references MT-Bench judges with
    import_mt_bench_101(path)    {"task": "CM", "id": 1, "history": [{"user", "bot"}, ...]}
                                 -> one case per dialogue, the bots' replies as gold references
    judge_prompt(case, k, ...)   the judge prompt of turn k in the benchmark's manner
    benchmark_summary(cases)     ratings on the benchmarks' 1..10 scale beside our 0..1 scores

The two benchmarks differ in what a turn sees and what a conversation scores:

- MT-Bench: every turn is judged, on the model's own history (`history: self`); the math,
  reasoning and coding categories are judged against the reference answer; the score of a
  category is the mean of its turns' ratings, the overall score the mean over all turns.
- MT-Bench-101: the history is the gold one (`history: gold`: earlier turns are the file's bot
  replies); the first turn of the tasks that need something to work on (memory, anaphora,
  rephrasing, self-correction, self-affirmation) is context and not judged; mathematical and
  general reasoning are judged against the gold reply; a dialogue scores its worst judged turn,
  a task the mean of its dialogues, the overall score the mean over tasks.

The judge prompts are this project's own wording of those rules; the rating is asked for in
the benchmarks' "Rating: [[n]]" convention and read with it first (judge.read_benchmark_rating).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convdistill.conversation_trees.ingest_report import Reject
from convdistill.eval.mt_bench_tasks import MT_BENCH_101_TASKS
from convdistill.eval.suite import Case, SuiteError, parse_case

Message = dict[str, str]

# MT-Bench judges these categories against a reference answer (FastChat's NEED_REF_CATS).
MT_BENCH_REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


# Tasks whose first turn only sets up what later turns work on: it is history, not judged.
MT_BENCH_101_CONTEXT_FIRST = ("CM", "AR", "CR", "FR", "SC", "SA")
MT_BENCH_101_REFERENCE_TASKS = ("MR", "GR")

DEFAULT_PASS_RATING = 6.0  # the judge check: a turn rated at least this passes (below: (rating - 1) / (6 - 1))

_RATING_FORMAT = (
    'Begin with a short explanation and be as objective as possible; the length of the answer must not '
    'sway you. Then give your rating from 1 to 10 in double square brackets, exactly in this form: '
    '"Rating: [[5]]".'
)


def mt_bench_101_scored_turns(task: str, turns: int) -> list[int]:
    """0-based indices of the turns MT-Bench-101 judges in a dialogue of `turns` turns."""
    first = 1 if task in MT_BENCH_101_CONTEXT_FIRST else 0
    return list(range(first, turns))


# -- import ---------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """What an import read: cases for the kept lines, a Reject per problem of the others."""

    file: str
    benchmark: str
    cases: list[Case] = field(default_factory=list)
    problems: list[Reject] = field(default_factory=list)
    lines_read: int = 0
    lines_rejected: int = 0
    references: ReferenceAnswers | None = None  # mt-bench --reference: the answer file's counts

    @property
    def lines_kept(self) -> int:
        return len(self.cases)

    def summary(self) -> str:
        turns = sum(len(c.turns) for c in self.cases)
        judged = sum(1 for c in self.cases for t in c.turns if t.checks.judge is not None)
        guided = sum(1 for c in self.cases if c.benchmark is not None and c.benchmark.reference_guided)
        text = (
            f"{self.file}: read {self.lines_read} {self.benchmark} lines, kept {self.lines_kept} cases "
            f"({turns} turns, {judged} judged, {guided} cases reference-guided), rejected {self.lines_rejected} "
            f"lines ({len(self.problems)} problems)"
        )
        if self.references is not None:
            text += "\n" + self.references.summary()
        return text


Validator = Callable[[dict[str, Any], Callable[[str, str], None]], dict[str, Any] | None]


Problem = Callable[[str, str], None]


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, list[Reject], Problem]]:
    """(line number, the line's object or None, its problems, the problem reporter) for each
    non-blank line; a line that is not a JSON object already holds its problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        found: list[Reject] = []

        def problem(kind: str, reason: str, number: int = number, found: list[Reject] = found) -> None:
            found.append(Reject(str(path), number, kind, reason))

        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problem("malformed_json", f"not valid JSON ({exc})")
            data = None
        if data is not None and not isinstance(data, dict):
            problem("schema", f"a JSON object is required, got {type(data).__name__}")
        yield number, data if isinstance(data, dict) else None, found, problem


def _read_lines(path: str | Path, benchmark: str, to_case: Validator) -> ImportResult:
    """Each non-blank line through `to_case`, which reports problems through `problem(kind,
    reason)` and returns a suite case object when there were none. Every problem of a line is
    reported (one Reject each); a line with any problem is rejected, every other line kept."""
    path = Path(path)
    result = ImportResult(str(path), benchmark)
    seen: dict[str, int] = {}
    for number, data, found, problem in _json_lines(path):
        result.lines_read += 1
        case = to_case(data, problem) if data is not None else None
        if case is not None and case["id"] in seen:
            problem("duplicate", f"id: {case['id']!r} is already used on line {seen[case['id']]}")
        if found or case is None:
            result.problems.extend(found)
            result.lines_rejected += 1
            continue
        seen[case["id"]] = number
        # Through the suite parser, so that what is written is exactly what `eval run` accepts.
        result.cases.append(parse_case(case, f"{path}:{number}"))
    return result


@dataclass
class ReferenceAnswers:
    """FastChat's reference-answer file (``reference_answer/gpt-4.jsonl``): one answer a line,
    ``{"question_id", "model_id", "choices": [{"index": 0, "turns": [a1, a2]}]}``."""

    file: str
    answers: dict[str, list[str]] = field(default_factory=dict)  # question id -> one answer a turn
    problems: list[Reject] = field(default_factory=list)
    lines_read: int = 0
    lines_rejected: int = 0
    used: set[str] = field(default_factory=set)  # question ids whose answers became references

    def summary(self) -> str:
        unused = len(self.answers) - len(self.used)
        return (f"{self.file}: read {self.lines_read} reference answers, used {len(self.used)} "
                f"({unused} for questions not imported or not judged against a reference), "
                f"rejected {self.lines_rejected} lines")


def read_reference_answers(path: str | Path) -> ReferenceAnswers:
    """The reference answers of a FastChat answer file, by question id; bad lines are rejects."""
    path = Path(path)
    refs = ReferenceAnswers(str(path))
    seen: dict[str, int] = {}
    for number, data, found, problem in _json_lines(path):
        refs.lines_read += 1
        qid = _source_id(data, "question_id", problem) if data is not None else None
        turns = _reference_turns(data, problem) if data is not None else None
        if qid is not None and qid in seen:
            problem("duplicate", f"question_id: {qid!r} already answered on line {seen[qid]}")
        if found or qid is None or turns is None:
            refs.problems.extend(found)
            refs.lines_rejected += 1
            continue
        seen[qid] = number
        refs.answers[qid] = turns
    return refs


def _reference_turns(data: dict[str, Any], problem: Problem) -> list[str] | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        problem("wrong_type", "choices: a non-empty list of {index, turns} objects is required")
        return None
    turns = choices[0].get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        problem("wrong_type", "choices[0].turns: a non-empty list of strings is required (one answer a turn)")
        return None
    return turns


def _source_id(data: dict[str, Any], key: str, problem: Callable[[str, str], None]) -> str | None:
    value = data.get(key)
    if key not in data:
        problem("missing_field", f"{key}: missing (an integer or a string is required)")
    elif isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        problem("wrong_type", f"{key}: an integer or a non-empty string is required, got {value!r}")
    else:
        return str(value)
    return None


def _mt_bench_case(data: dict[str, Any], problem: Callable[[str, str], None], pass_rating: float,
                   refs: ReferenceAnswers | None = None) -> dict | None:
    qid = _source_id(data, "question_id", problem)
    category = data.get("category")
    if "category" not in data:
        problem("missing_field", "category: missing (writing, math, ...)")
    elif not isinstance(category, str) or not category.strip():
        problem("wrong_type", f"category: a non-empty string is required, got {category!r}")
    turns = data.get("turns")
    if "turns" not in data:
        problem("missing_field", "turns: missing (the list of user questions)")
    elif not isinstance(turns, list) or not turns:
        problem("wrong_type", f"turns: a non-empty list of strings is required, got {type(turns).__name__}")
        turns = None
    else:
        for i, text in enumerate(turns):
            if not isinstance(text, str) or not text.strip():
                problem("wrong_type", f"turns[{i}]: a non-empty string is required, got {text!r}")
    reference = data.get("reference")
    if reference is not None:
        if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
            problem("wrong_type", "reference: a list of strings is required (one answer per turn)")
            reference = None
        elif isinstance(turns, list) and len(reference) > len(turns):
            problem("schema", f"reference: {len(reference)} answers for {len(turns)} turns")
    if qid is None or not isinstance(category, str) or not category.strip() or not isinstance(turns, list):
        return None
    references = list(reference or [])
    if refs is not None and category in MT_BENCH_REFERENCE_CATEGORIES and qid in refs.answers:
        # MT-Bench judges these categories against the reference file's answer, not the inline one
        references = refs.answers[qid][: len(turns)]
        refs.used.add(qid)
    guided = category in MT_BENCH_REFERENCE_CATEGORIES and any(r.strip() for r in references)
    case_turns = []
    for i, text in enumerate(turns):
        turn: dict[str, Any] = {"user": text, "checks": {"judge": pass_rating}}
        if i < len(references) and references[i].strip():
            turn["reference"] = references[i]
        case_turns.append(turn)
    return {
        "id": f"mt-bench-{qid}",
        "tags": [category],
        "history": "self",
        "benchmark": {"name": "mt-bench", "group": category, "reference_guided": guided, "source_id": qid},
        "turns": case_turns,
    }


def _mt_bench_101_case(data: dict[str, Any], problem: Callable[[str, str], None], pass_rating: float) -> dict | None:
    task = data.get("task")
    if "task" not in data:
        problem("missing_field", "task: missing (CM, SI, AR, ...)")
    elif not isinstance(task, str):
        problem("wrong_type", f"task: a string is required, got {task!r}")
        task = None
    elif task not in MT_BENCH_101_TASKS:
        problem("unknown_task", f"task: unknown MT-Bench-101 task {task!r} (known: {', '.join(MT_BENCH_101_TASKS)})")
        task = None
    dialogue_id = _source_id(data, "id", problem)
    history = data.get("history")
    if "history" not in data:
        problem("missing_field", "history: missing (the list of {user, bot} turns)")
        history = None
    elif not isinstance(history, list) or not history:
        problem("wrong_type", f"history: a non-empty list of {{user, bot}} objects is required, got {history!r:.60}")
        history = None
    else:
        for i, turn in enumerate(history):
            if not isinstance(turn, dict):
                problem("wrong_type", f"history[{i}]: an object with user and bot is required")
                continue
            for key in ("user", "bot"):
                if key not in turn:
                    problem("missing_field", f"history[{i}].{key}: missing")
                elif not isinstance(turn[key], str) or not turn[key].strip():
                    problem("wrong_type", f"history[{i}].{key}: a non-empty string is required, got {turn[key]!r:.60}")
    if isinstance(task, str) and isinstance(history, list) and not mt_bench_101_scored_turns(task, len(history)):
        problem("schema", f"history: task {task} judges the turns after the first, and there is only one")
    if task is None or dialogue_id is None or history is None:
        return None
    scored = set(mt_bench_101_scored_turns(task, len(history)))
    turns = []
    for i, turn in enumerate(history):
        item: dict[str, Any] = {"user": turn.get("user"), "reference": turn.get("bot")}
        if i in scored:
            item["checks"] = {"judge": pass_rating}
        turns.append(item)
    return {
        "id": f"mt-bench-101-{task}-{dialogue_id}",
        "tags": [task],
        "history": "gold",
        "benchmark": {"name": "mt-bench-101", "group": task,
                      "reference_guided": task in MT_BENCH_101_REFERENCE_TASKS, "source_id": dialogue_id},
        "turns": turns,
    }


def import_mt_bench(path: str | Path, pass_rating: float = DEFAULT_PASS_RATING,
                    reference: str | Path | None = None) -> ImportResult:
    """MT-Bench's question.jsonl as cases: both turns judged, own history. `reference`: FastChat's
    reference-answer file; its answers are the references of the math, reasoning and coding
    questions it answers (over an inline `reference`), as MT-Bench's judge uses them."""
    refs = read_reference_answers(reference) if reference is not None else None
    result = _read_lines(path, "mt-bench", lambda data, problem: _mt_bench_case(data, problem, pass_rating, refs))
    result.references = refs
    return result


def import_mt_bench_101(path: str | Path, pass_rating: float = DEFAULT_PASS_RATING) -> ImportResult:
    """MT-Bench-101's dialogues as cases: gold history, the task's turns judged."""
    return _read_lines(path, "mt-bench-101", lambda data, problem: _mt_bench_101_case(data, problem, pass_rating))


IMPORTERS: dict[str, Callable[[str | Path, float], ImportResult]] = {
    "mt-bench": import_mt_bench,
    "mt-bench-101": import_mt_bench_101,
}


# -- judging --------------------------------------------------------------------------------------
def _dialogue(history: Sequence[Message], reply: str) -> str:
    """The conversation as the judge reads it, turns numbered, the reply to rate marked."""
    lines: list[str] = []
    turn = 0
    for message in history:
        if message["role"] == "system":
            lines.append(f"### System message\n{message['content']}")
        elif message["role"] == "user":
            turn += 1
            lines.append(f"### User (turn {turn})\n{message['content']}")
        else:
            lines.append(f"### Assistant (turn {turn})\n{message['content']}")
    lines.append(f"### Assistant (turn {turn}) - THE REPLY TO RATE\n{reply or '(empty reply)'}")
    return "\n\n".join(lines)


def judge_prompt(case: Case, depth: int, history: Sequence[Message], reply: str) -> str:
    """The judge prompt for turn `depth` (0-based) of a benchmark case, `history` being what
    the model saw (ending with the user's message) and `reply` its answer."""
    assert case.benchmark is not None, "judge_prompt is for imported benchmark cases"
    bench = case.benchmark
    turn_no = depth + 1
    if bench.name == "mt-bench":
        focus = (
            "Rate the assistant's answer to the user's question below."
            if depth == 0
            else f"Below is a conversation of {turn_no} turns; rate only the assistant's answer to the user's "
            f"last question (turn {turn_no}), in the light of the earlier turns."
        )
        criteria = ("Consider how helpful, relevant, accurate, deep, creative and detailed it is."
                    if not bench.reference_guided else
                    "Correctness matters most: compare the answer with the reference answer, point out every "
                    "mistake, then consider helpfulness.")
        intro = f"You are an impartial judge of an AI assistant's answers. {focus} {criteria}"
    else:
        ability, criterion = MT_BENCH_101_TASKS[bench.group]
        intro = (
            "You are an impartial judge of an AI assistant in a multi-turn dialogue. The earlier turns are a "
            "given, correct history and are not rated; rate only the assistant's reply in the last turn "
            f"(turn {turn_no}). The ability under test is {ability}. {criterion} A rating of 1 means the reply "
            "fails this completely, 10 that it meets it perfectly."
        )
    parts = [intro, _RATING_FORMAT, "[The dialogue]\n" + _dialogue(history, reply)]
    if bench.reference_guided:
        shown = range(depth + 1) if bench.name == "mt-bench" else (depth,)
        references = [(k + 1, case.turns[k].reference) for k in shown if case.turns[k].reference]
        if references:
            parts.append("[Reference answers]\n" + "\n\n".join(f"### Turn {k}\n{r}" for k, r in references))
    parts.append("Your evaluation, ending with \"Rating: [[n]]\":")
    return "\n\n".join(parts)


# -- scores on the benchmarks' scale ---------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _turn_rating(turn: dict[str, Any]) -> float | None:
    check = next((c for c in turn["checks"] if c["name"] == "judge"), None)
    return check["value"] if check is not None else None


def _judged(turn: dict[str, Any]) -> bool:
    return any(c["name"] == "judge" for c in turn["checks"])


def benchmark_summary(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per benchmark present in the results' cases: ratings (1..10) per group (category / task),
    per turn and overall, computed as the benchmark computes them, beside our 0..1 case scores;
    how many judged turns got a rating, the judges' mean spread and how their ratings were written."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        if case.get("benchmark"):
            by_name[case["benchmark"]["name"]].append(case)
    out: dict[str, dict[str, Any]] = {}
    for name, members in sorted(by_name.items()):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for case in members:
            groups[case["benchmark"]["group"]].append(case)
        by_group: dict[str, dict[str, Any]] = {}
        all_ratings: list[float] = []
        by_turn: dict[int, list[float]] = defaultdict(list)
        for group, group_cases in sorted(groups.items()):
            unit_ratings: list[float] = []  # MT-Bench: turns; MT-Bench-101: dialogues (their worst turn)
            for case in group_cases:
                ratings = [r for r in map(_turn_rating, case["turns"]) if r is not None]
                for turn in case["turns"]:
                    rating = _turn_rating(turn)
                    if rating is not None:
                        by_turn[turn["depth"]].append(rating)
                all_ratings += ratings
                if name == "mt-bench-101":
                    unit_ratings += [min(ratings)] if ratings else []
                else:
                    unit_ratings += ratings
            scores = [c["score"] for c in group_cases if c["score"] is not None]
            by_group[group] = {"rating": _mean(unit_ratings), "score": _mean(scores), "cases": len(group_cases)}
        group_ratings = [g["rating"] for g in by_group.values() if g["rating"] is not None]
        # MT-Bench: the mean over all judged turns; MT-Bench-101: the mean over its tasks.
        overall = _mean(all_ratings) if name == "mt-bench" else _mean(group_ratings)
        judged = [t for c in members for t in c["turns"] if _judged(t)]
        spreads = [t["judge_spread"] for t in judged if t.get("judge_spread") is not None]
        forms: dict[str, int] = defaultdict(int)
        for turn in judged:
            for form in turn.get("judge_forms", ()):
                forms[form] += 1
        scores = [c["score"] for c in members if c["score"] is not None]
        out[name] = {
            "scale": "1-10",
            "overall": overall,
            "score": _mean(scores),  # ours, 0..1: mean of case scores (case = its worst turn)
            "by_group": by_group,
            "by_turn": {str(d): _mean(v) for d, v in sorted(by_turn.items())},
            "cases": len(members),
            "turns_judged": len(judged),
            "turns_rated": sum(1 for t in judged if _turn_rating(t) is not None),
            "mean_spread": _mean(spreads),
            "median_spread": statistics.median(spreads) if spreads else None,
            "rating_forms": dict(sorted(forms.items())),
        }
    return out
