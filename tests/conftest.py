"""Shared fixtures: the bundled sample export and small hand-made trees."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
import pytest

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
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


def answer_chat_completion(handler: BaseHTTPRequestHandler, text: str) -> None:
    """Answer a scripted endpoint's request (http.server) with an OpenAI chat completion of `text`."""
    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
