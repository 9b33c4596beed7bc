"""The demo's report: one Markdown file with tables from every stage's summary, and PNG plots
(loss curves of every training run, mean turn score by turn depth for every model scored).

Everything here reads the stages' summaries (their markers), so the report can be rebuilt from
a finished output folder alone.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from convdistill.demo.config import EMBEDDED_TEACHER, FAMILIES, DemoConfig, student_label
from convdistill.demo.stages import StageRecord
from convdistill.eval.report import agg_pyplot, passed_text, score_text


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _rel(path: str | Path, base: Path) -> str:
    """A path as a link relative to the report, so the output folder can be moved whole."""
    return os.path.relpath(Path(path).resolve(), base.resolve())


def plot_losses(runs: list[dict[str, Any]], path: Path, names: dict[str, str] | None = None) -> Path | None:
    """One panel per method (SFT, DPO, distillation), one line per student family."""
    methods = [m for m in ("sft", "dpo", "distill") if any(r["method"] == m and r["losses"] for r in runs)]
    if not methods:
        return None
    plt = agg_pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), dpi=100, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for run in runs:
            if run["method"] == method and run["losses"]:
                steps, losses = zip(*run["losses"], strict=True)
                ax.plot(steps, losses, "-o", markersize=3, label=(names or {}).get(run["family"], run["family"]))
        ax.set_title(f"{method.upper() if method != 'distill' else 'logit distillation'} loss")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def nll_by_depth(results_file: str | Path) -> dict[int, float]:
    """Mean teacher-forced NLL of the reference replies at each turn depth, from a results file."""
    import orjson

    try:
        data = orjson.loads(Path(results_file).read_bytes())
    except (OSError, ValueError):
        return {}
    values: dict[int, list[float]] = {}
    for case in data.get("cases", []):
        for turn in case["turns"]:
            if turn.get("nll") is not None:
                values.setdefault(int(turn["depth"]), []).append(turn["nll"])
    return {d: sum(v) / len(v) for d, v in sorted(values.items())}


STEPS = ("untrained", "sft", "dpo", "distill")


def _style(plt: Any, label: str, index: int) -> tuple[str, Any]:
    """Line style and colour of a model: the teacher black and dashed, the controls grey and
    dotted, every student a colour of its own (a shade per family made eight students look
    alike), circles for the decoder-only family and squares for the encoder-decoder."""
    if label.startswith("teacher"):
        return "--D", "black"
    if label.startswith("control"):
        return ":x", "grey"
    marker = "s" if label.startswith("t5") else "o"
    colors = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # 7 is grey: the controls'
    return f"-{marker}", colors[index % len(colors)]


def plot_depth(evals: list[dict[str, Any]], path: Path) -> Path | None:
    """Per model, by turn depth: the mean turn score, and the mean NLL of the reference replies.
    The tiny students' replies often fail the same checks, so their scores coincide; the NLL
    panel shows what training changed in them. The teacher is dashed."""
    if not evals:
        return None
    plt = agg_pyplot()
    fig, (score_ax, nll_ax) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
    for index, entry in enumerate(evals):
        style, color = _style(plt, entry["label"], index)
        depths = {int(d): v for d, v in entry["summary"]["by_depth"].items() if v is not None}
        xs = sorted(depths)
        score_ax.plot(xs, [depths[x] for x in xs], style, color=color, markersize=4, label=entry["label"])
        nll = nll_by_depth(entry["results"])
        if nll:
            nll_ax.plot(list(nll), list(nll.values()), style, color=color, markersize=4, label=entry["label"])
    score_ax.set_ylim(0, 1.05)
    score_ax.set_ylabel("mean turn score (higher is better)")
    score_ax.set_title("regression suite: score by turn depth")
    nll_ax.set_ylabel("mean reference NLL per token (lower is better)")
    nll_ax.set_title("teacher-forced NLL of the reference replies")
    ticks = sorted({int(d) for e in evals for d in e["summary"]["by_depth"]})
    for ax in (score_ax, nll_ax):
        ax.set_xlabel("turn depth (1 = first user turn)")
        ax.set_xticks(ticks)
        ax.grid(alpha=0.3)
    handles, labels = score_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.85, 1))  # room on the right for the legend
    fig.savefig(path)
    plt.close(fig)
    return path


def _stage_table(records: list[StageRecord]) -> list[str]:
    rows = []
    for r in records:
        status = {"done": "ran", "cached": "finished earlier", "skipped": "not available",
                  "blocked": "skipped"}[r.status]
        rows.append([r.name, r.title, status + (f": {r.reason}" if r.reason else ""),
                     f"{r.seconds:.1f}" if r.status in ("done", "cached") else ""])
    return _table(["stage", "what", "status", "seconds"], rows)


def write_report(config: DemoConfig, records: list[StageRecord], workdir: Path, wall_s: float | None) -> Path:
    """report.md, loss_curves.png and score_by_depth.png in `workdir`."""
    by_name = {r.name: r for r in records}

    def result(name: str) -> dict[str, Any] | None:
        r = by_name.get(name)
        return r.result if r is not None and r.status in ("done", "cached") else None

    out = workdir / "report.md"
    base = out.parent
    import torch

    lines = [
        "# convdistill demo report",
        "",
        f"Export `{config.trees}`; teacher **{config.teacher_name}** "
        f"({'embedded, served on 127.0.0.1' if config.embedded_teacher else config.teacher_base_url}); "
        f"{'quick (reduced) mode' if config.quick else 'full demo sizes'}; {config.threads} torch threads on "
        f"{platform.machine()} ({_cpu_count()} CPUs), torch {torch.__version__}.",
        "",
    ]
    if wall_s is not None:
        lines += [f"Wall time of this invocation: **{wall_s:.0f} s** (stages finished in earlier runs count "
                  "as 0 here; their own times are in the table).", ""]
    lines += ["## Stages", "", *_stage_table(records)]

    stats = result("1-data")
    if stats:
        lines += ["## 1. The export", "",
                  f"{stats['trees']} trees, {stats['messages']} messages "
                  f"({', '.join(f'{v} {k}' for k, v in stats['roles'].items())}); "
                  f"{stats['ranked_fraction']:.1%} of assistant replies ranked; "
                  f"{stats['ranked_prefixes']} ranked prefixes (sources of preference pairs); "
                  f"{stats['records_rejected']} records rejected on reading.", ""]
        lines += _table(["path strategy", "paths"], [[k, v] for k, v in stats["paths_per_strategy"].items()])
        lines += [f"Sampled paths: [samples.md]({_rel(config.out / '1-data' / 'samples.md', base)}), "
                  f"statistics: [stats.json]({_rel(config.out / '1-data' / 'stats.json', base)}).", ""]
        lines += _table(["tree", "score", "messages", "first user turn"],
                        [[f"`{s['tree_id'][:8]}`", s["score"], s["messages"],
                          s["first_user"].replace("|", "/").replace("\n", " ")] for s in stats["samples"]])

    ext = result("2-extend")
    if ext:
        lines += ["## 2. Teacher extension", "",
                  f"Teacher {ext['teacher']} ({ext['endpoint']}) continued {ext['trees_changed']} of "
                  f"{ext['trees_selected']} selected trees: {ext['user_added']} simulated user turns and "
                  f"{ext['assistant_added']} teacher answers added as new nodes of the same trees. "
                  f"{ext['requests_sent']} requests sent, {ext['cache_hits']} answered from the cache, "
                  f"{ext['failed_requests']} failed; {ext['prompt_tokens']} prompt + {ext['completion_tokens']} "
                  f"completion tokens.", "",
                  f"Extended export: [{Path(ext['output']).name}]({_rel(ext['output'], base)}); "
                  f"all continued conversations: [examples.md]({_rel(config.out / '2-extend' / 'examples.md', base)}).",
                  ""]
        if ext["examples"]:
            first = ext["examples"][0]
            lines += [f"One of them (tree `{first['tree_id'][:8]}`; *teacher* marks new nodes):", ""]
            from convdistill.demo.data import conversation_markdown

            lines += [conversation_markdown(first["messages"], first["new"], limit=300)]

    exp = result("3-export")
    if exp:
        lines += ["## 3. Paths and pairs from the extended trees", ""]
        lines += _table(["what", "count"], [
            ["SFT paths (strategy all)", exp["paths"]],
            ["paths with teacher turns", exp["paths_with_teacher_turns"]],
            ["teacher messages in paths", exp["teacher_messages_in_paths"]],
            ["longest path (messages)", exp["longest_path"]],
            ["DPO pairs (adjacent ranks)", exp["pairs"]],
            ["ranked prefixes", exp["prefixes"]],
        ])
        lines += [f"Files: [paths.jsonl]({_rel(exp['paths_file'], base)}), "
                  f"[pairs.jsonl]({_rel(exp['pairs_file'], base)}).", ""]

    names = {family: student_label(config, family) for family in FAMILIES}
    built = [r.result for r in records if r.name.startswith("4-") and r.name.endswith("-student")
             and r.status in ("done", "cached")]
    correction = result("4-teacher-correct")
    runs = [r.result for r in records if r.name.startswith("4-") and not r.name.endswith("-student")
            and r.name != "4-teacher-correct" and r.status in ("done", "cached")]
    skipped = [r for r in records if r.name.startswith("4-") and r.status not in ("done", "cached")]
    if runs or skipped or built:
        lines += ["## 4. Training", ""]
        if built:
            lines += [f"The students start from the teacher's knowledge: each is built from "
                      f"{EMBEDDED_TEACHER}'s own layers, chosen by block influence on the export, and "
                      "the Llama keeps the MLP channels of highest activation there "
                      "(`convdistill models init --from`; docs/models.md).", ""]
            lines += _table(["student", "parameters", "teacher layers kept", "MLP channels kept"],
                            [[names[b["family"]], f"{b['parameters']:,}",
                              (f"encoder {b['encoder_layers']}, decoder {b['layers']}"
                               if b.get("encoder_layers") else str(b["layers"])),
                              b.get("mlp_channels") or "all"] for b in built])
        if correction is not None:
            lines += [f"Teacher correction: {EMBEDDED_TEACHER} fine-tuned with LoRA (merged) on the training "
                      f"paths for {correction['steps']} steps, loss {_fmt(correction['first_loss'])} -> "
                      f"{_fmt(correction['last_loss'])} ({_seconds(correction['train_runtime'])} s); the "
                      "students are distilled from it (`convdistill train correct-teacher`; docs/distill.md).", ""]
        rows = []
        for run in runs:
            data = run["data"]
            rows.append([names[run["family"]], run["method"], run["steps"], run["first_loss"], run["last_loss"],
                         data["examples"], data["truncated"], data["trained_tokens"], _seconds(run["train_runtime"]),
                         f"[{Path(run['checkpoint']).name}]({_rel(run['checkpoint'], base)})"])
        lines += _table(["student", "method", "steps", "first loss", "last loss", "examples", "truncated",
                         "trained tokens", "train s", "checkpoint"], rows)
        for r in skipped:
            lines.append(f"- {r.title}: not run ({r.reason}).")
        if skipped:
            lines.append("")
        png = plot_losses(runs, workdir / "loss_curves.png", names)
        if png is not None:
            lines += ["![training loss curves](loss_curves.png)", ""]
        lines += ["Losses are per method and not comparable across methods: SFT is token cross-entropy, DPO "
                  "the preference loss (0.693 at the start), distillation a mix of cross-entropy and the "
                  "divergence from the teacher's logits.", ""]
        if not config.embedded_teacher:
            lines += ["Logit distillation needs the teacher's logits, which a chat endpoint does not give: its "
                      "teacher is the recipe's local one (the embedded SmolLM2-135M-Instruct), not "
                      f"{config.teacher_name}.", ""]

    finished = [r.result for r in records if r.name.startswith("5-") and r.status in ("done", "cached")]
    evals = [e for e in finished if "controls" not in e]
    controls = [c for e in finished for c in e.get("controls", [])]
    if evals:
        lines += ["## 5. Regression suite", "",
                  f"Suites: {_suite_note(config)}; gold history, greedy decoding. Format checks (word limits, "
                  "forbidden phrases, loops, the same reply to different questions) are gates: failing one fails "
                  "the turn, passing earns nothing. A turn's score is the mean of its content checks (what the "
                  "reply says); a case scores its worst turn and passes when every turn passes. Intervals are "
                  "95%, bootstrapped over cases. The controls are models that do not converse: the floor. NLL is "
                  "the teacher-forced mean NLL per token of the reference replies (local models only). "
                  "docs/eval.md explains the scoring.", ""]
        rows = []
        for e in evals + controls:
            s = e["summary"]
            rows.append([e["label"], passed_text(s), score_text(s), f"{s['turns_passed']}/{s['turns']}",
                         s.get("turns_gated", "n/a"), s.get("mean_reference_nll"),
                         _seconds(e["generation_seconds"]), f"[results]({_rel(e['results'], base)})"])
        lines += _table(["model", "cases passed (95%)", "score (95%)", "turns passed", "turns failing a gate",
                         "mean reference NLL", "generation s", "details"], rows)
        tags = sorted({t for e in evals for t in e["summary"]["by_tag"]})
        lines += ["By tag (mean case score):", ""]
        lines += _table(["model", *tags], [[e["label"], *(e["summary"]["by_tag"].get(t) for t in tags)]
                                           for e in evals])
        depths = sorted({int(d) for e in evals for d in e["summary"]["by_depth"]})
        lines += ["By turn depth (mean turn score):", ""]
        lines += _table(["model", *map(str, depths)],
                        [[e["label"], *(e["summary"]["by_depth"].get(str(d)) for d in depths)] for e in evals])
        png = plot_depth(evals + controls, workdir / "score_by_depth.png")
        if png is not None:
            lines += ["![score and reference NLL by turn depth](score_by_depth.png)", ""]
        if config.sizes.students == "tiny":
            lines += ["Reading it: students of about 5M parameters trained for a few dozen steps on 100 trees "
                      "mostly produce text that fails the same checks, so their scores sit together, well below "
                      "the teacher's; the reference NLL (how likely a model finds the reference replies) is where "
                      "their training shows, compared with the untrained starting points.", ""]
        else:
            lines += ["Reading it: compare each student with its untrained starting point (the teacher's layers, "
                      "pruned), with the teacher, and with the controls: a student that does not clear the "
                      "controls does not converse, whatever its NLL. A degenerate reply (empty, looping, echoing "
                      "the user, the same for different questions) fails its turn; the reference NLL shows how "
                      "close a student came to the reference replies.", ""]
        lines += side_by_side(evals + controls, base)

    lines += ["## Where everything is", "",
              f"Every stage keeps its output in `{config.out}/<stage>/`; `{config.out}/stages/<stage>.json` "
              "marks a finished stage (a rerun skips it) and holds its summary. The teacher's request cache "
              f"is `{config.out}/teacher_cache.sqlite`. Serve any checkpoint with "
              "`convdistill serve --model <checkpoint>`.", ""]
    out.write_text("\n".join(lines))
    return out


def side_by_side(evals: list[dict[str, Any]], base: Path, cases: int = 2, width: int = 160) -> list[str]:
    """The replies of every scored model to the same first `cases` multi-turn conversations, turn
    by turn: what a reader looks at before any number."""
    import orjson

    loaded = []
    for e in evals:
        try:
            loaded.append((e["label"], orjson.loads(Path(e["results"]).read_bytes())["cases"]))
        except (OSError, ValueError, KeyError):
            continue
    if not loaded:
        return []
    shared = [c for c in loaded[0][1] if len(c["turns"]) >= 2][:cases]
    lines = ["### Replies side by side", "",
             "The same conversations, gold history (every model sees the reference replies of earlier turns), "
             f"greedy decoding; replies cut at {width} characters. ✓ all checks of the turn passed, ✗ not.", ""]

    def cell(text: str) -> str:
        flat = " ".join(text.split()).replace("|", "/")
        return (flat[:width] + " …") if len(flat) > width else (flat or "*(empty)*")

    for case in shared:
        lines += [f"**{case['id']}**", ""]
        for k, turn in enumerate(case["turns"]):
            lines += [f"Turn {k + 1}, user: {cell(turn['user'])}", "", "| model | reply | |", "|---|---|---|"]
            for label, results in loaded:
                mine = next((c for c in results if c["id"] == case["id"]), None)
                if mine is None or k >= len(mine["turns"]):
                    continue
                t = mine["turns"][k]
                mark = "✓" if t.get("passed") else "✗"
                lines.append(f"| {label} | {cell(t.get('reply') or '')} | {mark} |")
            lines.append("")
    return lines


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _suite_note(config: DemoConfig) -> str:
    return ", ".join(f"{Path(s.file).name}" + (f" (first {s.cases} cases)" if s.cases else "")
                     for s in config.sizes.eval_suites)


def _cpu_count() -> int:
    return os.cpu_count() or 1
