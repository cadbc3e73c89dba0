"""Where a job's or a story's messages go: its thread, else the channel it was asked in (bot token only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import discord

from bot.jobs.ports import DeliveryError

# Talking to Discord can also fail below HTTP (a dropped keep-alive connection, a reset, a timeout): discord.py
# raises these as they are. Best-effort posts log them in one line and try again on the next occasion.
NETWORK_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, OSError, TimeoutError)
# What a best-effort post (a status edit, a failure notice) may meet: Discord's refusal, a conversation that
# can't hold posts any more, or the network.
BEST_EFFORT_ERRORS: tuple[type[Exception], ...] = (discord.HTTPException, DeliveryError, *NETWORK_ERRORS)

log = logging.getLogger(__name__)


async def messageable(client: discord.Client, channel_id: int) -> discord.abc.Messageable:
    """The channel or thread by id, from the cache or Discord; `DeliveryError` (permanent) if it can't hold posts."""
    channel: Any = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        raise DeliveryError(f"channel {channel_id} cannot hold messages", permanent=True)
    return channel


async def thread_or_channel(
    client: discord.Client, thread_id: int | None, channel_id: int, what: str
) -> discord.abc.Messageable:
    """The conversation's thread, or its channel when the thread is gone (`what` names it in the log)."""
    if thread_id:
        try:
            return await messageable(client, thread_id)
        except discord.NotFound:
            log.info("thread of %s is gone; using the channel", what)
    return await messageable(client, channel_id)


def thread_locale(client: discord.Client, guild_id: int, requester_locale: str) -> str:
    """The language of a conversation's thread messages: the guild's, else the requester's."""
    guild = client.get_guild(guild_id)
    if guild is not None and guild.preferred_locale is not None:
        return str(guild.preferred_locale.value)
    return requester_locale


async def upload_limit(client: discord.Client, guild_id: int, ready_timeout: float) -> int:
    """The guild's real upload limit (its boost tier), never a guess: from the gateway's guild once it has arrived
    (after a start, waiting up to `ready_timeout` for the gateway to be ready), else from the REST API.
    discord.HTTPException and the network errors pass through (a delivery retries them)."""
    guild = client.get_guild(guild_id)
    if guild is None or guild.unavailable:
        with contextlib.suppress(TimeoutError, RuntimeError):  # RuntimeError: a client never logged in
            await asyncio.wait_for(client.wait_until_ready(), ready_timeout)
        guild = client.get_guild(guild_id)
    if guild is None or guild.unavailable:
        guild = await client.fetch_guild(guild_id)  # its premium tier is in the answer
    return guild.filesize_limit
