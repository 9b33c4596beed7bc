"""`convdistill export gguf`: students of both families and a pruned SmolLM2 written as GGUF,
read back with the gguf package, refused where llama.cpp cannot run them, and checked against
the checkpoint in llama.cpp itself (llama-cpp-python; those tests skip where it is missing,
and .ci/run installs it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from convdistill.eval.backends import LocalBackend
from convdistill.eval.runner import turn_history
from convdistill.eval.suite import load_suite
from convdistill.export import ExportError, export_gguf

ROOT = Path(__file__).resolve().parents[1]
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install llama-cpp-python; "
    ".ci/run installs a cached build), so llama.cpp cannot run the exported files here")
# Per-token log-probability bound, llama.cpp vs transformers: |delta| <= absolute + relative *
# |log p| (a token the checkpoint gives log p = -27 may differ by 0.09 in f32, a likely one by
# about 0.01): llama.cpp's CPU kernels round differently, f16 stores every matrix at half
# precision. Measured on the prompts below with the pruned SmolLM2: f32 at most 0.13 (0.022 on
# tokens of p >= 0.01), f16 0.22 (0.015); the tiny random students 0.002.
LOGPROB_BOUND = {"f32": (0.03, 0.008), "f16": (0.05, 0.012)}
REPLY_TOKENS = 16


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random students of both families, a SmolLM2 pruned to two of its layers, and a
    T5Gemma student built from a tiny Llama teacher."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from convdistill.models import SMOLLM2_TEMPLATE, init_student, prepare_tokenizer
    from convdistill.models.from_teacher import init_from_teacher

    root = tmp_path_factory.mktemp("students")
    init_student("llama", "tiny", root / "llama-tiny")
    init_student("t5", "tiny", root / "t5-tiny")
    init_from_teacher("smollm2-135m-instruct", "llama", root / "smollm2-pruned", keep=[0, 29],
                      sample_size=1)
    tokenizer = AutoTokenizer.from_pretrained(prepare_tokenizer())
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, max_position_embeddings=512)
    teacher = root / "tiny-teacher"
    LlamaForCausalLM(config).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    init_from_teacher(teacher, "t5", root / "t5gemma", keep=[1], sample_size=1)
    return {p.name: p for p in root.iterdir()}


def read_gguf(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """(metadata, tensors by name) of a GGUF file, as the gguf package reads it."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {}
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            fields[key] = field.contents()
    return fields, {t.name: t for t in reader.tensors}


def dequantized(tensor: object) -> np.ndarray:
    import gguf

    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # type: ignore[attr-defined]
    return values.reshape(tuple(reversed([int(n) for n in tensor.shape])))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_llama_student_reads_back(students: dict[str, Path], tmp_path: Path) -> None:
    import gguf
    from transformers import AutoModelForCausalLM

    done = export_gguf(students["llama-tiny"], tmp_path / "llama.gguf", "f32")
    meta, tensors = read_gguf(done.path)
    model = AutoModelForCausalLM.from_pretrained(students["llama-tiny"])
    c = model.config
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.block_count"], meta["llama.embedding_length"], meta["llama.feed_forward_length"],
            meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"],
            meta["llama.context_length"]) == (c.num_hidden_layers, c.hidden_size, c.intermediate_size,
                                              c.num_attention_heads, c.num_key_value_heads,
                                              c.max_position_embeddings)
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
    # tied head: llama.cpp reads token_embd, so no output tensor; 4 layers x 9 + embd + norm
    assert "output.weight" not in tensors and len(tensors) == 4 * 9 + 2
    assert tensors["token_embd.weight"].shape.tolist() == [c.hidden_size, c.vocab_size]
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    # the query rows are reordered for llama.cpp's rotary layout, the values are untouched
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = dequantized(tensors["blk.0.attn_q.weight"])
    assert not np.array_equal(stored, q)
    assert np.array_equal(np.sort(stored, axis=0), np.sort(q, axis=0))
    assert np.array_equal(dequantized(tensors["blk.0.attn_v.weight"]),
                          model.model.layers[0].self_attn.v_proj.weight.detach().numpy())
    # tokenizer and chat template
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert len(meta["tokenizer.ggml.tokens"]) == c.vocab_size
    assert meta["tokenizer.ggml.tokens"][2] == "<|im_end|>" and meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.padding_token_id"] == 0
    assert "endgeneration" not in meta["tokenizer.chat_template"] and "<|im_start|>" in meta["tokenizer.chat_template"]
    modelfile = done.modelfile.read_text()  # type: ignore[union-attr]
    assert "FROM ./llama.gguf\n" in modelfile and "PARAMETER stop <|im_end|>\n" in modelfile
    assert "SYSTEM" not in modelfile  # students have no default system prompt


@pytest.mark.slow
def test_t5_student_reads_back_quantised(students: dict[str, Path], tmp_path: Path) -> None:
    import gguf
    from transformers import AutoModelForSeq2SeqLM

    result = run_cli("export", "gguf", students["t5-tiny"], "-o", tmp_path / "t5.gguf", "--type", "q8_0")
    assert result.returncode == 0, result.stderr
    assert "t5, q8_0, 52 tensors" in result.stdout
    assert "no Modelfile: Ollama does not run encoder-decoder" in result.stderr
    meta, tensors = read_gguf(tmp_path / "t5.gguf")
    model = AutoModelForSeq2SeqLM.from_pretrained(students["t5-tiny"])
    c = model.config
    assert meta["general.architecture"] == "t5"
    assert (meta["t5.block_count"], meta["t5.decoder_block_count"], meta["t5.embedding_length"],
            meta["t5.attention.key_length"], meta["t5.attention.relative_buckets_count"],
            meta["t5.decoder_start_token_id"]) == (c.num_layers, c.num_decoder_layers, c.d_model, c.d_kv,
                                                   c.relative_attention_num_buckets, c.decoder_start_token_id)
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert tensors["enc.blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["enc.blk.0.attn_rel_b.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "enc.blk.1.attn_rel_b.weight" not in tensors  # layer 0's table serves every layer
    assert tensors["dec.blk.1.cross_attn_k.weight"].shape.tolist() == [c.d_model, c.num_heads * c.d_kv]
    # the tied head's d_model^-0.5 is folded into an output matrix of its own
    shared = model.shared.weight.detach().numpy()
    output = dequantized(tensors["output.weight"])
    assert np.abs(output - shared * c.d_model ** -0.5).max() < 0.01 * np.abs(shared).max() * c.d_model ** -0.5
    assert not (tmp_path / "t5.Modelfile").exists()


@pytest.mark.slow
def test_smollm2_pruned_keeps_its_default_system_prompt(students: dict[str, Path], tmp_path: Path) -> None:
    done = export_gguf(students["smollm2-pruned"], tmp_path / "pruned.gguf", "q8_0")
    meta, _ = read_gguf(done.path)
    assert meta["llama.block_count"] == 2 and meta["llama.attention.head_count"] == 9
    text = done.modelfile.read_text()  # type: ignore[union-attr]
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert "PARAMETER num_ctx 8192" in text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".gguf", ".Modelfile", ".partial")
                  or p.name.startswith("."))


@pytest.mark.slow
def test_bad_input_one_line_each_and_no_partial_file(students: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path / "out"
    out.mkdir()
    # not a student this export knows
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(gpt2)
    # a tokenizer llama.cpp cannot represent: the student's own, with a lower-casing normaliser
    lowercase = tmp_path / "lowercase"
    lowercase.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (lowercase / name).write_bytes((students["llama-tiny"] / name).read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(students["llama-tiny"])
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["normalizer"] = {"type": "Lowercase"}
    tokenizer.save_pretrained(lowercase)
    (lowercase / "tokenizer.json").write_text(json.dumps(spec))
    cases = [
        ([students["t5gemma"], "-o", out / "a.gguf"], "T5Gemma architecture"),
        ([gpt2, "-o", out / "b.gguf"], "a 'gpt2' model, not a student this export knows"),
        ([lowercase, "-o", out / "c.gguf"], "normaliser 'Lowercase': llama.cpp's BPE has none"),
        ([tmp_path / "missing", "-o", out / "d.gguf"], "no such folder and not an embedded model"),
        ([students["llama-tiny"], "-o", out], "is a folder; give the path of the .gguf file"),
        ([students["llama-tiny"], "-o", tmp_path / "no" / "e.gguf"], "does not exist"),
    ]
    for args, message in cases:
        result = run_cli("export", "gguf", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert _leftovers(out) == []
    with pytest.raises(ExportError, match="choose one of f32, f16, q8_0, q4_k_m"):
        export_gguf(students["llama-tiny"], out / "f.gguf", "q2_k")


# -- parity in llama.cpp -----------------------------------------------------------------------
def parity_conversations() -> list[tuple[list[dict[str, str]], str]]:
    """The fixed multi-turn prompts, with the reference reply to each: every turn of the first
    three cases of the shipped context-memory suite but the first, after its gold history
    (6 prompts of 2 to 4 user turns)."""
    suite = load_suite(ROOT / "eval" / "suites" / "context_memory.jsonl")
    return [(turn_history(case, k, [None] * len(case.turns), "gold"), case.turns[k].reference or "")
            for case in suite.cases[:3] for k in range(1, len(case.turns))]


def torch_logprobs(chat: object, prompt: list[int], reply: list[int]) -> np.ndarray:
    """Our checkpoint's log-probabilities over the whole vocabulary at every `reply` position,
    teacher-forced: (len(reply), vocab)."""
    model = chat.model  # type: ignore[attr-defined]
    with torch.inference_mode():
        if chat.is_encoder_decoder:  # type: ignore[attr-defined]
            decoder = torch.tensor([[chat.decoder_start, *reply[:-1]]])  # type: ignore[attr-defined]
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits[0]
        else:
            logits = model(input_ids=torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1]
        return torch.log_softmax(logits.double(), -1).numpy()


@pytest.mark.slow
@needs_llama_cpp
@pytest.mark.parametrize(("student", "kind"), [("llama-tiny", "f32"), ("t5-tiny", "f32"),
                                                ("smollm2-pruned", "f32"), ("smollm2-pruned", "f16")])
def test_llama_cpp_replies_equal_the_checkpoints(students: dict[str, Path], tmp_path: Path,
                                                  student: str, kind: str) -> None:
    """Greedy replies equal our runner's (LocalBackend, the suite's), except where llama.cpp's
    choice was within the log-probability bound of the checkpoint's best token: a near-tie
    that float rounding decides. Such divergences are counted and may not be most replies."""
    from convdistill.export.llamacpp import LlamaCppBackend

    done = export_gguf(students[student], tmp_path / f"{student}.gguf", kind, modelfile=False)
    ours = LocalBackend(students[student], batch_size=1, max_tokens=REPLY_TOKENS)
    theirs = LlamaCppBackend(done.path, max_tokens=REPLY_TOKENS)
    absolute, relative = LOGPROB_BOUND[kind]
    worst, worst_likely, excess, near_ties = 0.0, 0.0, -1.0, 0
    for conversation, reference in parity_conversations():
        prompt = ours.chat.prompt_ids(conversation)
        # llama.cpp renders the file's template and tokenises it itself: the same ids
        assert theirs.prompt_ids(conversation) == prompt
        # log-probabilities of the reference reply (the suite's NLL) and of llama.cpp's own
        target = theirs.model.tokenize(reference + theirs.model.eos_token)
        reply = theirs.model.greedy(prompt, REPLY_TOKENS)
        for tokens in (target, reply) if reply else (target,):
            checkpoint = torch_logprobs(ours.chat, prompt, tokens)
            chosen = checkpoint[np.arange(len(tokens)), tokens]
            delta = np.abs(theirs.model.reply_logprobs(prompt, tokens) - chosen)
            worst = max(worst, float(delta.max()))
            worst_likely = max(worst_likely, float(delta[chosen > np.log(0.01)].max(initial=0.0)))
            excess = max(excess, float((delta - absolute - relative * np.abs(chosen)).max()))
        if theirs.model.text(reply) != ours.generate([conversation])[0]:
            # where the two first part, llama.cpp's token was (nearly) the checkpoint's best too
            gap = checkpoint.max(axis=1) - chosen
            first = int(np.argmax(gap > 0))
            assert gap[first] <= absolute, (conversation, first, gap[first])
            near_ties += 1
    print(f"{student} {kind}: max |logprob delta| {worst:.4f} (tokens of p >= 0.01: "
          f"{worst_likely:.4f}), over the bound by {excess:.4f}; near-tie divergences {near_ties}/6")
    assert excess <= 0, (worst, excess)
    assert near_ties <= 2, near_ties
    theirs.model.close()


@pytest.mark.slow
@needs_llama_cpp
def test_llama_cpp_python_chat_and_k_quant(students: dict[str, Path], tmp_path: Path) -> None:
    """llama-cpp-python's own chat API (what LangChain's ChatLlamaCpp calls) reads the template
    and stop token from the file; q4_k_m is written by llama.cpp's quantiser."""
    import gguf
    import llama_cpp

    from convdistill.export.llamacpp import LlamaCppBackend

    done = export_gguf(students["smollm2-pruned"], tmp_path / "pruned.gguf", "q4_k_m", threads=2)
    assert done.quantized_by.startswith("llama.cpp")
    meta, _ = read_gguf(done.path)
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    conversation = parity_conversations()[0][0]
    llm = llama_cpp.Llama(str(done.path), n_ctx=2048, n_threads=2, verbose=False)
    answer = llm.create_chat_completion(conversation, temperature=0.0, max_tokens=REPLY_TOKENS)
    backend = LlamaCppBackend(done.path, max_tokens=REPLY_TOKENS)
    assert answer["choices"][0]["message"]["content"].strip() == backend.generate([conversation])[0]
