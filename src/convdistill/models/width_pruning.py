"""Width pruning of a Llama-style decoder: fewer MLP channels and attention heads per layer,
chosen by activation importance on the user's own conversations (Minitron, NVIDIA 2024).

- An MLP channel's importance is the mean |activation| of the intermediate (what enters
  `down_proj`: act(gate(x)) * up(x)) over the calibration tokens: a channel that is rarely
  active adds little to the residual stream, whatever its weights.
- A query head's importance is the mean L2 norm of its attention output (its slice of what
  enters `o_proj`) over the tokens.
- Grouped-query attention shares one key/value head among a group of query heads, and
  transformers maps query head i to key/value head i // (heads / kv_heads). So the student keeps
  whole key/value groups (ranked by the summed importance of their query heads) and the same
  number of query heads in every kept group (the most important of each), ordered group by
  group: each kept query head still reads the keys and values it was trained with.

Every layer keeps the same counts (a transformers config has one intermediate_size and one
head count), each layer its own channels. Minitron measures on the unpruned model and prunes
once; so does this module, also when depth pruning comes first (the layers' importance is taken
from the teacher pass). A pruned model is an ordinary checkpoint of the teacher's class.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convdistill.errors import BadRecipe
from convdistill.models.calibration import run_calibration


@dataclass
class WidthImportance:
    """Per layer: mean |activation| of every MLP channel, mean output norm of every query head."""

    mlp: list[torch.Tensor]
    heads: list[torch.Tensor]
    tokens: int


@dataclass(frozen=True)
class WidthChoice:
    """What every layer keeps, in the student's order (teacher indices)."""

    mlp_channels: list[list[int]]
    query_heads: list[list[int]]  # grouped by key/value head, in the order of kv_heads
    kv_heads: list[list[int]]

    def record(self) -> dict[str, Any]:
        return {"mlp_channels": self.mlp_channels, "query_heads": self.query_heads, "kv_heads": self.kv_heads}


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


@torch.no_grad()
def measure_width(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]],
                  max_tokens: int = 384) -> WidthImportance:
    """Channel and head importance of every layer of `model` on the conversations."""
    config = model.config
    layers = model.model.layers
    size = head_dim(config)
    mlp = [torch.zeros(config.intermediate_size, dtype=torch.float64) for _ in layers]
    heads = [torch.zeros(config.num_attention_heads, dtype=torch.float64) for _ in layers]
    hooks = []

    def on_mlp(index: int) -> Any:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
            mlp[index] += args[0].double().abs().flatten(0, -2).sum(0)
        return hook

    def on_heads(index: int) -> Any:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
            per_head = args[0].double().flatten(0, -2).unflatten(-1, (-1, size))  # tokens x heads x dim
            heads[index] += per_head.norm(dim=-1).sum(0)
        return hook

    for index, layer in enumerate(layers):
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(on_mlp(index)))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(on_heads(index)))
    try:
        tokens = run_calibration(model, tokenizer, conversations, max_tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return WidthImportance(mlp=[(m / tokens).float() for m in mlp], heads=[(h / tokens).float() for h in heads],
                           tokens=tokens)


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    """The `keep` highest-scoring indices, in their original order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])


def width_shape(config: Any, mlp_channels: int | None = None, heads: int | None = None,
                kv_heads: int | None = None) -> tuple[int, int, int]:
    """(channels, query heads, key/value heads) every layer keeps, checked against the teacher's
    `config` before anything slow runs. None keeps the teacher's; `kv_heads` None keeps the
    teacher's key/value heads, which `heads` must then be a multiple of."""
    intermediate, teacher_heads, teacher_kv = (config.intermediate_size, config.num_attention_heads,
                                               config.num_key_value_heads)
    group = teacher_heads // teacher_kv
    mlp_channels = intermediate if mlp_channels is None else mlp_channels
    if not 1 <= mlp_channels <= intermediate:
        raise BadRecipe(f"--mlp-channels {mlp_channels}: the teacher's MLPs have {intermediate} channels; "
                        f"keep 1 to {intermediate}")
    heads = teacher_heads if heads is None else heads
    if not 1 <= heads <= teacher_heads:
        raise BadRecipe(f"--heads {heads}: the teacher has {teacher_heads} attention heads; keep 1 to {teacher_heads}")
    if kv_heads is None:
        if heads % teacher_kv:
            raise BadRecipe(f"--heads {heads}: the teacher groups its {teacher_heads} query heads by "
                            f"{teacher_kv} key/value heads; give a multiple of {teacher_kv}, or --kv-heads K "
                            "(whole groups kept) with --heads a multiple of K")
        kv_heads = teacher_kv
    if not 1 <= kv_heads <= teacher_kv:
        raise BadRecipe(f"--kv-heads {kv_heads}: the teacher has {teacher_kv} key/value heads; keep 1 to {teacher_kv}")
    if heads % kv_heads or heads // kv_heads > group:
        raise BadRecipe(f"--heads {heads} with --kv-heads {kv_heads}: every key/value head keeps the same number "
                        f"of query heads, at most its {group}; give --heads a multiple of {kv_heads} up to "
                        f"{kv_heads * group}")
    return mlp_channels, heads, kv_heads


def choose_width(importance: WidthImportance, config: Any, mlp_channels: int | None = None,
                 heads: int | None = None, kv_heads: int | None = None,
                 layers: Sequence[int] | None = None) -> WidthChoice:
    """The channels and heads each of `layers` (teacher indices; default all) keeps: the most
    important; counts as `width_shape` checks them."""
    mlp_channels, heads, kv_heads = width_shape(config, mlp_channels, heads, kv_heads)
    teacher_kv = config.num_key_value_heads
    group = config.num_attention_heads // teacher_kv
    per_group = heads // kv_heads
    chosen_mlp, chosen_queries, chosen_kv = [], [], []
    for index in layers if layers is not None else range(len(importance.mlp)):
        chosen_mlp.append(_top(importance.mlp[index], mlp_channels))
        head_scores = importance.heads[index]
        groups = _top(head_scores.view(teacher_kv, group).sum(-1), kv_heads)
        chosen_kv.append(groups)
        chosen_queries.append([g * group + q for g in groups
                               for q in _top(head_scores[g * group:(g + 1) * group], per_group)])
    return WidthChoice(chosen_mlp, chosen_queries, chosen_kv)


def _rows(weight: torch.Tensor, blocks: Sequence[int], size: int) -> torch.Tensor:
    """Rows of `weight` (or entries of a bias) in blocks of `size`: block b is rows b*size..b*size+size-1."""
    index = torch.tensor([b * size + k for b in blocks for k in range(size)])
    return weight.index_select(0, index)


def _cut(name: str, tensor: torch.Tensor, choice: WidthChoice, size: int) -> torch.Tensor:
    """The part of one teacher tensor that the student keeps."""
    if not name.startswith("model.layers."):
        return tensor  # embeddings, final norm, head
    index, rest = name.removeprefix("model.layers.").split(".", 1)
    layer = int(index)
    channels, queries, kv = choice.mlp_channels[layer], choice.query_heads[layer], choice.kv_heads[layer]
    module, _, kind = rest.rpartition(".")
    if module in ("mlp.gate_proj", "mlp.up_proj"):
        tensor = _rows(tensor, channels, 1)
    elif module == "mlp.down_proj" and kind == "weight":
        tensor = tensor[:, channels]
    elif module == "self_attn.q_proj":
        tensor = _rows(tensor, queries, size)
    elif module in ("self_attn.k_proj", "self_attn.v_proj"):
        tensor = _rows(tensor, kv, size)
    elif module == "self_attn.o_proj" and kind == "weight":
        tensor = _rows(tensor.T, queries, size).T
    return tensor.contiguous()


def prune_width(model: Any, choice: WidthChoice) -> Any:
    """A new model of `model`'s class holding only the chosen channels and heads of every layer;
    embeddings, norms and head as they are."""
    config = copy.deepcopy(model.config)
    size = head_dim(config)
    if len(choice.mlp_channels) != config.num_hidden_layers:
        raise ValueError(f"a width choice for {len(choice.mlp_channels)} layers, the model has "
                         f"{config.num_hidden_layers}")
    config.intermediate_size = len(choice.mlp_channels[0])
    config.num_attention_heads = len(choice.query_heads[0])
    config.num_key_value_heads = len(choice.kv_heads[0])
    config.head_dim = size  # no longer hidden_size // heads: say it
    student = type(model)(config)  # (transformers' no_init_weights would untie the head here)
    own = {name: _cut(name, tensor, choice, size) for name, tensor in model.state_dict().items()}
    student.load_state_dict(own)
    student.generation_config = copy.deepcopy(model.generation_config)
    return student
