"""Summary of the multi-turn vs single-turn experiment: mean and spread over seeds, paired
differences between regimes and families, the tables, the plots, and the generated part of
docs/experiments.md (the text between the markers; the rest of the file is written by people).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from convdistill.eval.report import agg_pyplot
from convdistill.experiments.settings import NAME, REGIMES, Settings

BEGIN = f"<!-- generated:{NAME}:begin (convdistill experiment run {NAME} rewrites this part) -->"
END = f"<!-- generated:{NAME}:end -->"
FAMILY_NAMES = {"t5": "T5 (enc-dec)", "llama": "Llama (dec-only)", "smollm2-lora": "SmolLM2-135M LoRA"}

Metric = Callable[[dict[str, Any]], float | None]


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of the seeds' values (None values left out)."""
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0, "values": list(values)}
    return {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v), "values": list(values)}


FAR = (3, 6)  # the distances the experiment's goal is stated for


def _metrics(settings: Settings) -> dict[str, Metric]:
    """Every number the summary aggregates, by name, read off one unit's metrics."""
    low, high = settings.eval_distances
    out: dict[str, Metric] = {
        "recall_seen": lambda m: m["recall_seen"]["accuracy"],
        "recall_unseen": lambda m: m["recall_unseen"]["accuracy"],
        "choice_seen": lambda m: m["recall_seen"]["choice"],
        "copy_seen": lambda m: m["recall_seen"]["copy"],
        "choice_unseen": lambda m: m["recall_unseen"]["choice"],
        "real_score": lambda m: m["real"]["score"],
        "turn1_score": lambda m: m["real"]["first_turn"]["score"],
        "turn1_nll": lambda m: m["real"]["first_turn"]["nll"],
        "real_nll": lambda m: m["real"]["nll"],
        "trained_tokens": lambda m: m["train"]["trained_tokens"],
        "epochs": lambda m: m["train"]["epochs"],
        "final_loss": lambda m: m["train"]["final_loss"],
        "train_s": lambda m: m["train"]["seconds"],
        "eval_s": lambda m: m["eval_seconds"],
        # on the model's own history (settings.self_history), and the conversation trainer's
        # share of step time spent generating (regimes e and f): None where not measured
        "recall_self": lambda m: _part(m, "recall_unseen_self", "accuracy"),
        "real_self_score": lambda m: _part(m, "real_self", "score"),
        "real_self_cases": lambda m: _part(m, "real_self", "cases_passed"),
        "generate_share": lambda m: _part(m["train"], "generation", "generate_share"),
    }
    far = [str(d) for d in range(max(low, FAR[0]), min(high, FAR[1]) + 1)]

    def far_share(suite: str) -> Metric:
        def share(m: dict[str, Any]) -> float | None:
            by = _part(m, suite, "accuracy_by_distance") or {}
            values = [by[d] for d in far if d in by]
            return statistics.fmean(values) if values else None
        return share

    out["recall_seen_far"] = far_share("recall_seen")
    out["recall_unseen_far"] = far_share("recall_unseen")
    out["recall_self_far"] = far_share("recall_unseen_self")
    out["heldout_turn1_nll"] = lambda m: m.get("heldout_first_turn_nll")
    for d in range(low, high + 1):
        out[f"recall_seen_d{d}"] = partial(_at_distance, "recall_seen", "accuracy_by_distance", str(d))
        out[f"recall_unseen_d{d}"] = partial(_at_distance, "recall_unseen", "accuracy_by_distance", str(d))
        out[f"choice_seen_d{d}"] = partial(_at_distance, "recall_seen", "choice_by_distance", str(d))
        out[f"recall_self_d{d}"] = partial(_at_distance, "recall_unseen_self", "accuracy_by_distance", str(d))
    return out


def _part(metrics: dict[str, Any], suite: str, key: str) -> Any:
    """metrics[suite][key], None where the unit has no such part (self history not scored, no
    generation in its trainer)."""
    return (metrics.get(suite) or {}).get(key)


def _at_distance(suite: str, key: str, distance: str, metrics: dict[str, Any]) -> float | None:
    return (_part(metrics, suite, key) or {}).get(distance)


def _real_depths(units: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({d for u in units for d in u["real"]["by_depth"]}, key=int)


def chance_level(value_set: str = "train") -> float:
    """Recall accuracy of a student that names a random value of the asked slot: what a model
    without the conversation can do at best."""
    from convdistill.eval.generator import FACTS, slot_values

    return statistics.fmean(1 / len(slot_values(slot, value_set)) for slot, *_ in FACTS)


def _group(units: Sequence[dict[str, Any]], family: str, regime: str) -> list[dict[str, Any]]:
    """The units of one (family, regime), by seed."""
    return sorted((u for u in units if u["family"] == family and u["regime"] == regime), key=lambda u: u["seed"])


def summarize(settings: Settings, data: dict[str, Any], units: Sequence[dict[str, Any]], timing: dict[str, Any],
              command: str) -> dict[str, Any]:
    metrics = _metrics(settings)
    groups: dict[str, dict[str, Any]] = {}
    for family in settings.families:
        for regime in settings.regimes:
            mine = _group(units, family, regime)
            row: dict[str, Any] = {name: spread([f(u) for u in mine]) for name, f in metrics.items()}
            row["real_by_depth"] = {d: spread([u["real"]["by_depth"].get(d) for u in mine])
                                    for d in _real_depths(units)}
            row["seeds"] = [u["seed"] for u in mine]
            groups[f"{family}/{regime}"] = row
    return {
        "experiment": NAME,
        "command": command,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.__dict__.items()},
        "data": {"counts": data["counts"], "teacher": data["teacher"], "teacher_recall": data.get("teacher_recall"),
                 "students": data.get("student_info", {}),
                 "corrected_teacher": data.get("corrected_teacher"),
                 "corrected_teacher_recall": data.get("corrected_teacher_recall")},
        "timing": timing,
        "chance": {"recall_seen": chance_level("train"), "recall_unseen": chance_level("eval")},
        "groups": groups,
        "comparisons": comparisons(settings, units, _question_counts(data)),
        "units": list(units),
    }


def _paired(units: Sequence[dict[str, Any]], key: Metric, a: tuple[str, str], b: tuple[str, str]
            ) -> dict[str, Any] | None:
    """b minus a, paired by seed (a seed fixes the student's initial weights and the data order)."""
    def by_seed(family: str, regime: str) -> dict[int, float | None]:
        return {u["seed"]: key(u) for u in _group(units, family, regime)}

    left, right = by_seed(*a), by_seed(*b)
    diffs = [right[s] - left[s] for s in sorted(set(left) & set(right))  # type: ignore[operator]
             if left[s] is not None and right[s] is not None]
    if not diffs:
        return None
    return {**spread(diffs), "higher": sum(d > 0 for d in diffs), "lower": sum(d < 0 for d in diffs)}


def _question_counts(data: dict[str, Any]) -> dict[str, int]:
    """Recall questions per unit, by suite: what a share's sampling error depends on."""
    from convdistill.eval import load_suite

    return {name: sum(bool(t.checks.recall_of) for c in load_suite(path).cases for t in c.turns)
            if Path(path).is_file() else 0 for name, path in data.get("suites", {}).items()}


# metric -> the suite whose recall questions it is a share of
SHARES = {"recall_seen": "recall_seen", "choice_seen": "recall_seen", "recall_unseen": "recall_unseen",
          "recall_seen_far": "recall_seen", "recall_unseen_far": "recall_unseen", "recall_self": "recall_unseen",
          "recall_self_far": "recall_unseen"}


def _share_error(units: Sequence[dict[str, Any]], key: Metric, a: tuple[str, str], b: tuple[str, str],
                 questions: int) -> float | None:
    """Standard error of the difference of two shares from the number of questions behind them
    (all seeds' questions pooled, the groups taken as independent): with three seeds the seeds'
    sd of a difference is itself very uncertain, and this says how much of it the question
    sampling alone explains."""
    def pooled(family: str, regime: str) -> tuple[float, int] | None:
        values = [v for u in _group(units, family, regime) if (v := key(u)) is not None]
        return (statistics.fmean(values), questions * len(values)) if values and questions else None

    left, right = pooled(*a), pooled(*b)
    if left is None or right is None:
        return None
    return math.sqrt(sum(p * (1 - p) / n for p, n in (left, right)))


COMPARED = {  # metric name -> (label, higher is better)
    "recall_seen": ("recall accuracy (held-out cases, seen values)", True),
    "choice_seen": ("forced-choice recall (seen values)", True),
    "recall_unseen": ("recall accuracy (held-out values and wording)", True),
    "recall_unseen_far": ("recall accuracy, held-out values and wording, d = 3 to 6", True),
    "recall_self": ("recall accuracy on the model's own history (held-out values and wording)", True),
    "recall_self_far": ("recall accuracy on the model's own history, held-out values and wording, d = 3 to 6",
                        True),
    "real_self_cases": ("shipped suites on the model's own history, cases passed", True),
    "real_self_score": ("shipped suites on the model's own history, mean case score", True),
    "heldout_turn1_nll": ("held-out Open-Assistant prompts, turn-1 reference NLL", False),
    "real_score": ("shipped suites, mean case score", True),
    "turn1_score": ("shipped suites, turn-1 score", True),
    "turn1_nll": ("shipped suites, turn-1 reference NLL", False),
}


def comparisons(settings: Settings, units: Sequence[dict[str, Any]],
                questions: dict[str, int] | None = None) -> list[dict[str, Any]]:
    metrics = _metrics(settings)
    questions = questions or {}
    pairs: list[tuple[str, tuple[str, str], tuple[str, str]]] = []
    for family in settings.families:
        for before, after in itertools.pairwise(settings.regimes):
            pairs.append((f"{FAMILY_NAMES.get(family, family)}: {after} vs {before}", (family, before),
                          (family, after)))
    if {"t5", "llama"} <= set(settings.families):  # the LaMini question: which family, at equal size
        first, second = "t5", "llama"
        pairs.extend((f"regime {regime}: {first} vs {second}", (second, regime), (first, regime))
                     for regime in settings.regimes)
    out = []
    for label, a, b in pairs:
        for name, (what, _) in COMPARED.items():
            diff = _paired(units, metrics[name], a, b)
            if diff is None:
                continue
            suite = SHARES.get(name)
            asked = questions.get(suite, 0) if suite else 0
            if name.endswith("_far"):  # a share of the questions at those distances only
                low, high = settings.eval_distances
                far = min(high, FAR[1]) - max(low, FAR[0]) + 1
                asked = asked * max(far, 0) // (high - low + 1)
            error = _share_error(units, metrics[name], a, b, asked) if suite else None
            out.append({"pair": label, "metric": name, "what": what, **diff, "se_questions": error})
    return out


# -- tables ----------------------------------------------------------------------------------------


def _ms(cell: dict[str, Any], digits: int = 3) -> str:
    if cell["mean"] is None:
        return "n/a"
    return f"{cell['mean']:.{digits}f} ± {cell['sd']:.{digits}f}"


def tables(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    low, high = s["eval_distances"]
    groups = summary["groups"]
    rows = [(g, *g.split("/")) for g in groups]
    n = max((groups[g]["recall_seen"]["n"] for g in groups), default=0)
    lines: list[str] = []
    measured = [("recall", "answered right (greedy reply contains the value)")]
    if any(groups[g]["choice_seen"]["mean"] is not None for g in groups):  # forced_choice may be off
        measured.append(("choice", "forced choice (the right value is the most likely of its slot's values)"))
    for metric, title in measured:
        lines += [f"**Context memory, {title}**: held-out synthetic cases, d = turns between the fact and the "
                  f"question, mean ± sd over {n} seeds; a student that ignores the conversation gets "
                  f"{summary['chance']['recall_seen']:.3f} in expectation (regime a, which never sees it, "
                  f"is the measured no-context level on these questions)", ""]
        head = "| family | regime | all distances | " + " | ".join(f"d={d}" for d in range(low, high + 1))
        extra = " unseen values | copy within a turn |" if metric == "recall" else ""
        lines += [head + " |" + extra, "|---|---|---|" + "---|" * (high - low + 1) + ("---|---|" if extra else "")]
        for key, family, regime in rows:
            g = groups[key]
            cells = " | ".join(_ms(g[f"{metric}_seen_d{d}"], 2) for d in range(low, high + 1))
            lines.append(f"| {FAMILY_NAMES.get(family, family)} | {regime} {REGIMES[regime]} | "
                         f"**{_ms(g[f'{metric}_seen'])}** | {cells} |"
                         + (f" {_ms(g['recall_unseen'])} | {_ms(g['copy_seen'])} |" if extra else ""))
        corrected = summary["data"].get("corrected_teacher") or {}
        for label, teacher in ((f"teacher {s['teacher']}", summary["data"].get("teacher_recall")),
                               (f"corrected teacher ({corrected.get('steps')} LoRA steps; regimes d-f's)",
                                summary["data"].get("corrected_teacher_recall"))):
            if metric != "recall" or not teacher:
                continue
            cells = " | ".join(f"{teacher['accuracy_by_distance'].get(str(d), float('nan')):.2f}"
                               for d in range(low, high + 1))
            lines.append(f"| {label} ({teacher['cases']} cases, one run) | - | "
                         f"**{teacher['accuracy']:.3f}** | {cells} | n/a | {teacher['copy']:.3f} |")
        lines.append("")
    # (metric, title, the columns after the distances: (head, group metric, digits))
    recall_tables: tuple[tuple[str, str, tuple[tuple[str, str, int], ...]], ...] = (
        ("recall_unseen", "**Context memory, held-out wording and values** (greedy reply contains the value; facts "
         "stated and asked in words no training conversation uses, values never trained on; "
         f"d = {FAR[0]} to {FAR[1]} is the experiment's goal; held-out Open-Assistant turn-1 "
         "NLL: first replies of sample trees no unit trains on, lower is better)",
         (("held-out OA turn-1 NLL", "heldout_turn1_nll", 2),)),
        ("recall_self", "**On the model's own history** (every turn generated, later turns reading the model's "
         "replies, as in use: the held-out-wording recall cases, and the shipped suites' cases "
         "passed and mean case score)",
         (("suites: cases passed", "real_self_cases", 1), ("case score", "real_self_score", 3))),
    )
    for metric, title, columns in recall_tables:
        if all(groups[g][metric]["mean"] is None for g in groups):
            continue
        lines += [title, "", "| family | regime | all distances | d = 3 to 6 | "
                  + " | ".join(f"d={d}" for d in range(low, high + 1)) + " | "
                  + " | ".join(head for head, *_ in columns) + " |",
                  "|---|---|---|---|" + "---|" * (high - low + 1 + len(columns))]
        for key, family, regime in rows:
            g = groups[key]
            cells = " | ".join(_ms(g[f"{metric}_d{d}"], 2) for d in range(low, high + 1))
            more = " | ".join(_ms(g[name], digits) for _, name, digits in columns)
            lines.append(f"| {FAMILY_NAMES.get(family, family)} | {regime} {REGIMES[regime]} | "
                         f"{_ms(g[metric])} | **{_ms(g[f'{metric}_far'])}** | {cells} | {more} |")
        lines.append("")
    depths = sorted({d for g in groups.values() for d in g["real_by_depth"]}, key=int)
    lines += ["**Real text** (the shipped hand-written suites, gold history; case score = minimum over "
              "its turns; turn-1 reference NLL: lower is better)", ""]
    lines += ["| family | regime | case score | turn-1 score | turn-1 NLL | mean NLL | "
              + " | ".join(f"depth {d}" for d in depths) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(depths)]
    for key, family, regime in rows:
        g = groups[key]
        cells = " | ".join(_ms(g["real_by_depth"][d], 2) if d in g["real_by_depth"] else "n/a" for d in depths)
        lines.append(f"| {FAMILY_NAMES.get(family, family)} | {regime} | {_ms(g['real_score'])} | "
                     f"{_ms(g['turn1_score'])} | {_ms(g['turn1_nll'], 2)} | {_ms(g['real_nll'], 2)} | {cells} |")
    lines += ["", "**Budget** (per unit; trained tokens = loss-carrying tokens of the data x epochs; regimes e "
              "and f: of the conversations as trained, counted in the steps; generating: share of e/f's step "
              "time)", "",
              "| family | regime | records | epochs | trained tokens | final loss | train s | generating | eval s |",
              "|---|---|---|---|---|---|---|---|---|"]
    records = summary["data"]["counts"]["records"]
    for key, family, regime in rows:
        g = groups[key]
        lines.append(f"| {FAMILY_NAMES.get(family, family)} | {regime} | {records.get(regime, 'n/a')} | "
                     f"{_ms(g['epochs'], 2)} | {_ms(g['trained_tokens'], 0)} | {_ms(g['final_loss'], 2)} | "
                     f"{_ms(g['train_s'], 0)} | {_ms(g['generate_share'], 2)} | {_ms(g['eval_s'], 0)} |")
    return "\n".join(lines) + "\n"


def comparison_table(summary: dict[str, Any]) -> str:
    lines = ["| comparison | metric | difference (mean ± sd over seeds) | SE from the questions | "
             "seeds higher / lower |", "|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        better = COMPARED[c["metric"]][1]
        arrow = "" if abs(c["mean"]) < 5e-4 else (" (better)" if (c["mean"] > 0) == better else " (worse)")
        error = c.get("se_questions")
        lines.append(f"| {c['pair']} | {c['what']} | {c['mean']:+.3f} ± {c['sd']:.3f}{arrow} | "
                     f"{'-' if error is None else f'{error:.3f}'} | {c['higher']} / {c['lower']} of {c['n']} |")
    return "\n".join(lines) + "\n"


def per_seed_table(summary: dict[str, Any]) -> str:
    lines = ["| unit | recall (seen) | forced choice (seen) | recall (unseen) | case score | turn-1 NLL | "
             "trained tokens | train s |", "|---|---|---|---|---|---|---|---|"]
    for u in sorted(summary["units"], key=lambda u: (u["family"], u["regime"], u["seed"])):
        nll = u["real"]["first_turn"]["nll"]
        lines.append(f"| {u['unit']} | {u['recall_seen']['accuracy']:.3f} | {u['recall_seen']['choice'] or 0:.3f} | "
                     f"{u['recall_unseen']['accuracy']:.3f} | "
                     f"{u['real']['score']:.3f} | {'n/a' if nll is None else f'{nll:.2f}'} | "
                     f"{u['train']['trained_tokens']} | {u['train']['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------------


def _axes(rows: int, columns: int, sharey: Literal["row", "all"] | bool = "row") -> tuple[Any, Any]:
    fig, axes = agg_pyplot().subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), dpi=100, sharey=sharey,
                             squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


Panel = tuple[Callable[[dict[str, Any], str], Any], str, float | None]  # (cell of a group at x, y label, chance)


def plot_lines(summary: dict[str, Any], path: Path, xs: list[str], panels: list[Panel], xlabel: str) -> Path:
    """One row per panel, one column per family; one line per regime, mean with sd bars over seeds."""
    families = summary["settings"]["families"]
    fig, axes = _axes(len(panels), len(families))
    for row, (cell, ylabel, chance) in enumerate(panels):
        for ax, family in zip(axes[row], families, strict=True):
            for regime in summary["settings"]["regimes"]:
                g = summary["groups"][f"{family}/{regime}"]
                points = [(int(x), c) for x in xs if (c := cell(g, x)) is not None and c["mean"] is not None]
                if points:
                    ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                                yerr=[p[1]["sd"] for p in points], marker="o", capsize=3,
                                label=f"{regime}: {REGIMES[regime]}")
            if chance is not None:
                ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="no-context level")
            kind = "tiny " if summary["settings"].get("students", "tiny") == "tiny" else ""
            ax.set_title(f"{kind}{FAMILY_NAMES.get(family, family)}")
            ax.set_xlabel(xlabel)
            ax.set_ylim(0, 1.05)
            ax.set_xticks([int(x) for x in xs])
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    return _save(fig, path)


def plot_first_turn(summary: dict[str, Any], path: Path) -> Path:
    families, regimes = summary["settings"]["families"], summary["settings"]["regimes"]
    fig, grid = _axes(1, 2, sharey=False)  # a score in 0..1 beside an NLL of several nats
    axes = grid[0]
    width = 0.8 / len(regimes)
    for ax, (metric, label) in zip(axes, (("turn1_score", "turn-1 score (higher is better)"),
                                          ("turn1_nll", "turn-1 reference NLL (lower is better)")), strict=True):
        for k, regime in enumerate(regimes):
            cells = [summary["groups"][f"{f}/{regime}"][metric] for f in families]
            ax.bar([i + k * width for i in range(len(families))], [c["mean"] or 0 for c in cells], width,
                   yerr=[c["sd"] or 0 for c in cells], capsize=3, label=f"{regime}: {REGIMES[regime]}")
        ax.set_xticks([i + width * (len(regimes) - 1) / 2 for i in range(len(families))],
                      [FAMILY_NAMES.get(f, f) for f in families])
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def recall_panels(summary: dict[str, Any]) -> list[Panel]:
    """Recall by distance: seen values, held-out wording and values (on the model's own history
    too, when scored), and forced choice when run."""
    chance = summary["chance"]["recall_seen"]
    panels: list[Panel] = [(lambda g, x: g.get(f"recall_seen_d{x}"), "recall answered right", chance)]
    groups = summary["groups"].values()
    if any(g["recall_unseen"]["mean"] is not None for g in groups):
        panels.append((lambda g, x: g.get(f"recall_unseen_d{x}"), "recall, held-out wording + values", None))
    if any(g["recall_self"]["mean"] is not None for g in groups):
        panels.append((lambda g, x: g.get(f"recall_self_d{x}"), "the same, on its own history", None))
    if any(g["choice_seen"]["mean"] is not None for g in groups):
        panels.append((lambda g, x: g.get(f"choice_seen_d{x}"), "forced-choice recall", chance))
    return panels


def write_results(summary: dict[str, Any], results: Path) -> dict[str, Path]:
    """summary.json, tables.md and the three plots, in `results`."""
    results.mkdir(parents=True, exist_ok=True)
    low, high = summary["settings"]["eval_distances"]
    depths = sorted({d for g in summary["groups"].values() for d in g["real_by_depth"]}, key=int)
    out = {
        "summary": results / "summary.json",
        "tables": results / "tables.md",
        "recall": plot_lines(summary, results / "recall_by_distance.png", [str(d) for d in range(low, high + 1)],
                             recall_panels(summary), "turns between the fact and the question"),
        "depth": plot_lines(summary, results / "real_by_depth.png", depths, [
            (lambda g, x: g["real_by_depth"].get(x), "mean turn score (shipped suites)", None)], "turn depth"),
        "first_turn": plot_first_turn(summary, results / "first_turn.png"),
    }
    out["summary"].write_text(json.dumps(summary, indent=1) + "\n")
    out["tables"].write_text(tables(summary) + "\n**Paired differences**\n\n" + comparison_table(summary)
                             + "\n**Every unit**\n\n" + per_seed_table(summary))
    return out


# -- docs/experiments.md ---------------------------------------------------------------------------


def _student_lines(students: dict[str, dict[str, Any]]) -> list[str]:
    """One line on the built students (sizes and the teacher layers each keeps), if any."""
    if not students:
        return []
    parts = []
    for family, info in students.items():
        if info["encoder_layers"] is not None:
            shape = f"encoder layers {info['encoder_layers']}, decoder layers {info['decoder_layers']}"
        else:
            width = f" at {info['mlp_channels']} MLP channels" if info["mlp_channels"] else ""
            shape = f"layers {info['layers']}{width}"
        parts.append(f"{FAMILY_NAMES.get(family, family)}: {info['architecture']}, "
                     f"{info['parameters'] / 1e6:.1f}M parameters, the teacher's {shape}")
    return ["Students built from the teacher: " + "; ".join(parts) + ".", ""]


def generated_block(summary: dict[str, Any], results: Path, doc: Path) -> str:
    rel = os.path.relpath(results, doc.parent)
    t, s, c = summary["timing"], summary["settings"], summary["data"]["counts"]
    teacher = summary["data"]["teacher"]
    corrected = summary["data"].get("corrected_teacher")
    lines = [
        BEGIN,
        "",
        f"Run: `{summary['command']}` on {t['cpus']} CPUs, {t['jobs']} unit(s) at a time with {t['threads']} "
        f"torch thread(s) each; load average {t['load_before'][0]:.2f} before, {t['load_after'][0]:.2f} after.",
        f"Wall time **{t['wall_s'] / 60:.1f} min** (data and teacher {t['data_s'] / 60:.1f} min, "
        f"of which the teacher extension {teacher['seconds'] / 60:.1f} min"
        + (f" and teacher correction {corrected['seconds'] / 60:.1f} min" if corrected else "") + "; "
        f"{len(summary['units'])} units {t['units_s'] / 60:.1f} min)."
        + (f" Tables, plots and this part rebuilt from the cached units by a later run of the same command "
           f"({t['report_rebuilt_s']:.0f} s)." if "report_rebuilt_s" in t else ""),
        "",
        f"Data: {c['synthetic_conversations']} synthetic training conversations ({c['synthetic_records']} "
        f"assistant turns), {c['sample_records']} sample turns (teacher regimes: {c['sample_teacher_records']}, "
        f"{c['teacher_written_replies']} of them written by the teacher); records per regime "
        + ", ".join(f"{k}: {v}" for k, v in c["records"].items())
        + f". Held-out recall cases: {c['eval_cases']}; disjointness checked on {c['disjoint']['cases']} cases and "
        f"{c['disjoint']['unseen_values']} unseen values. Training: {s['max_steps']} steps x batch "
        f"{s['batch_size']}, learning rate {s['learning_rate']}, seeds {s['seeds']}.",
        "",
        *_student_lines(summary["data"].get("students") or {}),
        tables(summary),
        "**Paired differences** (same seed = same initial student and data order; 'seeds higher' counts "
        "seeds where the first named beats the second on the raw number; 'SE from the questions' is the "
        "standard error that the number of recall questions alone puts on a difference of two shares, all "
        "seeds pooled: a difference within about twice it is sampling noise)",
        "",
        comparison_table(summary),
        f"![recall by distance]({rel}/recall_by_distance.png)",
        "",
        f"![real-text score by turn depth]({rel}/real_by_depth.png)",
        "",
        f"![first-turn quality]({rel}/first_turn.png)",
        "",
        f"Every unit's numbers: `{rel}/tables.md`, `{rel}/summary.json`, `{rel}/units/*.json`.",
        "",
        END,
    ]
    return "\n".join(lines)


def write_doc(summary: dict[str, Any], doc: Path, results: Path) -> Path:
    """Replace the generated block of `doc` (append one if it has none; create the file if needed)."""
    block = generated_block(summary, results, doc)
    text = doc.read_text() if doc.is_file() else f"# Experiments\n\n## {NAME}\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc
