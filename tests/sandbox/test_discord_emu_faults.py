"""The Discord emulator's faults at the REST edge, seen by the real discord.py: errors that last until stopped
(with Discord's JSON error code), requests held before or after Discord acted, and connections dropped."""

from __future__ import annotations

import asyncio
from typing import cast

import aiohttp
import discord
import pytest

from sandbox.discord_emu import DiscordEmulator
from tests.sandbox.test_discord_emulator import USER_ID, emu, running_bot, world  # noqa: F401 - the fixture
from tests.support.waiting import wait_until

ROUTE = "POST /channels/{channel_id}/messages"


async def test_an_error_lasts_until_stopped_and_carries_its_code(
    emu: DiscordEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        outage = emu.inject_rest_errors(503, None, route_contains=f"/channels/{channel_id}/messages", method="POST")
        for _ in range(3):
            with pytest.raises(discord.DiscordServerError):  # discord.py does not retry a 503
                await channel.send("during the outage")
        outage.stop()
        forbidden = emu.inject_rest_errors(403, None, route_contains=f"/channels/{channel_id}/", code=50013)
        with pytest.raises(discord.Forbidden) as refused:
            await channel.send("no permission")
        assert refused.value.code == 50013
        forbidden.stop()
        await channel.send("after")
        statuses = [r.status for r in emu.requests if r.route == ROUTE]
        assert statuses == [503, 503, 503, 403, 200]
        assert outage.taken == 3 and forbidden.taken == 1


async def test_a_held_request_waits_before_or_after_discord_acts(
    emu: DiscordEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        before = emu.hold_rest(f"/channels/{channel_id}/messages", method="POST")
        send = asyncio.create_task(channel.send("held before"))
        await wait_until(lambda: before.held == 1, within=10)
        assert emu.messages(channel_id) == []  # not acted on yet
        before.release()
        await asyncio.wait_for(send, 10)
        after = emu.hold_rest(f"/channels/{channel_id}/messages", method="POST", after=True)
        send = asyncio.create_task(channel.send("held after"))
        await wait_until(lambda: after.held == 1, within=10)
        assert [m.content for m in emu.messages(channel_id)] == ["held before", "held after"]  # stored, unanswered
        assert not send.done()
        after.release()
        assert (await asyncio.wait_for(send, 10)).content == "held after"


async def test_a_dropped_connection_is_an_error_to_the_client(
    emu: DiscordEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        emu.drop_rest(f"/channels/{channel_id}/messages", method="POST", count=None, after=True)
        with pytest.raises(aiohttp.ClientError):  # ServerDisconnectedError: no answer came
            await channel.send("posted, never answered")
        emu.clear_rest_faults()
        assert [m.content for m in emu.messages(channel_id)][:1] == ["posted, never answered"]
        await channel.send("after")


async def test_a_bot_dms_members_of_its_servers_only(
    emu: DiscordEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world(emu)
    elsewhere = emu.add_guild("Elsewhere")  # its owner shares no server with the bot once the bot leaves it
    owner = emu.guild(elsewhere).owner_id
    async with running_bot(emu, monkeypatch, None) as bot:
        await (await bot.fetch_user(USER_ID)).send("hello from the bot")
        assert [m.content for m in emu.dms(USER_ID)] == ["hello from the bot"]
        emu.guild(elsewhere).removed = True
        with pytest.raises(discord.Forbidden) as refused:
            await (await bot.fetch_user(owner)).send("no common server")
        assert refused.value.code == 50007 and emu.dms(owner) == []
