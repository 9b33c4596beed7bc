"""`export_gguf`: a student checkpoint as one GGUF file that llama.cpp (and Ollama, LM Studio, and
every binding of llama.cpp) runs: tensors, hyper-parameters, tokenizer and chat template.

Architectures llama.cpp runs and our students use:
- `llama`: LlamaForCausalLM, the decoder-only students, pruned (`models init --from`) or
  random-initialised, and the embedded SmolLM2 itself. llama.cpp applies rotary positions to
  interleaved pairs of a head's channels where transformers rotates its two halves, so the
  query and key rows of every head are reordered (the product q.k is unchanged).
- `t5`: T5ForConditionalGeneration with T5's relative position buckets (max distance 128,
  llama.cpp's constant) and a ReLU or gated-GELU feed-forward. A T5 whose decoder output is
  scaled by d_model^-0.5 before a tied head (transformers' `scale_decoder_outputs`) gets the
  scale folded into an output matrix of its own, since llama.cpp never scales.

T5Gemma (the encoder-decoder students built from the teacher's layers) is refused:
llama.cpp 0.3.36's bundled llama.cpp has no t5gemma architecture.

The file is written beside the output under a temporary name and renamed into place: a
failure at any point leaves no partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convdistill.errors import BadRecipe
from convdistill.export.vocab import GGUFVocab, TokenizerNotRepresentable, gguf_vocab
from convdistill.files import write_atomically

GGUF_TYPES: tuple[str, ...] = ("f32", "f16", "q8_0", "q4_k_m")
# Where gguf-py's own numpy quantiser writes the type; q4_k_m goes through llama.cpp.
_NUMPY_TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}
_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_k_m": "MOSTLY_Q4_K_M"}
T5_MAX_DISTANCE = 128  # llama.cpp's llama_relative_position_bucket hard-codes it
T5_FEED_FORWARDS = ("relu", "gated-gelu")  # llama.cpp: no gate -> ReLU, a gate -> GELU (tanh)


class ExportError(BadRecipe):
    """A checkpoint, tokenizer or output the export refuses; the message is one line."""


@dataclass(frozen=True)
class GGUFExport:
    path: Path
    architecture: str  # "llama" or "t5"
    type: str
    tensors: int
    size_bytes: int
    quantized_by: str  # "gguf-py" or "llama.cpp (llama-cpp-python X)"
    modelfile: Path | None
    modelfile_note: str | None  # why there is no Modelfile, when there is none


def architecture_of(config: Any, where: Path) -> str:
    """"llama" or "t5" for a checkpoint config llama.cpp can run; ExportError otherwise."""
    kind = getattr(config, "model_type", None)
    if kind == "t5gemma":
        raise ExportError(
            f"{where}: a T5Gemma encoder-decoder student; llama.cpp (the version bundled with "
            "llama-cpp-python 0.3.36) has no T5Gemma architecture, so it cannot be exported to "
            "GGUF: export a Llama student, or a T5 one (models init --family t5 --size ...)")
    if kind == "llama":
        rope = dict(getattr(config, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default":
            raise ExportError(f"{where}: rope type {rope['rope_type']!r}; this export writes "
                              "plain rotary positions only")
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ExportError(f"{where}: a Llama with bias terms; llama.cpp's llama has none")
        return "llama"
    if kind == "t5":
        if config.feed_forward_proj not in T5_FEED_FORWARDS:
            raise ExportError(f"{where}: T5 feed-forward {config.feed_forward_proj!r}; llama.cpp "
                              f"runs {' and '.join(T5_FEED_FORWARDS)} only")
        if config.relative_attention_max_distance != T5_MAX_DISTANCE:
            raise ExportError(f"{where}: relative_attention_max_distance "
                              f"{config.relative_attention_max_distance}; llama.cpp fixes it at "
                              f"{T5_MAX_DISTANCE}")
        return "t5"
    raise ExportError(f"{where}: a {kind!r} model, not a student this export knows "
                      "(llama: decoder-only students and SmolLM2; t5: T5 students)")


def _llama_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head reordered from transformers' (first half, second half) rotary layout
    to llama.cpp's interleaved pairs."""
    rows, cols = weight.shape
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, cols).swapaxes(1, 2).reshape(rows, cols)


def llama_tensors(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array) of a LlamaForCausalLM, in llama.cpp's layout; a tied head is left out
    (llama.cpp reads token_embd for it)."""
    config = model.config
    tied = config.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        array = tensor.detach().float().numpy()
        if name.endswith("self_attn.q_proj.weight"):
            array = _llama_rotary_rows(array, config.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            array = _llama_rotary_rows(array, config.num_key_value_heads)
        yield name, array


def t5_tensors(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    config = model.config
    scale = getattr(config, "scale_decoder_outputs", config.tie_word_embeddings)
    for name, tensor in model.state_dict().items():
        if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue  # the same matrix as shared.weight
        array = tensor.detach().float().numpy()
        if name == "lm_head.weight" and scale:
            array = array * np.float32(config.d_model ** -0.5)
        yield name, array


def hyperparameters(architecture: str, config: Any) -> dict[str, Any]:
    """GGUF hyper-parameters by the name of the GGUFWriter method that writes each (add_<name>)."""
    if architecture == "llama":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        rope = dict(getattr(config, "rope_parameters", None) or {})
        return {
            "context_length": config.max_position_embeddings,
            "embedding_length": config.hidden_size,
            "block_count": config.num_hidden_layers,
            "feed_forward_length": config.intermediate_size,
            "head_count": config.num_attention_heads,
            "head_count_kv": config.num_key_value_heads,
            "key_length": head_dim,
            "value_length": head_dim,
            "rope_dimension_count": head_dim,
            "rope_freq_base": float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
            "layer_norm_rms_eps": config.rms_norm_eps,
            "vocab_size": config.vocab_size,
        }
    return {
        # no hard context limit (relative positions), but llama.cpp wants one: T5's usual 512
        # is short for multi-turn histories; 4096 is the server's default prompt cap
        "context_length": 4096,
        "embedding_length": config.d_model,
        "feed_forward_length": config.d_ff,
        "block_count": config.num_layers,
        "decoder_block_count": config.num_decoder_layers,
        "head_count": config.num_heads,
        "key_length": config.d_kv,
        "value_length": config.d_kv,
        "layer_norm_eps": config.layer_norm_epsilon,
        "layer_norm_rms_eps": config.layer_norm_epsilon,
        "relative_attn_buckets_count": config.relative_attention_num_buckets,
        "decoder_start_token_id": config.decoder_start_token_id,
        "vocab_size": config.vocab_size,
    }


def tensor_type(name: str, array: np.ndarray, type_name: str) -> str:
    """The GGML type one tensor is stored in: llama.cpp's own rules of thumb. Vectors (norms)
    and T5's small position-bias tables stay F32; a row not a multiple of the block size
    cannot be Q8_0 and is stored F16."""
    import gguf

    if array.ndim < 2 or "attn_rel_b" in name:
        return "F32"
    target = _NUMPY_TYPES[type_name]
    if target == "Q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        return "F16"
    return target


@contextlib.contextmanager
def temporary_beside(output: Path, suffix: str) -> Iterator[Path]:
    """A fresh temporary path in `output`'s folder (beside the export, where there is room for
    it), removed afterwards whatever happened: the f32 file a quantiser reads."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=suffix, dir=output.parent)
    except OSError as exc:
        raise ExportError(f"{output}: cannot write there ({exc.strerror})") from None
    os.close(handle)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def write_gguf(path: Path, model: Any, vocab: GGUFVocab, architecture: str, type_name: str,
               name: str) -> int:
    """Write `model` (numpy-quantised to `type_name`, one of f32/f16/q8_0) and `vocab` to
    `path`; the number of tensors written."""
    import gguf

    config = model.config
    arch = gguf.MODEL_ARCH.LLAMA if architecture == "llama" else gguf.MODEL_ARCH.T5
    blocks = config.num_hidden_layers if architecture == "llama" else max(
        config.num_layers, config.num_decoder_layers)
    names = gguf.get_tensor_name_map(arch, blocks)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[type_name]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in hyperparameters(architecture, config).items():
        getattr(writer, f"add_{key}")(value)

    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    ids = vocab.special_ids
    for role, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("eot", writer.add_eot_token_id), ("pad", writer.add_pad_token_id),
                      ("unk", writer.add_unk_token_id)):
        if role in ids:
            add(ids[role])
    # the chat template starts every turn itself: nothing is added around a prompt
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)

    source = llama_tensors(model) if architecture == "llama" else t5_tensors(model)
    count = 0
    for hf_name, array in source:
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise RuntimeError(f"no GGUF name for {architecture} tensor {hf_name}")  # our bug
        qtype = getattr(gguf.GGMLQuantizationType, tensor_type(gguf_name, array, type_name))
        data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count


def export_gguf(checkpoint: str | Path, output: str | Path, type_name: str = "f16",
                modelfile: bool = True, threads: int | None = None) -> GGUFExport:
    """Export a student checkpoint folder (or an embedded model's name) to `output`.

    `type_name`: f32, f16, q8_0 (quantised here, with gguf-py) or q4_k_m (quantised by
    llama.cpp's own llama_model_quantize through llama-cpp-python, which must be installed).
    `modelfile`: also write an Ollama Modelfile beside the file (llama students; Ollama does
    not run encoder-decoder models). Raises ExportError for input this export refuses."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from convdistill.export.modelfile import write_modelfile
    from convdistill.models.registry import resolve_model

    if type_name not in GGUF_TYPES:
        raise ExportError(f"--type {type_name!r}: choose one of {', '.join(GGUF_TYPES)}")
    out = Path(output).expanduser()
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the path of the .gguf file to write")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"{out}: the folder {out.parent} is not writable")
    if type_name == "q4_k_m":  # checked now, before minutes of work
        from convdistill.export.llamacpp import LlamaCppMissing, require_llama_cpp

        try:
            require_llama_cpp("--type q4_k_m")
        except LlamaCppMissing as exc:
            raise ExportError(str(exc)) from None
    folder = resolve_model(checkpoint)
    config = AutoConfig.from_pretrained(folder)
    architecture = architecture_of(config, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: no usable tokenizer ({exc})") from None
    try:
        vocab = gguf_vocab(tokenizer, config.vocab_size)
    except TokenizerNotRepresentable as exc:
        raise ExportError(f"{folder}: tokenizer cannot be written for llama.cpp: {exc}") from None
    auto = AutoModelForCausalLM if architecture == "llama" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(folder, dtype=torch.float32).eval()
    name = folder.name
    try:
        with write_atomically(out) as staged:
            if type_name in _NUMPY_TYPES:
                tensors = write_gguf(staged, model, vocab, architecture, type_name, name)
                quantized_by = "gguf-py"
            else:
                from convdistill.export.llamacpp import quantize_file

                with temporary_beside(out, ".f32.gguf") as full:
                    tensors = write_gguf(full, model, vocab, architecture, "f32", name)
                    quantized_by = quantize_file(full, staged, type_name, threads)
            umask = os.umask(0)
            os.umask(umask)
            # readable as any file the user writes: a private 0600 (as a quantiser's own temporary
            # file may be) would hide it from an Ollama service running as another user
            os.chmod(staged, 0o666 & ~umask)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write ({exc.strerror or exc})") from None
    written, note = None, None
    if modelfile:
        written, note = write_modelfile(out, tokenizer, architecture,
                                        getattr(config, "max_position_embeddings", 4096))
    return GGUFExport(out, architecture, type_name, tensors, out.stat().st_size, quantized_by,
                      written, note)
