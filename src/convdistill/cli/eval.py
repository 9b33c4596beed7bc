"""`convdistill eval`: run a multi-turn regression suite, compare with a baseline, report, generate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from convdistill.cli.common import PRECISION_OPTION, OnErrorOpt, RejectsOpt, err_console, fail
from convdistill.files import write_json, write_jsonl

app = typer.Typer(
    help="Multi-turn regression suite: score a model turn by turn, compare with a baseline.",
    no_args_is_help=True,
)


def _load_results(path: Path) -> dict[str, Any]:
    from convdistill.eval import load_results

    return load_results(str(path))  # a bad or missing file: BadInput/Unavailable, one line


@app.command("run")
def run(
    suite: Annotated[list[Path], typer.Option("--suite", "-s", help="Suite JSONL file, or the name of a "
                                              "shipped suite (`convdistill eval suites`); repeatable.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder, embedded model name "
                                       "(smollm2-135m-instruct), or the model name at --endpoint.")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="Results JSON to write.")],
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="OpenAI-compatible base URL "
                                                 "(e.g. http://127.0.0.1:8000/v1); default: load MODEL here.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="OPENAI_API_KEY",
                                                help="Key for --endpoint (and the judge).")] = None,
    history: Annotated[str, typer.Option("--history", help="gold: earlier turns are the references; "
                                         "self: the model's own earlier replies.")] = "gold",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Local generation batch.")] = 16,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Longest reply.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0: greedy (default).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    nll: Annotated[bool, typer.Option("--nll/--no-nll", help="Teacher-forced NLL of references "
                                      "(local models).")] = True,
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="Judge endpoint base URL.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model name.")] = None,
    judge_samples: Annotated[int, typer.Option("--judge-samples", min=1, help="Judgments per turn; "
                                               "the median counts.")] = 3,
    judge_rubric: Annotated[Path | None, typer.Option("--judge-rubric", exists=True, dir_okay=False,
                                                      help="Rubric template file.")] = None,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=1, help="Longest judgment "
                                                  "(explanation and rating).")] = 256,
    pairwise_baseline: Annotated[Path | None, typer.Option(
        "--pairwise-baseline", exists=True, dir_okay=False,
        help="Baseline results: the judge also compares each reply with the baseline's, both orders.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", dir_okay=False, help="SQLite request cache for "
                                               "endpoint and judge requests.")] = None,
    report: Annotated[Path | None, typer.Option("--report", dir_okay=False,
                                                help="Also write a Markdown report (and PNG) here.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads for a local model "
                                                "(default: torch's; 1 is faster on busy shared cores).")] = None,
    precision: Annotated[str, PRECISION_OPTION] = "auto",
) -> None:
    """Run SUITE against MODEL and write per-turn, per-case, per-tag and per-depth scores."""
    from convdistill.eval import HISTORY_MODES, Judge, RunOptions, load_suites, open_backend, run_suite
    from convdistill.eval.controls import reference_pool
    from convdistill.eval.judge import DEFAULT_RUBRIC
    from convdistill.teacher.client import FatalEndpointError, RequestFailed

    if history not in HISTORY_MODES:
        raise typer.BadParameter(f"choose {' or '.join(HISTORY_MODES)}", param_hint="--history")
    if (judge_url is None) != (judge_model is None):
        raise typer.BadParameter("give both --judge-url and --judge-model", param_hint="--judge-model")
    if pairwise_baseline is not None and judge_url is None:
        raise typer.BadParameter("pairwise judging needs --judge-url/--judge-model", param_hint="--pairwise-baseline")
    cases = load_suites([_suite_file(path) for path in suite])  # a bad suite: SuiteError, one line
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    judge = None
    try:
        if judge_url and judge_model:
            judge = Judge(judge_url, judge_model, api_key, judge_rubric or DEFAULT_RUBRIC, judge_samples,
                          max_tokens=judge_max_tokens, cache_path=cache)
        baseline = _load_results(pairwise_baseline) if pairwise_baseline else None
        err_console.print(escape(f"loading {model} ..." if not endpoint else f"using {model} at {endpoint}"))
        backend = open_backend(model, endpoint, api_key=api_key, batch_size=batch_size, max_tokens=max_tokens,
                               temperature=temperature, seed=seed, cache_path=cache,
                               references=reference_pool(cases), precision=precision)
        results = run_suite(
            cases, backend, RunOptions(history, judge, baseline, nll),
            progress=lambda done, total: err_console.print(f"generated {done}/{total} turns"),
        )
    except (FatalEndpointError, RequestFailed) as exc:
        fail(f"{type(exc).__name__}: {exc}")  # an endpoint or judge that does not answer usably

    write_json(output, results)
    err_console.print(escape(f"{headline(results)} -> {output}"))
    for name, bench in results["summary"].get("benchmarks", {}).items():
        err_console.print(escape(_benchmark_line(name, bench)))
    if report is not None:
        from convdistill.eval import write_report

        md, png = write_report(results, report)
        err_console.print(escape(f"report: {md}, plot: {png}"))


def headline(results: dict[str, Any]) -> str:
    """One line: cases passed and score with their intervals, turns, and what was not scored."""
    from convdistill.eval.report import summary_line

    s = results["summary"]
    if s["score"] is None:
        return f"{results['model']}: no scored turns ({s.get('cases_unscored', 0)} cases unscored)"
    unscored = f", {s['cases_unscored']} cases unscored" if s.get("cases_unscored") else ""
    return f"{results['model']}: {summary_line(s)} ({results['history']} history){unscored}"


def _benchmark_line(name: str, bench: dict[str, Any]) -> str:
    """One line: the benchmark's overall and per-group ratings (1..10), and how many were rated."""
    def rating(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    groups = ", ".join(f"{group} {rating(g['rating'])}" for group, g in bench["by_group"].items())
    return (f"{name}: {rating(bench['overall'])} / 10 ({groups}); {bench['turns_rated']}/{bench['turns_judged']} "
            f"judged turns rated, mean spread {rating(bench['mean_spread'])}")


def _shipped_suites() -> dict[str, Path]:
    from convdistill.resources import shipped_files

    return {path.stem: path for path in shipped_files("eval/suites")}


def _suite_file(path: Path) -> Path:
    """A suite file as given, or the shipped suite of that name (`anaphora`, `anaphora.jsonl`)."""
    if path.exists() or path.parent != Path("."):
        return path
    return _shipped_suites().get(path.name.removesuffix(".jsonl"), path)


@app.command("suites")
def suites() -> None:
    """The regression suites shipped with convdistill: name, cases, turns, tags, file.
    Run one by name: convdistill eval run --suite anaphora ..."""
    shipped = _shipped_suites()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        cases = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        turns = sum(len(case.get("turns", [])) for case in cases)
        tags = sorted({tag for case in cases for tag in case.get("tags", [])})
        typer.echo(f"{name:<{width}}  {len(cases):3d} cases  {turns:3d} turns  {','.join(tags):<30}  {path}")


@app.command("compare")
def compare(
    results: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Results of `eval run`.")],
    baseline: Annotated[Path, typer.Option("--baseline", "-b", exists=True, dir_okay=False,
                                           help="Results of the last good model.")],
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", min=0.0,
                                             help="Largest allowed drop of a case score (0..1).")] = 0.0,
    junit: Annotated[Path | None, typer.Option("--junit", dir_okay=False, help="Write JUnit XML here.")] = None,
    report: Annotated[Path | None, typer.Option("--report", dir_okay=False,
                                                help="Write a Markdown report (and PNG) here.")] = None,
    width: Annotated[int, typer.Option("--width", min=20, help="Column width of the side-by-side.")] = 56,
) -> None:
    """Exit 1 when any case's score dropped by more than the tolerance; list each regressed turn."""
    from convdistill.eval import compare_results, format_regressions, junit_xml, write_report

    new, base = _load_results(results), _load_results(baseline)
    comparison = compare_results(new, base, tolerance)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(comparison, Path(str(new.get("suite"))).name))
    if report is not None:
        write_report(new, report, base, tolerance)
    typer.echo(format_regressions(comparison, width))
    if comparison.failed:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    results: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Results of `eval run`.")],
    baseline_file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False, show_default=False,
                                                         help="Results to compare with (same as --baseline).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False, help="Markdown file; the PNG "
                                                "goes beside it.")] = None,
    html: Annotated[Path | None, typer.Option("--html", dir_okay=False, help="One self-contained HTML page: "
                                              "summary, plots, every case side by side, regressions first.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", "-b", exists=True, dir_okay=False)] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", min=0.0)] = 0.0,
    controls: Annotated[Path | None, typer.Option(
        "--controls", exists=True, file_okay=False,
        help="Folder written by `eval controls`: their rows go in the report as the floor.")] = None,
) -> None:
    """Write a Markdown report (with a PNG of score by turn depth) and/or an HTML page.

    Example: convdistill eval report new.json base.json --html report.html -o report.md"""
    from convdistill.eval import write_report
    from convdistill.eval.html_report import write_html_report

    if baseline_file is not None and baseline is not None:
        raise typer.BadParameter("give the baseline once: as the second argument or --baseline",
                                 param_hint="--baseline")
    if output is None and html is None:
        raise typer.BadParameter("give -o report.md and/or --html report.html", param_hint="--output")
    new = _load_results(results)
    base_path = baseline_file or baseline
    base = _load_results(base_path) if base_path else None
    floor = _load_controls(controls, new.get("history")) if controls else []
    if output is not None:
        md, png = write_report(new, output, base, tolerance, floor)
        err_console.print(escape(f"report: {md}, plot: {png}"))
    if html is not None:
        page = write_html_report(new, html, base, tolerance, floor)
        err_console.print(escape(f"html report: {page} ({page.stat().st_size // 1024} KiB, self-contained)"))


@app.command("rescore")
def rescore_command(
    results: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Results of `eval run`.")],
    suite: Annotated[list[Path], typer.Option("--suite", "-s", help="The suite files (or shipped names) the "
                                              "results were run on, as they read now; repeatable.")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="Results JSON to write "
                                         "(may be RESULTS itself).")],
) -> None:
    """Score stored replies again with today's scoring and checks: nothing is generated or judged.

    For results written before a change of the scoring (docs/eval.md) or of a suite's checks.
    Example: convdistill eval rescore old.json -s anaphora -s context_memory -o old.rescored.json"""
    from convdistill.eval import load_suites
    from convdistill.eval.runner import rescore

    before = _load_results(results)
    after = rescore(before, load_suites([_suite_file(path) for path in suite]))
    write_json(output, after)
    old = before["summary"]
    err_console.print(escape(f"before: {old['cases_passed']}/{old['cases']} cases passed, score "
                             f"{old['score'] if old['score'] is None else round(old['score'], 3)}"))
    err_console.print(escape(f"after:  {headline(after)} -> {output}"))


def _load_controls(folder: Path, history: str | None) -> list[dict[str, Any]]:
    """The control results in `folder` (`eval controls -o`), those of `history` first."""
    runs = [_load_results(path) for path in sorted(folder.glob("control-*.json"))]
    if not runs:
        fail(f"{folder}: no control results (control-*.json); write them with `convdistill eval controls`")
    return sorted(runs, key=lambda r: (r.get("history") != history, r.get("history"), str(r.get("model"))))


@app.command("controls")
def controls_command(
    suite: Annotated[list[Path], typer.Option("--suite", "-s", help="Suite JSONL file or shipped suite name; "
                                              "repeatable.")],
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", file_okay=False, help="Write each "
                                                    "control's results here (control-NAME-HISTORY.json).")] = None,
    history: Annotated[list[str] | None, typer.Option("--history", help="gold and/or self (default: both).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Instead: serve the controls on an OpenAI-compatible "
                                        "endpoint (model control:constant, ...) until interrupted.")] = False,
    host: Annotated[str, typer.Option("--host", help="With --serve: address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="With --serve: port.")] = 8000,
) -> None:
    """Score SUITE with control models that do not converse (a constant reply, fluent unrelated
    replies, an echo, nothing, another case's reply): the floor a model must clear by far.

    Example: convdistill eval controls -s anaphora -s context_memory -o runs/controls
    then: convdistill eval report results.json --controls runs/controls -o report.md"""
    from convdistill.eval import HISTORY_MODES, load_suites
    from convdistill.eval.controls import reference_pool
    from convdistill.eval.controls_server import controls_app
    from convdistill.eval.runner import run_controls

    histories = history or list(HISTORY_MODES)
    for mode in histories:
        if mode not in HISTORY_MODES:
            raise typer.BadParameter(f"choose {' or '.join(HISTORY_MODES)}", param_hint="--history")
    cases = load_suites([_suite_file(path) for path in suite])
    if serve:
        from convdistill.serve import ServeSettings, app_server

        err_console.print(escape(f"serving the controls at http://{host}:{port}/v1 (models control:NAME)"))
        app_server(controls_app(reference_pool(cases)), ServeSettings(host=host, port=port, log_level="info")).run()
        return
    if output_dir is None:
        raise typer.BadParameter("give the folder for the results", param_hint="--output-dir")
    for results in run_controls(cases, histories):
        name = str(results["model"]).removeprefix("control:")
        write_json(output_dir / f"control-{name}-{results['history']}.json", results)
        err_console.print(escape(headline(results)))
    err_console.print(escape(f"-> {output_dir}"))


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The benchmark's question file.")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="Suite JSONL to write.")],
    benchmark: Annotated[str, typer.Option("--from", help="mt-bench (question.jsonl: question_id, category, "
                                           "turns, reference) or mt-bench-101 (task, id, history).")],
    pass_rating: Annotated[float, typer.Option("--pass-rating", min=1.0, max=10.0, help="Judge rating at which "
                                               "a turn passes (its judge check).")] = 6.0,
    on_error: OnErrorOpt = "skip",
    rejects: RejectsOpt = None,
    reference: Annotated[Path | None, typer.Option("--reference", exists=True, dir_okay=False,
                                                   help="mt-bench: FastChat's reference-answer file "
                                                   "(reference_answer/gpt-4.jsonl); its answers are the "
                                                   "math/reasoning/coding references.")] = None,
) -> None:
    """Turn an MT-Bench or MT-Bench-101 question file into suite cases judged as the benchmark judges:
    MT-Bench on the model's own history, both turns, math/reasoning/coding against the reference;
    MT-Bench-101 on the gold history, the task's judged turns, a dialogue scoring its worst turn.

    Example: convdistill eval import --from mt-bench question.jsonl --reference gpt-4.jsonl -o mt_bench.jsonl
    then: convdistill eval run --suite mt_bench.jsonl --model M --judge-url URL --judge-model J -o r.json"""
    from convdistill.cli.common import RejectLog, check_choice
    from convdistill.eval.mt_bench import IMPORTERS, import_mt_bench

    check_choice(benchmark, tuple(IMPORTERS), "--from")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if reference is not None and benchmark != "mt-bench":
        raise typer.BadParameter("only MT-Bench has a reference-answer file", param_hint="--reference")
    # an unreadable file: SuiteError, one line
    result = (import_mt_bench(source, pass_rating, reference) if reference is not None
              else IMPORTERS[benchmark](source, pass_rating))
    problems = result.problems + (result.references.problems if result.references is not None else [])
    log = RejectLog(rejects)
    for problem in problems:
        log(problem)
    log.close()
    err_console.print(escape(result.summary()))
    if problems and on_error == "fail":
        bad = result.lines_rejected + (result.references.lines_rejected if result.references is not None else 0)
        fail(f"{source}: {bad} bad lines (--on-error fail); nothing written")
    if not result.cases:
        fail(f"{source}: no usable {benchmark} lines; nothing written")
    # suites are plain JSON lines under any name (their reader does not gunzip)
    write_jsonl(output, (case.to_dict() for case in result.cases), gzip_by_name=False)
    err_console.print(escape(f"{len(result.cases)} cases -> {output}"))


@app.command("generate")
def generate(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of cases.")] = 20,
    min_depth: Annotated[int, typer.Option("--min-depth", min=2, help="Fewest turns per case.")] = 2,
    max_depth: Annotated[int | None, typer.Option("--max-depth", min=2, help="Most turns (default: "
                                                  "--min-depth).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False,
                                                help="Suite JSONL to write (default: stdout).")] = None,
) -> None:
    """Generate synthetic context-memory cases (facts early, asked for later; no judge needed)."""
    from convdistill.eval import generate_memory_suite

    high = max_depth if max_depth is not None else min_depth
    if high < min_depth:
        raise typer.BadParameter("must be >= --min-depth", param_hint="--max-depth")
    cases = generate_memory_suite(count, (min_depth, high), seed)
    if output is None:
        sys.stdout.write(b"".join(orjson.dumps(c) + b"\n" for c in cases).decode())
        return
    write_jsonl(output, cases, gzip_by_name=False)
    err_console.print(escape(f"{count} cases -> {output}"))
