"""Chat templates (ChatML) that TRL can train with and that serving renders prompts with.

TRL's `assistant_only_loss=True` needs `{% generation %}` markers around every assistant
reply, and the end-of-turn token must sit inside them or a trained model never learns to stop.
SmolLM2's own template has no markers; these render the same text for inference, so swapping
them in changes nothing about what the embedded model sees.
"""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# What SmolLM2-Instruct saw in training when a conversation had no system message.
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_template(default_system: str | None = None) -> str:
    """A ChatML Jinja template with generation markers; `default_system` is prepended when a
    conversation does not start with a system message (None: nothing is added)."""
    default = ""
    if default_system is not None:
        default = (
            "{%- if messages and messages[0]['role'] != 'system' -%}"
            f"{{{{ '{IM_START}system\\n' + {default_system!r} + '{IM_END}\\n' }}}}"
            "{%- endif -%}"
        )
    return (
        default + "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}"
        f"{{{{ '{IM_START}assistant\\n' }}}}"
        "{%- generation -%}"
        f"{{{{ message['content'] + '{IM_END}' }}}}"
        "{%- endgeneration -%}"
        "{{ '\\n' }}"
        "{%- else -%}"
        f"{{{{ '{IM_START}' + message['role'] + '\\n' + message['content'] + '{IM_END}\\n' }}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        f"{{{{ '{IM_START}assistant\\n' }}}}"
        "{%- endif -%}"
    )


# Students start from nothing: no persona to preserve, so no default system prompt.
STUDENT_TEMPLATE = chatml_template()
SMOLLM2_TEMPLATE = chatml_template(SMOLLM2_DEFAULT_SYSTEM)
