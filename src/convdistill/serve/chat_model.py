"""A loaded checkpoint that can prompt itself and run one batch of jobs to completion.

Decoder-only and encoder-decoder models share one loop: sample a token per live row, release
text, drop finished rows from the batch (and from the KV cache, so they cost nothing more),
run one more step. Each row keeps its own sampling settings, seed and stop strings.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from jinja2 import TemplateError

from convdistill.errors import BadInput, BadRecipe
from convdistill.models import seq2seq_format
from convdistill.padding import pad_left, pad_with_mask
from convdistill.precision import announce, autocast, resolve_precision
from convdistill.serve.events import Delta, Failed, Finished, Job, Logprobs, TokenLogprob
from convdistill.serve.sampling import next_tokens, row_generator
from convdistill.serve.text_stream import TextStream

Message = dict[str, str]
# Prompt positions projected onto the vocabulary at once: 64 x 49k floats (12 MB) stay in the
# CPU's cache through logsumexp, gather and topk; chunks of 1024 (200 MB) scored 1.5x slower.
SCORE_CHUNK = 64


@dataclass
class _Row:
    job: Job
    stream: TextStream
    generator: torch.Generator
    count: int = 0


class ChatModel:
    def __init__(self, path: str | Path, name: str | None = None, precision: str = "auto"):
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        self.path = Path(path)
        self.name = name or self.path.name
        config = AutoConfig.from_pretrained(self.path)
        self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if self.is_encoder_decoder else AutoModelForCausalLM
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        # A fast tokenizer is one Rust object: encoding from request threads while the worker
        # decodes can fail with "Already borrowed". So the worker decodes with its own copy,
        # and request threads encode one at a time.
        self._decoder = AutoTokenizer.from_pretrained(self.path)
        self._encode_lock = threading.Lock()
        if not self.tokenizer.chat_template:
            raise BadRecipe(f"{self.path}: the tokenizer has no chat template; cannot serve chat")
        self.model = auto.from_pretrained(self.path, dtype=torch.float32).eval()
        # fp32 weights; bf16 autocast around the forward passes where the hardware has bf16 units
        self.precision = resolve_precision(precision)
        announce(self.precision, "generation and scoring")
        self.pad_id = _first_int(config.pad_token_id, self.tokenizer.pad_token_id, 0)
        eos = [*_as_list(self.model.generation_config.eos_token_id), self.tokenizer.eos_token_id]
        self.eos_ids = {i for i in eos if i is not None}
        # Encoder-decoder: relative positions, no hard limit (the server's limits apply).
        self.context_length: int | None = (
            None if self.is_encoder_decoder else getattr(config, "max_position_embeddings", None)
        )
        if self.is_encoder_decoder:
            self.decoder_start = _first_int(config.decoder_start_token_id, self.pad_id)
        forward = inspect.signature(self.model.forward).parameters
        # whether forward can compute the output layer for the last positions only
        self.takes_logits_to_keep = "logits_to_keep" in forward
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns, and goes in
        # 5.40); older releases know only the old name
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        # run a prefix that several prompts of a batch share once (see `shared_prefixes`)
        self.share_prefixes = not self.is_encoder_decoder
        # tokens sampled since start (written by the worker only): /health shows it, so that a
        # test or a benchmark can tell a server that still generates from an idle one
        self.generated_tokens = 0

    # -- prompts ---------------------------------------------------------------------------
    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The prompt for the reply to `messages`; ValueError if the chat template refuses them
        (some templates insist on alternating roles, for instance)."""
        try:
            with self._encode_lock:
                if self.is_encoder_decoder:
                    return seq2seq_format.encode_source(messages, self.tokenizer)
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
                return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        except TemplateError as exc:
            raise BadInput(f"the model's chat template refused these messages: {exc}") from None

    def encode_text(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """A raw prompt (completions, /tokenize), with the tokenizer's special tokens by default
        as vLLM does."""
        with self._encode_lock:
            return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        with self._encode_lock:
            # one sequence in, one string out (the stubs allow a list for a batch)
            return cast(str, self.tokenizer.decode(ids))

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token alone as text (what OpenAI's `logprobs.tokens` lists)."""
        with self._encode_lock:
            return self.tokenizer.batch_decode([[i] for i in ids])

    @property
    def vocab_rows(self) -> int:
        """How many token ids the model has embeddings for (ids at or past it are refused)."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    def tokenizer_info(self) -> dict[str, Any]:
        """What vLLM's /tokenizer_info reports, as far as a client needs it (lm-evaluation-
        harness's remote tokenizer reads the special tokens and the chat template)."""
        t = self.tokenizer
        return {
            "tokenizer_class": type(t).__name__,
            "eos_token": t.eos_token,
            "bos_token": t.bos_token,
            "pad_token": t.pad_token,
            "unk_token": t.unk_token,
            "chat_template": t.chat_template,
            "model_max_length": self.context_length,
            "vocab_size": len(t),
        }

    # -- generation ------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, jobs: list[Job]) -> None:
        """Run `jobs` as one batch until every row has finished, emitting events as it goes."""
        with autocast(self.precision):
            self._generate(jobs)

    def _generate(self, jobs: list[Job]) -> None:
        rows = [
            _Row(j, TextStream(self._decoder, j.params.stop), row_generator(j.seed)) for j in jobs
        ]
        logits, state = self._prefill(jobs)
        live = list(range(len(rows)))  # batch position -> row
        # max_tokens 0 (a completions request that only scores its prompt): done after the prefill
        for job in jobs:
            if job.params.max_tokens == 0 and not job.cancelled:
                job.emit(Finished(job.index, "length", 0))
        keep = [p for p, job in enumerate(jobs) if job.params.max_tokens > 0]
        if not keep:
            return
        if len(keep) < len(live):
            state = self._select(state, torch.tensor(keep))
            logits, live = logits[keep], keep
        while live:
            tokens = next_tokens(
                logits, [rows[r].job.params for r in live], [rows[r].generator for r in live]
            )
            scored = self._token_logprobs(logits, [rows[r].job for r in live], tokens)
            keep = []
            for position, (r, token) in enumerate(zip(live, tokens, strict=True)):
                if self._advance(rows[r], token, scored.get(position)):
                    keep.append(position)
            if not keep:
                break
            if len(keep) < len(live):
                state = self._select(state, torch.tensor(keep))
            live = [live[p] for p in keep]
            logits, state = self._step(torch.tensor([[tokens[p]] for p in keep]), state)

    def _token_logprobs(
        self, logits: torch.Tensor, jobs: list[Job], tokens: list[int]
    ) -> dict[int, TokenLogprob]:
        """Batch position -> the sampled token's log-probability, for the rows that asked."""
        wanted = [p for p, job in enumerate(jobs) if job.logprobs is not None]
        if not wanted:
            return {}
        entries = logprob_entries(
            logits[wanted], [tokens[p] for p in wanted], max(jobs[p].logprobs or 0 for p in wanted)
        )
        return {
            p: _trimmed(entry, jobs[p].logprobs or 0)
            for p, entry in zip(wanted, entries, strict=True)
        }

    def _advance(self, row: _Row, token: int, logprob: TokenLogprob | None = None) -> bool:
        """Take a row's new token; True while the row goes on."""
        job = row.job
        if job.cancelled:  # the client has gone: the row leaves the batch at this step
            return False
        if logprob is not None:
            job.emit(Logprobs(job.index, (logprob,)))
        row.count += 1
        self.generated_tokens += 1
        reason = None
        if token in self.eos_ids:
            reason = "stop"
        else:
            row.stream.add(token)
            if row.stream.stopped:
                reason = "stop"
            elif row.count >= job.params.max_tokens:
                reason = "length"
        text = row.stream.delta(final=reason is not None)
        if text:
            job.emit(Delta(job.index, text))
        if reason is not None:
            job.emit(Finished(job.index, reason, row.count))
            return False
        return True

    def fail(self, jobs: list[Job], message: str) -> None:
        for job in jobs:
            job.emit(Failed(job.index, message))

    # -- model plumbing --------------------------------------------------------------------
    def _prefill(self, jobs: list[Job]) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = [job.prompt_ids for job in jobs]
        if self.is_encoder_decoder:  # the encoder sees the whole input: pad on the right
            ids, mask = pad_with_mask(prompts, self.pad_id)
            encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
            start = torch.full((len(prompts), 1), self.decoder_start, dtype=torch.long)
            state = {"encoder": encoded.last_hidden_state, "mask": mask, "cache": None}
            return self._step(start, state)
        plan = shared_prefixes(prompts) if self.share_prefixes else None
        if plan is not None:
            return self._prefill_shared(jobs, plan)
        # the next token follows the last prompt token: pad on the left
        ids, mask = pad_left(prompts, self.pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        scored = _scored_rows(jobs)
        out, logits_at = self._forward(ids, mask, positions, None, project=bool(scored))
        if scored:
            width, wanted = ids.shape[1], _Positions(logits_at)
            # prompt token i + 1 is predicted at position i
            parts = {r: [(0, wanted.add(r, range(width - len(prompts[r]), width - 1), prompts[r][1:]))]
                     for r in scored}
            self._emit_prompt_logprobs(jobs, [wanted], parts)
        state = {"cache": _cache_of(out), "mask": mask, "positions": positions[:, -1:]}
        return logits_at((slice(None), -1)), state

    def _prefill_shared(self, jobs: list[Job], plan: PrefixPlan) -> tuple[torch.Tensor, dict[str, Any]]:
        """The prefill of a batch whose prompts share prefixes (the choices of one question, a
        long common system prompt): each group's prefix runs once, its KV cache is copied to the
        group's rows, and only their own suffixes run after it. Prompt log-probabilities of the
        prefix positions are computed once per group too."""
        prompts = [job.prompt_ids for job in jobs]
        prefixes = [prompts[members[0]][:length] for members, length in zip(plan.groups, plan.lengths, strict=True)]
        scored = _scored_rows(jobs)
        ids_p, mask_p = pad_left(prefixes, self.pad_id)
        positions_p = (mask_p.cumsum(-1) - 1).clamp(min=0)
        out_p, at_p = self._forward(ids_p, mask_p, positions_p, None, project=bool(scored))
        cache = _cache_of(out_p)
        group_of = torch.tensor(plan.group_of)
        cache.batch_select_indices(group_of)  # each row gets a copy of its group's prefix
        lengths = torch.tensor(plan.lengths)[group_of]
        suffixes = [prompt[int(length):] for prompt, length in zip(prompts, lengths, strict=True)]
        ids_s, mask_s = pad_left(suffixes, self.pad_id)
        mask = torch.cat([mask_p[group_of], mask_s], dim=1)  # holes where the suffix is padded
        positions = lengths[:, None] + (mask_s.cumsum(-1) - 1).clamp(min=0)
        out, at_s = self._forward(ids_s, mask, positions, cache, project=bool(scored))
        if scored:
            width_p, width_s = ids_p.shape[1], ids_s.shape[1]
            in_prefix, in_suffix = _Positions(at_p), _Positions(at_s)
            group_part: dict[int, slice] = {}
            parts = {}
            for r in scored:
                g, prompt = plan.group_of[r], prompts[r]
                length = plan.lengths[g]
                if g not in group_part:  # prefix tokens 1..length-1: the same for the whole group
                    group_part[g] = in_prefix.add(g, range(width_p - length, width_p - 1), prompt[1:length])
                # the first suffix token, predicted at the prefix's last position: one per row
                first = in_prefix.add(g, [width_p - 1], [prompt[length]])
                own = in_suffix.add(r, range(width_s - len(suffixes[r]), width_s - 1), prompt[length + 1:])
                parts[r] = [(0, group_part[g]), (0, first), (1, own)]
            self._emit_prompt_logprobs(jobs, [in_prefix, in_suffix], parts)
        state = {"cache": _cache_of(out), "mask": mask, "positions": positions[:, -1:]}
        return at_s((slice(None), -1)), state

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                 project: bool) -> tuple[Any, Any]:
        """One decoder-only forward pass with its KV cache; returns the output and `logits_at`.
        `project`: the head projects only the positions asked for (a head with soft-capping or
        scaling cannot: then all logits are computed); else only the last position's logits."""
        from convdistill.trainers.projection import position_logits, projects_hidden_states

        past = {self._cache_arg: cache} if cache is not None else {}
        if project:
            return position_logits(self.model, input_ids=ids, attention_mask=mask, position_ids=positions,
                                   use_cache=True, project=projects_hidden_states(self.model), **past)
        extra = {"logits_to_keep": 1} if self.takes_logits_to_keep else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **extra, **past)
        return out, lambda index: out.logits[:, -1][index[0]]  # the last position only

    def _emit_prompt_logprobs(self, jobs: list[Job], passes: list[_Positions],
                              parts: dict[int, list[tuple[int, slice]]]) -> None:
        """Each scored row's log-probability of every prompt token after the first (OpenAI's
        `echo`): `parts[row]` names, in prompt order, the pieces of `passes` that hold them."""
        k = max((jobs[r].prompt_logprobs or 0 for r in parts), default=0)
        scored = [wanted.score(k) for wanted in passes]
        for r, pieces in parts.items():
            job = jobs[r]
            mine = [entry for p, where in pieces for entry in scored[p][where]]
            job.emit(Logprobs(job.index, tuple(_trimmed(e, job.prompt_logprobs or 0) for e in mine), prompt=True))

    def _step(
        self, tokens: torch.Tensor, state: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.is_encoder_decoder:
            from transformers.modeling_outputs import BaseModelOutput

            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=state["encoder"]),
                attention_mask=state["mask"],
                decoder_input_ids=tokens,
                use_cache=True,
                **{self._cache_arg: state["cache"]},
            )
            state["cache"] = _cache_of(out)
            return out.logits[:, -1], state
        mask = torch.cat([state["mask"], torch.ones((tokens.shape[0], 1), dtype=torch.long)], dim=1)
        positions = state["positions"] + 1
        out = self.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: state["cache"]},
        )
        state.update(cache=_cache_of(out), mask=mask, positions=positions)
        return out.logits[:, -1], state

    def _select(self, state: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
        """Drop finished rows from every batched tensor and from the KV cache."""
        state["cache"].batch_select_indices(keep)
        for key in ("mask", "positions", "encoder"):
            if key in state:
                state[key] = state[key][keep]
        return state


# Rows share a prefix run once when their prompts agree on at least this many first tokens.
MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class PrefixPlan:
    """Rows grouped by a shared prompt prefix: `groups[g]` the rows of group g, `lengths[g]` its
    prefix length (every row keeps at least one token of its own after it), `group_of[r]` row
    r's group."""

    groups: list[list[int]]
    lengths: list[int]
    group_of: list[int]


def shared_prefixes(prompts: list[list[int]], min_shared: int = MIN_SHARED_PREFIX,
                    max_cost: float = 0.8) -> PrefixPlan | None:
    """A plan that runs each shared prefix once, or None when it would not save at least
    1 - `max_cost` of the padded positions the batch costs as it is."""
    if len(prompts) < 2 or min(map(len, prompts)) < 2:
        return None
    by_start: dict[tuple[int, ...], list[int]] = {}
    groups: list[list[int]] = []
    for r, prompt in enumerate(prompts):
        if len(prompt) > min_shared:
            key = tuple(prompt[:min_shared])
            if key in by_start:
                by_start[key].append(r)
                continue
            by_start[key] = members = [r]
            groups.append(members)
        else:
            groups.append([r])
    if len(groups) == len(prompts):
        return None
    lengths = []
    for members in groups:
        first, shortest = prompts[members[0]], min(len(prompts[r]) for r in members)
        length = shortest - 1  # a row's last token must run with its own suffix
        for r in members[1:]:
            other = prompts[r]
            length = next((i for i in range(length) if other[i] != first[i]), length)
        lengths.append(length)
    group_of = [0] * len(prompts)
    for g, members in enumerate(groups):
        for r in members:
            group_of[r] = g
    if min(lengths) < 1:
        return None
    suffix_width = max(len(prompts[r]) - lengths[group_of[r]] for r in range(len(prompts)))
    shared_cost = len(groups) * max(lengths) + len(prompts) * suffix_width
    if shared_cost > max_cost * len(prompts) * max(map(len, prompts)):
        return None
    return PrefixPlan(groups, lengths, group_of)


@dataclass
class _Positions:
    """Prompt positions to score from one forward pass (`logits_at`): all rows' together, projected
    onto the vocabulary in chunks of SCORE_CHUNK positions (full logits of a 16 x 512 batch would
    take 1.6 GB; chunks across rows keep the projections large)."""

    logits_at: Any
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)

    def add(self, row: int, cols: Sequence[int], targets: Sequence[int]) -> slice:
        """Score `targets` at columns `cols` of batch row `row`; where their entries will be."""
        start = len(self.targets)
        self.rows += [row] * len(cols)
        self.cols += cols
        self.targets += targets
        return slice(start, len(self.targets))

    def score(self, k: int) -> list[TokenLogprob]:
        out: list[TokenLogprob] = []
        for first in range(0, len(self.targets), SCORE_CHUNK):
            chunk = slice(first, first + SCORE_CHUNK)
            index = (torch.tensor(self.rows[chunk], dtype=torch.long), torch.tensor(self.cols[chunk], dtype=torch.long))
            out.extend(logprob_entries(self.logits_at(index), self.targets[chunk], k))
        return out


def _scored_rows(jobs: list[Job]) -> list[int]:
    """The rows whose prompt log-probabilities are asked for (`echo`) by a client still there."""
    return [r for r, job in enumerate(jobs) if job.prompt_logprobs is not None and not job.cancelled]


def logprob_entries(logits: torch.Tensor, chosen: list[int], k: int) -> tuple[TokenLogprob, ...]:
    """Per row of `logits` [rows, vocab]: the log-probability of `chosen[row]` and the `k` most
    likely tokens with theirs (the model's distribution at temperature 1, as OpenAI and vLLM
    report it)."""
    # logsumexp, not log_softmax: only k + 1 values per row are wanted, and a second
    # rows x vocabulary tensor was a third of the cost of scoring a prompt
    logits = logits.float()
    norm = logits.logsumexp(-1, keepdim=True)
    picked = (logits.gather(-1, torch.tensor(chosen, device=logits.device)[:, None]) - norm)[:, 0]
    values, ids = logits.topk(min(k, logits.shape[-1]), dim=-1) if k else (None, None)
    if values is not None:
        values = values - norm
    out = []
    for row, token in enumerate(chosen):
        top: tuple[tuple[int, float], ...] = ()
        if ids is not None and values is not None:
            top = tuple(zip(ids[row].tolist(), values[row].tolist(), strict=True))
        out.append(TokenLogprob(token, float(picked[row]), top))
    return tuple(out)


def _trimmed(entry: TokenLogprob, k: int) -> TokenLogprob:
    """A row of a batch computed at the batch's largest k, cut to the row's own."""
    return entry if len(entry.top) <= k else TokenLogprob(entry.token_id, entry.logprob, entry.top[:k])


def _cache_of(out: Any) -> Any:
    """The KV cache of a model output: `cache` in transformers 5.x (reading the deprecated
    `past_key_values` alias warns), `past_key_values` before."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _first_int(*values: Any) -> int:
    for value in values:
        if isinstance(value, int):
            return value
        if isinstance(value, list | tuple) and value:
            return int(value[0])
    raise ValueError("no usable token id")
