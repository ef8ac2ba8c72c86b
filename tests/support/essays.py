"""Essay texts for tests and benchmarks whose spelling mistakes are known, so a spellcheck result
can be checked exactly: `misspelt_essay(n, k)` has k mistakes the English dictionary corrects."""

from dataclasses import dataclass

# Correctly spelt: the English dictionary finds nothing to correct here (50 words).
BASE = (
    "The students wrote about their summer holidays and the books they read in school. Many of them "
    "enjoyed long walks by the sea with their families, while others worked in shops or helped their "
    "parents at home. Every essay describes what the writer learned and why it mattered to them."
)
BASE_WORDS = 50

# misspelling -> what pyspellchecker (edit distance 1) makes of it
MISSPELLINGS = {
    "recieve": "receive",
    "definately": "definitely",
    "becuase": "because",
    "thier": "their",
    "freind": "friend",
    "beleive": "believe",
    "untill": "until",
    "seperate": "separate",
    "occured": "occurred",
    "begining": "beginning",
    "goverment": "government",
    "enviroment": "environment",
    "neccessary": "necessary",
    "accomodate": "accommodate",
}


@dataclass(frozen=True)
class SampleEssay:
    text: str
    corrected_text: str
    misspellings: int
    word_count: int


def misspelt_essay(n: int, misspellings: int) -> SampleEssay:
    """Essay `n` (its wording differs by n) with `misspellings` mistakes (at most 14)."""
    wrong = list(MISSPELLINGS)[:misspellings]
    tail = f"Essay number {n} ends here."  # digits are not words: 4 words
    text = " ".join([BASE, *wrong, tail])
    corrected = " ".join([BASE, *(MISSPELLINGS[word] for word in wrong), tail])
    return SampleEssay(text, corrected, misspellings, BASE_WORDS + len(wrong) + 4)
