"""One self-contained HTML page for a run, or for a run against a baseline: what people read.

    html_report(results, baseline=None, tolerance=0.0) -> str
    write_html_report(results, path, baseline=None, tolerance=0.0) -> Path

The page needs nothing at view time: styles are inline, the plots (score by tag, score by turn
depth) are inline SVG, and a Content-Security-Policy forbids every fetch, so a page mailed
around or opened from a CI artifact looks the same offline. Cases come regressions first (the
largest drop first), then cases with failing turns, then improvements, then the rest; each is
the whole conversation, turn by turn, the baseline's reply beside the model's, with the checks
of each reply listed and the failed ones highlighted.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convdistill.eval.compare import compare_results, noise_line
from convdistill.eval.report import (
    agg_pyplot,
    depth_figure,
    passed_text,
    rating_forms,
    score_text,
    tag_figure,
    unscored_text,
)

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 16px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta { color: #555; margin-bottom: 12px; }
table.numbers { border-collapse: collapse; margin: 6px 0; }
table.numbers th, table.numbers td { border: 1px solid #ddd; padding: 3px 10px; text-align: right; }
table.numbers th:first-child, table.numbers td:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; } .plots figure { margin: 0; }
.plots svg { max-width: 100%; height: auto; }
section.case { border: 1px solid #ccc; border-radius: 6px; margin: 14px 0; padding: 8px 12px; }
section.case.regressed { border-color: #c62828; border-width: 2px; background: #fff8f8; }
section.case.failing { border-color: #ef6c00; } section.case.improved { border-color: #2e7d32; }
.case h3 { margin: 2px 0 6px; font-size: 15px; }
.badge { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 12px; color: #fff; margin-left: 6px; }
.badge.regressed { background: #c62828; } .badge.failing { background: #ef6c00; }
.badge.improved { background: #2e7d32; } .badge.unchanged, .badge.passing { background: #607d8b; }
.badge.new { background: #1565c0; }
.turn { margin: 8px 0 12px; } .user { background: #eef3fb; border-radius: 6px; padding: 6px 10px; }
.replies { display: grid; gap: 10px; margin-top: 6px; } .replies.two { grid-template-columns: 1fr 1fr; }
.reply { border: 1px solid #e0e0e0; border-radius: 6px; padding: 6px 10px; }
.reply.dropped { border-color: #c62828; }
.who { font-size: 12px; color: #555; } .text { white-space: pre-wrap; word-break: break-word; }
ul.checks { margin: 4px 0 0; padding-left: 18px; font-size: 12px; }
li.check.failed { color: #b71c1c; background: #ffebee; font-weight: 600; }
li.check.passed { color: #2e7d32; } li.check.skipped { color: #777; }
.reference { font-size: 12px; color: #555; margin-top: 4px; }
"""

_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_ORDER = {"regressed": 0, "failing": 1, "improved": 2, "new": 3, "unchanged": 4, "passing": 5}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _svg(fig: Any) -> str:
    """A matplotlib figure as an inline <svg> element (text as paths: no fonts to fetch)."""
    plt = agg_pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "path", "svg.hashsalt": "convdistill"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the element goes inline


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="numbers"><tr>{head}</tr>{body}</table>'


def _summary(results: dict[str, Any], baseline: dict[str, Any] | None, counts: dict[str, int],
             noise: str | None = None, controls: Sequence[dict[str, Any]] = ()) -> str:
    s, b = results["summary"], (baseline or {}).get("summary")
    header = ["", str(results.get("model"))] + ([f"baseline {baseline.get('model')}"] if baseline else [])

    def row(name: str, mine: str, base: str = "") -> list[str]:
        return [name, mine] + ([base] if baseline else [])

    rows = [
        row("cases passed (95% interval)", passed_text(s), passed_text(b) if b else ""),
        row("score, mean of case minimums (95%)", score_text(s), score_text(b) if b else ""),
        row("turns passed", f"{s['turns_passed']}/{s['turns']}", f"{b['turns_passed']}/{b['turns']}" if b else ""),
        row("unscored (no content check)", unscored_text(s), unscored_text(b) if b else ""),
        row("mean reference NLL", _num(s.get("mean_reference_nll")), _num(b.get("mean_reference_nll")) if b else ""),
    ]
    parts = [_table(header, rows)]
    if baseline is not None:
        parts.append('<p class="verdict">' + ", ".join(
            f'<span class="count {k}">{counts.get(k, 0)} {k}</span>' for k in ("regressed", "improved", "unchanged",
                                                                             "new")) + "</p>")
        if noise:
            parts.append(f'<p class="noise">{_e(noise)}</p>')
    if controls:
        parts.append('<h3>The floor: control models that do not converse</h3>' + _table(
            ["control", "cases passed (95%)", "score (95%)", "turns passed", "turns failing a gate"],
            [[str(c.get("model")), passed_text(c["summary"]), score_text(c["summary"]),
              f"{c['summary']['turns_passed']}/{c['summary']['turns']}", str(c["summary"].get("turns_gated", "n/a"))]
             for c in controls]))
    for name, bench in s.get("benchmarks", {}).items():
        other = (b or {}).get("benchmarks", {}).get(name, {})
        bench_header = ["group", "rating (1-10)", "score (0..1)"] + (["baseline rating", "baseline score"]
                                                                     if baseline else [])
        bench_rows = []
        overall = {"rating": bench["overall"], "score": bench["score"]}
        for group, g in [("overall", overall), *bench["by_group"].items()]:
            o = ({"rating": other.get("overall"), "score": other.get("score")} if group == "overall"
                 else other.get("by_group", {}).get(group, {}))
            bench_rows.append([group, _num(g["rating"], 2), _num(g["score"])]
                              + ([_num(o.get("rating"), 2), _num(o.get("score"))] if baseline else []))
        parts.append(f'<h2 class="benchmark">{_e(name)}</h2>' + _table(bench_header, bench_rows) + (
            f"<p>{bench['turns_rated']}/{bench['turns_judged']} judged turns rated (median of the judge's samples); "
            f"mean spread {_num(bench['mean_spread'], 2)}; {_e(rating_forms(bench))}.</p>"))
    return "\n".join(parts)


def _checks(turn: dict[str, Any] | None) -> str:
    if turn is None:
        return ""
    items = []
    for check in turn["checks"]:
        state = "skipped" if check["passed"] is None else ("passed" if check["passed"] else "failed")
        items.append(f'<li class="check {state}">{_e(check["name"])}: {_e(check["detail"])}</li>')
    samples = turn.get("judge_samples")
    if samples:
        items.append(f'<li class="check judge-samples">judge samples {_e(samples)}, spread '
                     f'{_num(turn.get("judge_spread"), 1)}</li>')
    return f'<ul class="checks">{"".join(items)}</ul>' if items else ""


def _reply(turn: dict[str, Any] | None, who: str, dropped: bool) -> str:
    if turn is None:
        return (f'<div class="reply missing"><div class="who">{_e(who)}</div>'
                '<div class="text">(no such turn)</div></div>')
    cls = "reply dropped" if dropped else "reply"
    return (f'<div class="{cls}"><div class="who">{_e(who)} - score {_num(turn["score"])}</div>'
            f'<div class="text">{_e(turn["reply"] or "(empty reply)")}</div>{_checks(turn)}</div>')


def _case(case: dict[str, Any], base: dict[str, Any] | None, status: str, model: str, base_model: str,
          tolerance: float) -> str:
    turns = []
    base_turns = base["turns"] if base else []
    for k, turn in enumerate(case["turns"]):
        old = base_turns[k] if k < len(base_turns) else None
        dropped = old is not None and (old["score"] or 0.0) - (turn["score"] or 0.0) > tolerance + 1e-9
        replies = ([_reply(old, f"baseline {base_model}", False)] if base is not None else []) + [
            _reply(turn, model, dropped)]
        reference = (f'<div class="reference">reference: {_e(turn["reference"])}</div>'
                     if turn.get("reference") else "")
        turns.append(
            f'<div class="turn" data-depth="{turn["depth"]}"><div class="user"><b>user, turn {turn["depth"]}:</b> '
            f'<span class="text">{_e(turn["user"])}</span>{reference}</div>'
            f'<div class="replies{" two" if base is not None else ""}">{"".join(replies)}</div></div>'
        )
    score = _num(case["score"]) if base is None else f"{_num(base['score'])} &rarr; {_num(case['score'])}"
    return (
        f'<section class="case {status}" id="case-{_e(case["id"])}" data-case-id="{_e(case["id"])}" '
        f'data-status="{status}"><h3>{_e(case["id"])}<span class="badge {status}">{status}</span></h3>'
        f'<div class="meta">tags: {_e(", ".join(case["tags"]))}; score {score}</div>{"".join(turns)}</section>'
    )


def html_report(
    results: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    tolerance: float = 0.0,
    controls: Sequence[dict[str, Any]] = (),
) -> str:
    """The page as a string (see the module's docstring)."""
    base_cases = {c["id"]: c for c in baseline["cases"]} if baseline else {}
    status: dict[str, str] = {}
    drop: dict[str, float] = {}
    noise = None
    if baseline is not None:
        comparison = compare_results(results, baseline, tolerance)
        noise = noise_line(comparison.paired) if comparison.paired else None
        for diff in comparison.regressions:
            status[diff.id], drop[diff.id] = "regressed", diff.drop
        for diff in comparison.improvements:
            status[diff.id] = "improved"
        for case_id in comparison.new_cases:
            status[case_id] = "new"
    for case in results["cases"]:
        if case["id"] not in status:
            status[case["id"]] = "failing" if not case["passed"] else ("unchanged" if baseline else "passing")
    ordered = sorted(results["cases"], key=lambda c: (_ORDER[status[c["id"]]], -drop.get(c["id"], 0.0)))
    counts: dict[str, int] = {}
    for value in status.values():
        counts[value] = counts.get(value, 0) + 1
    missing = [c for c in (baseline or {}).get("cases", []) if c["id"] not in {r["id"] for r in results["cases"]}]

    model, base_model = str(results.get("model")), str((baseline or {}).get("model"))
    title = f"Eval report: {model}" + (f" vs {base_model}" if baseline else "")
    plots = [("score by tag", tag_figure(results, baseline)), ("score by turn depth", depth_figure(results, baseline))]
    figures = "".join(f'<figure class="plot"><figcaption>{_e(name)}</figcaption>{_svg(fig)}</figure>'
                      for name, fig in plots)
    cases_html = "\n".join(
        _case(c, base_cases.get(c["id"]), status[c["id"]], model, base_model, tolerance) for c in ordered
    )
    missing_html = "".join(
        f'<section class="case regressed missing" data-case-id="{_e(c["id"])}" data-status="missing">'
        f'<h3>{_e(c["id"])}<span class="badge regressed">missing</span></h3>'
        f"<p>in the baseline, not in this run</p></section>" for c in missing
    )
    meta = (f"suite {_e(results.get('suite'))}; {_e(results.get('history'))} history; judge: "
            f"{_e(results.get('judge') or 'none')}; created {_e(results.get('created'))}")
    if baseline is not None:
        meta += f"; tolerance {tolerance:g}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1><div class=\"meta\">{meta}</div>"
        f'<h2>Summary</h2><div id="summary">{_summary(results, baseline, counts, noise, controls)}</div>'
        f'<h2>Scores</h2><div class="plots">{figures}</div>'
        f'<h2>Cases ({len(ordered)})</h2><div id="cases">{missing_html}{cases_html}</div>'
        "</body></html>\n"
    )


def write_html_report(
    results: dict[str, Any],
    path: str | Path,
    baseline: dict[str, Any] | None = None,
    tolerance: float = 0.0,
    controls: Sequence[dict[str, Any]] = (),
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(results, baseline, tolerance, controls), encoding="utf-8")
    return path
