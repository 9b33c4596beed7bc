"""Run a suite against a backend: generate every turn, score it, and gather the results.

History modes: `gold` (turn k sees the reference replies of turns < k, as MT-Bench-101 does, so
one early slip does not spoil later turns) and `self` (turn k sees the model's own earlier
replies, as MT-Bench does). In gold mode a turn without a reference is continued with the
model's own reply. A case that names its own mode (imported benchmark cases do) keeps it.
Turns are generated in waves: every turn whose history is known goes into the same wave,
so gold mode is one batch for the whole suite and self mode one per depth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from convdistill.errors import BadInput, BadRecipe, Unavailable
from convdistill.eval.backends import Backend, Message
from convdistill.eval.checks import run_checks, same_replies, turn_score
from convdistill.eval.judge import Judge
from convdistill.eval.mt_bench import benchmark_summary, judge_prompt
from convdistill.eval.scoring import case_score, summarize
from convdistill.eval.suite import HISTORY_MODES, Case, Checks, Suite

RESULTS_FORMAT = "convdistill-eval-results/1"


@dataclass
class RunOptions:
    history: str = "gold"
    judge: Judge | None = None
    pairwise_baseline: dict[str, Any] | None = None  # results of the baseline, for pairwise judging
    nll: bool = True  # teacher-forced NLL of references where the backend can give it
    # Gold history only: generate and score just the turns that carry one of these checks (say
    # ("recall_of",)); the other turns are history, their references standing in for replies
    # (a turn without a reference is still generated: later turns need it). Empty: every turn.
    only_checks: tuple[str, ...] = ()


def turn_history(case: Case, depth: int, replies: Sequence[str | None], mode: str) -> list[Message]:
    """The messages a model sees before answering turn `depth` (0-based) of `case`: the system
    prompt, then each earlier turn's user message and reply. `mode` "gold" puts the case's
    reference replies there (where a turn has one), "self" the model's `replies` (which must then
    be known for every earlier turn). Scoring a reference (`reference_nll`) uses "gold" too."""
    messages: list[Message] = [{"role": "system", "content": case.system}] if case.system else []
    for k in range(depth):
        turn = case.turns[k]
        prior = turn.reference if mode == "gold" and turn.reference is not None else replies[k]
        assert prior is not None, "a turn is generated only after its history is known"
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": prior}]
    return [*messages, {"role": "user", "content": case.turns[depth].user}]


def checked_turns(cases: Sequence[Case], mode: str, names: Sequence[str]) -> set[tuple[int, int]]:
    """(case, turn) places of the turns that carry one of the checks `names`, and of the turns
    without a reference that their gold history needs generated: what `RunOptions.only_checks`
    runs."""
    unknown = sorted(set(names) - {f.name for f in fields(Checks)})
    if unknown:
        raise BadRecipe(f"only_checks: no check is called {', '.join(map(repr, unknown))}")
    if mode != "gold" or any(case.history == "self" for case in cases):
        raise BadRecipe("only_checks needs gold history: in self history every turn's reply is a later turn's history")
    places: set[tuple[int, int]] = set()
    for i, case in enumerate(cases):
        places.update((i, k) for k, turn in enumerate(case.turns)
                      if turn.reference is None or any(getattr(turn.checks, n) for n in names))
    return places


def generate_replies(
    cases: Sequence[Case], backend: Backend, mode: str, progress: Callable[[int, int], None] | None = None,
    only: set[tuple[int, int]] | None = None,
) -> tuple[list[list[str]], list[list[list[Message]]]]:
    """Every reply of every case, and the history each one was generated from; with `only` (gold
    history), the replies of those (case, turn) places, the others left empty."""
    if mode not in HISTORY_MODES:
        raise BadRecipe(f"history mode {mode!r}: choose {' or '.join(HISTORY_MODES)}")
    modes = [case.history or mode for case in cases]
    replies: list[list[str | None]] = [[None] * len(c.turns) for c in cases]
    histories: list[list[list[Message]]] = [[[] for _ in c.turns] for c in cases]
    total, done = (sum(len(c.turns) for c in cases) if only is None else len(only)), 0
    while done < total:
        wave: list[tuple[int, int]] = []
        for i, case in enumerate(cases):
            for k in range(len(case.turns)):
                if replies[i][k] is not None or (only is not None and (i, k) not in only):
                    continue
                known = all(
                    replies[i][j] is not None or (modes[i] == "gold" and case.turns[j].reference is not None)
                    for j in range(k)
                )
                if known:
                    wave.append((i, k))
                if modes[i] == "self" or not known:
                    break  # later turns of this case wait for this one
        for i, k in wave:
            histories[i][k] = turn_history(cases[i], k, replies[i], modes[i])
        for (i, k), reply in zip(wave, backend.generate([histories[i][k] for i, k in wave]), strict=True):
            replies[i][k] = reply
        done += len(wave)
        if progress:
            progress(done, total)
    return [[r or "" for r in row] for row in replies], histories


def run_suite(
    suite: Suite,
    backend: Backend,
    options: RunOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    options = options or RunOptions()
    cases = suite.cases
    started = time.perf_counter()
    only = checked_turns(cases, options.history, options.only_checks) if options.only_checks else None
    replies, histories = generate_replies(cases, backend, options.history, progress, only)
    generation_s = time.perf_counter() - started
    places = [(i, k) for i, c in enumerate(cases) for k in range(len(c.turns)) if only is None or (i, k) in only]

    nll: dict[tuple[int, int], float] = {}
    with_reference = [(i, k) for i, k in places if cases[i].turns[k].reference is not None]
    if options.nll and with_reference:
        # The reference was written for the gold history, so it is scored after it in both modes.
        pairs = [(turn_history(cases[i], k, replies[i], "gold"), cases[i].turns[k].reference)
                 for i, k in with_reference]
        values = backend.reference_nll(pairs)  # type: ignore[arg-type]
        if values is not None:
            nll = dict(zip(with_reference, values, strict=True))

    ratings: dict[tuple[int, int], Any] = {}
    if options.judge is not None:
        judge = options.judge
        judged = [(i, k) for i, k in places if cases[i].turns[k].checks.judge is not None]
        # Imported benchmark cases are judged with their benchmark's prompt and [[n]] convention.
        prompts = [
            judge_prompt(cases[i], k, histories[i][k], replies[i][k]) if cases[i].benchmark
            else judge.rating_prompt(histories[i][k], replies[i][k], cases[i].turns[k].reference)
            for i, k in judged
        ]
        rated = judge.rate_prompts(prompts, [cases[i].benchmark is not None for i, _ in judged])
        ratings = dict(zip(judged, rated, strict=True))

    pairwise: dict[tuple[int, int], dict[str, Any]] = {}
    if options.judge is not None and options.pairwise_baseline is not None:
        base = {c["id"]: c for c in options.pairwise_baseline["cases"]}
        compared = [(i, k) for i, k in places if cases[i].id in base and k < len(base[cases[i].id]["turns"])]
        items = [(histories[i][k], replies[i][k], base[cases[i].id]["turns"][k]["reply"]) for i, k in compared]
        pairwise = dict(zip(compared, options.judge.compare(items), strict=True))

    extras: dict[tuple[int, int], dict[str, Any]] = {}
    for place, rating in ratings.items():
        extras[place] = {"judge_samples": list(rating.samples), "judge_spread": rating.spread}
        if rating.forms:
            extras[place]["judge_forms"] = list(rating.forms)
    for place, verdict in pairwise.items():
        extras.setdefault(place, {})["pairwise"] = verdict
    medians = {place: rating.median for place, rating in ratings.items()}
    out_cases, summary = score_replies(cases, replies, nll, medians, extras, only)
    return {
        "format": RESULTS_FORMAT,
        "suite": suite.path,
        "model": backend.name,
        "history": options.history,
        **({"only_checks": list(options.only_checks)} if options.only_checks else {}),
        "judge": options.judge.model if options.judge else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "generation_seconds": round(generation_s, 3),
        "summary": summary,
        "cases": out_cases,
    }


def run_controls(
    suite: Suite, histories: Sequence[str] = HISTORY_MODES, controls: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Results of every control model (eval/controls.py) on `suite`, in each history mode: the
    floor beside which a model's figures are read. Instant: controls generate nothing."""
    from convdistill.eval.controls import ControlBackend, control_names, reference_pool

    references = reference_pool(suite)
    return [
        run_suite(suite, ControlBackend(name, references), RunOptions(history=history, nll=False))
        for name in controls or control_names()
        for history in histories
    ]


def score_replies(
    cases: Sequence[Case],
    replies: Sequence[Sequence[str]],
    nll: dict[tuple[int, int], float],
    ratings: dict[tuple[int, int], float | None],
    extras: dict[tuple[int, int], dict[str, Any]],
    only: set[tuple[int, int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every turn's checks and score, the cases' and the run's summary, from the replies (and
    the measurements that came with them, keyed by (case index, turn index)): judge ratings,
    reference NLLs, and `extras` copied into the turn records as they are. With `only`, just
    those turns are scored and recorded (each keeps its depth)."""
    places = [(i, k) for i, c in enumerate(cases) for k in range(len(c.turns)) if only is None or (i, k) in only]
    # A reply that does not depend on what it is asked (one sentence for every question) fails a
    # gate. Only turns that ask for content count: "Noted." to three facts a user gives is fine.
    asked = [(i, k) for i, k in places if cases[i].turns[k].checks.has_content()]
    repeats = dict(zip(asked, same_replies([(cases[i].turns[k].user, replies[i][k]) for i, k in asked]),
                       strict=True))
    out_cases: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        turns: list[dict[str, Any]] = []
        for k, turn in enumerate(case.turns):
            if only is not None and (i, k) not in only:
                continue
            checks = run_checks(
                turn.checks, replies[i][k], turn.reference, ratings.get((i, k)), nll.get((i, k)), turn.user,
                repeats.get((i, k), 1),
            )
            score, passed = turn_score(checks)
            turns.append({
                "depth": k + 1,
                "user": turn.user,
                "reply": replies[i][k],
                "reference": turn.reference,
                "score": score,
                "passed": passed,
                "checks": [c.to_dict() for c in checks],
                "nll": nll.get((i, k)),
                **extras.get((i, k), {}),
            })
        score, passed = case_score(turns)
        out_case: dict[str, Any] = {"id": case.id, "tags": list(case.tags), "score": score, "passed": passed,
                                    "turns": turns}
        if case.history is not None:
            out_case["history"] = case.history
        if case.benchmark is not None:
            out_case["benchmark"] = asdict(case.benchmark)
        out_cases.append(out_case)

    summary = summarize(out_cases)
    if any(case.benchmark for case in cases):
        summary["benchmarks"] = benchmark_summary(out_cases)
    verdicts = [extra["pairwise"]["verdict"] for extra in extras.values() if "pairwise" in extra]
    if verdicts:
        summary["pairwise"] = {name: verdicts.count(name) for name in ("model", "baseline", "tie")}
    return out_cases, summary


def rescore(results: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """`results` scored again by today's checks of `suite`, from the replies, reference NLLs and
    judge ratings they hold: nothing is generated or judged again. For results written before a
    change of the scoring or of a suite's checks. Every case of the suite must be in them, with
    the same turns."""
    stored = {c["id"]: c for c in results["cases"]}
    missing = [case.id for case in suite.cases if case.id not in stored]
    if missing:
        raise BadInput(f"the results hold no replies for {len(missing)} cases of the suite ({', '.join(missing[:3])}"
                       f"{', ...' if len(missing) > 3 else ''}): run them again instead")
    # results of a run with only_checks hold just those turns, each under its depth
    only = (checked_turns(suite.cases, results.get("history", "gold"), results["only_checks"])
            if results.get("only_checks") else None)
    replies: list[list[str]] = []
    nll: dict[tuple[int, int], float] = {}
    ratings: dict[tuple[int, int], float | None] = {}
    extras: dict[tuple[int, int], dict[str, Any]] = {}
    for i, case in enumerate(suite.cases):
        turns = stored[case.id]["turns"]
        kept_turns = [k for k in range(len(case.turns)) if only is None or (i, k) in only]
        if [t["user"] for t in turns] != [case.turns[k].user for k in kept_turns]:
            raise BadInput(f"case {case.id}: its user turns in the results differ from the suite's: run it again")
        row = [""] * len(case.turns)
        for k, t in zip(kept_turns, turns, strict=True):
            row[k] = t["reply"]
            if t.get("nll") is not None:
                nll[(i, k)] = t["nll"]
            judged = [c["value"] for c in t["checks"] if c["name"] == "judge" and c["value"] is not None]
            if judged:
                ratings[(i, k)] = judged[0]
            kept = {key: t[key] for key in ("judge_samples", "judge_spread", "judge_forms", "pairwise") if key in t}
            if kept:
                extras[(i, k)] = kept
        replies.append(row)
    out_cases, summary = score_replies(suite.cases, replies, nll, ratings, extras, only)
    return {**results, "suite": suite.path, "rescored": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": summary, "cases": out_cases}


def load_results(path: str) -> dict[str, Any]:
    """A results file written by `run_suite`; ValueError naming the file when it is not one."""
    import orjson

    try:
        with open(path, "rb") as handle:
            data = orjson.loads(handle.read())
    except OSError as exc:
        raise Unavailable(f"{path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("cases"), list):
        raise BadInput(f"{path}: not a results file of `convdistill eval run` (format {RESULTS_FORMAT})")
    return data
