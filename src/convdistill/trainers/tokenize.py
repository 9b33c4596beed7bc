"""Turning records into token ids and loss masks, under the shared truncation policy.

Decoder-only: a whole path is one sequence; the tokens that carry loss are those the chat
template's `{% generation %}` markers wrap (each assistant reply and its end-of-turn token),
restricted to the turns selected for training. Encoder-decoder: each selected assistant turn
is one example in the prompt format of `convdistill.models.seq2seq_format` (shared with the
server). Pairs: a prompt and two completions (`tokenize_pair` decoder-only, `seq2seq_pair` encoder-decoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convdistill.errors import BadRecipe
from convdistill.models import seq2seq_format
from convdistill.trainers.truncation import TruncationStats, cut_tokens, keep_latest_turns

Message = dict[str, str]
IGNORE = -100  # the label of a position without loss (PyTorch cross-entropy's ignore_index)


def min_context(max_length: int) -> int:
    """Context tokens a cut-down example keeps even when its reply is too long."""
    return max(1, max_length // 4)


# -- decoder-only SFT ------------------------------------------------------------------------


def encode_chat(
    tokenizer: Any, messages: Sequence[Message], chat_template: str | None = None
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a conversation and, per assistant message in order, its [start, end) span
    as the template's generation markers mark it."""
    out = tokenizer.apply_chat_template(
        list(messages),
        chat_template=chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    spans: list[tuple[int, int]] = []
    start = None
    for position, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = position
        elif not bit and start is not None:
            spans.append((start, position))
            start = None
    wanted = sum(m["role"] == "assistant" for m in messages)
    if len(spans) != wanted:
        raise BadRecipe(
            f"the chat template marks {len(spans)} generation spans for {wanted} assistant "
            "messages: it needs {% generation %} markers around every assistant reply"
        )
    return ids, spans


def tokenize_path(
    messages: Sequence[Message],
    flags: Sequence[bool],
    tokenizer: Any,
    max_length: int | None,
    stats: TruncationStats,
    chat_template: str | None = None,
) -> dict[str, list[int]] | None:
    """input_ids and labels (-100 where no loss) of one path, or None when dropped."""
    messages, flags = list(messages), list(flags)
    stats.records += 1
    ids, spans = encode_chat(tokenizer, messages, chat_template)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    lengths = {i: end - start for i, (start, end) in zip(assistant, spans, strict=True)}
    stats.assistant_tokens += sum(lengths.values())
    stats.selected_tokens += sum(n for i, n in lengths.items() if flags[i])
    trained = [i for i in assistant if flags[i]]
    if not trained:
        stats.drop("no turn selected for training")
        return None
    last = trained[-1]
    if last < len(messages) - 1:  # later turns carry no loss and a causal model never sees them
        messages, flags = messages[: last + 1], flags[: last + 1]
        ids, spans = encode_chat(tokenizer, messages, chat_template)
    stats.examples += 1
    shortened = False
    if max_length is not None and len(ids) > max_length:
        shortened = True

        def fits(candidate: list[Message]) -> bool:
            return len(encode_chat(tokenizer, candidate, chat_template)[0]) <= max_length

        kept, dropped, ok = keep_latest_turns(messages, fits, keep_from=last)
        stats.turns_dropped += dropped
        system = 1 if messages[0]["role"] == "system" else 0
        flags = flags[:system] + flags[system + dropped :]
        messages = kept
        ids, spans = encode_chat(tokenizer, messages, chat_template)
        if not ok:  # the latest exchange alone is too long: cut tokens, train the last reply only
            start, end = spans[-1]
            context, reply, context_cut, reply_cut = cut_tokens(
                ids[:start], ids[start:end], max_length, min_context(max_length)
            )
            stats.context_cut += context_cut
            stats.reply_cut += reply_cut
            stats.truncated += 1
            stats.trained_tokens += len(reply)
            return {"input_ids": context + reply, "labels": [IGNORE] * len(context) + reply}
    if shortened:
        stats.truncated += 1
    labels = [IGNORE] * len(ids)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for index, (start, end) in zip(assistant, spans, strict=True):
        if flags[index]:
            labels[start:end] = ids[start:end]
    stats.trained_tokens += sum(label != IGNORE for label in labels)
    return {"input_ids": ids, "labels": labels}


# -- encoder-decoder SFT -----------------------------------------------------------------------


def encode_target(reply: str, tokenizer: Any) -> list[int]:
    return tokenizer(seq2seq_format.target_text(reply, tokenizer), add_special_tokens=False)[
        "input_ids"
    ]


def fit_source(
    history: Sequence[Message], tokenizer: Any, max_length: int | None, stats: TruncationStats
) -> tuple[list[int], bool]:
    """Encoder ids of the conversation so far, oldest turns dropped first; (ids, shortened)."""
    ids = seq2seq_format.encode_source(history, tokenizer)
    if max_length is None or len(ids) <= max_length:
        return ids, False

    def fits(candidate: list[Message]) -> bool:
        return len(seq2seq_format.encode_source(candidate, tokenizer)) <= max_length

    kept, dropped, ok = keep_latest_turns(history, fits)
    stats.turns_dropped += dropped
    if not ok:
        stats.context_cut += 1
    # The format's own cut keeps the newest tokens (and the generation prompt).
    return seq2seq_format.encode_source(kept, tokenizer, max_length), True


def seq2seq_examples(
    messages: Sequence[Message],
    flags: Sequence[bool],
    tokenizer: Any,
    max_source_length: int | None,
    max_target_length: int | None,
    stats: TruncationStats,
) -> list[dict[str, list[int]]]:
    """One example per selected assistant turn: all earlier turns -> that reply."""
    stats.records += 1
    out = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        target = encode_target(message["content"], tokenizer)
        stats.assistant_tokens += len(target)
        if not flags[index]:
            continue
        stats.selected_tokens += len(target)
        if index == 0:
            stats.drop("assistant turn with no conversation before it")
            continue
        stats.examples += 1
        source, shortened = fit_source(messages[:index], tokenizer, max_source_length, stats)
        if max_target_length is not None and len(target) > max_target_length:
            target = target[:max_target_length]
            stats.reply_cut += 1
            shortened = True
        stats.truncated += shortened
        stats.trained_tokens += len(target)
        out.append({"input_ids": source, "labels": target})
    if not any(flags):
        stats.drop("no turn selected for training")
    return out


# -- pairs (DPO), both families ----------------------------------------------------------------


def _completion_ids(tokenizer: Any, prompt: list[Message], completion: list[Message],
                    prompt_ids: list[int]) -> list[int]:
    """Completion tokens as the chat template renders them after the prompt (TRL's way: the
    tokens past the rendered prompt with its generation header)."""
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    full = list(full)
    same = 0
    for a, b in zip(prompt_ids, full, strict=False):
        if a != b:
            break
        same += 1
    if same < len(prompt_ids):
        raise BadRecipe(
            "the chat template renders the prompt differently alone and before a reply; "
            "pairs cannot be split into prompt and completion tokens"
        )
    return full[same:]


def _pair_messages(record: dict[str, Any], stats: TruncationStats
                   ) -> tuple[list[Message], list[Message], list[Message]] | None:
    """A pair record's prompt, chosen and rejected messages, counted; None (dropped) without a prompt."""
    stats.records += 1
    prompt: list[Message] = list(record["prompt"])
    if not prompt:
        stats.drop("empty prompt")
        return None
    return prompt, list(record["chosen"]), list(record["rejected"])


def seq2seq_pair(
    record: dict[str, Any],
    tokenizer: Any,
    max_length: int | None,
    stats: TruncationStats,
    max_target_length: int | None = None,
) -> dict[str, list[int]] | None:
    """prompt_ids, chosen_ids, rejected_ids of one pair for an encoder-decoder model: the prompt
    (encoder) fits max_length, each completion (decoder) max_target_length (default max_length)."""
    messages = _pair_messages(record, stats)
    if messages is None:
        return None
    prompt, chosen, rejected = messages
    chosen_ids = encode_target(chosen[-1]["content"], tokenizer)
    rejected_ids = encode_target(rejected[-1]["content"], tokenizer)
    tokens = len(chosen_ids) + len(rejected_ids)
    stats.assistant_tokens += tokens
    stats.selected_tokens += tokens
    stats.examples += 1
    prompt_ids, shortened = fit_source(prompt, tokenizer, max_length, stats)
    limit = max_target_length or max_length
    if limit is not None and max(len(chosen_ids), len(rejected_ids)) > limit:
        chosen_ids, rejected_ids = chosen_ids[:limit], rejected_ids[:limit]
        stats.reply_cut += 1
        shortened = True
    stats.truncated += shortened
    stats.trained_tokens += len(chosen_ids) + len(rejected_ids)
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def tokenize_pair(
    record: dict[str, Any],
    tokenizer: Any,
    max_length: int | None,
    stats: TruncationStats,
) -> dict[str, list[int]] | None:
    """prompt_ids, chosen_ids, rejected_ids of one pair for a decoder-only model: prompt + the
    longer completion must fit max_length."""
    messages = _pair_messages(record, stats)
    if messages is None:
        return None
    prompt, chosen, rejected = messages

    def encode(candidate: list[Message]) -> tuple[list[int], list[int], list[int]]:
        p = list(
            tokenizer.apply_chat_template(
                candidate, tokenize=True, return_dict=True, add_generation_prompt=True
            )["input_ids"]
        )
        return p, _completion_ids(tokenizer, candidate, chosen, p), _completion_ids(
            tokenizer, candidate, rejected, p
        )

    prompt_ids, chosen_ids, rejected_ids = encode(prompt)
    tokens = len(chosen_ids) + len(rejected_ids)
    stats.assistant_tokens += tokens
    stats.selected_tokens += tokens
    stats.examples += 1
    longest = max(len(chosen_ids), len(rejected_ids))
    if max_length is not None and len(prompt_ids) + longest > max_length:
        stats.truncated += 1

        def fits(candidate: list[Message]) -> bool:
            p, c, r = encode(candidate)
            return len(p) + max(len(c), len(r)) <= max_length

        kept, dropped, ok = keep_latest_turns(prompt, fits)
        stats.turns_dropped += dropped
        prompt_ids, chosen_ids, rejected_ids = encode(kept)
        if not ok:
            context = prompt_ids
            room = max_length - min(len(context), min_context(max_length))
            if max(len(chosen_ids), len(rejected_ids)) > room:
                stats.reply_cut += 1
                chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
            longest = max(len(chosen_ids), len(rejected_ids))
            if len(context) + longest > max_length:
                stats.context_cut += 1
                prompt_ids = context[len(context) - (max_length - longest):]
    stats.trained_tokens += len(chosen_ids) + len(rejected_ids)
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
