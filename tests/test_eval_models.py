"""The eval suite with real models: tiny random and tiny trained students (both families), both
history modes, batched vs one-by-one generation, teacher-forced NLL, the endpoint backend against
the project's own server on 127.0.0.1, the judge against a scripted judge server, the CLI
(trained baseline vs untrained student), and the pytest plugin through pytester."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import ScriptedEndpoint, run_cli, serve_scripted
from convdistill.cli.main import app
from convdistill.eval import EndpointBackend, Judge, LocalBackend, RunOptions, generate_replies, load_suite, run_suite
from convdistill.eval.runner import turn_history
from convdistill.models import init_student, seq2seq_format
from convdistill.serve import BackgroundServer, ChatModel

pytest_plugins = ["pytester"]

SUITE_CASES = [
    {"id": "pet", "tags": ["context_memory"], "system": "Be brief.", "turns": [
        {"user": "My dog is called Rex.", "reference": "Nice, Rex!", "checks": {"max_words": 10}},
        {"user": "What is my dog called?", "reference": "Rex.",
         "checks": {"recall_of": ["Rex"], "rouge_l": 0.5, "nll": 3.0}}]},
    {"id": "city", "tags": ["context_memory", "anaphora"], "turns": [
        {"user": "I live in Oslo.", "reference": "Oslo is lovely.", "checks": {"contains": "Oslo"}},
        {"user": "Which city is that in?", "reference": "Norway.", "checks": {"contains": ["Norway"]}},
        {"user": "Where do I live?", "reference": "In Oslo.", "checks": {"recall_of": ["Oslo"], "max_words": 8}}]},
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Two cores shared with other jobs: two threads each step was ~10x slower than one here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "tiny.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in SUITE_CASES))
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {family: init_student(family, "tiny", root / family).path for family in ("llama", "t5")}


@pytest.fixture(scope="module")
def trained(students: dict[str, Path], suite_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama fine-tuned (plain torch, a few dozen steps) on the suite's gold turns."""
    chat = ChatModel(students["llama"])
    rows = []
    for case in load_suite(suite_path).cases:
        for k, turn in enumerate(case.turns):
            prompt = chat.prompt_ids(turn_history(case, k, [None] * len(case.turns), "gold"))
            target = chat.tokenizer(seq2seq_format.target_text(turn.reference, chat.tokenizer),
                                    add_special_tokens=False)["input_ids"]
            rows.append((prompt, target))
    model = chat.model.train()
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(45):
        loss = sum(model(input_ids=torch.tensor([p + t]), labels=torch.tensor([[-100] * len(p) + t])).loss
                   for p, t in rows) / len(rows)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("trained") / "llama-trained"
    model.eval().save_pretrained(folder)
    chat.tokenizer.save_pretrained(folder)
    return folder


class Recording:
    """A real backend that also records each batch of conversations it was asked for."""

    def __init__(self, backend: LocalBackend):
        self.backend, self.name, self.calls = backend, backend.name, []

    def generate(self, conversations: Sequence[Sequence[dict]]) -> list[str]:
        self.calls.append([list(c) for c in conversations])
        return self.backend.generate(conversations)

    def reference_nll(self, pairs: Sequence) -> list[float]:
        return self.backend.reference_nll(pairs)


def test_causal_reference_nll_in_a_batch_equals_each_pair_alone(trained: Path) -> None:
    """The batched NLL left-pads and keeps only the reply positions' logits; it must give what
    the whole sequence, scored alone with full logits, gives."""
    pairs = [([{"role": "user", "content": "My dog is called Rex."}], "Nice, Rex!"),
             ([{"role": "user", "content": "I live in Oslo."}, {"role": "assistant", "content": "Oslo is lovely."},
               {"role": "user", "content": "Where do I live? Tell me in a few words, please."}], "In Oslo, in Norway."),
             ([{"role": "user", "content": "Hi"}], "Hello.")]
    backend = LocalBackend(trained, batch_size=8)
    batched = backend.reference_nll(pairs)
    chat = backend.chat
    for (history, reference), got in zip(pairs, batched, strict=True):
        prompt = chat.prompt_ids(history)
        target = chat.tokenizer(seq2seq_format.target_text(reference, chat.tokenizer),
                                add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = chat.model(input_ids=torch.tensor([prompt + target])).logits[0, len(prompt) - 1 : -1]
        alone = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(target)).item()
        assert got == pytest.approx(alone, rel=1e-4, abs=1e-4)
    assert len(set(map(round, batched, [3] * 3))) == 3  # three different replies, three different NLLs
    # in batches of at most 2 rows, sorted by length: each value back in its pair's place
    assert LocalBackend(trained, batch_size=2).reference_nll(pairs) == pytest.approx(batched, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_history_modes_feed_references_or_own_replies(students: dict[str, Path], suite_path: Path,
                                                      family: str) -> None:
    suite = load_suite(suite_path)
    backend = Recording(LocalBackend(students[family], max_tokens=6))
    replies, histories = generate_replies(suite.cases, backend, "gold")
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 5  # gold: one batch for the whole suite
    assert histories[1][2][-2] == {"role": "assistant", "content": "Norway."}  # the reference of turn 2
    assert histories[0][0][0] == {"role": "system", "content": "Be brief."}

    backend.calls.clear()
    replies, histories = generate_replies(suite.cases, backend, "self")
    assert [len(c) for c in backend.calls] == [2, 2, 1]  # self: one batch per depth
    assert histories[1][2][-2] == {"role": "assistant", "content": replies[1][1]}  # its own reply
    assert histories[1][2][1] == {"role": "assistant", "content": replies[1][0]}


def test_batched_generation_gives_the_same_greedy_replies(students: dict[str, Path], suite_path: Path) -> None:
    suite = load_suite(suite_path)
    batched = LocalBackend(students["llama"], max_tokens=8, batch_size=16)
    single = LocalBackend(students["llama"], max_tokens=8, batch_size=1)
    assert generate_replies(suite.cases, batched, "self")[0] == generate_replies(suite.cases, single, "self")[0]


def test_run_scores_turns_cases_tags_depths_and_nll(students: dict[str, Path], trained: Path,
                                                    suite_path: Path) -> None:
    suite = load_suite(suite_path)
    good = run_suite(suite, LocalBackend(trained, max_tokens=8))
    bad = run_suite(suite, LocalBackend(students["llama"], max_tokens=8))
    seq2seq = run_suite(suite, LocalBackend(students["t5"], max_tokens=8), RunOptions(history="self"))
    assert good["summary"]["score"] > bad["summary"]["score"]
    assert good["summary"]["mean_reference_nll"] < 2.0 < bad["summary"]["mean_reference_nll"]
    assert seq2seq["summary"]["mean_reference_nll"] > 2.0 and seq2seq["history"] == "self"
    pet = good["cases"][0]
    assert [t["depth"] for t in pet["turns"]] == [1, 2] and pet["turns"][1]["reply"].startswith("Rex")
    assert pet["score"] == min(t["score"] for t in pet["turns"] if t["score"] is not None)  # the scored turns
    nll_check = next(c for c in pet["turns"][1]["checks"] if c["name"] == "nll")
    assert nll_check["passed"] and nll_check["value"] == pet["turns"][1]["nll"]
    assert set(good["summary"]["by_tag"]) == {"context_memory", "anaphora"}
    assert set(good["summary"]["by_depth"]) == {"1", "2", "3"}


def test_endpoint_backend_against_the_projects_server(students: dict[str, Path], trained: Path,
                                                      suite_path: Path, tmp_path: Path) -> None:
    suite = load_suite(suite_path)
    local = run_suite(suite, LocalBackend(trained, "trained", max_tokens=8))
    with BackgroundServer(ChatModel(trained, "trained")) as server:
        remote = run_suite(suite, EndpointBackend(server.base_url, "trained", max_tokens=8))
        cli = run_cli("eval", "run", "--suite", suite_path, "--model", "trained", "--endpoint", server.base_url,
                      "--max-tokens", "8", "-o", tmp_path / "r.json", "--report", tmp_path / "r.md")
    assert [t["reply"] for c in remote["cases"] for t in c["turns"]] == \
        [t["reply"] for c in local["cases"] for t in c["turns"]]
    assert remote["summary"]["mean_reference_nll"] is None  # no log-likelihoods over chat completions
    skipped = next(c for c in remote["cases"][0]["turns"][1]["checks"] if c["name"] == "nll")
    assert skipped["score"] is None and "skipped" in skipped["detail"]
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["score"] == remote["summary"]["score"]
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_cli_flags_an_untrained_student_against_a_trained_baseline(students: dict[str, Path], trained: Path,
                                                                   suite_path: Path, tmp_path: Path) -> None:
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    runner = CliRunner()
    for model, out in ((trained, base), (students["llama"], new)):
        # In-process (the same typer app as the console script): a subprocess per run would
        # spend most of its time importing torch on these busy cores.
        done = runner.invoke(app, ["eval", "run", "--suite", str(suite_path), "--model", str(model),
                                   "--max-tokens", "8", "-o", str(out)])
        assert done.exit_code == 0, done.output
    worse = run_cli("eval", "compare", new, "--baseline", base, "--tolerance", "0.1", "--junit", tmp_path / "j.xml")
    assert worse.returncode == 1
    assert "REGRESSED pet [context_memory]" in worse.stdout and "turn 2:" in worse.stdout
    assert "Rex" in worse.stdout  # the baseline's reply, beside the student's
    itself = run_cli("eval", "compare", base, "--baseline", base)
    assert itself.returncode == 0 and "0 regressed" in itself.stdout
    report = runner.invoke(app, ["eval", "report", str(new), "--baseline", str(base), "-o",
                                 str(tmp_path / "report.md")])
    assert report.exit_code == 0 and "## By turn depth" in (tmp_path / "report.md").read_text()


# -- the judge, against a scripted OpenAI-compatible judge on 127.0.0.1 ---------------------------
class ScriptedJudge(ScriptedEndpoint):
    """Messy but deterministic judge answers: a function of the prompt and the seed."""

    def answer(self, body: dict) -> str:
        prompt, seed = body["messages"][-1]["content"], body.get("seed", 0)
        if "FINAL REPLY" in prompt:
            good = "GOOD" in prompt.split("FINAL REPLY:")[1]
            answers = (["Solid. Rating: [[9]]", "I'd say 7/10.", "**Rating**: 8", "no idea", "no idea", "no idea"]
                       if good else ["Rating: [[2]]", "Poor; score: 3", "Rating: [[10]]"])
            return answers[seed % len(answers)]
        # pairwise: prefers the reply that says GOOD, unless told to always pick A
        a = prompt.split("[Reply A]")[1].split("[Reply B]")[0]
        return "Always first: [[A]]" if "BIASED" in prompt else ("[[A]]" if "GOOD" in a else "Reply B is better.")


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    with serve_scripted(ScriptedJudge) as url:
        yield url


def test_judge_takes_the_median_of_parsed_samples(judge_url: str, tmp_path: Path) -> None:
    history = [{"role": "user", "content": "Say something."}]
    judge = Judge(judge_url, "judge", samples=3)
    good, bad = judge.rate([(history, "GOOD reply", None), (history, "bad reply", "ref")])
    assert good.samples == (9.0, 7.0, 8.0) and good.median == 8.0
    assert bad.samples == (2.0, 3.0, 10.0) and bad.median == 3.0  # one wild sample does not decide
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("no placeholders")
    with pytest.raises(ValueError, match="must contain"):
        Judge(judge_url, "judge", rubric_path=rubric)


def test_pairwise_asks_both_orders_and_calls_disagreement_a_tie(judge_url: str) -> None:
    history = [{"role": "user", "content": "Hi"}]
    judge = Judge(judge_url, "judge", samples=1)
    biased_history = [*history, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "BIASED"}]
    wins, losses, biased = judge.compare(
        [(history, "GOOD one", "meh"), (history, "meh", "GOOD one"), (biased_history, "x", "y")]
    )
    assert wins["verdict"] == "model" and losses["verdict"] == "baseline"
    assert biased == {"verdict": "tie", "model_first": "model", "baseline_first": "baseline"}


def test_judge_checks_in_a_run(judge_url: str, students: dict[str, Path], tmp_path: Path) -> None:
    suite = tmp_path / "j.jsonl"
    suite.write_text(json.dumps({"id": "j", "tags": ["t"], "turns": [{"user": "Hi", "checks": {"judge": 5}}]}) + "\n")
    results = run_suite(load_suite(suite), LocalBackend(students["llama"], max_tokens=4),
                        RunOptions(judge=Judge(judge_url, "judge")))
    turn = results["cases"][0]["turns"][0]
    check = turn["checks"][0]
    assert turn["judge_samples"] == [2.0, 3.0, 10.0] and check["value"] == 3.0 and not check["passed"]
    # Pairwise against a baseline whose reply the judge prefers in both orders.
    baseline = json.loads(json.dumps(results))
    baseline["cases"][0]["turns"][0]["reply"] = "GOOD reply"
    paired = run_suite(load_suite(suite), LocalBackend(students["llama"], max_tokens=4),
                       RunOptions(judge=Judge(judge_url, "judge", samples=1), pairwise_baseline=baseline))
    assert paired["cases"][0]["turns"][0]["pairwise"]["verdict"] == "baseline"
    assert paired["summary"]["pairwise"] == {"model": 0, "baseline": 1, "tie": 0}


# -- the pytest plugin --------------------------------------------------------------------------
def test_plugin_collects_cases_and_fails_like_assertions(pytester: pytest.Pytester, trained: Path,
                                                         students: dict[str, Path], suite_path: Path,
                                                         tmp_path: Path) -> None:
    suite = pytester.path / "tiny.jsonl"
    suite.write_text(suite_path.read_text())
    args = [str(suite), "--convdistill-max-tokens", "8", "-p", "no:cacheprovider"]
    good = pytester.runpytest(*args, "--convdistill-model", str(trained))
    outcomes = good.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2
    bad = pytester.runpytest(*args, "--convdistill-model", str(students["llama"]))
    bad.assert_outcomes(failed=2)
    bad.stdout.fnmatch_lines(["*case pet, turn 2*", "*user:  'What is my dog called?'*",
                              "E   assert recall_of: missing 'Rex'*"])
    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps(run_suite(load_suite(suite_path), LocalBackend(trained, max_tokens=8))))
    regressed = pytester.runpytest(*args, "--convdistill-model", str(students["llama"]),
                                   "--convdistill-baseline", str(baseline))
    regressed.stdout.fnmatch_lines(["*REGRESSED pet*"])
    assert regressed.parseoutcomes()["failed"] >= 1
    same = pytester.runpytest(*args, "--convdistill-model", str(trained), "--convdistill-baseline", str(baseline))
    same.assert_outcomes(passed=2)
    selected = pytester.runpytest(*args, "--convdistill-model", str(trained), "-m", "anaphora")
    outcomes = selected.parseoutcomes()  # tags are markers: only the case tagged anaphora runs
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1 and outcomes["deselected"] == 1
