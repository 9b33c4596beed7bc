"""Expected failures print one `error:` line and exit 1; anything else is a bug: its traceback,
a line asking for a report, exit 1 (convdistill.errors, cli.common.friendly_errors)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import SAMPLE, run_cli
from convdistill.cli.common import BUG_REPORT
from convdistill.errors import BadInput, BadRecipe, ConvdistillError, Unavailable
from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel, ServeSettings


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 1, no traceback, exactly one `error:` line, which holds each of `expected`."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and BUG_REPORT not in done.stderr, done.stderr
    (line,) = error_lines(done.stderr)
    for part in expected:
        assert part in line, line
    return line


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on: bound once to learn a free one, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_three_kinds_are_one_hierarchy() -> None:
    assert issubclass(BadInput, ValueError) and issubclass(BadRecipe, ValueError)
    assert not issubclass(Unavailable, ValueError)
    assert all(issubclass(kind, ConvdistillError) for kind in (BadInput, BadRecipe, Unavailable))


def test_a_bad_line_of_an_export_names_file_and_line(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    export.write_bytes(SAMPLE.read_bytes().splitlines(keepends=True)[0] + b"{not json\n")
    done = run_cli("paths", "stats", export, "--on-error", "fail")
    assert_one_line(done, "bad input (--on-error fail)", f"{export}:2")


def test_a_damaged_save_to_disk_folder_names_its_metadata_file(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["train"')  # cut short
    done = run_cli("paths", "stats", folder)
    assert_one_line(done, f"{folder / 'dataset_dict.json'}: not valid JSON")


def test_a_results_file_that_is_not_json_is_bad_input(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("{\n  not json")
    done = run_cli("eval", "report", results, "-o", tmp_path / "report.md")
    assert_one_line(done, f"{results}: not valid JSON")


def test_an_option_that_cannot_run_is_a_bad_recipe(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    done = run_cli("models", "init", "--family", "llama", "-o", tmp_path / "taken")
    assert_one_line(done, "taken exists and is not empty")
    assert (tmp_path / "taken" / "file").read_text() == "mine"


def write_suite(path: Path) -> Path:
    case = {"id": "c", "tags": ["memory"], "turns": [{"user": "hello", "reference": "hi"}]}
    path.write_bytes(orjson.dumps(case) + b"\n")
    return path


def test_an_endpoint_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    done = run_cli("eval", "run", "--suite", write_suite(tmp_path / "suite.jsonl"), "--model", "m",
                   "--endpoint", url, "-o", tmp_path / "r.json")
    assert_one_line(done, "RequestFailed", "connection error")
    assert not (tmp_path / "r.json").exists()


def test_a_model_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    done = run_cli("eval", "run", "--suite", write_suite(tmp_path / "suite.jsonl"), "--model",
                   str(tmp_path / "no-such-model"), "-o", tmp_path / "r.json")
    assert_one_line(done, "no-such-model", "not an embedded model")


def test_a_file_the_system_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # --rejects wants a folder where this file is
    done = run_cli("paths", "export", SAMPLE, "-o", tmp_path / "paths.jsonl",
                   "--rejects", blocker / "rejects.jsonl")
    assert_one_line(done, str(blocker))


# A command group built as the real CLI's root (FriendlyGroup), with commands that fail in
# each way; run in a fresh interpreter so stderr and the exit code are the real ones.
APP = textwrap.dedent(
    """
    import sys
    import typer
    from convdistill.cli.common import FriendlyGroup, fail
    from convdistill.errors import BadRecipe

    app = typer.Typer(cls=FriendlyGroup, pretty_exceptions_enable=False, add_completion=False)

    @app.command()
    def divide(by: int) -> None:
        typer.echo(str(1 / by))

    @app.command()
    def lookup(key: str) -> None:
        typer.echo({"known": 1}[key])

    @app.command()
    def read(path: str) -> None:
        open(path).read()

    @app.command()
    def recipe() -> None:
        raise BadRecipe("--x 3 needs --y")

    @app.command()
    def refuse() -> None:
        fail("refused on purpose")

    @app.command()
    def usage() -> None:
        raise typer.BadParameter("not like that", param_hint="--z")

    app(sys.argv[1:])
    """
)


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "200", "PATH": ""})


@pytest.mark.parametrize(("args", "exception"), [
    (("divide", "0"), "ZeroDivisionError: division by zero"),
    (("lookup", "unknown"), "KeyError: 'unknown'"),
])
def test_anything_else_is_a_bug_with_its_traceback(tmp_path: Path, args: tuple[str, ...], exception: str) -> None:
    done = run_app(tmp_path, *args)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and exception in done.stderr
    assert error_lines(done.stderr) == [f"error: {BUG_REPORT}"]


def test_the_root_group_lets_expected_failures_and_typer_exits_through(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    for args, line, code in [
        (("read", str(missing)), f"error: {missing}: No such file or directory", 1),
        (("recipe",), "error: --x 3 needs --y", 1),
        (("refuse",), "error: refused on purpose", 1),  # typer.Exit inside: not a bug
    ]:
        done = run_app(tmp_path, *args)
        assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
        assert error_lines(done.stderr) == [line]
    usage = run_app(tmp_path, "usage")  # typer's usage errors keep their exit code 2
    assert usage.returncode == 2 and "not like that" in usage.stderr and "Traceback" not in usage.stderr
    assert run_app(tmp_path, "divide", "2").stdout == "0.5\n"


class RefusingModel(ChatModel):
    """A real tiny model whose chat template step fails as told by the last message: a refusal
    the model means (BadInput) or a bug (KeyError)."""

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if messages[-1]["content"] == "refuse":
            raise BadInput("the model's chat template refused these messages: on purpose")
        if messages[-1]["content"] == "crash":
            raise KeyError("not-there")
        return super().prompt_ids(messages)


def test_the_server_answers_expected_errors_400_and_bugs_500(tmp_path: Path) -> None:
    folder = init_student("llama", "tiny", tmp_path / "llama").path
    with BackgroundServer(RefusingModel(folder), ServeSettings()) as running:
        def ask(text: str) -> httpx.Response:
            return httpx.post(f"{running.base_url}/chat/completions", timeout=60,
                              json={"messages": [{"role": "user", "content": text}], "max_tokens": 2})

        refused = ask("refuse")
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "message": "the model's chat template refused these messages: on purpose",
            "type": "invalid_request_error", "param": "messages", "code": "invalid_messages"}
        crashed = ask("crash")
        assert crashed.status_code == 500
        assert crashed.json()["error"] == {"message": "internal error: KeyError", "type": "server_error",
                                           "param": None, "code": None}
        assert ask("hello").status_code == 200  # and it goes on serving
