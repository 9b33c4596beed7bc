"""`convdistill serve`: an OpenAI-compatible chat completions server for one model."""

from __future__ import annotations

from typing import Annotated

import typer

from convdistill.cli.common import PRECISION_OPTION, err_console
from convdistill.errors import BadRecipe


def serve_command(
    model: Annotated[str, typer.Option("--model", "-m", help="A checkpoint folder or an embedded "
                                       "model name (e.g. smollm2-135m-instruct).")],
    host: Annotated[str, typer.Option("--host", help="Address to bind. Loopback by default; "
                                      "use --api-key before exposing it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="CONVDISTILL_API_KEY",
        help="Require `Authorization: Bearer KEY` on /v1 routes.")] = None,
    served_name: Annotated[str | None, typer.Option(
        "--served-model-name", help="Name reported in responses and /v1/models.")] = None,
    max_batch_size: Annotated[int, typer.Option(
        "--max-batch-size", min=1, help="Generations run together; 1 turns batching off.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", min=0, help="How long a lone request waits for company.")] = 10.0,
    max_batch_tokens: Annotated[int, typer.Option(
        "--max-batch-tokens", min=1, help="Cap on batch rows x (prompt + max_tokens).")] = 16384,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1)] = 1_000_000,
    max_messages: Annotated[int, typer.Option("--max-messages", min=1)] = 256,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1,
                                           help="All message contents together.")] = 100_000,
    max_prompt_tokens: Annotated[int, typer.Option("--max-prompt-tokens", min=1)] = 4096,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1,
                                            help="Largest max_tokens a request may ask.")] = 1024,
    default_max_tokens: Annotated[int, typer.Option("--default-max-tokens", min=1)] = 256,
    max_n: Annotated[int, typer.Option("--max-n", min=1)] = 8,
    max_pending: Annotated[int, typer.Option("--max-pending", min=1,
                                             help="Queued generations before 429.")] = 512,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch threads for generation (default: torch's choice). On a machine "
        "shared with other jobs, fewer threads than cores avoids heavy slow-downs.")] = None,
    precision: Annotated[str, PRECISION_OPTION] = "auto",
    prefix_sharing: Annotated[bool, typer.Option(
        "--prefix-sharing/--no-prefix-sharing",
        help="Prompts of a batch that share a prefix (the choices of one question) run it once.")] = True,
) -> None:
    """Serve MODEL with OpenAI's chat completions API (POST /v1/chat/completions)."""
    from convdistill.serve import Limits, ServeSettings, load_chat_model
    from convdistill.serve.server import build_server

    try:
        limits = Limits(max_body_bytes=max_body_bytes, max_messages=max_messages,
                        max_chars=max_chars, max_prompt_tokens=max_prompt_tokens,
                        max_tokens=max_tokens, default_max_tokens=default_max_tokens,
                        max_n=max_n, max_pending=max_pending)
    except BadRecipe as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = ServeSettings(host=host, port=port, api_key=api_key, limits=limits,
                             max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                             max_batch_tokens=max_batch_tokens, served_name=served_name,
                             log_level=log_level)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    err_console.print(f"loading {model} ...")
    chat_model = load_chat_model(model, served_name, precision)  # no such model: Unavailable, one line
    chat_model.share_prefixes = prefix_sharing and not chat_model.is_encoder_decoder
    auth = "API key required" if api_key else "no API key"
    err_console.print(f"serving {chat_model.name} at http://{host}:{port}/v1 ({auth})")
    build_server(chat_model, settings).run()
