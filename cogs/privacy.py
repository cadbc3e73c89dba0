"""/kf2v-forget-me: a member erases what the bot keeps about them, after a private confirmation.

The work is PrivacyService.forget (bot/jobs/privacy): prompts, media and the member's id on every request in
every server; jobs in flight finish first and are erased by the sweeper; the ledger keeps its amounts.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.errors import reply_error
from bot.discord_ui.render import NO_PINGS
from bot.discord_ui.translator import _
from bot.i18n import t
from bot.jobs.privacy.service import ForgetOutcome, PrivacyService

log = logging.getLogger(__name__)
CONFIRM_TIMEOUT_S = 120.0


def forget_summary(outcome: ForgetOutcome, locale: str) -> str:
    """What was erased, and what will be once it finishes (the member's and the owners' reply)."""
    text = t(locale, "forget.done", jobs=outcome.jobs, stories=outcome.stories, files=outcome.files)
    if outcome.pending:
        text += " " + t(locale, "forget.pending", pending=outcome.pending)
    return text


class ForgetConfirm(discord.ui.View):
    """Two buttons on the private confirmation; only the member who asked can press them (it is ephemeral)."""

    def __init__(self, privacy: PrivacyService, user_id: int, locale: str) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.privacy = privacy
        self.user_id = user_id
        self.locale = locale
        erase = discord.ui.Button[ForgetConfirm](
            label=t(locale, "forget.confirm_button"), style=discord.ButtonStyle.danger
        )
        keep = discord.ui.Button[ForgetConfirm](label=t(locale, "forget.keep_button"))
        erase.callback = self._erase  # type: ignore[method-assign]
        keep.callback = self._keep  # type: ignore[method-assign]
        self.add_item(erase)
        self.add_item(keep)

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return interaction.user.id == self.user_id

    async def _erase(self, interaction: discord.Interaction[Any]) -> None:
        self.stop()
        await interaction.response.defer()
        outcome = await self.privacy.forget(self.user_id)
        await interaction.edit_original_response(
            content=forget_summary(outcome, self.locale), view=None, allowed_mentions=NO_PINGS
        )

    async def _keep(self, interaction: discord.Interaction[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(content=t(self.locale, "forget.kept"), view=None)

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await reply_error(interaction, error)


class PrivacyCog(commands.Cog):
    def __init__(self, privacy: PrivacyService) -> None:
        self.privacy = privacy

    @app_commands.command(name="kf2v-forget-me", description=_("cmd.kf2v_forget_me"))
    @app_commands.guild_only()
    async def kf2v_forget_me(self, interaction: discord.Interaction[Any]) -> None:
        locale = str(interaction.locale)
        await interaction.response.send_message(
            t(locale, "forget.confirm"),
            view=ForgetConfirm(self.privacy, interaction.user.id, locale),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )


__all__ = ["ForgetConfirm", "PrivacyCog", "forget_summary"]
