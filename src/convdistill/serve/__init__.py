"""An OpenAI-compatible chat completions server for any chat checkpoint, with request batching.

serve(model, ServeSettings(...))        `convdistill serve`: load, then serve in the foreground
BackgroundServer(ChatModel(...))        a live server on a free 127.0.0.1 port, in a thread
BackgroundApp(app_server(app, settings)) the same for any ASGI app (the eval's control models)
create_app(Batcher(ChatModel(...)))     the FastAPI app itself
Limits                                  request size limits (all configurable)
"""

from convdistill.serve.app import create_app
from convdistill.serve.batcher import Batcher, Overloaded
from convdistill.serve.chat_model import ChatModel
from convdistill.serve.limits import Limits
from convdistill.serve.server import (
    BackgroundApp,
    BackgroundServer,
    ServeSettings,
    app_server,
    build_server,
    load_chat_model,
    serve,
)

__all__ = [
    "BackgroundApp",
    "BackgroundServer",
    "Batcher",
    "ChatModel",
    "Limits",
    "Overloaded",
    "ServeSettings",
    "app_server",
    "build_server",
    "create_app",
    "load_chat_model",
    "serve",
]
