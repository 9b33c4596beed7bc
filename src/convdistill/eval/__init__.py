"""The multi-turn regression suite: score a model turn by turn and compare it with a baseline.

    load_suite(path) -> Suite               JSONL cases (schema: suite.schema.json), checked on read
    open_backend(model, endpoint)           a local checkpoint (batched) or an OpenAI-compatible model
    run_suite(suite, backend, RunOptions)   replies, checks, scores per turn / case / tag / depth
    compare_results(results, baseline, t)   regressed cases and turns; junit_xml, format_regressions
    write_report(results, path, baseline)   Markdown report and a PNG of score by turn depth
    write_html_report(results, path, base)  one self-contained HTML page, regressions first
    import_mt_bench(path), import_mt_bench_101(path)   benchmark question files as judged cases
    Judge(base_url, model, samples=3)       ratings (median of samples), pairwise in both orders
    generate_memory_suite(n, depth, seed)   synthetic context-memory cases, judge-free checks
"""

from convdistill.eval.backends import EndpointBackend, LocalBackend, open_backend
from convdistill.eval.checks import CheckResult, run_checks, turn_score
from convdistill.eval.compare import Comparison, compare_results, format_regressions, junit_xml
from convdistill.eval.generator import generate_memory_suite
from convdistill.eval.html_report import html_report, write_html_report
from convdistill.eval.judge import Judge, parse_bracket_rating, parse_preference, parse_rating
from convdistill.eval.mt_bench import benchmark_summary, import_mt_bench, import_mt_bench_101
from convdistill.eval.report import markdown_report, plot_depth, write_report
from convdistill.eval.runner import HISTORY_MODES, RunOptions, generate_replies, load_results, run_suite
from convdistill.eval.similarity import chrf, rouge_l
from convdistill.eval.suite import Case, Checks, Suite, SuiteError, Turn, load_suite, load_suites

__all__ = [
    "HISTORY_MODES",
    "Case",
    "CheckResult",
    "Checks",
    "Comparison",
    "EndpointBackend",
    "Judge",
    "LocalBackend",
    "RunOptions",
    "Suite",
    "SuiteError",
    "Turn",
    "benchmark_summary",
    "chrf",
    "compare_results",
    "format_regressions",
    "generate_memory_suite",
    "generate_replies",
    "html_report",
    "import_mt_bench",
    "import_mt_bench_101",
    "junit_xml",
    "load_results",
    "load_suite",
    "load_suites",
    "markdown_report",
    "open_backend",
    "parse_bracket_rating",
    "parse_preference",
    "parse_rating",
    "plot_depth",
    "rouge_l",
    "run_checks",
    "run_suite",
    "turn_score",
    "write_html_report",
    "write_report",
]
