"""Students built from a decoder-only teacher's own weights, of both families.

- Decoder-only (`llama`): depth pruning. The student keeps N of the teacher's layers, its
  embeddings, final norm and head. Which layers is measured, not guessed: a layer whose output
  hidden states point the same way as its input changes little, so its block influence
  (1 - cosine similarity between a layer's input and output, averaged over the tokens of a
  sample of the user's own conversations; ShortGPT's measure) is low and it is dropped first.
  With every layer kept the student is the teacher, logit for logit.
- Encoder-decoder (`t5`): T5Gemma (transformers' T5-style encoder-decoder with rotary positions,
  grouped key/value heads, RMSNorm and gated MLPs), its blocks copied from teacher layers. A
  classic T5 block has no rotary positions, so a T5 built from a rotary teacher loses the
  positions every attention weight was trained with (ARCHITECTURE.md measured that: most of the
  head start goes with them); T5Gemma keeps them in both stacks and loads through
  AutoModelForSeq2SeqLM like any T5. Its differences from the teacher's blocks are compensated:
  Gemma norms scale by (1 + w), so w is stored minus one; inputs are multiplied by
  sqrt(hidden) after the embedding lookup, so embeddings are stored divided by it and the tied
  head gets it back through the decoder's final norm; attention scales by
  query_pre_attn_scalar^-0.5, set to the head size; softcapping is off; the activation is the
  teacher's. Gemma blocks normalise each sub-layer's output ("post" norms) where Llama adds it
  as it is: their gains are fitted by least squares on the sample, so each sub-layer adds
  what it added in the teacher, up to a per-token scale. Cross-attention starts as a copy of
  the same layer's self-attention (the teacher's attention over the earlier turns), with the
  layer's input norm folded into its key and value projections, since the encoder output it
  reads is normalised once for all layers.

`init_from_teacher` writes a checkpoint folder with the teacher's tokenizer and chat template
and a `convdistill.json` that records the teacher, the kept layers and their scores.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convdistill.errors import BadInput, BadRecipe, Unavailable
from convdistill.models.calibration import run_calibration
from convdistill.models.students import count_parameters
from convdistill.models.width_pruning import WidthChoice, choose_width, measure_width, prune_width, width_shape
from convdistill.resources import shipped_file

FAMILIES_FROM_TEACHER: tuple[str, ...] = ("llama", "t5")
# How a `t5` student is built: T5Gemma (two embedding tables, separate cross-attention) or
# T5Gemma2 (one table, merged attention); see t5gemma2_student and docs/models.md.
T5_ARCHITECTURES: tuple[str, ...] = ("t5gemma", "t5gemma2")
# The sample a student is calibrated on when the user names none: the project's bundled export.
DEFAULT_SAMPLE = "conversation_trees/oasst_en_100_tree.jsonl"
# Share of the teacher's attention-output gain a new cross-attention starts with (see t5_student).
CROSS_ATTENTION_GAIN = 0.1


@dataclass
class LayerStats:
    """What one pass over the sample measures per teacher layer."""

    influence: list[float]  # 1 - cos(input, output), mean over tokens
    # least-squares gains g (per channel) with g * y / rms(y) ~ y, for the attention and MLP
    # outputs y: what a post-norm must scale by to add what the teacher's sub-layer added
    attention_gain: list[torch.Tensor] = field(default_factory=list)
    mlp_gain: list[torch.Tensor] = field(default_factory=list)
    # mean root-mean-square of a query / key head vector: the scale a query/key norm (T5Gemma2)
    # must give back, since it divides every head vector by its own
    query_rms: list[float] = field(default_factory=list)
    key_rms: list[float] = field(default_factory=list)
    tokens: int = 0


def sample_conversations(path: str | Path, limit: int = 32) -> list[list[dict[str, str]]]:
    """Up to `limit` conversations (message lists): the best path of each of the first trees of
    anything the tree readers read (an Open-Assistant export, path records, a chat-UI export)."""
    from convdistill.conversation_trees import Selection, TreeReader, tree_paths
    from convdistill.conversation_trees.records import chat_messages

    path = Path(path)
    if not path.exists():
        raise Unavailable(f"calibration sample {path}: no such file")
    conversations: list[list[dict[str, str]]] = []
    for graph in TreeReader(path, on_error="skip"):
        best = next(tree_paths(graph, Selection(), "best"), None)
        if best is not None:
            conversations.append(chat_messages(graph, best.message_ids))
        if len(conversations) >= limit:
            break
    if not conversations:
        raise BadInput(f"calibration sample {path}: no conversation with an assistant reply")
    return conversations


def _decoder_layers(model: Any) -> Any:
    return model.model.layers


@torch.no_grad()
def measure_layers(teacher: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]],
                   max_tokens: int = 384) -> LayerStats:
    """Block influence of every teacher layer, and the post-norm gains, on the conversations
    rendered with the teacher's chat template (one at a time: no padding to weigh in)."""
    layers = _decoder_layers(teacher)
    count = len(layers)
    width = teacher.config.hidden_size
    influence = torch.zeros(count, dtype=torch.float64)
    sums = {kind: (torch.zeros(count, width, dtype=torch.float64),
                   torch.zeros(count, width, dtype=torch.float64)) for kind in ("attn", "mlp")}
    hooks = []

    def on_layer(index: int) -> Any:
        def hook(_module: Any, args: Any, kwargs: Any, output: Any) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(before.double(), after.double(), dim=-1)
            influence[index] += (1 - cosine).sum()
        return hook

    def on_output(kind: str, index: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            y = (output[0] if isinstance(output, tuple) else output).double().flatten(0, -2)
            unit = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)
            sums[kind][0][index] += (unit * y).sum(0)
            sums[kind][1][index] += (unit * unit).sum(0)
        return hook

    head_dim = getattr(teacher.config, "head_dim", None) or width // teacher.config.num_attention_heads
    head_rms = {kind: torch.zeros(count, dtype=torch.float64) for kind in ("q", "k")}
    head_vectors = {kind: torch.zeros(count, dtype=torch.float64) for kind in ("q", "k")}

    def on_projection(kind: str, index: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            heads = output.double().reshape(-1, head_dim)
            head_rms[kind][index] += heads.pow(2).mean(-1).sqrt().sum()
            head_vectors[kind][index] += heads.shape[0]
        return hook

    for index, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(on_layer(index), with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(on_output("attn", index)))
        hooks.append(layer.mlp.register_forward_hook(on_output("mlp", index)))
        hooks.append(layer.self_attn.q_proj.register_forward_hook(on_projection("q", index)))
        hooks.append(layer.self_attn.k_proj.register_forward_hook(on_projection("k", index)))
    try:
        tokens = run_calibration(teacher, tokenizer, conversations, max_tokens)
    finally:
        for hook in hooks:
            hook.remove()

    def gains(kind: str) -> list[torch.Tensor]:
        cross, square = sums[kind]
        return [(cross[i] / square[i].clamp(min=1e-12)).float() for i in range(count)]

    return LayerStats(influence=(influence / tokens).tolist(), attention_gain=gains("attn"),
                      mlp_gain=gains("mlp"), tokens=tokens,
                      query_rms=(head_rms["q"] / head_vectors["q"].clamp(min=1)).tolist(),
                      key_rms=(head_rms["k"] / head_vectors["k"].clamp(min=1)).tolist())


def choose_layers(influence: Sequence[float], keep: int) -> list[int]:
    """The `keep` layers of highest block influence, in the teacher's order."""
    if not 1 <= keep <= len(influence):
        raise BadRecipe(f"--layers {keep}: the teacher has {len(influence)} layers; keep 1 to "
                        f"{len(influence)}")
    ranked = sorted(range(len(influence)), key=lambda i: influence[i], reverse=True)
    return sorted(ranked[:keep])


def check_keep(keep: Sequence[int], layer_count: int, option: str = "--keep") -> list[int]:
    out = list(keep)
    if not out:
        raise BadRecipe(f"{option}: no layers given")
    bad = [i for i in out if not 0 <= i < layer_count]
    if bad:
        raise BadRecipe(f"{option}: layers {bad} do not exist; the teacher has layers 0 to "
                        f"{layer_count - 1}")
    if len(set(out)) != len(out):
        raise BadRecipe(f"{option}: a layer is listed twice ({out})")
    return out


def llama_student(teacher: Any, keep: Sequence[int]) -> Any:
    """A decoder-only student of the teacher's class with teacher layers `keep` (in order)."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(teacher)(config)
    state = teacher.state_dict()
    own: dict[str, torch.Tensor] = {}
    for name in student.state_dict():
        if name.startswith("model.layers."):
            index, rest = name.removeprefix("model.layers.").split(".", 1)
            own[name] = state[f"model.layers.{keep[int(index)]}.{rest}"]
        else:
            own[name] = state[name]
    student.load_state_dict(own)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def _gemma_block_config(t: Any, layers: int, decoder_start_token_id: int, pad_token_id: int) -> dict[str, Any]:
    """The fields of a T5Gemma / T5Gemma2 stack config that give its blocks the teacher's shapes
    and arithmetic."""
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    return dict(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size, num_hidden_layers=layers,
        num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
        head_dim=head_dim, hidden_activation=t.hidden_act,
        max_position_embeddings=t.max_position_embeddings, rms_norm_eps=t.rms_norm_eps,
        attention_bias=False, query_pre_attn_scalar=head_dim,
        # every layer is full attention; the Gemma stacks build a sliding mask regardless
        sliding_window=t.max_position_embeddings,
        layer_types=["full_attention"] * layers, final_logit_softcapping=None,
        attn_logit_softcapping=None, pad_token_id=pad_token_id,
        bos_token_id=decoder_start_token_id, eos_token_id=t.eos_token_id, tie_word_embeddings=True,
    )


def t5gemma_config(teacher_config: Any, encoder_layers: int, decoder_layers: int,
                   decoder_start_token_id: int, pad_token_id: int) -> Any:
    """A T5Gemma config whose blocks have the teacher's shapes and arithmetic."""
    from transformers import T5GemmaConfig, T5GemmaModuleConfig

    t = teacher_config

    def module(layers: int, is_decoder: bool) -> Any:
        return T5GemmaModuleConfig(**_gemma_block_config(t, layers, decoder_start_token_id, pad_token_id),
                                   rope_parameters=dict(t.rope_parameters), is_decoder=is_decoder)

    config = T5GemmaConfig(encoder=module(encoder_layers, False),
                           decoder=module(decoder_layers, True), tie_word_embeddings=True,
                           vocab_size=t.vocab_size, dropout_rate=0.0, attention_dropout=0.0)
    config.decoder.cross_attention_hidden_size = t.hidden_size  # type: ignore[union-attr]  # built just above
    config.decoder_start_token_id = decoder_start_token_id
    config.pad_token_id = pad_token_id
    config.eos_token_id = t.eos_token_id
    config.bos_token_id = decoder_start_token_id
    return config


# transformers builds a SigLIP vision tower into every T5Gemma2 encoder. A text student never
# runs it, so it gets the smallest that builds: one layer, 16 wide, one 14x14 patch (about 20k
# parameters beside 97M), with its image tokens placed outside the text vocabulary.
TINY_VISION_TOWER: dict[str, Any] = {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 16,
                                     "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 14,
                                     "patch_size": 14}


def t5gemma2_config(teacher_config: Any, encoder_layers: int, decoder_layers: int,
                    decoder_start_token_id: int, pad_token_id: int) -> Any:
    """A text-only T5Gemma2 config whose blocks have the teacher's shapes and arithmetic, with
    the teacher's token ids (not Gemma 3's) and the smallest vision tower that builds."""
    from transformers import T5Gemma2Config

    t = teacher_config
    rope = {kind: dict(t.rope_parameters) for kind in ("full_attention", "sliding_attention")}
    # ids the text tokenizer never produces: the encoder swaps the embedding of its end-of-image
    # id for a learned one, which must never hit a text token
    eoi, image, boi = t.vocab_size, t.vocab_size + 1, t.vocab_size + 2

    def text(layers: int) -> dict[str, Any]:
        return {**_gemma_block_config(t, layers, decoder_start_token_id, pad_token_id), "rope_parameters": rope}

    config = T5Gemma2Config(
        encoder={"text_config": text(encoder_layers), "vision_config": dict(TINY_VISION_TOWER),
                 "mm_tokens_per_image": 1, "eoi_token_index": eoi, "image_token_index": image,
                 "boi_token_index": boi},
        decoder=text(decoder_layers), eoi_token_index=eoi, image_token_index=image,
        tie_word_embeddings=True, dropout_rate=0.0, attention_dropout=0.0)
    config.decoder_start_token_id = decoder_start_token_id
    return config


def _gemma_norm(weight: torch.Tensor) -> torch.Tensor:
    return weight - 1.0  # Gemma's RMSNorm multiplies by (1 + weight)


def _gemma_block(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], stats: LayerStats,
                 prefix: str, teacher_index: int) -> None:
    """Teacher layer `teacher_index` as a Gemma block under `prefix`: self-attention and MLP
    copied, the pre-norms' gains kept, the post-norms' gains fitted (LayerStats)."""
    src = f"model.layers.{teacher_index}."
    own[prefix + "pre_self_attn_layernorm.weight"] = _gemma_norm(state[src + "input_layernorm.weight"])
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        own[prefix + f"self_attn.{proj}.weight"] = state[src + f"self_attn.{proj}.weight"]
    own[prefix + "post_self_attn_layernorm.weight"] = _gemma_norm(stats.attention_gain[teacher_index])
    own[prefix + "pre_feedforward_layernorm.weight"] = _gemma_norm(state[src + "post_attention_layernorm.weight"])
    for proj in ("gate_proj", "up_proj", "down_proj"):
        own[prefix + f"mlp.{proj}.weight"] = state[src + f"mlp.{proj}.weight"]
    own[prefix + "post_feedforward_layernorm.weight"] = _gemma_norm(stats.mlp_gain[teacher_index])


def _load_mapped(student: Any, own: dict[str, torch.Tensor], teacher: Any, decoder_start_token_id: int,
                 pad_token_id: int) -> Any:
    """Load the mapped weights (every one of the student's, or a bug here) and set generation's ids."""
    expected = set(student.state_dict())
    missing = expected - set(own)
    if missing:
        raise RuntimeError(f"{type(student).__name__} weights not mapped from the teacher: {sorted(missing)[:5]}")
    student.load_state_dict({k: own[k].contiguous() for k in expected})
    generation = student.generation_config
    generation.decoder_start_token_id = decoder_start_token_id
    generation.bos_token_id = decoder_start_token_id
    generation.pad_token_id = pad_token_id
    generation.eos_token_id = teacher.config.eos_token_id
    return student


def t5_student(teacher: Any, stats: LayerStats, encoder_keep: Sequence[int],
               decoder_keep: Sequence[int], decoder_start_token_id: int,
               pad_token_id: int) -> Any:
    """An encoder-decoder T5Gemma student with teacher layers `encoder_keep` in its encoder and
    `decoder_keep` in its decoder (see the module docstring for the mapping)."""
    from transformers import T5GemmaForConditionalGeneration

    config = t5gemma_config(teacher.config, len(encoder_keep), len(decoder_keep),
                            decoder_start_token_id, pad_token_id)
    student = T5GemmaForConditionalGeneration(config)
    state = teacher.state_dict()
    scale = math.sqrt(teacher.config.hidden_size)
    own: dict[str, torch.Tensor] = {}

    def cross_attention(prefix: str, teacher_index: int) -> None:
        src = f"model.layers.{teacher_index}."
        norm = state[src + "input_layernorm.weight"]
        own[prefix + "pre_cross_attn_layernorm.weight"] = _gemma_norm(norm)
        own[prefix + "cross_attn.q_proj.weight"] = state[src + "self_attn.q_proj.weight"]
        # keys and values read the encoder output, normalised once by the encoder's final
        # norm (gain 1): the layer's own input-norm gains move into the projections
        own[prefix + "cross_attn.k_proj.weight"] = state[src + "self_attn.k_proj.weight"] * norm
        own[prefix + "cross_attn.v_proj.weight"] = state[src + "self_attn.v_proj.weight"] * norm
        own[prefix + "cross_attn.o_proj.weight"] = state[src + "self_attn.o_proj.weight"]
        # The teacher attended to the history and the reply in one softmax; here the two
        # are separate sub-layers, each post-normalised, so a full-gain copy adds the
        # history twice over. Measured on 20 held-out paths with every layer kept (teacher
        # 2.11 nats, 2.56 without the history): cross gain x1 9.96, x0.5 8.81, x0 5.16,
        # x0.1 5.01. It starts small and training grows it.
        own[prefix + "post_cross_attn_layernorm.weight"] = _gemma_norm(
            CROSS_ATTENTION_GAIN * stats.attention_gain[teacher_index])

    embedding = state["model.embed_tokens.weight"] / scale  # times sqrt(hidden) in forward
    own["model.encoder.embed_tokens.weight"] = embedding
    own["model.decoder.embed_tokens.weight"] = embedding
    own["lm_head.out_proj.weight"] = embedding  # tied to the decoder's embedding
    own["model.encoder.norm.weight"] = torch.zeros_like(state["model.norm.weight"])
    # the tied head sees embeddings / sqrt(hidden): the final norm gives the factor back
    own["model.decoder.norm.weight"] = _gemma_norm(state["model.norm.weight"] * scale)
    for k, index in enumerate(encoder_keep):
        _gemma_block(own, state, stats, f"model.encoder.layers.{k}.", index)
    for k, index in enumerate(decoder_keep):
        _gemma_block(own, state, stats, f"model.decoder.layers.{k}.", index)
        cross_attention(f"model.decoder.layers.{k}.", index)
    return _load_mapped(student, own, teacher, decoder_start_token_id, pad_token_id)


def t5gemma2_student(teacher: Any, stats: LayerStats, encoder_keep: Sequence[int],
                     decoder_keep: Sequence[int], decoder_start_token_id: int,
                     pad_token_id: int) -> Any:
    """An encoder-decoder T5Gemma2 student: one embedding table for encoder, decoder and head,
    and decoder layers whose one attention reads the reply so far and the encoder's output in
    one softmax, as the teacher's layer read the reply and the history, so every attention
    weight is the teacher's and none is invented. What T5Gemma2 adds: a query and a key norm
    per head (Gemma 3's), which divide every head vector by its root mean square; their gains
    are set to the teacher's mean query / key head RMS (LayerStats), so attention logits keep
    their typical size. The key norm still costs the teacher's per-token key magnitudes
    (attention sinks): measured on the teacher itself, held-out NLL 2.106 -> 2.167 with the
    query norm alone, 4.17 with the key norm. Positions: the decoder's keys are rotary from
    the reply's start, the encoder's carry no rotation (T5Gemma2's merged attention)."""
    from transformers import T5Gemma2ForConditionalGeneration

    config = t5gemma2_config(teacher.config, len(encoder_keep), len(decoder_keep),
                             decoder_start_token_id, pad_token_id)
    student = T5Gemma2ForConditionalGeneration(config)
    state = teacher.state_dict()
    scale = math.sqrt(teacher.config.hidden_size)
    own = {name: value for name, value in student.state_dict().items()
           if ".vision_tower." in name or ".multi_modal_projector." in name or name.endswith("eoi_embedding")}
    head_dim = config.decoder.head_dim

    def block(prefix: str, teacher_index: int) -> None:
        _gemma_block(own, state, stats, prefix, teacher_index)
        own[prefix + "self_attn.q_norm.weight"] = torch.full((head_dim,), stats.query_rms[teacher_index] - 1.0)
        own[prefix + "self_attn.k_norm.weight"] = torch.full((head_dim,), stats.key_rms[teacher_index] - 1.0)

    embedding = state["model.embed_tokens.weight"] / scale  # times sqrt(hidden) in forward
    for name in ("model.encoder.text_model.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                 "lm_head.out_proj.weight"):
        own[name] = embedding  # one table (tied)
    # The decoder's keys and values read the encoder's output through the decoder layer's own
    # projections, which expect the layer's input norm: the encoder's final norm takes the mean
    # of those gains.
    gains = torch.stack([state[f"model.layers.{i}.input_layernorm.weight"] for i in decoder_keep]).mean(0)
    own["model.encoder.text_model.norm.weight"] = _gemma_norm(gains)
    own["model.decoder.norm.weight"] = _gemma_norm(state["model.norm.weight"] * scale)
    for k, index in enumerate(encoder_keep):
        block(f"model.encoder.text_model.layers.{k}.", index)
    for k, index in enumerate(decoder_keep):
        block(f"model.decoder.layers.{k}.", index)
    return _load_mapped(student, own, teacher, decoder_start_token_id, pad_token_id)


@dataclass(frozen=True)
class TeacherInitInfo:
    path: Path
    family: str
    parameters: int
    encoder_layers: list[int] | None
    decoder_layers: list[int]
    width: tuple[int, int, int] | None = None  # MLP channels, heads, key/value heads per layer

    def layout(self) -> str:
        """The kept teacher layers, as the CLI, the demo and the experiment print them."""
        if self.encoder_layers is None:
            if self.width is not None:
                mlp, heads, kv = self.width
                return f"layers {self.decoder_layers}, {mlp} MLP channels, {heads} heads ({kv} key/value)"
            return f"layers {self.decoder_layers}"
        return f"encoder layers {self.encoder_layers}, decoder layers {self.decoder_layers}"


def init_from_teacher(
    teacher: str | Path,
    family: str,
    output_dir: str | Path,
    layers: int | None = None,
    keep: Sequence[int] | None = None,
    encoder_layers: int | None = None,
    encoder_keep: Sequence[int] | None = None,
    sample: str | Path | None = None,
    sample_size: int = 16,
    random_init: bool = False,
    seed: int = 0,
    mlp_channels: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    architecture: str = "t5gemma",
) -> TeacherInitInfo:
    """Build and save a student from `teacher` (an embedded name or a Llama-family checkpoint).

    `llama`: `layers` teacher layers of highest block influence, or exactly `keep`.
    `t5`: a T5Gemma student whose decoder holds `layers` (or `keep`) and whose encoder holds
    `encoder_layers` (default: as many) of the same ranking (or exactly `encoder_keep`).
    `sample`: the conversations that layers are measured and post-norm gains fitted on
    (default: the bundled Open-Assistant sample). `random_init`: the same shape with random
    weights (seeded), the control that shows what the teacher's weights are worth.
    `mlp_channels`, `heads`, `kv_heads` (`llama` only): width pruning as well, every kept layer
    keeping that many MLP channels and attention heads of highest activation importance on the
    same sample (`width_pruning`); with width given and no `layers` / `keep`, every layer.
    `architecture` (`t5` only): `t5gemma` or `t5gemma2`; a T5Gemma2 encoder holds the teacher's
    first `encoder_layers` layers (its output stands in for the history's hidden states, which
    the decoder's merged attention reads), unless `encoder_keep` names them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from convdistill.models.registry import resolve_model

    if family not in FAMILIES_FROM_TEACHER:
        raise BadRecipe(f"unknown family {family!r}: choose one of {', '.join(FAMILIES_FROM_TEACHER)}")
    if architecture not in T5_ARCHITECTURES:
        raise BadRecipe(f"unknown architecture {architecture!r}: choose one of {', '.join(T5_ARCHITECTURES)}")
    if architecture != "t5gemma" and family != "t5":
        raise BadRecipe(f"--architecture {architecture}: an encoder-decoder architecture; use --family t5")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise BadRecipe(f"{out} exists and is not empty")
    width = (mlp_channels, heads, kv_heads) != (None, None, None)
    if width and family != "llama":
        raise BadRecipe("--mlp-channels, --heads and --kv-heads: width pruning builds decoder-only students; "
                        "use --family llama")
    if layers is None and keep is None and not width:
        raise BadRecipe("give --layers N or --keep I,J,... (or width: --mlp-channels, --heads)")
    folder = resolve_model(teacher)
    teacher_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if teacher_model.config.model_type != "llama":
        raise BadRecipe(f"{folder}: a {teacher_model.config.model_type} model; students are built "
                        "from Llama-family (LlamaForCausalLM) teachers")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    count = teacher_model.config.num_hidden_layers
    shape = width_shape(teacher_model.config, mlp_channels, heads, kv_heads) if width else None
    selection = "given" if keep is not None else "block influence (1 - cos(in, out)), highest kept"
    if layers is None and keep is None:
        keep, selection = list(range(count)), "all (width pruning only)"
    given = check_keep(keep, count) if keep is not None else None
    given_encoder = check_keep(encoder_keep, count, "--encoder-keep") if encoder_keep else None
    sample_path = Path(sample) if sample is not None else shipped_file(DEFAULT_SAMPLE)
    conversations = sample_conversations(sample_path, sample_size)
    stats = measure_layers(teacher_model, tokenizer, conversations)
    chosen = given if given is not None else choose_layers(stats.influence, layers or 0)  # one is given (checked)
    enc: list[int] | None = None
    kept_width: WidthChoice | None = None
    if family == "llama":
        student = llama_student(teacher_model, chosen)
        if shape is not None:
            # measured on the whole teacher, as Minitron does, and cut from the kept layers
            importance = measure_width(teacher_model, tokenizer, conversations)
            kept_width = choose_width(importance, teacher_model.config, *shape, layers=chosen)
            student = prune_width(student, kept_width)
    else:
        depth = encoder_layers or len(chosen)
        if given_encoder:
            enc = given_encoder
        elif architecture == "t5gemma2":
            enc = check_keep(range(depth), count, "--encoder-layers")
        else:
            enc = choose_layers(stats.influence, depth)
        pad: int = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # type: ignore[assignment]  # one token, one id
        start = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
        build = t5gemma2_student if architecture == "t5gemma2" else t5_student
        student = build(teacher_model, stats, enc, chosen, decoder_start_token_id=start, pad_token_id=pad)
    if random_init:
        torch.manual_seed(seed)
        generation = student.generation_config
        student = type(student)(student.config)
        student.generation_config = generation
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = TeacherInitInfo(out, family, count_parameters(student), enc, chosen, shape)
    record = {
        "name": f"{family}-from-{Path(str(teacher)).name}",
        "family": family,
        "architecture": type(student).__name__,
        "initialised": "random (teacher's shape)" if random_init else "teacher",
        **({"seed": seed} if random_init else {}),
        "teacher": str(teacher),
        "teacher_folder": str(folder),
        "teacher_layers": count,
        "parameters": info.parameters,
        "layers": chosen if family == "llama" else None,
        "encoder_layers": enc,
        "decoder_layers": chosen if family == "t5" else None,
        "selection": selection,
        "block_influence": [round(x, 6) for x in stats.influence],
        **({"width": {"mlp_channels": shape[0], "heads": shape[1], "kv_heads": shape[2],
                      "selection": "activation importance (MLP: mean |intermediate|; heads: mean output "
                      "norm, whole key/value groups), highest kept", "kept": kept_width.record()}}
           if shape is not None and kept_width is not None else {}),
        "calibration": {"sample": str(sample_path), "conversations": sample_size, "tokens": stats.tokens},
    }
    (out / "convdistill.json").write_text(json.dumps(record, indent=2) + "\n")
    return info
