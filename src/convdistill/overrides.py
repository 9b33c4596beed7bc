"""Typed values from `key=value` text: recipe overrides (`--max_steps 10`, YAML's `1e-4`, which
PyYAML reads as a string) and the experiment's `--set FIELD=VALUE`.

Both callers know each key's converter (argparse's type for a recipe field, the default's type
for a setting); what is written once here is applying it, checking the choices, splitting list
values, and an error that names the key.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from typing import Any

from convdistill.errors import BadRecipe


def typed_value(key: str, value: Any, convert: Callable[[str], Any] | None,
                choices: Collection[Any] | None = None) -> Any:
    """`value` as `convert` reads it when it is text (an int widened to float where `convert` is
    float), checked against `choices`. Raises BadRecipe naming `key`."""
    result = value
    if isinstance(value, str) and convert is not None:
        try:
            result = convert(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise BadRecipe(f"field {key!r}: cannot read {value!r} ({exc})") from None
    elif convert is float and isinstance(value, int) and not isinstance(value, bool):
        result = float(value)
    if choices is not None and isinstance(result, (str, int, float)) and result not in choices:
        raise BadRecipe(f"field {key!r}: {result!r} is not one of {', '.join(map(str, choices))}")
    return result


def list_items(value: Any) -> list[Any]:
    """The items of a list-valued field: a list as it is, text split at commas and spaces
    (`t5,llama`, `q_proj v_proj`), a single value as a list of one."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return value if isinstance(value, list) else [value]
