"""End to end: server content rules with the real bot between the Discord and DashScope emulators."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest

from sandbox.discord_emu import CommandUnavailableError
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, MANAGER, OWNER, World


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def world_settings() -> dict[str, Any]:
    """This module's world: see tests/conftest.py."""
    return dict(KF2V_HTTP_HOST="127.0.0.1", KF2V_HTTP_PORT=str(free_port()))


async def rules(world: World, user: int, subcommand: str, guild: int | None = None, **options: Any) -> str:
    """Run /kf2v-rules <subcommand> and return what the caller saw privately."""
    channel = world.channel if guild is None else world.extra[f"channel:{guild}"]
    record = await world.discord.run_command(
        guild or world.guild, channel, user, "kf2v-rules", options, subcommand=subcommand,
        ignore_default_permissions=True,  # the code's own check, not Discord's default visibility, is under test
    )  # fmt: skip
    return await world.reply(record)


def cdn_downloads(world: World) -> int:
    return len([r for r in world.discord.requests if "attachments/" in r.path and r.method == "GET"])


async def assert_nothing_happened(world: World, downloads_before: int) -> None:
    """A refused prompt: no frame fetched, no job, nothing reserved, no provider task."""
    assert cdn_downloads(world) == downloads_before
    assert await world.svc.store.all_jobs() == []
    assert await world.svc.store.ledger() == []
    assert world.dashscope.stats()["submissions_accepted"] == 0


async def metric_value(world: World, name: str) -> dict[str, float]:
    """Samples of one metric family from the bot's real /metrics endpoint, by their label text."""
    port = world.svc.settings.http_port
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name):
            series, value = line.rsplit(" ", 1)
            samples[series[len(name) :]] = float(value)
    return samples


async def test_banned_phrases_are_refused_privately_in_english_and_chinese_with_nothing_reserved(
    world: World,
) -> None:
    assert "Added" in await rules(world, MANAGER, "add", phrase="Gore")
    assert "Added" in await rules(world, MANAGER, "add", phrase="暴力")
    downloads = cdn_downloads(world)

    english = await world.kf2v(prompt="a quiet street, then lots of GORE")
    text = await world.reply(english)
    assert "Gore" in text and "this server" in text and "Nothing was charged" in text
    assert all(message.ephemeral for message in english.messages)

    # A Chinese rule inside a sentence without spaces, answered in Chinese.
    chinese = await world.kf2v(prompt="一个非常暴力的打斗场景", locale="zh-CN")
    text = await world.reply(chinese)
    assert "暴力" in text and "提示词" in text

    # Full-width letters and a zero-width space don't slip through; nor does the negative prompt.
    full_width = await world.kf2v(prompt="ＧＯＲＥ everywhere")
    assert "Gore" in await world.reply(full_width)
    hidden = await world.kf2v(prompt="a calm sea", negative_prompt="暴\u200b力")
    text = await world.reply(hidden)
    assert "暴力" in text and "negative prompt" in text
    await assert_nothing_happened(world, downloads)

    # Words that merely contain a rule pass: "gorge" is not "gore".
    allowed = await world.kf2v(prompt="a deep gorge at sunset")
    assert "queued" in await world.reply(allowed)

    quota = await world.discord.run_command(world.guild, world.channel, ALICE, "kf2v-quota")
    quota_text = await world.reply(quota)
    assert "2 rules" in quota_text and "4 prompts refused this month" in quota_text
    refusals = await metric_value(world, "kf2v_content_rule_refusals_total")
    assert refusals == {
        '{field="prompt",scope="guild"}': 3.0,
        '{field="negative_prompt",scope="guild"}': 1.0,
        '{field="prompt",scope="default"}': 0.0,
        '{field="negative_prompt",scope="default"}': 0.0,
    }


async def test_a_manager_adds_and_removes_rules_and_a_member_cannot(world: World) -> None:
    # Discord hides the command from members by default ...
    with pytest.raises(CommandUnavailableError):
        await world.discord.run_command(
            world.guild, world.channel, BOB, "kf2v-rules", {"phrase": "x"}, subcommand="add"
        )
    # ... and the bot refuses a member who was shown it anyway.
    assert "Only this server's managers" in await rules(world, BOB, "add", phrase="gore")
    assert "Only this server's managers" in await rules(world, BOB, "list")
    assert await world.svc.store.content_rules(world.guild) == []

    assert "Added" in await rules(world, MANAGER, "add", phrase="gore")
    assert "already" in await rules(world, MANAGER, "add", phrase="ＧＯＲＥ")  # the same rule in full width
    assert "no letters or digits" in await rules(world, MANAGER, "add", phrase="...")
    listed = await rules(world, MANAGER, "list")
    assert "gore" in listed and "1" in listed
    refused = await world.kf2v(prompt="gore")
    assert "gore" in await world.reply(refused)

    assert "isn't on" in await rules(world, MANAGER, "remove", phrase="blood")
    assert "Removed" in await rules(world, MANAGER, "remove", phrase="GORE")
    assert await world.svc.store.content_rules(world.guild) == []
    accepted = await world.kf2v(prompt="gore")
    assert "queued" in await world.reply(accepted)


async def test_the_owners_default_list_applies_in_every_guild(world: World) -> None:
    other_guild = world.discord.add_guild("Guild B", locale="en-US")
    world.extra[f"channel:{other_guild}"] = world.discord.add_text_channel(other_guild, "videos")
    world.discord.add_member(other_guild, BOB, "bob")
    world.discord.add_member(other_guild, MANAGER, "manager", manage_guild=True)

    # A manager can't write the default list; an owner can.
    assert "Only the bot's owners" in await rules(world, MANAGER, "add", phrase="血腥", scope="all")
    assert "Added" in await rules(world, OWNER, "add", phrase="血腥", scope="all")
    assert "血腥" in await rules(world, MANAGER, "list", guild=other_guild, scope="all")

    downloads = cdn_downloads(world)
    for guild, channel in ((world.guild, world.channel), (other_guild, world.extra[f"channel:{other_guild}"])):
        record = await world.kf2v(user=BOB, prompt="非常血腥的画面", guild=guild, channel=channel)
        text = await world.reply(record)
        assert "血腥" in text and "all servers" in text
    await assert_nothing_happened(world, downloads)
    refusals = await metric_value(world, "kf2v_content_rule_refusals_total")
    assert refusals['{field="prompt",scope="default"}'] == 2.0

    # A guild's managers can't remove a default rule from their own list.
    assert "isn't on" in await rules(world, MANAGER, "remove", phrase="血腥", guild=other_guild)
    assert "Removed" in await rules(world, OWNER, "remove", phrase="血腥", scope="all")
    accepted = await world.kf2v(user=BOB, prompt="非常血腥的画面")
    assert "queued" in await world.reply(accepted)


async def test_regenerate_meets_a_rule_added_after_the_first_video(world: World) -> None:
    first = await world.kf2v(prompt="a knight in a blood bath")
    assert "queued" in await world.reply(first)
    job = await world.latest_job()

    async def has_regen() -> bool:
        msg = world.discord.message((await world.job(job.id)).status_message_id or 0)
        return msg is not None and "kf2v:regen:" in str(msg.components)

    await wait_until(has_regen, within=30)
    assert "Added" in await rules(world, MANAGER, "add", phrase="blood bath")
    ledger_before = await world.svc.store.ledger()
    status_id = (await world.job(job.id)).status_message_id or 0
    regen = await world.discord.press_button(status_id, f"kf2v:regen:{job.id}", ALICE)
    text = await world.reply(regen)
    assert "blood bath" in text and "Nothing was charged" in text
    assert [j.id for j in await world.svc.store.all_jobs()] == [job.id]
    assert await world.svc.store.ledger() == ledger_before
