"""A Markdown report of a run (optionally against a baseline) and a PNG of score by turn depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdistill.eval.compare import compare_results, format_regressions


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_depth(results: dict[str, Any], baseline: dict[str, Any] | None, path: str | Path) -> Path:
    """Mean turn score at each depth, the model against the baseline (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    runs = [(results, "-o", "")] + ([(baseline, "--s", " (baseline)")] if baseline is not None else [])
    for run, style, suffix in runs:
        depths = {int(d): v for d, v in run["summary"]["by_depth"].items() if v is not None}
        xs = sorted(depths)
        ax.plot(xs, [depths[x] for x in xs], style, label=f"{run.get('model')}{suffix}")
    ax.set_xlabel("turn depth")
    ax.set_ylabel("mean turn score")
    ax.set_ylim(0, 1.05)
    suites = str(results.get("suite")).split("+")  # several suite files are joined with '+'
    name = Path(suites[0]).name if len(suites) == 1 else f"{len(suites)} suites"
    ax.set_title(f"{name} ({results.get('history')} history)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_report(
    results: dict[str, Any], baseline: dict[str, Any] | None, plot_name: str | None, tolerance: float = 0.0
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
    lines.append(row("score (mean of case minimums)", _fmt(s["score"]), _fmt(b["score"]) if b else None))
    for unit in ("cases", "turns"):
        mine = f"{s[unit + '_passed']}/{s[unit]}"
        lines.append(row(f"{unit} passed", mine, f"{b[unit + '_passed']}/{b[unit]}" if b else None))
    nll = _fmt(s.get("mean_reference_nll"))
    lines.append(row("mean reference NLL", nll, _fmt(b.get("mean_reference_nll")) if b else None))
    if "pairwise" in s:
        p = s["pairwise"]
        lines.append(row("pairwise (model / baseline / tie)", f"{p['model']} / {p['baseline']} / {p['tie']}", ""))
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
    results: dict[str, Any], output: str | Path, baseline: dict[str, Any] | None = None, tolerance: float = 0.0
) -> tuple[Path, Path]:
    """report.md and, beside it, report.png (the same stem)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    png = plot_depth(results, baseline, output.with_suffix(".png"))
    output.write_text(markdown_report(results, baseline, png.name, tolerance))
    return output, png
