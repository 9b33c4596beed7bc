"""`convdistill serve` as a user runs it: a subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from openai import OpenAI

from conftest import CLI, run_cli
from convdistill.models import init_student


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_command_answers_the_openai_client(tmp_path: Path) -> None:
    folder = init_student("llama", "tiny", tmp_path / "student").path
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--model", str(folder), "--port", str(port), "--api-key", "k1",
         "--served-model-name", "tiny", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.25)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", max_retries=0)
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.model == "tiny" and reply.usage.completion_tokens <= 3
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert f"serving tiny at http://127.0.0.1:{port}/v1 (API key required)" in err
    assert "Traceback" not in err


def test_serve_command_refuses_unknown_models_clearly() -> None:
    result = run_cli("serve", "--model", "no-such-model-or-folder")
    assert result.returncode == 1
    assert "not an embedded model" in result.stderr and "Traceback" not in result.stderr
