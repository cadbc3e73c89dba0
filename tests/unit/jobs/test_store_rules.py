"""JobStore's content-rule tables on both engines: lists per scope, limits, versions, refusal counts."""

from __future__ import annotations

import asyncio

from bot.jobs.rules import DEFAULT_SCOPE, ContentRule, RuleChange, phrase_key
from bot.jobs.store import JobStore
from tests.support.postgres import OpenDatabase

GUILD = 7


async def add(store: JobStore, guild_id: int, phrase: str, limit: int = 200) -> tuple[RuleChange, ContentRule, int]:
    return await store.add_content_rule(guild_id, phrase_key(phrase), phrase, 1, limit=limit)


async def test_rules_are_kept_per_scope_and_deduplicated_by_key(open_database_of_engine: OpenDatabase) -> None:
    store = JobStore(await open_database_of_engine())
    assert await add(store, GUILD, "Gore") == (RuleChange.DONE, ContentRule("Gore", GUILD), 1)
    assert await add(store, GUILD, "暴力") == (RuleChange.DONE, ContentRule("暴力", GUILD), 2)
    # The same rule in another case and width is the one already listed, as it was first typed.
    assert await add(store, GUILD, "ＧＯＲＥ") == (RuleChange.EXISTS, ContentRule("Gore", GUILD), 2)
    assert await add(store, DEFAULT_SCOPE, "gore") == (RuleChange.DONE, ContentRule("gore", DEFAULT_SCOPE), 1)
    assert await store.content_rules(GUILD) == [ContentRule("Gore", GUILD), ContentRule("暴力", GUILD)]
    assert await store.content_rules(DEFAULT_SCOPE) == [ContentRule("gore", DEFAULT_SCOPE)]
    assert await store.content_rules(GUILD + 1) == []

    assert await store.remove_content_rule(GUILD, phrase_key("gore")) == ContentRule("Gore", GUILD)
    assert await store.remove_content_rule(GUILD, phrase_key("gore")) is None
    assert await store.content_rules(GUILD) == [ContentRule("暴力", GUILD)]
    assert await store.content_rules(DEFAULT_SCOPE) == [ContentRule("gore", DEFAULT_SCOPE)]


async def test_a_full_list_refuses_and_two_processes_cannot_both_take_the_last_place(
    open_database_of_engine: OpenDatabase,
) -> None:
    first, second = JobStore(await open_database_of_engine()), JobStore(await open_database_of_engine())
    await add(first, GUILD, "one", limit=2)
    results = await asyncio.gather(add(first, GUILD, "two", limit=2), add(second, GUILD, "three", limit=2))
    assert sorted(change for change, _, _ in results) == [RuleChange.DONE, RuleChange.FULL]
    assert len(await first.content_rules(GUILD)) == 2


async def test_versions_change_with_each_edit_seen_by_another_process(open_database_of_engine: OpenDatabase) -> None:
    writer, reader = JobStore(await open_database_of_engine()), JobStore(await open_database_of_engine())
    assert await reader.content_rule_versions(GUILD) == (0, 0)
    await add(writer, GUILD, "gore")
    assert await reader.content_rule_versions(GUILD) == (1, 0)
    await add(writer, GUILD, "GORE")  # already there: nothing changed, so the compiled rules stay valid
    assert await reader.content_rule_versions(GUILD) == (1, 0)
    await add(writer, DEFAULT_SCOPE, "血腥")
    await writer.remove_content_rule(GUILD, phrase_key("gore"))
    await writer.remove_content_rule(GUILD, phrase_key("gore"))  # nothing to remove: no new version
    assert await reader.content_rule_versions(GUILD) == (2, 1)
    assert await reader.content_rule_versions(GUILD + 1) == (0, 1)


async def test_refusals_are_counted_per_guild_and_month(open_database_of_engine: OpenDatabase) -> None:
    store = JobStore(await open_database_of_engine())
    await add(store, GUILD, "gore")
    await add(store, DEFAULT_SCOPE, "血腥")
    await add(store, DEFAULT_SCOPE, "暴力")
    for guild_id, month in ((GUILD, "2026-12"), (GUILD, "2026-12"), (GUILD, "2026-11"), (GUILD + 1, "2026-12")):
        await store.count_rule_refusal(guild_id, month)
    assert await store.rules_summary(GUILD, "2026-12") == (1, 2, 2)
    assert await store.rules_summary(GUILD, "2026-11") == (1, 2, 1)
    assert await store.rules_summary(GUILD + 1, "2026-12") == (0, 2, 1)
    assert await store.rules_summary(GUILD + 2, "2026-12") == (0, 2, 0)
