"""/kf2v-help: private help in the member's language, built from the running catalog and the live tree."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.help import allowance_text, command_lines, frames_text, help_embeds, models_text
from bot.discord_ui.render import NO_PINGS
from bot.discord_ui.translator import _
from bot.jobs.service import JobService


class HelpCog(commands.Cog):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    @app_commands.command(name="kf2v-help", description=_("cmd.kf2v_help"))
    @app_commands.guild_only()
    async def kf2v_help(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        tree = interaction.client.tree
        listed = [*tree.get_commands(type=discord.AppCommandType.chat_input)]
        listed += tree.get_commands(type=discord.AppCommandType.message)
        permissions = interaction.permissions  # the member's, in this channel (what Discord shows them by)
        report = await self.jobs.budget_report(interaction.guild_id, interaction.user.id)
        models = self.jobs.models()
        default = self.jobs.catalog.default_model
        embeds = help_embeds(
            locale,
            frames=frames_text(self.jobs.catalog.model(default), locale),
            commands=command_lines(listed, permissions, locale),
            models=models_text(models, default, self.jobs.region, locale),
            allowance=allowance_text(report, self.jobs.pause_for(interaction.guild_id), locale),
        )
        await interaction.followup.send(embeds=embeds, ephemeral=True, allowed_mentions=NO_PINGS)
