"""/kf2v-jobs: the caller's recent jobs with state, position/ETA, cost and a link to each thread."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.render import NO_PINGS, clip, job_line
from bot.discord_ui.translator import _
from bot.i18n import t
from bot.jobs.service import JobService


class JobsCog(commands.Cog):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    @app_commands.command(name="kf2v-jobs", description=_("cmd.kf2v_jobs"))
    @app_commands.guild_only()
    async def kf2v_jobs(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        jobs = await self.jobs.jobs_for(interaction.guild_id, interaction.user.id, limit=10)
        if not jobs:
            await interaction.followup.send(t(locale, "jobs.none"), ephemeral=True)
            return
        lines = []
        for job in jobs:
            progress = self.jobs.progress(job) if not job.is_final else None
            lines.append(
                job_line(job, locale, progress.position if progress else None, progress.eta_s if progress else None)
            )
        embed = discord.Embed(title=t(locale, "jobs.title"), description=clip("\n".join(lines), 4000))
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)
