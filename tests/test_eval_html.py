"""The HTML report in a real browser: two real runs (the embedded SmolLM2 as the baseline, a tiny
random student as the new model) on a small suite, `eval report NEW BASE --html`, then Debian's
Chromium, headless, renders the page: its DOM is read back (cases, order, failing checks,
plots) and a screenshot is taken. Skipped, with the reason, where Chromium is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convdistill.cli.main import app
from convdistill.eval import LocalBackend, load_suite, run_suite
from convdistill.models import init_student, resolve_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
)

CASES = [
    {"id": "capital", "tags": ["knowledge"], "turns": [
        {"user": "What is the capital of France?", "reference": "Paris.", "checks": {"contains": ["Paris"]}},
        {"user": "And what language do people speak there?", "reference": "French.",
         "checks": {"contains": ["French"]}}]},
    {"id": "name", "tags": ["context_memory"], "turns": [
        {"user": "Hello! My name is Ada.", "reference": "Hello Ada, nice to meet you."},
        {"user": "What is my name?", "reference": "Your name is Ada.", "checks": {"recall_of": ["Ada"]}}]},
    {"id": "short", "tags": ["format_following"], "turns": [
        {"user": "Say hello in at most five words.", "reference": "Hello there!", "checks": {"max_words": 400}}]},
]


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as root on a machine with no network: no sandbox, no GPU, nothing phoned home."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


class Page(HTMLParser):
    """What the rendered DOM holds: case sections in order, failed checks per case, plots."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[dict[str, str]] = []
        self.failed_checks: dict[str, int] = {}
        self.svgs = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "section" and "case" in classes:
            self.cases.append({"id": attributes.get("data-case-id") or "", "status": attributes.get("data-status")
                               or ""})
        if tag == "li" and "failed" in classes and self.cases:
            self.failed_checks[self.cases[-1]["id"]] = self.failed_checks.get(self.cases[-1]["id"], 0) + 1
        if tag == "svg":
            self.svgs += 1
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)


@pytest.mark.slow
@needs_chromium
def test_html_report_renders_in_chromium_with_regressions_first(tmp_path: Path) -> None:
    import torch

    suite_path = tmp_path / "suite.jsonl"
    suite_path.write_text("".join(json.dumps(c) + "\n" for c in CASES))
    suite = load_suite(suite_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = run_suite(suite, LocalBackend(resolve_model("smollm2-135m-instruct"), "smollm2", max_tokens=40))
        student = init_student("llama", "tiny", tmp_path / "student").path
        new = run_suite(suite, LocalBackend(student, "tiny-student", max_tokens=12))
    finally:
        torch.set_num_threads(threads)
    assert base["cases"][0]["score"] == 1.0 and new["cases"][0]["score"] == 0.0  # a real regression to show
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "new.json").write_text(json.dumps(new))
    page = tmp_path / "report.html"
    done = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "new.json"), str(tmp_path / "base.json"),
                                    "--html", str(page), "--tolerance", "0.05"])
    assert done.exit_code == 0, done.output

    rendered = chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = Page()
    dom.feed(rendered.stdout)
    assert len(dom.cases) == len(CASES)
    statuses = [c["status"] for c in dom.cases]
    assert dom.cases[0] == {"id": "capital", "status": "regressed"}  # the largest drop (1.0 -> 0.0) first
    assert statuses == sorted(statuses, key=lambda s: s != "regressed")  # every regression before the rest
    assert dom.failed_checks.get("capital", 0) >= 2  # both turns' contains checks, highlighted
    assert dom.svgs >= 2 and not dom.external  # plots inline, nothing fetched
    assert "Paris" in rendered.stdout  # the baseline's reply beside the student's

    shot = tmp_path / "report.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri(), tmp=tmp_path)
    assert taken.returncode == 0, taken.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and plots, not a blank page


class Echo:
    """A model that repeats the user's message: whatever markup the user wrote comes back."""

    name = "echo"

    def generate(self, conversations: list) -> list[str]:
        return [c[-1]["content"] for c in conversations]

    def reference_nll(self, pairs: list) -> None:
        return None


def test_replies_are_text_and_the_page_fetches_nothing(tmp_path: Path) -> None:
    from convdistill.eval import html_report

    hostile = '</div><script>alert(1)</script><img src="https://example.com/x.png">'
    suite_path = tmp_path / "s.jsonl"
    suite_path.write_text(json.dumps({"id": "x<y", "tags": ["t&t"], "turns": [
        {"user": hostile, "checks": {"not_contains": ["script"]}}]}) + "\n")
    results = run_suite(load_suite(suite_path), Echo())
    page = html_report(results, results)
    dom = Page()
    dom.feed(page)
    assert "<script" not in page and "&lt;script&gt;" in page and not dom.external
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    assert dom.cases == [{"id": "x<y", "status": "failing"}] and dom.failed_checks == {"x<y": 2}  # both sides
