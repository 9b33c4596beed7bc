"""llama.cpp itself, through llama-cpp-python's low-level API: what checks an exported file.

`LlamaCppModel` tokenises, renders the chat template from the file's own metadata, generates
greedily and scores teacher-forced log-probabilities, for decoder-only and encoder-decoder
(T5: `llama_encode`, then the decoder from the decoder start token) files alike; the
high-level `llama_cpp.Llama` class drives `llama_decode` only, so it cannot run T5.
`LlamaCppBackend` puts it behind the regression suite's Backend protocol, so a GGUF file is
scored by the same runner, checks and NLL as its checkpoint. `quantize_file` is llama.cpp's own
`llama_model_quantize` (K-quants, which gguf-py cannot write).

llama-cpp-python is optional: everything here raises LlamaCppMissing, with the install line,
when it is not importable.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convdistill.errors import BadInput, Unavailable

Message = dict[str, str]
INSTALL_HINT = "pip install llama-cpp-python (builds llama.cpp from source: about ten minutes)"
_QUANT_FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


class LlamaCppMissing(Unavailable):
    """llama-cpp-python is not installed."""


def require_llama_cpp(what: str) -> Any:
    """The llama_cpp module, with llama.cpp's own logging quietened to errors."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppMissing(f"{what} needs llama-cpp-python, which is not installed: "
                              f"{INSTALL_HINT}") from None
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def quantize_file(source: Path, target: Path, type_name: str, threads: int | None = None) -> str:
    """Quantise the GGUF file `source` into `target` with llama.cpp; what did it, for the record."""
    llama_cpp = require_llama_cpp(f"--type {type_name}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _QUANT_FTYPES[type_name])
    params.nthread = threads or 0  # 0: llama.cpp's choice (the hardware threads)
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(),
                                           ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize failed on {source} (status {status})")
    return f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, llama_model_quantize)"


class LlamaCppModel:
    """One GGUF file loaded in llama.cpp, one sequence at a time (as a local chat runs)."""

    def __init__(self, path: str | Path, n_ctx: int | None = None, threads: int = 2):
        llama_cpp = require_llama_cpp("running a GGUF file")
        self._lib = llama_cpp
        self.path = Path(path)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(self.path).encode(), llama_cpp.llama_model_default_params())
        if not self.model:
            raise BadInput(f"{self.path}: llama.cpp could not load this file")
        # the model's own context (T5 files state 4096), at most 4096: enough for the suites
        n_ctx = n_ctx or min(llama_cpp.llama_model_n_ctx_train(self.model), 4096)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_threads = params.n_threads_batch = threads
        # attention as llama-cpp-python's Llama runs it (flash attention off; llama.cpp's own
        # default is "auto", on for CPUs): its rounding differs, enough to change a greedy reply
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise Unavailable(f"{self.path}: llama.cpp could not create a context")
        self.n_ctx = n_ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.is_encoder_decoder = bool(llama_cpp.llama_model_has_encoder(self.model))
        start = llama_cpp.llama_model_decoder_start_token(self.model)
        self.decoder_start = start if start >= 0 else llama_cpp.llama_vocab_bos(self.vocab)
        template = llama_cpp.llama_model_chat_template(self.model, None)
        self.chat_template = template.decode() if template else None
        self.eos_token = self.piece(llama_cpp.llama_vocab_eos(self.vocab))

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._lib.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- text --------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text for the reply to `messages`, from the file's own chat template,
        rendered as llama-cpp-python renders it (Jinja2, sandboxed)."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if self.chat_template is None:
            raise BadInput(f"{self.path}: no chat template in the file")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=True, eos_token=self.eos_token)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenisation, special tokens (<|im_start|>, ...) parsed as such."""
        raw = text.encode()
        room = len(raw) + 8
        ids = (self._lib.llama_token * room)()
        count = self._lib.llama_tokenize(self.vocab, raw, len(raw), ids, room, False, True)
        if count < 0:
            raise RuntimeError(f"llama_tokenize needed {-count} tokens, had room for {room}")
        return list(ids[:count])

    def piece(self, token: int) -> str:
        return self.detokenize_bytes([token]).decode(errors="replace")

    def detokenize_bytes(self, tokens: Sequence[int]) -> bytes:
        out = bytearray()
        buffer = ctypes.create_string_buffer(256)
        for token in tokens:
            n = self._lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
            out += buffer.raw[:n]
        return bytes(out)

    def text(self, tokens: Sequence[int]) -> str:
        """A reply's text as the suite sees it (stripped, like LocalBackend's)."""
        return self.detokenize_bytes(tokens).decode(errors="replace").strip()

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    # -- compute -----------------------------------------------------------------------------
    def _run(self, tokens: Sequence[int], start: int, encode: bool = False) -> np.ndarray:
        """Feed `tokens` at positions start.. (the encoder when `encode`); the logits of every
        fed position as a (len, vocab) array (none for the encoder)."""
        lib = self._lib
        batch = lib.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True  # the encoder outputs every position's state too
            status = (lib.llama_encode if encode else lib.llama_decode)(self.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama.cpp {'encode' if encode else 'decode'} failed "
                                   f"(status {status}) on {len(tokens)} tokens")
            if encode:
                return np.empty((0, self.n_vocab), dtype=np.float32)
            rows = [np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                    for i in range(len(tokens))]
            return np.array(rows, dtype=np.float32)
        finally:
            lib.llama_batch_free(batch)

    def _start(self, prompt: Sequence[int]) -> tuple[np.ndarray, int]:
        """A fresh sequence: the logits that predict the first reply token, and the next
        position of the token stream."""
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.ctx), True)
        if self.is_encoder_decoder:
            self._run(prompt, 0, encode=True)
            return self._run([self.decoder_start], 0)[-1], 1
        return self._run(prompt, 0)[-1], len(prompt)

    def reply_logprobs(self, prompt: Sequence[int], reply: Sequence[int]) -> np.ndarray:
        """Teacher-forced log-probabilities of every `reply` token after `prompt`."""
        first, position = self._start(prompt)
        logits = np.vstack([first[None, :], self._run(reply[:-1], position)]) if len(reply) > 1 \
            else first[None, :]
        logits = logits.astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        return logits[np.arange(len(reply)), list(reply)] - log_z

    def greedy(self, prompt: Sequence[int], max_tokens: int) -> list[int]:
        """Greedy reply tokens, up to and without the end-of-generation token."""
        logits, position = self._start(prompt)
        out: list[int] = []
        while len(out) < max_tokens:
            token = int(np.argmax(logits))
            if self.is_end(token):
                break
            out.append(token)
            logits = self._run([token], position)[-1]
            position += 1
        return out


class LlamaCppBackend:
    """A GGUF file behind the regression suite's Backend protocol (eval.backends): prompts from
    the file's chat template, tokenised by llama.cpp, greedy replies, reference NLL."""

    def __init__(self, path: str | Path, name: str | None = None, max_tokens: int = 128,
                 threads: int = 2, n_ctx: int | None = None):
        self.model = LlamaCppModel(path, n_ctx=n_ctx, threads=threads)
        self.name = name or Path(path).stem
        self.max_tokens = max_tokens

    def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
        ids = self.model.tokenize(self.model.render(conversation))
        room = self.model.n_ctx - self.max_tokens
        return ids[-room:] if len(ids) > room else ids  # the latest turns, as LocalBackend keeps

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        return [self.model.text(self.model.greedy(self.prompt_ids(c), self.max_tokens))
                for c in conversations]

    def reference_nll(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[float]:
        """Mean NLL per token of each reference reply and the end-of-turn token, as
        LocalBackend counts it."""
        out = []
        for history, reference in pairs:
            target = self.model.tokenize(reference + self.model.eos_token)
            out.append(float(-self.model.reply_logprobs(self.prompt_ids(history), target).mean()))
        return out
