"""Where convdistill keeps converted models: `CONVDISTILL_HOME`, else the user's cache dir.

Only derived files live here (the embedded SmolLM2 converted once from its GGUF file, its
tokenizer); deleting the folder is always safe, the next use rebuilds what it needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "CONVDISTILL_HOME"


def user_cache_dir() -> Path:
    """The platform's per-user cache folder (XDG on Linux), without a dependency for it."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path.home() / ".cache"


def convdistill_home() -> Path:
    """`$CONVDISTILL_HOME` if set, else `<user cache dir>/convdistill` (~/.cache/convdistill)."""
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else user_cache_dir() / "convdistill"
