"""The command tree's one error handler: any error becomes an ephemeral message in the user's language.

Refusals (`BotError`) show their message; anything else is a bug: logged with its stack and a reference
id, and the user sees only that id.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import BotError
from bot.i18n import t

log = logging.getLogger(__name__)


class RefusedCheck(app_commands.CheckFailure):
    """A BotError raised from a check: discord.py only routes AppCommandErrors to the tree's handler."""

    def __init__(self, error: BotError) -> None:
        super().__init__(error.key)
        self.error = error


def error_reference() -> str:
    return secrets.token_hex(4)


def message_params(params: dict[str, Any]) -> dict[str, Any]:
    """The domain names channels by id (`channel_ids`); Discord shows them as mentions (`channels`)."""
    rendered = dict(params)
    if "channel_ids" in rendered:
        rendered["channels"] = " ".join(f"<#{c}>" for c in rendered.pop("channel_ids"))
    return rendered


def user_message(exc: BaseException, locale: str | None) -> tuple[str, str | None]:
    """(text for the user, reference id when it was a bug). Never the raw exception."""
    if isinstance(exc, app_commands.CommandInvokeError | commands.CommandInvokeError):
        exc = exc.original
    if isinstance(exc, RefusedCheck):
        exc = exc.error
    if isinstance(exc, BotError):
        return t(locale, exc.key, **message_params(exc.params)), None
    if isinstance(exc, app_commands.NoPrivateMessage):
        return t(locale, "error.guild_only"), None
    if isinstance(exc, app_commands.MissingPermissions | app_commands.CheckFailure):
        return t(locale, "error.not_allowed"), None
    if isinstance(exc, app_commands.CommandOnCooldown):
        return t(locale, "error.rate_limited", retry_ts=int(discord.utils.utcnow().timestamp() + exc.retry_after)), None
    ref = error_reference()
    return t(locale, "error.generic", ref=ref), ref


async def reply_error(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    """The one place that turns any error into an ephemeral message (and a log line with a stack for bugs)."""
    text, ref = user_message(exc, str(interaction.locale))
    if ref is not None:
        log.error(
            "unexpected error ref=%s in %s (guild %s, user %s)",
            ref,
            interaction.command.qualified_name if interaction.command else interaction.data,
            interaction.guild_id,
            interaction.user.id,
            exc_info=exc,
            extra={"ref": ref, "guild_id": interaction.guild_id, "user_id": interaction.user.id},
        )
    else:
        log.info("refused %s for user %s: %s", interaction.guild_id, interaction.user.id, getattr(exc, "key", exc))
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
    except discord.HTTPException:
        log.warning("could not tell user %s about an error (interaction expired?)", interaction.user.id)
