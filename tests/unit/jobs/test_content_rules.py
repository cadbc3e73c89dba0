"""The content-rule matcher (bot.jobs.rules): normalisation, word boundaries, CJK substrings, evasion, bounds."""

from __future__ import annotations

import random

import pytest

from bot.jobs.rules import (
    DEFAULT_SCOPE,
    MAX_PHRASE_CHARS,
    CompiledRules,
    ContentRule,
    InvalidRule,
    RulesCache,
    compile_rules,
    normalise,
    phrase_key,
)

GUILD = 42


def rules_of(*phrases: str, guild_id: int = GUILD) -> CompiledRules:
    return CompiledRules(ContentRule(phrase, guild_id) for phrase in phrases)


def matched_phrase(compiled: CompiledRules, text: str) -> str | None:
    rule = compiled.match(text)
    return None if rule is None else rule.phrase


# --- normalisation ---------------------------------------------------------------------------------


def test_normalise_folds_width_case_and_whitespace() -> None:
    assert normalise("  ＨＥＬＬＯ\u3000\tWorld \n") == "hello world"
    assert normalise("ｶﾀｶﾅ") == "カタカナ"  # half-width katakana to full width
    assert normalise("Stra\u00dfe") == "strasse"  # casefold, not lower


def test_normalise_drops_invisible_characters() -> None:
    assert normalise("b\u200ba\u200dd\u00ad\ufeff") == "bad"
    assert normalise("b\u0336a\u0336d\u0336") == "bad"  # combining strike-through over each letter


def test_normalise_keeps_composed_accents() -> None:
    assert normalise("cafe\u0301") == "café"  # NFKC composes before marks are dropped


# --- English: word boundaries ----------------------------------------------------------------------


def test_word_rule_matches_whole_words_only() -> None:
    compiled = rules_of("ass")
    assert matched_phrase(compiled, "a class of bass players") is None
    assert matched_phrase(compiled, "kick ass") == "ass"
    assert matched_phrase(compiled, "Ass, then a cat") == "ass"
    assert matched_phrase(compiled, "(ass)") == "ass"


def test_word_rule_ignores_case_and_width() -> None:
    compiled = rules_of("Gore")
    assert matched_phrase(compiled, "lots of GORE here") == "Gore"
    assert matched_phrase(compiled, "ｌｏｔｓ ｏｆ ｇｏｒｅ") == "Gore"
    assert matched_phrase(compiled, "gorilla") is None


def test_phrase_rule_matches_across_any_whitespace_or_punctuation() -> None:
    compiled = rules_of("blood  bath")
    assert matched_phrase(compiled, "a blood\n\tbath at dawn") == "blood  bath"
    assert matched_phrase(compiled, "a blood-bath") == "blood  bath"
    assert matched_phrase(compiled, "blood, and a bath") is None
    assert matched_phrase(compiled, "bloodbath") is None  # two words in the rule, one in the text


def test_digits_and_letters_form_words() -> None:
    compiled = rules_of("r18")
    assert matched_phrase(compiled, "make it R18 please") == "r18"
    assert matched_phrase(compiled, "r180 turbo") is None


def test_hyphenated_word_still_contains_the_word() -> None:
    assert matched_phrase(rules_of("kill"), "press the kill-switch") == "kill"


# --- evasion ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["b.a.d dog", "b-a-d dog", "ba.d dog", "b..a//d dog", "b a d dog", "b\u200bad dog", "B\u2060A\u200cD dog"],
)
def test_separators_inserted_to_evade_still_match(text: str) -> None:
    assert matched_phrase(rules_of("bad"), text) == "bad"


def test_joining_single_letters_does_not_invent_matches_inside_words() -> None:
    compiled = rules_of("bad")
    assert matched_phrase(compiled, "a b adder") is None
    assert matched_phrase(compiled, "badge") is None


def test_rule_with_punctuation_matches_both_readings() -> None:
    compiled = rules_of("e-mail")
    assert matched_phrase(compiled, "send an email") == "e-mail"
    assert matched_phrase(compiled, "send an e mail") == "e-mail"
    assert matched_phrase(compiled, "send an e-mail") == "e-mail"
    assert matched_phrase(compiled, "send a mail") is None


# --- Chinese and other scripts without spaces ------------------------------------------------------


def test_chinese_rule_matches_inside_a_sentence_without_spaces() -> None:
    compiled = rules_of("血腥")
    assert matched_phrase(compiled, "一个非常血腥的场景") == "血腥"
    assert matched_phrase(compiled, "一个非常血的场景") is None


def test_chinese_rule_survives_spaces_punctuation_and_zero_width() -> None:
    compiled = rules_of("暴力")
    for text in ("很暴 力的画面", "很暴。力的画面", "很暴\u200b力", "很暴\u3000力"):
        assert matched_phrase(compiled, text) == "暴力", text


def test_chinese_rule_typed_with_spaces_matches_without() -> None:
    assert matched_phrase(rules_of("暴 力"), "暴力") == "暴 力"


def test_full_width_forms_fold_in_rules_and_texts() -> None:
    compiled = rules_of("ＡＶ女优", "ｂａｄ")
    assert matched_phrase(compiled, "一个av女优") == "ＡＶ女优"
    assert matched_phrase(compiled, "一个ＡＶ女优") == "ＡＶ女优"
    assert matched_phrase(compiled, "so bad") == "ｂａｄ"


def test_latin_word_inside_chinese_text_is_bounded_by_the_chinese() -> None:
    compiled = rules_of("bad")
    assert matched_phrase(compiled, "一只bad猫") == "bad"
    assert matched_phrase(compiled, "一只badge猫") is None


def test_japanese_and_korean_match_as_substrings() -> None:
    compiled = rules_of("カタカナ", "나쁜")
    assert matched_phrase(compiled, "これはｶﾀｶﾅです") == "カタカナ"
    assert matched_phrase(compiled, "아주나쁜말") == "나쁜"


def test_mixed_english_and_chinese_rules_in_one_list() -> None:
    compiled = rules_of("gore", "血腥", "blood bath")
    assert matched_phrase(compiled, "A quiet 花园 at dusk") is None
    assert matched_phrase(compiled, "a 血腥 blood bath") in {"血腥", "blood bath"}
    assert matched_phrase(compiled, "gore和血") == "gore"


# --- which rule is reported ------------------------------------------------------------------------


def test_the_earliest_match_in_the_text_is_reported() -> None:
    compiled = rules_of("zebra", "apple")
    assert matched_phrase(compiled, "an apple and a zebra") == "apple"


def test_guild_rule_is_reported_before_an_identical_default() -> None:
    compiled = compile_rules([ContentRule("Gore", GUILD)], [ContentRule("gore", DEFAULT_SCOPE)])
    rule = compiled.match("gore")
    assert rule == ContentRule("Gore", GUILD)
    assert not rule.is_default


def test_default_rules_apply_alongside_guild_rules() -> None:
    compiled = compile_rules([ContentRule("gore", GUILD)], [ContentRule("血腥", DEFAULT_SCOPE)])
    rule = compiled.match("血腥的")
    assert rule is not None and rule.is_default
    assert len(compiled) == 2


def test_no_rules_and_empty_texts_match_nothing() -> None:
    assert CompiledRules([]).match("anything at all") is None
    assert rules_of("bad").match("") is None
    assert rules_of("bad").match(None) is None


def test_overlapping_patterns_are_found() -> None:
    # Patterns that share prefixes/suffixes exercise the automaton's failure links.
    compiled = rules_of("他们", "们的", "是他")
    assert matched_phrase(compiled, "这们的") == "们的"
    compiled = rules_of("abcd", "bc")
    assert matched_phrase(compiled, "x abc y") is None
    assert matched_phrase(compiled, "x bc y") == "bc"
    compiled = rules_of("aab", "ab")
    assert matched_phrase(compiled, "aaab ab") == "ab"


def test_automaton_agrees_with_plain_substring_search() -> None:
    # Small alphabet, many overlaps: every failure-link path is taken; `in` is the reference.
    generator = random.Random(13)
    alphabet = "甲乙丙"
    for _ in range(300):
        phrases = {"".join(generator.choices(alphabet, k=generator.randint(1, 4))) for _ in range(4)}
        text = "".join(generator.choices(alphabet, k=generator.randint(0, 12)))
        expected = any(phrase in text for phrase in phrases)
        rule = rules_of(*sorted(phrases)).match(text)
        assert (rule is not None) == expected, (phrases, text)
        assert rule is None or rule.phrase in text


# --- bounds and keys -------------------------------------------------------------------------------


def test_phrase_key_identifies_rules_that_match_alike() -> None:
    assert phrase_key(" ＧＯＲＥ ") == phrase_key("gore") == "gore"
    assert phrase_key("blood-bath") == phrase_key("Blood  bath")
    assert phrase_key("暴 力") == phrase_key("暴力") == "暴力"


@pytest.mark.parametrize("phrase", ["", "   ", "...", "\u200b", "!!! ???"])
def test_phrase_without_letters_is_refused(phrase: str) -> None:
    with pytest.raises(InvalidRule) as refused:
        phrase_key(phrase)
    assert refused.value.reason == "empty"


def test_phrase_length_is_capped_as_typed_and_as_normalised() -> None:
    assert phrase_key("a" * MAX_PHRASE_CHARS) == "a" * MAX_PHRASE_CHARS
    with pytest.raises(InvalidRule) as refused:
        phrase_key("a" * (MAX_PHRASE_CHARS + 1))
    assert (refused.value.reason, refused.value.limit) == ("too_long", MAX_PHRASE_CHARS)
    with pytest.raises(InvalidRule):
        phrase_key("\u337f" * 30)  # "㍿" expands to four characters under NFKC


def test_invalid_stored_phrases_are_skipped_when_compiling() -> None:
    compiled = rules_of("...", "x" * (MAX_PHRASE_CHARS + 1), "gore")
    assert [rule.phrase for rule in compiled.rules] == ["gore"]


def test_many_rules_compile_and_match_a_long_text() -> None:
    phrases = [f"word{i}" for i in range(200)] + [f"词{i}语" for i in range(200)]
    compiled = rules_of(*phrases)
    text = "a harmless prompt " * 40 + "词199语"
    assert matched_phrase(compiled, text) == "词199语"
    assert matched_phrase(compiled, "a harmless prompt " * 40) is None


# --- cache -----------------------------------------------------------------------------------------


def test_cache_returns_compiled_rules_for_the_same_version_only() -> None:
    cache = RulesCache()
    compiled = rules_of("gore")
    cache.put(GUILD, 3, compiled)
    assert cache.get(GUILD, 3) is compiled
    assert cache.get(GUILD, 4) is None
    assert cache.get(GUILD + 1, 3) is None


def test_cache_invalidation_per_guild_and_for_defaults() -> None:
    cache = RulesCache()
    cache.put(1, "v", rules_of("a1"))
    cache.put(2, "v", rules_of("a2"))
    cache.invalidate(1)
    assert cache.get(1, "v") is None
    assert cache.get(2, "v") is not None
    cache.invalidate(DEFAULT_SCOPE)  # every guild includes the defaults
    assert len(cache) == 0
