"""Starting `convdistill serve` as a subprocess for the serving benchmarks: the server gets
its own process (and GIL), as in real use, while the clients run in the benchmark's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str  # base URL, …/v1
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_server(model: str, *options: str, timeout: float = 180) -> Iterator[Server]:
    """Yield a live server; stop it afterwards, raising if it died meanwhile."""
    port = free_port()
    # The `convdistill serve` command function itself, run alone: the same options and code
    # path, without importing every other command group of the CLI.
    command = [sys.executable, "-c", "import typer; from convdistill.cli.serve import "
               "serve_command; typer.run(serve_command)", "--model", model,
               "--port", str(port), "--log-level", "warning", *options]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.communicate()[1][-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not come up in time")
            time.sleep(0.25)
        yield Server(f"http://127.0.0.1:{port}/v1", process.pid)
        if process.poll() is not None:
            raise RuntimeError(f"the server died: {process.communicate()[1][-2000:]}")
    finally:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
