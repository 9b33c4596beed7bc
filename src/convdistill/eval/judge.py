"""An LLM judge behind any OpenAI-compatible endpoint: ratings 1..10 and pairwise preferences.

Judges are noisy, so a rating is the median of `samples` judgments (sampled with different
seeds), and a pairwise verdict asks both orders (model as A, then as B): a judge that prefers
whichever reply comes first disagrees with itself, and that is reported as a tie. Judge output
is free text; the parsers below accept the common shapes ("Rating: [[7]]", "7/10", "Score: 7.5",
"**8**") and a judgment they cannot read is asked again (the client's retry) and finally
left out of the median, never guessed.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convdistill.errors import BadInput, Unavailable

Message = dict[str, str]
DEFAULT_RUBRIC = Path(__file__).with_name("judge_rubric.txt")
PAIRWISE_PROMPT = Path(__file__).with_name("judge_pairwise.txt")

_NUMBER = r"(10(?:\.0+)?|[1-9](?:\.\d+)?)"
_RATING_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]"),  # [[7]] (MT-Bench's format)
    re.compile(r"\[\s*" + _NUMBER + r"\s*\]"),  # [7]
    re.compile(r"(?:rating|score|grade)\**\s*(?:is|of|:|=)?\s*\**\s*" + _NUMBER + r"(?!\d)", re.I),
    re.compile(_NUMBER + r"\s*(?:/|out of)\s*10\b", re.I),  # 7/10, 7 out of 10
    re.compile(r"\*\*\s*" + _NUMBER + r"\s*\*\*"),  # **7**
]
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_WORDS = {w: i for i, w in enumerate(_NUMBER_WORDS, start=1)}


def parse_rating(text: str) -> float | None:
    """The 1..10 rating in a judge's answer; the last match of the most explicit form wins
    (judges restate the scale, "on a scale of 1 to 10", before they rate)."""
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text)
        if found:
            return float(found[-1])
    found_words = re.findall(r"(?:rating|score)\s*(?:is|of|:)?\s*(" + "|".join(_WORDS) + r")\b", text, re.I)
    if found_words:
        return float(_WORDS[found_words[-1].lower()])
    bare = text.strip().strip("*.").strip()
    if re.fullmatch(_NUMBER, bare):
        return float(bare)
    return None


_BRACKETED = [re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"), re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")]


def parse_bracket_rating(text: str) -> float | None:
    """The rating in MT-Bench's convention: the first "[[n]]", else the first "[n]" (the
    benchmarks read the first match; a judge asked for "Rating: [[n]]" writes it once, at the
    end). A bracketed number outside 1..10 is no rating (a year, a list index)."""
    for pattern in _BRACKETED:
        for found in pattern.findall(text):
            if 1 <= float(found) <= 10:
                return float(found)
    return None


def read_benchmark_rating(text: str) -> tuple[float | None, str]:
    """(rating, how it was written): "bracket" when the judge kept the benchmark's convention,
    "other" when only the looser forms of parse_rating find one (small judges seldom keep it;
    the benchmarks' own scripts would drop such a judgment), "none" when there is no rating."""
    rating = parse_bracket_rating(text)
    if rating is not None:
        return rating, "bracket"
    rating = parse_rating(text)
    return rating, "other" if rating is not None else "none"


def parse_preference(text: str) -> str | None:
    """'A', 'B' or 'tie' from a pairwise verdict, None when there is none."""
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
    if found:
        return {"A": "A", "B": "B", "C": "tie"}[found[-1]]
    lowered = text.lower()
    if re.search(r"\b(tie|equally good|both are equal|neither is better)\b", lowered):
        return "tie"
    named = re.findall(r"(?:reply|assistant|answer)\s+([ab])\s+is\s+better", lowered)
    if named:
        return named[-1].upper()
    bare = text.strip().strip("*.[]").strip().upper()
    return bare if bare in ("A", "B") else ("tie" if bare == "C" else None)


def render_conversation(messages: Sequence[Message]) -> str:
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


@dataclass(frozen=True)
class Rating:
    median: float | None
    samples: tuple[float | None, ...]
    forms: tuple[str, ...] = ()  # per sample, for benchmark ratings: bracket | other | none

    @property
    def spread(self) -> float | None:
        """Highest minus lowest usable sample: how far the judge disagreed with itself."""
        usable = [s for s in self.samples if s is not None]
        return max(usable) - min(usable) if usable else None


@dataclass
class Judge:
    base_url: str
    model: str
    api_key: str | None = None
    rubric_path: str | Path = DEFAULT_RUBRIC
    samples: int = 3
    temperature: float = 0.7  # samples must differ to be worth a median; 0 with samples=1
    max_tokens: int = 256
    concurrency: int = 8
    cache_path: str | Path | None = None

    def __post_init__(self) -> None:
        try:
            self.rubric = Path(self.rubric_path).read_text()
        except OSError as exc:
            raise Unavailable(f"judge rubric {self.rubric_path}: cannot read ({exc.strerror or exc})") from None
        if "{reply}" not in self.rubric or "{conversation}" not in self.rubric:
            raise BadInput(f"judge rubric {self.rubric_path}: must contain {{conversation}} and {{reply}}")

    def _settings(self) -> object:
        from convdistill.teacher.client import EndpointSettings

        return EndpointSettings(
            base_url=self.base_url, model=self.model, api_key=self.api_key, concurrency=self.concurrency, max_retries=2
        )

    def _ask(self, prompts: list[str], seeds: list[int], validate: object) -> list[str | None]:
        from convdistill.eval.backends import complete_all
        from convdistill.teacher.client import ChatRequest

        temperature = self.temperature if self.samples > 1 else 0.0
        requests = [
            ChatRequest((("user", p),), max_tokens=self.max_tokens, temperature=temperature, seed=s, purpose="judge")
            for p, s in zip(prompts, seeds, strict=True)
        ]
        return complete_all(self._settings(), requests, self.cache_path, validate, tolerate=True)

    def rating_prompt(self, history: Sequence[Message], reply: str, reference: str | None) -> str:
        note = f"\nA reference reply, for guidance (other good replies exist):\n{reference}\n" if reference else ""
        return (
            self.rubric.replace("{reference_note}", note)
            .replace("{conversation}", render_conversation(history))
            .replace("{reply}", reply or "(empty reply)")
            .replace("{reference}", reference or "")
        )

    def rate(self, items: Sequence[tuple[Sequence[Message], str, str | None]]) -> list[Rating]:
        """One Rating per (history ending with the user turn, reply, reference or None)."""
        return self.rate_prompts([self.rating_prompt(h, r, ref) for h, r, ref in items])

    def rate_prompts(self, prompts: Sequence[str], benchmark: Sequence[bool] | None = None) -> list[Rating]:
        """One Rating per ready-made judge prompt: the median of `samples` judgments. Where
        `benchmark[i]` is true the answer is read in MT-Bench's [[n]] convention first and the
        form of each sample is kept (read_benchmark_rating); else with parse_rating."""
        flags = list(benchmark) if benchmark is not None else [False] * len(prompts)

        def read(text: str | None, strict: bool) -> tuple[float | None, str]:
            if not text:
                return None, "none"
            if strict:
                return read_benchmark_rating(text)
            rating = parse_rating(text)
            return rating, "any" if rating is not None else "none"

        n = max(1, self.samples)
        answers = self._ask(
            [p for p in prompts for _ in range(n)],
            [s for _ in prompts for s in range(n)],
            lambda text: text if parse_rating(text) is not None or parse_bracket_rating(text) is not None else None,
        )
        out: list[Rating] = []
        for i, strict in enumerate(flags):
            read_samples = [read(a, strict) for a in answers[i * n : (i + 1) * n]]
            samples = tuple(value for value, _ in read_samples)
            usable = [s for s in samples if s is not None]
            forms = tuple(form for _, form in read_samples) if strict else ()
            out.append(Rating(statistics.median(usable) if usable else None, samples, forms))
        return out

    def compare(self, items: Sequence[tuple[Sequence[Message], str, str]]) -> list[dict[str, str | None]]:
        """Per (history, model reply, baseline reply): {'verdict': 'model'|'baseline'|'tie',
        'model_first': ..., 'baseline_first': ...}; orders that disagree give a tie."""
        template = PAIRWISE_PROMPT.read_text()

        def prompt(history: Sequence[Message], a: str, b: str) -> str:
            return (
                template.replace("{conversation}", render_conversation(history))
                .replace("{reply_a}", a or "(empty reply)")
                .replace("{reply_b}", b or "(empty reply)")
            )

        prompts: list[str] = []
        for history, mine, base in items:
            prompts += [prompt(history, mine, base), prompt(history, base, mine)]
        answers = self._ask(prompts, [0] * len(prompts), lambda t: t if parse_preference(t) else None)
        out: list[dict[str, str | None]] = []
        for i in range(len(items)):
            first = parse_preference(answers[2 * i] or "")
            second = parse_preference(answers[2 * i + 1] or "")
            as_a = {"A": "model", "B": "baseline", "tie": "tie"}.get(first or "")
            as_b = {"A": "baseline", "B": "model", "tie": "tie"}.get(second or "")
            verdict = as_a if as_a is not None and as_a == as_b else "tie"
            out.append({"verdict": verdict, "model_first": as_a, "baseline_first": as_b})
        return out
