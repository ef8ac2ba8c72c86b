"""Spell checking one text: which words are misspelt, what they become, and the metrics. Pure apart
from loading a dictionary; no database, no events.

pyspellchecker with edit distance 1 only: distance 2 costs 0.3 to 5 s per unknown word in pure
Python, and most misspellings (`recieve`, `definately`, `teh`) are one edit away. A word's
correction never changes, so each language keeps a memo of every word it has judged.
"""

import asyncio
import functools
import re
from dataclasses import dataclass
from importlib.metadata import version

from spellchecker import SpellChecker

PROCESSOR_VERSION = f"pyspellchecker-{version('pyspellchecker')}-distance1"
LANGUAGES = tuple(SpellChecker.languages())
MEMO_LIMIT = 200_000  # words remembered per language before the memo starts afresh

# A word: letters of any script, with inner apostrophes (don't, l'école); digits are not words.
WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
SENTENCE_BREAK = re.compile(r"[.!?:;\n\"\u201c]")


class UnsupportedLanguage(ValueError):
    """No dictionary for the requested language."""


@dataclass(frozen=True)
class Checked:
    corrected_text: str
    word_count: int
    corrections: int  # misspelt words replaced by the dictionary's most likely spelling
    unknown_words: int  # misspelt words, corrected or not

    @property
    def correction_density(self) -> float:
        """Corrections per word (0 for a text without words)."""
        return self.corrections / self.word_count if self.word_count else 0.0


class Speller:
    """One language's dictionary and its memo of corrections."""

    def __init__(self, language: str) -> None:
        self.language = language
        self._checker = SpellChecker(language=language, distance=1)
        self._memo: dict[str, str | None] = {}

    def correction(self, word: str) -> str | None:
        """The correction of a lower-case word: None if it is spelt right; the word itself if it is
        wrong but nothing one edit away is known."""
        if word in self._memo:
            return self._memo[word]
        fixed = None if word in self._checker else (self._checker.correction(word) or word)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[word] = fixed
        return fixed

    def check(self, text: str) -> Checked:
        """Correct `text`, keeping everything but misspelt words as it is.

        Not checked: one-letter words, all-capital words (acronyms) and capitalised words inside a
        sentence (names, which dictionaries rarely know); they still count as words.
        """
        pieces: list[str] = []
        words = corrections = unknown = 0
        copied = 0  # text[:copied] is in pieces already
        previous_end = 0
        for match in WORD.finditer(text):
            words += 1
            token = match.group()
            starts_sentence = (
                words == 1 or SENTENCE_BREAK.search(text, previous_end, match.start()) is not None
            )
            previous_end = match.end()
            if len(token) == 1 or token.isupper() or (token[0].isupper() and not starts_sentence):
                continue
            fixed = self.correction(token.lower())
            if fixed is None:
                continue
            unknown += 1
            if fixed == token.lower():
                continue
            corrections += 1
            pieces.append(text[copied : match.start()])
            pieces.append(_same_case(token, fixed))
            copied = match.end()
        pieces.append(text[copied:])
        return Checked(
            corrected_text="".join(pieces), word_count=words, corrections=corrections, unknown_words=unknown
        )


def _same_case(original: str, fixed: str) -> str:
    if original[0].isupper():
        return fixed[0].upper() + fixed[1:]
    return fixed


@functools.cache
def loaded_speller(language: str) -> Speller:
    """One speller per language per process: a dictionary is immutable data worth 50 MB and a
    second to load, and every unit built in the process (tests build many) can share it."""
    return Speller(language)


class Dictionaries:
    """Spellers by language, loaded on first use (about a second each) and kept for the process."""

    def __init__(self) -> None:
        self._spellers: dict[str, Speller] = {}
        self._loading = asyncio.Lock()

    async def speller(self, language: str) -> Speller:
        """Raises UnsupportedLanguage. `en-GB` and `en_gb` use the `en` dictionary."""
        code = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
        if code not in LANGUAGES:
            raise UnsupportedLanguage(
                f"no spellcheck dictionary for language {language!r}; supported: {', '.join(LANGUAGES)}"
            )
        if code not in self._spellers:
            async with self._loading:
                if code not in self._spellers:
                    self._spellers[code] = await asyncio.to_thread(loaded_speller, code)
        return self._spellers[code]
