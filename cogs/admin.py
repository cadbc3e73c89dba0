"""/kf2v-admin: owners only (KF2V_OWNER_IDS and the application's owner or team).

Discord's default_permissions only hides the command by default; a server admin can show it to anyone,
so every subcommand checks the caller against the owner list in code.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalog import MILLI_PER_CNY, format_cny
from bot.discord_notifier import NO_PINGS, clip
from bot.errors import InvalidInput
from bot.i18n import t
from bot.i18n_discord import _
from bot.jobs.service import Actor
from cogs.jobs import job_line
from cogs.quota import report_embed

if TYPE_CHECKING:
    from bot.client import VideoBot


def parse_cny(value: str) -> int:
    try:
        amount = Decimal(value.strip().lstrip("¥"))
    except InvalidOperation:
        raise InvalidInput("admin.bad_amount", value=value) from None
    if amount < 0 or amount > 1_000_000:
        raise InvalidInput("admin.bad_amount", value=value)
    return int(amount * MILLI_PER_CNY)


def parse_guild_id(value: str) -> int:
    if not value.isdigit():
        raise InvalidInput("admin.bad_guild", value=value)
    return int(value)


@app_commands.guild_only()
@app_commands.default_permissions(administrator=True)
class AdminGroup(app_commands.Group, name="kf2v-admin", description=_("cmd.kf2v_admin")):
    def __init__(self, bot: VideoBot) -> None:
        super().__init__()
        self.bot = bot
        self.services = bot.services

    async def interaction_check(self, interaction: discord.Interaction[VideoBot]) -> bool:  # type: ignore[override]
        await self.bot.require_owner(interaction.user.id)  # raises a CheckFailure → the tree's error handler
        return True

    @app_commands.command(name="budget", description=_("cmd.admin_budget"))
    @app_commands.describe(
        guild_id=_("opt.guild_id"),
        daily=_("opt.daily"),
        monthly=_("opt.monthly"),
    )
    async def budget(
        self,
        interaction: discord.Interaction[VideoBot],
        daily: str | None = None,
        monthly: str | None = None,
        guild_id: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else interaction.guild_id
        assert target is not None
        await self.services.budget.set_budgets(
            target,
            daily=parse_cny(daily) if daily is not None else None,
            monthly=parse_cny(monthly) if monthly is not None else None,
        )
        report = await self.services.budget.report(target)
        locale = str(interaction.locale)
        await interaction.followup.send(
            embed=report_embed(report, locale, t(locale, "admin.budget_set", guild=target)), ephemeral=True
        )

    @app_commands.command(name="show", description=_("cmd.admin_show"))
    @app_commands.describe(guild_id=_("opt.guild_id"))
    async def show(self, interaction: discord.Interaction[VideoBot], guild_id: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else interaction.guild_id
        assert target is not None
        report = await self.services.budget.report(target)
        locale = str(interaction.locale)
        await interaction.followup.send(
            embed=report_embed(report, locale, t(locale, "admin.show_title", guild=target)), ephemeral=True
        )

    @app_commands.command(name="pause", description=_("cmd.admin_pause"))
    async def pause(self, interaction: discord.Interaction[VideoBot], reason: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.services.jobs.pause(reason or "paused by an owner")
        await interaction.followup.send(t(str(interaction.locale), "admin.paused"), ephemeral=True)

    @app_commands.command(name="resume", description=_("cmd.admin_resume"))
    async def resume(self, interaction: discord.Interaction[VideoBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.services.jobs.resume()
        await interaction.followup.send(t(str(interaction.locale), "admin.resumed"), ephemeral=True)

    @app_commands.command(name="queue", description=_("cmd.admin_queue"))
    async def queue(self, interaction: discord.Interaction[VideoBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = str(interaction.locale)
        jobs = await self.services.jobs.queue_view()
        in_flight = self.services.scheduler.limits.in_flight()
        slots = ", ".join(f"{acct}/{model}: {n}" for (acct, model), n in sorted(in_flight.items())) or "—"
        header = t(locale, "admin.queue_header", count=len(jobs), slots=slots,
                   paused=t(locale, "admin.paused") if self.services.jobs.paused else "")  # fmt: skip
        positions = self.services.scheduler.queue.positions()
        lines = [f"`{job.guild_id}` " + job_line(job, locale, positions.get(job.id), None) for job in jobs[:25]]
        await interaction.followup.send(
            embed=discord.Embed(title=header, description=clip("\n".join(lines) or "—", 4000)),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    @app_commands.command(name="cancel", description=_("cmd.admin_cancel"))
    async def cancel(self, interaction: discord.Interaction[VideoBot], job_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.services.jobs.cancel(job_id, Actor(interaction.user.id, is_owner=True))
        await interaction.followup.send(
            t(
                str(interaction.locale),
                "button.cancelled" if job.is_final else "button.cancel_requested",
                job_id=job.id,
            ),
            ephemeral=True,
        )


async def setup(bot: commands.Bot) -> None:
    bot.tree.add_command(AdminGroup(bot))  # type: ignore[arg-type]


__all__ = ["AdminGroup", "format_cny"]
