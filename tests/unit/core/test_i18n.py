"""The message catalog: every language has every key, with the same placeholders."""

from __future__ import annotations

import string

import pytest

from bot.i18n import EN, MESSAGES, ZH, t


def placeholders(template: str) -> set[str]:
    """Field names in a str.format template ("{a}", "{b:g}", "{c!r}" -> {"a", "b", "c"})."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field.split(".")[0].split("[")[0])
    return names


def test_languages_are_english_and_chinese() -> None:
    assert set(MESSAGES) == {EN, ZH}


def test_every_language_has_the_same_keys() -> None:
    assert set(MESSAGES[ZH]) - set(MESSAGES[EN]) == set(), "keys only in Chinese"
    assert set(MESSAGES[EN]) - set(MESSAGES[ZH]) == set(), "keys missing from Chinese"


@pytest.mark.parametrize("key", sorted(MESSAGES[EN]))
def test_placeholders_match_across_languages(key: str) -> None:
    en = placeholders(MESSAGES[EN][key])
    for lang, messages in MESSAGES.items():
        if key in messages:
            assert placeholders(messages[key]) == en, f"{lang} {key!r}"


@pytest.mark.parametrize("key", sorted(MESSAGES[EN]))
def test_templates_parse_and_are_not_blank(key: str) -> None:
    for messages in MESSAGES.values():
        template = messages.get(key, "x")
        assert template.strip()
        list(string.Formatter().parse(template))  # raises on unbalanced braces


def test_t_picks_the_language_and_falls_back_to_english() -> None:
    assert t("zh-CN", "error.job_not_found", job_id=7) == MESSAGES[ZH]["error.job_not_found"].format(job_id=7)
    assert t("fr", "error.job_not_found", job_id=7) == MESSAGES[EN]["error.job_not_found"].format(job_id=7)
    assert t(None, "error.job_not_found", job_id=7) == MESSAGES[EN]["error.job_not_found"].format(job_id=7)
    with pytest.raises(KeyError):
        t("en-US", "no.such.key")
