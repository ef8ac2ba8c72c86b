"""A deterministic text-quality judge, so the whole system runs offline with sensible results.

Each essay gets a quality score, the weighted sum of features scaled to 0..1:

| feature | weight | 1.0 means |
|---|---|---|
| length | 1.5 | log(words) reaches log(500 words) |
| vocabulary richness | 1.0 | moving-average type-token ratio (50-word windows) of 0.85 or more (0 at 0.55) |
| sophisticated words | 0.5 | a quarter of the words have 7 letters or more |
| sentence length | 1.0 | mean words per sentence within 12..25 (falls to 0 at 4 and at 45) |
| sentence variety | 0.5 | coefficient of variation of sentence lengths of 0.5 or more |
| sentence openings | 0.5 | every sentence starts with a capital letter |
| spelling | 1.5 | no word unknown to the spelling dictionary (0 at 10 % unknown words) |

Below 50 words every feature but length counts in proportion to the word count (a short text
gives little evidence of style). The essay with the higher score wins; the verdict's confidence is sigmoid(2 * score difference).
A ranking orders its essays by the same score (each essay's rationale names its score), so it
agrees with every pair it implies.
Equal scores are broken by comparing SHA-256 digests of the texts, so a pair gets the same winner
whichever side it is shown on and however often it is asked.
"""

import hashlib
import math
import re
from collections.abc import Sequence
from functools import cache, lru_cache

from spellchecker import SpellChecker

from huleedu.cj_assessment.judges.port import EssayText, Judgement, Ranking, Side

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n{2,}")
_SPELLING_LANGUAGES = frozenset({"ar", "de", "en", "es", "eu", "fa", "fr", "it", "lv", "nl", "pt", "ru"})
_WINDOW = 50
_STEEPNESS = 2.0  # logistic slope of the verdict's confidence, per quality point


class HeuristicJudge:
    model_used = "heuristic-text-quality"
    model_provider = "huleedu"
    model_version: str | None = "1"
    ranks_well = True

    def __init__(self, language: str = "en") -> None:
        """Spelling counts only for languages the dictionary knows; otherwise it is left out."""
        self._language = language

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        difference = text_quality(a.text, self._language) - text_quality(b.text, self._language)
        a_wins = _digest(a.text) >= _digest(b.text) if difference == 0.0 else difference > 0.0
        confidence = 1.0 / (1.0 + math.exp(-_STEEPNESS * abs(difference)))
        return Judgement(
            winner=Side.A if a_wins else Side.B,
            confidence=confidence,
            rationale=f"text-quality score difference {difference:+.3f} (first minus second)",
        )

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        scores = [text_quality(essay.text, self._language) for essay in essays]
        keys = [(score, _digest(essay.text)) for score, essay in zip(scores, essays, strict=True)]
        order = sorted(range(len(essays)), key=lambda i: keys[i], reverse=True)
        return Ranking(
            order=tuple(order),
            rationales=tuple(f"text-quality score {score:.3f}" for score in scores),
        )


@lru_cache(maxsize=4096)
def text_quality(text: str, language: str = "en") -> float:
    """The weighted feature score described in the module docstring (0 for an empty text)."""
    words = [word.lower() for word in _WORD.findall(text)]
    if not words:
        return 0.0
    sentences = [part for part in _SENTENCE_END.split(text.strip()) if _WORD.search(part)]
    lengths = [len(_WORD.findall(sentence)) for sentence in sentences] or [len(words)]
    mean_length = sum(lengths) / len(lengths)
    spread = math.sqrt(sum((n - mean_length) ** 2 for n in lengths) / len(lengths))
    capitalised = sum(1 for s in sentences if s.lstrip()[:1].isupper()) / max(1, len(sentences))

    score = 1.0 * _clip((_moving_type_token_ratio(words) - 0.55) / 0.30)
    score += 0.5 * _clip(sum(1 for w in words if len(w) >= 7) / len(words) / 0.25)
    score += 1.0 * _sentence_length_fit(mean_length)
    score += 0.5 * _clip(spread / mean_length / 0.5)
    score += 0.5 * capitalised
    if language in _SPELLING_LANGUAGES:
        unknown = _spelling(language).unknown(words)
        misspelled = sum(1 for w in words if w in unknown) / len(words)
        score += 1.5 * _clip(1.0 - misspelled / 0.10)
    # a short text gives little evidence of style: its style features count in proportion
    evidence = min(1.0, len(words) / _WINDOW)
    return 1.5 * _clip(math.log1p(len(words)) / math.log1p(500)) + evidence * score


@cache
def _spelling(language: str) -> SpellChecker:
    """Loaded on first use (about half a second), then shared."""
    return SpellChecker(language=language)


def _moving_type_token_ratio(words: list[str]) -> float:
    if len(words) <= _WINDOW:
        return len(set(words)) / len(words)
    ratios = [len(set(words[i : i + _WINDOW])) / _WINDOW for i in range(len(words) - _WINDOW + 1)]
    return sum(ratios) / len(ratios)


def _sentence_length_fit(mean_length: float) -> float:
    if mean_length < 12:
        return _clip((mean_length - 4) / 8)
    if mean_length > 25:
        return _clip((45 - mean_length) / 20)
    return 1.0


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
