"""A Markdown report of a run (optionally against a baseline) and a PNG of score by turn depth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convdistill.eval.compare import compare_results, format_regressions


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def score_text(summary: dict[str, Any]) -> str:
    """The run's score with its 95% interval: "0.467 (0.391-0.545)"; "n/a" when nothing was scored."""
    ci = summary.get("score_ci")
    return _fmt(summary["score"]) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def passed_text(summary: dict[str, Any]) -> str:
    """Cases passed of those scored, with the 95% interval of the count: "12/89 (7-17)"."""
    ci = summary.get("cases_passed_ci")
    return f"{summary['cases_passed']}/{summary['cases']}" + (f" ({ci[0]:.0f}-{ci[1]:.0f})" if ci else "")


def summary_line(summary: dict[str, Any]) -> str:
    """Cases passed and score with their intervals, and turns passed: the run's headline."""
    return (f"{passed_text(summary)} cases passed, score {score_text(summary)} (95% intervals), "
            f"{summary['turns_passed']}/{summary['turns']} turns passed")


def unscored_text(summary: dict[str, Any]) -> str:
    """What was reported but not scored: "2 cases, 14 turns" (results before the gates: "n/a")."""
    if "cases_unscored" not in summary:
        return "n/a"
    return f"{summary['cases_unscored']} cases, {summary['turns_unscored']} turns"


def controls_table(controls: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows of the control models' results: the floor a model must clear."""
    lines = ["| control | cases passed (95%) | score (95%) | turns passed | turns failing a gate |",
             "|---|---|---|---|---|"]
    for run in controls:
        s = run["summary"]
        lines.append(f"| {run.get('model')} | {passed_text(s)} | {score_text(s)} | {s['turns_passed']}/{s['turns']} "
                     f"| {s.get('turns_gated', 'n/a')} |")
    return lines


def rating_forms(bench: dict[str, Any]) -> str:
    """How a benchmark's judge wrote its ratings: "judgments: 5 [[n]], 2 other, 1 none"."""
    names = {"bracket": "[[n]]", "other": "other", "none": "without a rating"}
    counts = bench.get("rating_forms") or {}
    return "judgments: " + (", ".join(f"{n} {names.get(f, f)}" for f, n in counts.items()) or "none")


def agg_pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: files only, no display needed (reports, the demo,
    the experiment)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _runs(results: dict[str, Any], baseline: dict[str, Any] | None) -> list[tuple[dict[str, Any], str]]:
    return [(results, "")] + ([(baseline, " (baseline)")] if baseline is not None else [])


def depth_figure(results: dict[str, Any], baseline: dict[str, Any] | None) -> Any:
    """Mean turn score at each depth, the model against the baseline (a matplotlib Figure)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = agg_pyplot().subplots(figsize=(5.2, 3.6), dpi=100)
    for (run, suffix), style in zip(_runs(results, baseline), ("-o", "--s"), strict=False):
        depths = {int(d): v for d, v in run["summary"]["by_depth"].items() if v is not None}
        xs = sorted(depths)
        ax.plot(xs, [depths[x] for x in xs], style, label=f"{run.get('model')}{suffix}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths are whole turns
    ax.set_xlabel("turn depth")
    ax.set_ylabel("mean turn score")
    ax.set_ylim(0, 1.05)
    suites = str(results.get("suite")).split("+")  # several suite files are joined with '+'
    name = Path(suites[0]).name if len(suites) == 1 else f"{len(suites)} suites"
    ax.set_title(f"{name} ({results.get('history')} history)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def tag_figure(results: dict[str, Any], baseline: dict[str, Any] | None) -> Any:
    """Mean case score per tag, the model's bars beside the baseline's (a matplotlib Figure)."""
    runs = _runs(results, baseline)
    tags = sorted({tag for run, _ in runs for tag in run["summary"]["by_tag"]})
    fig, ax = agg_pyplot().subplots(figsize=(5.2, 1.1 + 0.3 * max(1, len(tags)) * len(runs)), dpi=100)
    height = 0.8 / len(runs)
    for j, (run, suffix) in enumerate(runs):
        values = [run["summary"]["by_tag"].get(tag) or 0.0 for tag in tags]
        ys = [i + (len(runs) - 1 - j) * height for i in range(len(tags))]
        ax.barh(ys, values, height=height, label=f"{run.get('model')}{suffix}")
    ax.set_yticks([i + (len(runs) - 1) * height / 2 for i in range(len(tags))], tags)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("mean case score")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def plot_depth(results: dict[str, Any], baseline: dict[str, Any] | None, path: str | Path) -> Path:
    """depth_figure as a PNG file."""
    path = Path(path)
    fig = depth_figure(results, baseline)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    agg_pyplot().close(fig)
    return path


def markdown_report(
    results: dict[str, Any],
    baseline: dict[str, Any] | None,
    plot_name: str | None,
    tolerance: float = 0.0,
    controls: Sequence[dict[str, Any]] = (),
) -> str:
    s = results["summary"]
    lines = [
        f"# Eval report: {results.get('model')}",
        "",
        f"Suite `{results.get('suite')}`, {results.get('history')} history, judge: {results.get('judge') or 'none'}, "
        f"created {results.get('created')}.",
        "",
    ]
    b = baseline["summary"] if baseline else None
    header = "| | " + str(results.get("model")) + (f" | baseline {baseline.get('model')} |" if baseline else " |")
    sep = "|---|---|" + ("---|" if baseline else "")

    def row(name: str, mine: Any, base: Any = None) -> str:
        return f"| {name} | {mine} |" + (f" {base} |" if baseline else "")

    lines += ["## Summary", "", header, sep]
    lines.append(row("cases passed (95% interval)", passed_text(s), passed_text(b) if b else None))
    lines.append(row("score, mean of case minimums (95%)", score_text(s), score_text(b) if b else None))
    lines.append(row("turns passed", f"{s['turns_passed']}/{s['turns']}",
                     f"{b['turns_passed']}/{b['turns']}" if b else None))
    lines.append(row("turns failing a gate", s.get("turns_gated", "n/a"), b.get("turns_gated", "n/a") if b else None))
    lines.append(row("unscored (no content check)", unscored_text(s), unscored_text(b) if b else None))
    nll = _fmt(s.get("mean_reference_nll"))
    lines.append(row("mean reference NLL", nll, _fmt(b.get("mean_reference_nll")) if b else None))
    if "pairwise" in s:
        p = s["pairwise"]
        lines.append(row("pairwise (model / baseline / tie)", f"{p['model']} / {p['baseline']} / {p['tie']}", ""))
    for name, bench in s.get("benchmarks", {}).items():
        base_bench = (b or {}).get("benchmarks", {}).get(name, {})
        lines += ["", f"## {name} (ratings 1-10; score 0..1 ours)", "",
                  "| group | rating | score |" + (" baseline rating | baseline score |" if baseline else ""),
                  "|---|---|---|" + ("---|---|" if baseline else "")]
        rows = [("overall", bench), *bench["by_group"].items()]
        for group, g in rows:
            other = base_bench if group == "overall" else base_bench.get("by_group", {}).get(group, {})
            line = f"| {group} | {_fmt2(g.get('overall', g.get('rating')))} | {_fmt(g.get('score'))} |"
            if baseline:
                line += f" {_fmt2(other.get('overall', other.get('rating')))} | {_fmt(other.get('score'))} |"
            lines.append(line)
        lines.append(f"\n{bench['turns_rated']}/{bench['turns_judged']} judged turns rated; median of the judge's "
                     f"samples, mean spread {_fmt2(bench['mean_spread'])}; {rating_forms(bench)}.")
    if controls:
        lines += ["", "## The floor: control models that do not converse", "",
                  "A model that converses should clear every one of these by far (docs/eval.md).", "",
                  *controls_table(controls)]
    lines += ["", "## By tag", "", header.replace("| |", "| tag |"), sep]
    for tag, value in s["by_tag"].items():
        lines.append(row(tag, _fmt(value), _fmt(b["by_tag"].get(tag)) if b else None))
    lines += ["", "## By turn depth", "", header.replace("| |", "| depth |"), sep]
    for depth, value in s["by_depth"].items():
        lines.append(row(depth, _fmt(value), _fmt(b["by_depth"].get(depth)) if b else None))
    if plot_name:
        lines += ["", f"![score by turn depth]({plot_name})"]
    if baseline is not None:
        comparison = compare_results(results, baseline, tolerance)
        lines += ["", f"## Regressions (tolerance {tolerance:g})", "", "```", format_regressions(comparison), "```"]
    failing = [(c, t) for c in results["cases"] for t in c["turns"] if not t["passed"]]
    lines += ["", f"## Failing turns ({len(failing)})", ""]
    for case, turn in failing[:50]:
        why = "; ".join(f"{c['name']}: {c['detail']}" for c in turn["checks"] if c["passed"] is False)
        reply = turn["reply"].replace("\n", " ")[:160]
        lines.append(f"- `{case['id']}` turn {turn['depth']} ({_fmt(turn['score'])}): {why}. Reply: \"{reply}\"")
    if len(failing) > 50:
        lines.append(f"- ... and {len(failing) - 50} more")
    return "\n".join(lines) + "\n"


def write_report(
    results: dict[str, Any],
    output: str | Path,
    baseline: dict[str, Any] | None = None,
    tolerance: float = 0.0,
    controls: Sequence[dict[str, Any]] = (),
) -> tuple[Path, Path]:
    """report.md and, beside it, report.png (the same stem)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    png = plot_depth(results, baseline, output.with_suffix(".png"))
    output.write_text(markdown_report(results, baseline, png.name, tolerance, controls))
    return output, png
