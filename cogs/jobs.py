"""/kf2v-jobs: the caller's recent jobs with state, position/ETA, cost and a link to each thread."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalog import format_cny
from bot.discord_notifier import NO_PINGS, clip
from bot.i18n import t
from bot.i18n_discord import _
from bot.jobs.models import Job, JobState

if TYPE_CHECKING:
    from bot.client import VideoBot


def job_line(job: Job, locale: str, position: int | None, eta_s: float | None) -> str:
    state = t(locale, f"state.{job.state.value}")
    where = f"<#{job.thread_id}>" if job.thread_id else f"<#{job.channel_id}>"
    cost = job.cost_settled if job.charge_state.value == "settled" else job.cost_reserved
    money = t(locale, "status.cost_none") if job.charge_state.value == "released" else f"¥{format_cny(cost)}"
    extra = ""
    if job.state is JobState.QUEUED and position is not None:
        extra = " · " + t(locale, "status.position", position=position)
    if eta_s is not None and not job.is_final:
        extra += " · " + t(locale, "status.eta", ts=int(time.time() + eta_s))
    prompt = clip(" ".join((job.prompt or job.template or "").split()), 60)
    return f"**#{job.id}** {state} · {job.model} {job.resolution} · {money}{extra} · {where}\n> {prompt}"


class JobsCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.services = bot.services

    @app_commands.command(name="kf2v-jobs", description=_("cmd.kf2v_jobs"))
    @app_commands.guild_only()
    async def kf2v_jobs(self, interaction: discord.Interaction[VideoBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        jobs = await self.services.jobs.jobs_for(interaction.guild_id, interaction.user.id, limit=10)
        if not jobs:
            await interaction.followup.send(t(locale, "jobs.none"), ephemeral=True)
            return
        lines = []
        for job in jobs:
            progress = self.services.worker.progress(job) if not job.is_final else None
            lines.append(
                job_line(job, locale, progress.position if progress else None, progress.eta_s if progress else None)
            )
        embed = discord.Embed(title=t(locale, "jobs.title"), description=clip("\n".join(lines), 4000))
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(JobsCog(bot))  # type: ignore[arg-type]
