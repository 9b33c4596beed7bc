"""Shared fixtures: the bundled sample export and small hand-made trees."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

# `make test` runs the files on two pytest-xdist workers (one file per worker at a time): on a
# 2-core machine one process's serial stretches (interpreter and library start-up of the CLI
# tests, servers coming up, tokenisation) then overlap the other's compute. Each worker, and
# every process it starts, uses one torch thread: two workers with two threads each would put
# four threads on two cores, and torch threads that wait on each other slow every step down.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "oasst" / "en_100_tree.jsonl"
CLI = [sys.executable, "-m", "convdistill.cli.main"]


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def sample_trees() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]


_ids = itertools.count()


def msg(
    role: str, text: str | None = None, replies: list | None = None, **fields: Any
) -> dict[str, Any]:
    """A nested export message; ids are fresh unless given."""
    mid = fields.pop("message_id", None) or f"m{next(_ids)}"
    out = {"message_id": mid, "role": role, "text": text or f"{role} {mid}", **fields}
    kids = replies or []
    for kid in kids:
        kid["parent_id"] = mid
    out["replies"] = kids
    return out


def tree(prompt: dict[str, Any], state: str = "ready_for_export", **fields: Any) -> dict[str, Any]:
    return {
        "message_tree_id": prompt["message_id"],
        "tree_state": state,
        "prompt": prompt,
        **fields,
    }


def write_jsonl(path: Path, objects: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objects))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Wide enough that an error naming a temporary path (longer under an xdist worker) stays on
    # one line of rich's error box, where the tests look for it.
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


class ScriptedEndpoint(BaseHTTPRequestHandler):
    """A scripted OpenAI-compatible chat endpoint (a judge, a teacher): `answer(body)` gives the
    text of the reply to each request body; it is sent back as a chat completion."""

    def answer(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.answer(body)}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_scripted(handler: type[ScriptedEndpoint]) -> Iterator[str]:
    """`with serve_scripted(Handler) as base_url:` the endpoint, live on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def save_tiny_llama(out: Path, seed: int, **shape: Any) -> Path:
    """A small random Llama on SmolLM2's tokenizer and chat template, saved as a checkpoint folder
    (a user's own Llama-family teacher, small enough for training runs in a test). `shape`:
    LlamaConfig fields (hidden_size, intermediate_size, num_hidden_layers, heads, head_dim)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from convdistill.models import SMOLLM2_TEMPLATE, prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepare_tokenizer())
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, max_position_embeddings=1024, **shape)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
