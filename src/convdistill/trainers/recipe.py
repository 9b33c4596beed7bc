"""Recipes: one YAML file -> (our data options, TRL's ModelConfig, TRL's SFTConfig or DPOConfig, or
for distillation those extended by the kd fields).

A recipe is a flat YAML mapping, like TRL's own `--config` files: every key is a field of one of
three dataclasses, and `--key value` on the command line overrides it. Parsing goes through
transformers' HfArgumentParser, so field names, types, choices and defaults are TRL's; what is
added here is what TRL's parser leaves out and users trip over:

- an unknown key is an error naming it (with the closest known field), never silently ignored;
- YAML values are converted with the field's type (PyYAML reads `1e-4` as a *string*);
- a bad value names its field and the recipe file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from convdistill.errors import BadRecipe
from convdistill.overrides import list_items, typed_value

Method = Literal["sft", "dpo", "distill"]
TRAIN_ON = ("all", "last", "teacher", "human")


class RecipeError(BadRecipe):
    """A recipe (or an override) that cannot be used; the message names the field."""


@dataclass
class DataConfig:
    """convdistill's own recipe fields: the data, which turns carry loss, truncation, saving."""

    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Path records (SFT) or pair records (DPO) as JSONL, or an Open-Assistant tree "
            "export, which is turned into paths or pairs first (path_strategy)."
        },
    )
    eval_file: str | None = field(default=None, metadata={"help": "Like train_file, to evaluate."})
    path_strategy: str = field(
        default="all",
        metadata={
            "help": "When train_file is a tree export: which paths to train on.",
            "choices": ["all", "best"],
        },
    )
    train_on: str = field(
        default="all",
        metadata={
            "help": "Which assistant turns carry loss: all, last (the final reply only), teacher "
            "(synthetic turns only), human (non-synthetic only). A record's own `train` list "
            "(one bool per message) wins over this.",
            "choices": list(TRAIN_ON),
        },
    )
    max_target_length: int | None = field(
        default=None,
        metadata={
            "help": "Encoder-decoder only: most reply tokens (decoder side); max_length bounds the "
            "encoder side. Default: max_length."
        },
    )
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Use only the first N records (quick runs)."}
    )
    student_seed: int = field(
        default=0,
        metadata={"help": "Seed of a random-initialised student (model_name_or_path: student:...)."},
    )
    student_layers: int | None = field(
        default=None,
        metadata={"help": "model_name_or_path: student:<family>-from-<teacher>: teacher layers the "
                  "student keeps (T5: in its decoder), chosen by block influence (`models init --from`)."},
    )
    student_encoder_layers: int | None = field(
        default=None,
        metadata={"help": "With student:t5-from-<teacher>: encoder layers (default: as many as the decoder)."},
    )
    student_mlp_channels: int | None = field(
        default=None,
        metadata={"help": "With student:llama-from-<teacher>: width pruning, MLP channels every layer keeps "
                  "(most active on the sample; `models init --mlp-channels`)."},
    )
    student_heads: int | None = field(
        default=None,
        metadata={"help": "With student:llama-from-<teacher>: width pruning, attention heads every layer keeps "
                  "(`models init --heads`)."},
    )
    student_kv_heads: int | None = field(
        default=None,
        metadata={"help": "With student_heads: key/value heads (whole groups) kept (default: all)."},
    )
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "Under LoRA/QLoRA: save the merged full model (loadable by serve and eval as "
            "is) and the adapter in adapter/. False: the adapter only."
        },
    )
    data_cache: bool = field(
        default=True,
        metadata={"help": "Save the tokenized examples (Arrow, memory-mapped when read back) and reuse them in "
                  "a later run with the same data, tokenizer and limits instead of tokenizing again."},
    )
    data_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where tokenized examples are kept (one folder per data, tokenizer and limits); share "
                  "it between runs (seeds, sweeps) to tokenize once. Default: <output_dir>/data/tokenized."},
    )
    batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Token-budget batches (SFT and off-policy distillation): each batch holds as many "
            "examples as fit this many padded tokens, sorted by length (per_device_train_batch_size is "
            "then unused). Default: fixed batches of per_device_train_batch_size examples."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto: bf16 mixed precision where the hardware has bf16 units (a GPU that "
            "supports it, a CPU with AVX512-BF16 or AMX), fp32 elsewhere; bf16 or fp32 to choose. "
            "TRL's own bf16 / fp16 fields, when given, win.",
            "choices": ["auto", "bf16", "fp32"],
        },
    )


def _dataclasses(method: Method, values: dict[str, Any]) -> tuple[type, ...]:
    from trl import DPOConfig, ModelConfig, SFTConfig

    if method == "distill":
        from convdistill.trainers.kd_config import ConversationDistillConfig, DistillConfig, OnPolicyDistillConfig

        modes = {"on_policy": OnPolicyDistillConfig, "on_policy_conversation": ConversationDistillConfig}
        config = modes.get(str(values.get("distill_mode")), DistillConfig)
        return (DataConfig, ModelConfig, config)
    return (DataConfig, ModelConfig, SFTConfig if method == "sft" else DPOConfig)


def parse_overrides(tokens: list[str]) -> dict[str, str | bool]:
    """`--key value`, `--key=value` and bare `--flag` (true) into a mapping; dashes in keys
    become underscores, as in HfArgumentParser."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) < 3:
            raise RecipeError(f"override {token!r}: expected --key value or --key=value")
        key, sep, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if sep:
            out[key] = value
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[key] = tokens[i + 1]
            i += 2
        else:
            out[key] = True
            i += 1
    return out


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """A YAML or command-line value converted the way argparse would convert a CLI string."""
    if value is None:
        return None
    if action.nargs in ("+", "*"):
        return [typed_value(key, item, action.type, action.choices) for item in list_items(value)]  # type: ignore[arg-type]
    return typed_value(key, value, action.type, action.choices)  # type: ignore[arg-type]


def set_derived(config: Any, name: str, value: Any, why: str) -> None:
    """Set a field of a TRL config that the recipe derives from its own fields. When the recipe
    had given that field a value of its own (not the field's default) that this replaces, one line
    says what changed and why, so that a setting is never dropped in silence."""
    current = getattr(config, name)
    default = next((f.default for f in dataclasses.fields(config) if f.name == name), dataclasses.MISSING)
    if current not in (value, default):
        print(f"[convdistill] recipe: {name} {current!r} -> {value!r} ({why})", file=sys.stderr, flush=True)
    setattr(config, name, value)


def apply_precision(values: dict[str, Any], where: str) -> None:
    """Set TRL's bf16 (and, for bf16 on a CPU, transformers' use_cpu, which it requires there)
    from the recipe's `precision`, unless the recipe sets bf16 or fp16 itself. TRL defaults
    bf16 to true, which transformers refuses on a machine without a GPU, and leaves a CPU's bf16
    units unused."""
    from convdistill.precision import announce, resolve_precision

    requested = values.get("precision", "auto")
    if "bf16" in values or values.get("fp16"):
        if "precision" in values:
            raise RecipeError(f"{where}: give either precision or TRL's bf16 / fp16, not both")
        return
    try:
        chosen = resolve_precision(str(requested))
    except BadRecipe as exc:
        raise RecipeError(f"{where}: field 'precision': {exc}") from None
    values["bf16"] = chosen.bf16
    if chosen.bf16 and chosen.device == "cpu":
        values.setdefault("use_cpu", True)
    announce(chosen, "training")


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: must be a mapping of field: value")
    return data


def load_recipe(
    method: Method,
    config: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> tuple[DataConfig, Any, Any]:
    """(DataConfig, trl.ModelConfig, training config) from a recipe and overrides. The training
    config is trl.SFTConfig (sft), trl.DPOConfig (dpo), or for distill the kd fields on top of
    TRL's config: kd_config.DistillConfig (an SFTConfig) or, when distill_mode is on_policy,
    kd_config.OnPolicyDistillConfig (a trl.DistillationConfig).

    `config` is a YAML file or an already-read mapping; `overrides` a list of `--key value`
    tokens (the command line) or a mapping. Raises RecipeError naming the offending field.
    """
    from transformers import HfArgumentParser

    where = f"recipe {config}" if isinstance(config, (str, Path)) else "recipe"
    values = read_recipe_file(config) if isinstance(config, (str, Path)) else dict(config or {})
    values.pop("method", None)  # allowed as documentation of which command a recipe is for
    if isinstance(overrides, list):
        values.update(parse_overrides(overrides))
    elif overrides:
        values.update(overrides)

    apply_precision(values, where)
    classes = _dataclasses(method, values)
    parser = HfArgumentParser(classes)  # type: ignore[arg-type]  # dataclass types
    # A bool field defaulting to true has two actions with one dest: `--field` (typed) and
    # `--no_field` (store_false, untyped); the typed one must convert "false" from the CLI.
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest != "help" and (action.dest not in actions or f"--{action.dest}" in action.option_strings):
            actions[action.dest] = action
    known = {f.name for cls in classes for f in fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)} for "
            f"`train {method}`"
        )
    converted = {}
    for key, value in values.items():
        typed = actions.get(key) or actions.get(f"no_{key}")
        try:
            converted[key] = _convert(typed, key, value) if typed is not None else value
        except BadRecipe as exc:
            raise RecipeError(f"{where}: {exc}") from None
    try:
        parsed = parser.parse_dict(converted)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{where}: {exc}") from None
    data, model, train = parsed
    if data.train_file is None:
        raise RecipeError(f"{where}: field 'train_file' is required (path or pair records, or a "
                          "tree export)")
    if model.model_name_or_path is None:
        raise RecipeError(f"{where}: field 'model_name_or_path' is required (a checkpoint folder, "
                          "an embedded model name, or student:t5-tiny / student:llama-tiny)")
    if data.batch_tokens is not None:
        if data.batch_tokens < 8:
            raise RecipeError(f"{where}: field 'batch_tokens' must be at least 8, got {data.batch_tokens}")
        if getattr(train, "packing", False):
            raise RecipeError(f"{where}: give batch_tokens or packing, not both (packing leaves no padding to save)")
        if method == "dpo" or getattr(train, "distill_mode", "off_policy") != "off_policy":
            raise RecipeError(f"{where}: batch_tokens applies to sft and off-policy distill only")
    for name in ("max_length", "max_target_length"):
        value = getattr(train if name == "max_length" else data, name, None)
        if value is not None and value < 8:
            raise RecipeError(f"{where}: field {name!r} must be at least 8, got {value}")
    return data, model, train
