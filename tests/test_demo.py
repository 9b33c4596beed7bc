"""`convdistill demo`: the whole pipeline in its reduced mode (--quick), for real (embedded teacher
served on 127.0.0.1, TRL trainers, the eval runner), then resume, bad input, a hosted teacher and
the stage runner's bookkeeping."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import ROOT, SAMPLE, run_cli
from convdistill.demo.config import QUICK, make_config
from convdistill.demo.stages import Stage, StageFailed, StageRunner, StageUnavailable
from convdistill.eval.controls import control_names
from convdistill.eval.report import passed_text, score_text

FAMILIES = ("t5", "llama")
BUILD_STAGES = [f"4-{f}-student" for f in FAMILIES]
TRAIN_STAGES = [f"4-{f}-{m}" for m in ("distill", "sft", "dpo") for f in FAMILIES]
EVAL_STAGES = ["5-teacher", *(f"5-{f}-{m}" for f in FAMILIES for m in ("init", "distill", "sft", "dpo"))]
STAGES = ["1-data", "2-extend", "3-export", "4-teacher-correct", *BUILD_STAGES, *TRAIN_STAGES, "5-controls",
          *EVAL_STAGES, "6-report"]
PNG = b"\x89PNG\r\n\x1a\n"


def demo(out: Path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    # One thread: on two cores shared with other jobs, two threads per step ran several times slower.
    command = [sys.executable, "-m", "convdistill.cli.main", "demo", "--quick", "--threads", "1", "--out", str(out)]
    done = subprocess.run([*command, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})
    return done, time.perf_counter() - started


def markers(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    out = tmp_path_factory.mktemp("demo") / "run"
    done, seconds = demo(out)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done, seconds


def test_quick_demo_runs_every_stage_for_real(quick_run: tuple[Path, Any, float]) -> None:
    out, done, seconds = quick_run
    print(f"quick demo: {seconds:.1f} s")
    assert done.stdout.strip().splitlines()[-1] == str(out / "report.md")
    found = markers(out)
    assert sorted(found) == sorted(STAGES), "every stage, distillation included, finished and left a marker"
    for name in STAGES:
        assert f"] {found[name]['title']}: done in" in done.stderr  # progress: one line per finished stage
    assert "Traceback" not in done.stderr
    for path in ("1-data/stats.json", "1-data/samples.md", "2-extend/extended.jsonl", "2-extend/examples.md",
                 "3-export/paths.jsonl", "3-export/pairs.jsonl", "report.md", "loss_curves.png", "score_by_depth.png",
                 "teacher_cache.sqlite"):
        assert (out / path).is_file() and (out / path).stat().st_size > 0, path
    for name in TRAIN_STAGES:  # each checkpoint loads in serve/eval as is: the eval stages loaded them
        result = found[name]["result"]
        assert Path(result["checkpoint"], "config.json").is_file()
        assert (Path(result["checkpoint"]) / "run_log.json").is_file()
        assert result["steps"] == {"sft": QUICK.sft_steps, "dpo": QUICK.dpo_steps,
                                   "distill": QUICK.distill_steps}[result["method"]]
        assert result["losses"] and not any(math.isnan(loss) for _, loss in result["losses"])  # logged, not NaN
    # Logit distillation really used the corrected teacher: its scored logits are on disk, and the
    # distillation run recorded the corrected checkpoint as its teacher.
    corrected = found["4-teacher-correct"]["result"]
    assert corrected["steps"] == QUICK.correct_steps
    corrected_info = json.loads((Path(corrected["checkpoint"]) / "convdistill.json").read_text())
    assert corrected_info["corrected_teacher"]["teacher"] == "smollm2-135m-instruct"
    for family in FAMILIES:
        assert any((out / f"4-{family}-distill" / "teacher-logits").iterdir())
        run_log = json.loads((Path(found[f"4-{family}-distill"]["result"]["checkpoint"]) / "run_log.json").read_text())
        assert Path(run_log["teacher"]).resolve() == Path(corrected["checkpoint"]).resolve()
    # The students were built from the teacher's layers (the Llama one pruned in width too), SFT and
    # distillation started from them, DPO from the distilled student.
    for family in FAMILIES:
        built = found[f"4-{family}-student"]["result"]
        info = json.loads((Path(built["checkpoint"]) / "convdistill.json").read_text())
        assert info["initialised"] == "teacher" and info["teacher"] == "smollm2-135m-instruct"
        for method in ("sft", "distill"):
            assert found[f"4-{family}-{method}"]["result"]["init_checkpoint"] == built["checkpoint"]
        distilled = found[f"4-{family}-distill"]["result"]["checkpoint"]
        assert found[f"4-{family}-dpo"]["result"]["init_checkpoint"] == distilled
    llama = json.loads((Path(found["4-llama-student"]["result"]["checkpoint"]) / "config.json").read_text())
    assert llama["num_hidden_layers"] == QUICK.llama_layers
    assert llama["intermediate_size"] == QUICK.llama_mlp_channels


def test_teacher_turns_are_new_nodes_of_the_same_trees(quick_run: tuple[Path, Any, float]) -> None:
    out, _, _ = quick_run
    original = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]
    extended = [orjson.loads(line) for line in (out / "2-extend" / "extended.jsonl").read_bytes().splitlines()]
    assert [t["message_tree_id"] for t in extended] == [t["message_tree_id"] for t in original]

    def messages(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(m for reply in node.get("replies", []) for m in messages(reply))]

    before = {m["message_id"] for t in original for m in messages(t["prompt"])}
    new = [m for t in extended for m in messages(t["prompt"]) if m["message_id"] not in before]
    assert new and all(m["synthetic"] and m["model_name"] == "smollm2-135m-instruct" for m in new)
    assert {m["role"] for m in new} == {"prompter", "assistant"}  # a simulated user and the teacher
    summary = markers(out)["3-export"]["result"]
    assert summary["teacher_messages_in_paths"] >= 2 and summary["pairs"] > 0


def test_report_shows_this_runs_numbers_for_both_students_and_the_teacher(quick_run: tuple[Path, Any, float]) -> None:
    out, _, _ = quick_run
    report = (out / "report.md").read_text()
    found = markers(out)
    for name in EVAL_STAGES:
        result = found[name]["result"]
        data = json.loads(Path(result["results"]).read_text())
        assert data["model"] == result["label"]
        s = data["summary"]
        assert s["turns"] > 0 and s["score"] is not None
        assert s["mean_reference_nll"] is not None  # local models: the embedded teacher and the students
        row = (f"| {result['label']} | {passed_text(s)} | {score_text(s)} | {s['turns_passed']}/{s['turns']} | "
               f"{s['turns_gated']} | {s['mean_reference_nll']:.3f} |")
        assert row in report, row
    # the floor: every control model's row, scoring near nothing and passing no case
    controls = found["5-controls"]["result"]["controls"]
    assert [c["model"] for c in controls] == control_names()
    for control in controls:
        s = control["summary"]
        assert s["score"] <= 0.05 and s["cases_passed"] == 0, control
        assert f"| {control['label']} | {passed_text(s)} | {score_text(s)} |" in report
    teacher = found["5-teacher"]["result"]["summary"]["mean_reference_nll"]
    untrained = found["5-t5-init"]["result"]["summary"]["mean_reference_nll"]
    assert teacher < untrained  # the whole teacher predicts the references better than 2 of its layers
    names = {"t5": "t5gemma-1+1L", "llama": f"llama-{QUICK.llama_layers}L-m{QUICK.llama_mlp_channels}"}
    for name in TRAIN_STAGES:
        run = found[name]["result"]
        assert f"| {names[run['family']]} | {run['method']} | {run['steps']} | {run['first_loss']:.3f} |" in report
    # the replies of every model to the same conversations, turn by turn
    assert "### Replies side by side" in report
    for label in [found[name]["result"]["label"] for name in EVAL_STAGES] + ["control: constant"]:
        assert f"| {label} | " in report.split("### Replies side by side")[1]
    for section in ("## 1. The export", "## 2. Teacher extension", "## 3. Paths and pairs", "## 4. Training",
                    "## 5. Regression suite", "![training loss curves](loss_curves.png)",
                    "![score and reference NLL by turn depth](score_by_depth.png)"):
        assert section in report
    for png in ("loss_curves.png", "score_by_depth.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_rerun_skips_finished_stages_and_an_interrupted_one_resumes(quick_run: tuple[Path, Any, float]) -> None:
    out, _, _ = quick_run
    before = markers(out)
    done, seconds = demo(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count(": finished earlier (") == len(STAGES)
    assert markers(out) == before
    assert seconds < 60, "a rerun of a finished demo loads no model and trains nothing"

    # As if killed during Llama DPO: its marker is gone, its half-way checkpoint is still there.
    (out / "stages" / "4-llama-dpo.json").unlink()
    assert any((out / "4-llama-dpo").glob("checkpoint-*"))
    done, _ = demo(out)
    assert done.returncode == 0, done.stderr[-3000:]
    after = markers(out)
    rerun = {name for name in STAGES if after[name]["run_id"] != before[name]["run_id"]}
    assert rerun == {"4-llama-dpo", "5-llama-dpo", "6-report"}  # it, what read it, nothing else
    assert "DPO of the llama student (from its distillation) ... (resuming an interrupted run)" in done.stderr


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    missing = run_cli("demo", "--quick", "--trees", tmp_path / "nope.jsonl", "--out", tmp_path / "a")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_model = run_cli("demo", "--teacher-base-url", "http://127.0.0.1:9/v1", "--out", tmp_path / "b")
    assert no_model.returncode == 2 and "--teacher-model is required" in no_model.stderr

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('not json\n{"message_tree_id": 1}\n')
    bad = run_cli("demo", "--quick", "--trees", garbage, "--out", tmp_path / "c")
    assert bad.returncode == 1
    assert "error: the demo stopped at stage 1-data" in bad.stderr and "no usable trees" in bad.stderr
    assert "Traceback" not in bad.stderr

    unreachable = run_cli("demo", "--quick", "--teacher-base-url", "http://127.0.0.1:9/v1", "--teacher-model", "m",
                          "--out", tmp_path / "d")
    assert unreachable.returncode == 1
    assert "stage 2-extend" in unreachable.stderr and "cannot reach the teacher" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_hosted_teacher_extends_and_is_scored_through_its_endpoint(tmp_path: Path) -> None:
    """The --teacher-base-url branch of the extend and eval stages, against an OpenAI-compatible
    server (the teacher tests' deterministic one: no model needed to check the wiring)."""
    from dataclasses import replace

    from convdistill.demo import data, evaluation
    from fault_server import FaultServer

    lines: list[str] = []
    with FaultServer() as server:
        config = make_config(SAMPLE, tmp_path, server.base_url, "hosted-teacher", quick=True)
        config = replace(config, sizes=replace(QUICK, extend_trees=2))
        (tmp_path / "extend").mkdir()
        result = data.extend_stage(config, tmp_path / "extend", lines.append)
        assert result["trees_changed"] == 2 and result["teacher"] == "hosted-teacher"
        assert result["requests_sent"] > 0
        (tmp_path / "eval").mkdir()
        scored = evaluation.eval_stage(config, "teacher hosted-teacher", "hosted-teacher", tmp_path / "eval",
                                       lines.append, endpoint=server.base_url)
    s = scored["summary"]
    assert s["turns"] > 0 and s["mean_reference_nll"] is None  # an endpoint gives no likelihoods
    replies = [t["reply"] for c in json.loads(Path(scored["results"]).read_text())["cases"] for t in c["turns"]]
    assert all(r.startswith("Teacher answer") for r in replies)


def test_a_trainer_this_version_lacks_is_reported_not_available(tmp_path: Path) -> None:
    from convdistill.demo import training

    config = make_config(SAMPLE, tmp_path, quick=True)
    with pytest.raises(StageUnavailable, match="no recipe"):
        training.train_stage(config, "t5", "no-such-method", str(SAMPLE), None, tmp_path, print)


def test_stage_runner_bookkeeping(tmp_path: Path) -> None:
    calls: list[str] = []

    def stage(name: str, needs: tuple[str, ...] = (), fail: bool = False, missing: bool = False) -> Stage:
        def run(workdir: Path) -> dict[str, Any]:
            calls.append(name)
            (workdir / "part").write_text("x")
            if missing:
                raise StageUnavailable("not in this version")
            if fail:
                raise OSError("disk full")
            return {"name": name}
        return Stage(name, name, run, needs=needs)

    def run_all(fingerprint: str, fail_b: bool = False, log: list[str] | None = None) -> StageRunner:
        runner = StageRunner(tmp_path, fingerprint, (log if log is not None else []).append)
        for s in (stage("a"), stage("b", ("a",), fail=fail_b), stage("c", ("b",)), stage("u", missing=True),
                  stage("d", ("u",))):
            try:
                runner.run(s, "x")
            except StageFailed:
                break
        return runner

    run_all("f1", fail_b=True)
    assert calls == ["a", "b"]
    assert not (tmp_path / "stages" / "b.json").exists()  # a failed stage leaves no marker
    calls.clear()
    log: list[str] = []
    runner = run_all("f1", log=log)
    assert calls == ["b", "c", "u"]  # a finished, b resumed, u tried again, d blocked
    assert any("b ... (resuming an interrupted run)" in line for line in log)
    assert runner.records["u"].status == "skipped" and runner.records["d"].status == "blocked"
    calls.clear()
    run_all("f1")
    assert calls == ["u"]  # everything else finished earlier
    calls.clear()
    run_all("f2")  # other settings: everything reruns, in clean folders
    assert calls == ["a", "b", "c", "u"]


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give the URL too"):
        make_config(SAMPLE, teacher_model="m")
    with pytest.raises(ValueError, match="--teacher-model is required"):
        make_config(SAMPLE, teacher_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="no such file"):
        make_config(tmp_path / "missing.jsonl")
    assert make_config(None).trees.is_file()  # the bundled sample by default


def test_idle_cores_measures_the_cpu_now() -> None:
    """Busy cores come from /proc/stat over a short window (the load average lags behind work
    that just ended, such as make demo's own installs), bounded to 1..cores."""
    from convdistill.demo.config import _busy_cores, idle_cores

    cores = os.cpu_count() or 1
    busy = _busy_cores(0.2)
    assert busy is not None and 0.0 <= busy <= cores + 1e-9  # Linux: measured
    assert 1 <= idle_cores(0.2) <= cores
