"""Where replies come from: a local checkpoint (batched) or any OpenAI-compatible endpoint.

Both take a list of conversations (each ending with a user turn) and give one reply each, so
the runner, and therefore the scores, cannot tell a student from a teacher. Decoding is greedy
by default: a regression suite must give the same replies for the same model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

Message = dict[str, str]
_EMPTY = "\x00"  # stands for an empty reply: TeacherClient retries on "", which is a valid answer here


class Backend(Protocol):
    name: str

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]: ...

    def reference_nll(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[float] | None: ...


# Padded tokens (rows times the longest) per forward pass of reference scoring.
NLL_BATCH_TOKENS = 4096


class LocalBackend:
    """A checkpoint folder of either family, generating `batch_size` rows at a time with the
    server's batched loop (finished rows leave the batch and the KV cache)."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        batch_size: int = 16,
        max_tokens: int = 128,
        temperature: float = 0.0,
        seed: int = 0,
        precision: str = "auto",
    ):
        from convdistill.serve.chat_model import ChatModel

        self.chat = ChatModel(path, name, precision)
        self.name = self.chat.name
        self.batch_size = max(1, batch_size)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed

    def _prompt(self, conversation: Sequence[Message]) -> list[int]:
        ids = self.chat.prompt_ids(list(conversation))
        limit = self.chat.context_length
        if limit is not None and len(ids) + self.max_tokens > limit:
            ids = ids[-(limit - self.max_tokens) :]  # keep the latest turns, like the seq2seq format
        return ids

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        from convdistill.serve.events import Delta, Event, Failed, Job
        from convdistill.serve.sampling import SamplingParams

        prompts = [self._prompt(c) for c in conversations]
        parts: list[list[str]] = [[] for _ in prompts]
        errors: list[str] = []

        def emit(event: Event) -> None:
            if isinstance(event, Delta):
                parts[event.index].append(event.text)
            elif isinstance(event, Failed):
                errors.append(event.message)

        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            self.chat.generate([Job(prompts[i], params, self.seed + i, i, emit) for i in chunk])
        if errors:
            raise RuntimeError(f"{self.name}: generation failed: {errors[0]}")
        return ["".join(p).strip() for p in parts]

    def reference_nll(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[float]:
        """Mean negative log-likelihood per token of each reference reply (its end-of-turn token
        included, as the trainers count it), teacher-forced after its history."""
        import torch

        from convdistill.models import seq2seq_format
        from convdistill.padding import batches_by_length

        tokenizer = self.chat.tokenizer
        sources = [self._prompt(history) for history, _ in pairs]
        targets = [tokenizer(seq2seq_format.target_text(ref, tokenizer), add_special_tokens=False)["input_ids"]
                   for _, ref in pairs]
        out: list[float] = [0.0] * len(pairs)
        # Rows of similar length share a forward pass: one long history among short ones would
        # otherwise pad them all to its length (most of the compute, measured on the experiment's
        # held-out first turns).
        lengths = [len(s) + len(t) for s, t in zip(sources, targets, strict=True)]
        for batch in batches_by_length(lengths, NLL_BATCH_TOKENS, self.batch_size):
            with torch.inference_mode():
                values = self._nll_batch([sources[i] for i in batch], [targets[i] for i in batch])
            for i, value in zip(batch, values, strict=True):
                out[i] = value
        return out

    def _nll_batch(self, sources: list[list[int]], targets: list[list[int]]) -> list[float]:
        from convdistill.precision import autocast

        with autocast(self.chat.precision):
            return self._nll_batch_in_precision(sources, targets)

    def _nll_batch_in_precision(self, sources: list[list[int]], targets: list[list[int]]) -> list[float]:
        import torch

        from convdistill.padding import pad_right, pad_with_mask

        model, pad = self.chat.model, self.chat.pad_id
        if self.chat.is_encoder_decoder:
            ids, mask = pad_with_mask(sources, pad)
            labels = pad_right(targets, -100)
            start = torch.full((len(targets), 1), self.chat.decoder_start, dtype=torch.long)
            decoder_in = torch.cat([start, labels[:, :-1].clamp(min=0)], dim=1)
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_in).logits
        else:
            logits, labels = _causal_reply_logits(model, sources, targets, pad, self.chat.takes_logits_to_keep)
        losses = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )
        counts = (labels != -100).sum(dim=1).clamp(min=1)
        return (losses.sum(dim=1) / counts).tolist()


def _causal_reply_logits(
    model: Any, sources: list[list[int]], targets: list[list[int]], pad: int, can_keep: bool
) -> tuple[Any, Any]:
    """Logits at the reply positions only, with their labels (-100 on padding).

    Rows are left-padded so every reply ends at the last position; the model is then asked for
    the logits of the last (longest reply + 1) positions only (`logits_to_keep`). With a history
    of hundreds of tokens and a 49k vocabulary, the output layer over every history position
    was most of the work (the experiment's forced-choice scoring: about 60x more rows than
    needed). Position ids follow the mask, so a left-padded row is read as if it stood alone
    (rotary models would not need them; absolute-position ones do).
    """
    import torch

    rows = [s + t for s, t in zip(sources, targets, strict=True)]
    longest = max(map(len, targets))
    width = max(*map(len, rows), longest + 1)  # room for the slice below even with no history
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    for i, target in enumerate(targets):
        if target:
            labels[i, longest - len(target) :] = torch.tensor(target, dtype=torch.long)
    # a model class without `logits_to_keep` gives the whole sequence's logits; the tail is cut below
    keep = {"logits_to_keep": longest + 1} if can_keep else {}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, **keep).logits
    # the logit at position p predicts the token at p + 1: the last one predicts nothing
    return logits[:, -(longest + 1) : -1], labels


class EndpointBackend:
    """Any OpenAI-compatible chat endpoint, through the teacher's client (retries, optional
    SQLite cache, bounded concurrency)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_tokens: int = 128,
        temperature: float = 0.0,
        seed: int = 0,
        concurrency: int = 8,
        cache_path: str | Path | None = None,
        timeout_s: float = 300.0,
    ):
        from convdistill.teacher.client import EndpointSettings

        self.settings = EndpointSettings(
            base_url=base_url, model=model, api_key=api_key, concurrency=concurrency, timeout_s=timeout_s, max_retries=3
        )
        self.name = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.cache_path = cache_path

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        from convdistill.teacher.client import ChatRequest

        requests = [
            ChatRequest(
                tuple((m["role"], m["content"]) for m in conversation),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=self.seed,
                purpose="eval",
            )
            for conversation in conversations
        ]
        answers = complete_all(self.settings, requests, self.cache_path, lambda text: text.strip() or _EMPTY)
        return ["" if a == _EMPTY else (a or "") for a in answers]

    def reference_nll(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> None:
        return None  # chat completions give no log-likelihood of a given text


def complete_all(
    settings: object, requests: list, cache_path: str | Path | None, validate: object, tolerate: bool = False
) -> list[str | None]:
    """Answers to `requests` in order, sent concurrently through one TeacherClient. With
    `tolerate`, a request that gets no usable answer after its retries gives None (a judge
    that rambles on one item must not sink the run); otherwise it raises."""
    from convdistill.teacher.client import RequestFailed, TeacherClient
    from convdistill.teacher.request_cache import RequestCache

    async def ask(client: TeacherClient, request: object) -> str | None:
        try:
            return (await client.complete(request, validate)).text  # type: ignore[arg-type]
        except RequestFailed:
            if tolerate:
                return None
            raise

    async def run() -> list[str | None]:
        cache = RequestCache(cache_path) if cache_path else None
        try:
            async with TeacherClient(settings, cache) as client:  # type: ignore[arg-type]
                return list(await asyncio.gather(*(ask(client, r) for r in requests)))
        finally:
            if cache is not None:
                cache.close()

    return asyncio.run(run())


def open_backend(
    model: str,
    endpoint: str | None = None,
    *,
    api_key: str | None = None,
    batch_size: int = 16,
    max_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    cache_path: str | Path | None = None,
    references: Sequence[tuple[str, str]] = (),
    precision: str = "auto",
) -> Backend:
    """`model` at `endpoint` when one is given; else a control model (`control:constant`, ...;
    `references` is the shuffled control's pool), a checkpoint folder or an embedded model name."""
    if endpoint:
        return EndpointBackend(
            endpoint, model, api_key, max_tokens=max_tokens, temperature=temperature, seed=seed, cache_path=cache_path
        )
    from convdistill.eval.controls import ControlBackend, is_control

    if is_control(model):
        return ControlBackend(model, references)
    from convdistill.models import resolve_model

    folder = resolve_model(model)
    name = model if not Path(model).expanduser().is_dir() else Path(model).name
    return LocalBackend(folder, name, batch_size, max_tokens, temperature, seed, precision)
