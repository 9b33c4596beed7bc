"""The Ollama `Modelfile` written beside an exported GGUF file.

Ollama renders prompts with its own Go template, not with the Jinja chat template inside the
file, so the Modelfile must restate it. Every convdistill student speaks ChatML (some with a
default system prompt, SmolLM2's persona); the template is checked by rendering it, not
assumed: a checkpoint whose template renders anything else gets no Modelfile, and the reason.
Ollama cannot run encoder-decoder models (ollama/ollama#10666), so T5 exports get none either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from convdistill.files import write_atomically
from convdistill.models.chat_templates import IM_END, IM_START

# Ollama's Go template for ChatML: every message, then the generation prompt.
_OLLAMA_CHATML = (
    "{{- range .Messages }}" + IM_START + "{{ .Role }}\n{{ .Content }}" + IM_END + "\n{{ end }}"
    + IM_START + "assistant\n"
)


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages) + (
        f"{IM_START}assistant\n")


def chatml_default_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(whether the tokenizer's chat template renders ChatML, the system prompt it adds to a
    conversation without one, if any), found by rendering two conversations."""
    probe = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
             {"role": "user", "content": "second"}]
    system = [{"role": "system", "content": "be brief"}]

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    try:
        with_system, without = render(system + probe), render(probe)
    except (TemplateError, ValueError):  # a template that refuses these is not plain ChatML
        return False, None
    if with_system != _chatml(system + probe) or not without.endswith(_chatml(probe)):
        return False, None
    added = without[: -len(_chatml(probe))]
    if not added:
        return True, None
    head = f"{IM_START}system\n"
    if added.startswith(head) and added.endswith(f"{IM_END}\n"):
        return True, added[len(head) : -len(IM_END) - 1]
    return False, None


def modelfile_text(gguf_name: str, default_system: str | None, context_length: int) -> str:
    lines = [
        "# Ollama Modelfile written by `convdistill export gguf`: ollama create NAME -f THIS_FILE",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{_OLLAMA_CHATML}"""',
    ]
    if default_system is not None:
        lines.append(f'SYSTEM """{default_system}"""')
    lines += [
        f"PARAMETER stop {IM_END}",
        f"PARAMETER stop {IM_START}",
        "PARAMETER temperature 0",  # greedy, as the regression suite scores students
        f"PARAMETER num_ctx {context_length}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: Path, tokenizer: Any, architecture: str,
                    context_length: int) -> tuple[Path | None, str | None]:
    """Write `<name>.Modelfile` beside `<name>.gguf` (several exports may share a folder):
    (its path, None), or (None, why not)."""
    if architecture != "llama":
        return None, "no Modelfile: Ollama does not run encoder-decoder (T5) models"
    is_chatml, system = chatml_default_system(tokenizer)
    if not is_chatml:
        return None, "no Modelfile: the chat template is not ChatML, which the Modelfile states"
    path = gguf_path.with_suffix(".Modelfile")
    with write_atomically(path) as staged:
        staged.write_text(modelfile_text(gguf_path.name, system, context_length))
    return path, None
