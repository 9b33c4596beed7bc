"""Running the app: in the foreground (`convdistill serve`) or in a background thread on a
free port of 127.0.0.1 (tests, benchmarks, notebooks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import uvicorn

from convdistill.errors import Unavailable
from convdistill.models.registry import resolve_model
from convdistill.serve.app import create_app
from convdistill.serve.batcher import Batcher
from convdistill.serve.chat_model import ChatModel
from convdistill.serve.limits import Limits


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API has no auth by default
    port: int = 8000
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 16
    batch_wait_ms: float = 10.0
    max_batch_tokens: int = 16384
    served_name: str | None = None
    log_level: str = "warning"


def load_chat_model(name_or_path: str | Path, served_name: str | None = None, precision: str = "auto") -> ChatModel:
    """An embedded model name (converted on first use) or a checkpoint folder; `precision`: auto
    (bf16 autocast where the hardware has bf16 units), bf16 or fp32."""
    path = resolve_model(name_or_path)
    default = str(name_or_path) if not Path(name_or_path).expanduser().is_dir() else path.name
    try:
        return ChatModel(path, served_name or default, precision)
    except OSError as exc:  # transformers: a checkpoint folder without its weights or tokenizer
        raise Unavailable(str(exc)) from exc


def build_server(model: ChatModel, settings: ServeSettings) -> uvicorn.Server:
    batcher = Batcher(
        model,
        max_batch_size=settings.max_batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        max_batch_tokens=settings.max_batch_tokens,
        max_pending=settings.limits.max_pending,
    )
    return app_server(create_app(batcher, settings.limits, settings.api_key), settings)


def app_server(app: Any, settings: ServeSettings) -> uvicorn.Server:
    """uvicorn for any ASGI app, on the settings' address and log level."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(model: str | Path, settings: ServeSettings) -> None:
    """Load the model, then serve until interrupted."""
    logging.basicConfig(level=logging.WARNING)
    build_server(load_chat_model(model, settings.served_name), settings).run()


class BackgroundApp:
    """`with BackgroundApp(server) as live:` a uvicorn server running in a thread, answering at
    `live.base_url`.

    The socket is bound before uvicorn starts, so the port is known and cannot be taken by
    someone else in between.
    """

    def __init__(self, server: uvicorn.Server, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets that say they are
        # TCP, and with it on, each answer on a kept-alive connection waited ~40 ms for the
        # client's delayed ACK (uvicorn writes headers and body apart).
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))  # 0: any free port
        self.port = self.socket.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name="convdistill-uvicorn",
            daemon=True,
        )

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


class BackgroundServer(BackgroundApp):
    """`with BackgroundServer(model) as server:` a live model server at `server.base_url`."""

    def __init__(self, model: ChatModel, settings: ServeSettings | None = None, port: int = 0):
        self.settings = settings or ServeSettings()
        super().__init__(build_server(model, self.settings), self.settings.host, port)
