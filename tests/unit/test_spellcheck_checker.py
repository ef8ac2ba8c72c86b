"""Spell checking one text: exact metrics for known mistakes, corrections that keep everything
else, and the languages there are dictionaries for."""

import pytest

from huleedu.spellcheck.checker import Dictionaries, Speller, UnsupportedLanguage
from support.essays import MISSPELLINGS, misspelt_essay


@pytest.fixture(scope="module")
def english() -> Speller:
    return Speller("en")


@pytest.mark.parametrize("mistakes", [0, 1, 5, len(MISSPELLINGS)])
def test_known_misspellings_are_counted_and_corrected_exactly(english: Speller, mistakes: int) -> None:
    essay = misspelt_essay(3, mistakes)
    checked = english.check(essay.text)

    assert checked.corrections == mistakes
    assert checked.unknown_words == mistakes
    assert checked.word_count == essay.word_count
    assert checked.corrected_text == essay.corrected_text
    assert checked.correction_density == pytest.approx(mistakes / essay.word_count)


def test_a_correction_keeps_the_capital_and_everything_around_it(english: Speller) -> None:
    checked = english.check("Teh cat, I beleive,  sat\n\ton teh mat!")

    assert checked.corrected_text == "The cat, I believe,  sat\n\ton the mat!"
    assert checked.corrections == 3


def test_names_inside_a_sentence_and_acronyms_are_left_alone_but_counted(english: Speller) -> None:
    checked = english.check("We met Stokholmia and the NASAX team. Wrold peace.")

    assert checked.corrected_text == "We met Stokholmia and the NASAX team. World peace."
    assert checked.word_count == 9
    assert checked.corrections == 1


def test_contractions_are_one_word_and_numbers_are_no_words(english: Speller) -> None:
    checked = english.check("It's 2024 and we don't recieve 3 letters.")

    assert checked.word_count == 6
    assert checked.corrected_text == "It's 2024 and we don't receive 3 letters."


def test_a_misspelling_with_no_near_word_is_counted_but_not_changed(english: Speller) -> None:
    checked = english.check("The xqzvbnmlkjh appeared.")

    assert (checked.unknown_words, checked.corrections) == (1, 0)
    assert checked.corrected_text == "The xqzvbnmlkjh appeared."


def test_a_text_without_words_has_no_density() -> None:
    checked = Speller("en").check("1234 -- 5678 ?!")

    assert (checked.word_count, checked.corrections, checked.correction_density) == (0, 0, 0.0)


async def test_a_regional_language_tag_uses_its_language_and_each_dictionary_loads_once() -> None:
    dictionaries = Dictionaries()

    british = await dictionaries.speller("en-GB")
    assert british.language == "en"
    assert await dictionaries.speller("EN_us") is british


async def test_an_unknown_language_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(UnsupportedLanguage) as refused:
        await Dictionaries().speller("tlh")

    assert "'tlh'" in str(refused.value)
    assert "en" in str(refused.value)
