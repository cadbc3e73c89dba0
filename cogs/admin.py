"""/kf2v-admin: owners only (KF2V_OWNER_IDS and the application's owner or team).

Discord's default_permissions only hides the command by default; a server admin can show it to anyone,
so every subcommand checks the caller against the owner list in code.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import discord
from discord import app_commands

from bot.catalog import MILLI_PER_CNY
from bot.discord_ui.checks import Owners
from bot.discord_ui.errors import RefusedCheck
from bot.discord_ui.render import NO_PINGS, clip, job_line, pause_line, report_embed
from bot.discord_ui.report import report_files
from bot.discord_ui.translator import _
from bot.errors import InvalidInput, NotAllowed
from bot.i18n import t
from bot.jobs.privacy.service import PrivacyService
from bot.jobs.reports.service import ReportService
from bot.jobs.service import Actor, JobService
from cogs.privacy import forget_summary


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


def parse_user_id(value: str) -> int:
    """A Discord user id as typed (a string option: snowflakes exceed the integer option's 2^53)."""
    value = value.strip().removeprefix("<@").removeprefix("!").removesuffix(">")
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise InvalidInput("admin.bad_user", value=value)
    return int(value)


@app_commands.guild_only()
@app_commands.default_permissions(administrator=True)
class AdminGroup(app_commands.Group, name="kf2v-admin", description=_("cmd.kf2v_admin")):
    def __init__(self, jobs: JobService, owners: Owners, *, privacy: PrivacyService, reports: ReportService) -> None:
        super().__init__()
        self.jobs = jobs
        self.owners = owners
        self.privacy = privacy
        self.reports = reports

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if not await self.owners.is_owner(interaction.user.id):
            raise RefusedCheck(NotAllowed("admin.owner_only"))  # a CheckFailure → the tree's error handler
        return True

    @app_commands.command(name="budget", description=_("cmd.admin_budget"))
    @app_commands.describe(
        guild_id=_("opt.guild_id"),
        daily=_("opt.daily"),
        monthly=_("opt.monthly"),
    )
    async def budget(
        self,
        interaction: discord.Interaction[Any],
        daily: str | None = None,
        monthly: str | None = None,
        guild_id: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else interaction.guild_id
        assert target is not None
        await self.jobs.set_budgets(
            target,
            daily=parse_cny(daily) if daily is not None else None,
            monthly=parse_cny(monthly) if monthly is not None else None,
        )
        report = await self.jobs.budget_report(target)
        locale = str(interaction.locale)
        await interaction.followup.send(
            embed=report_embed(report, locale, t(locale, "admin.budget_set", guild=target)), ephemeral=True
        )

    @app_commands.command(name="show", description=_("cmd.admin_show"))
    @app_commands.describe(guild_id=_("opt.guild_id"))
    async def show(self, interaction: discord.Interaction[Any], guild_id: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else interaction.guild_id
        assert target is not None
        report = await self.jobs.budget_report(target)
        locale = str(interaction.locale)
        title = t(locale, "admin.show_title", guild=target)
        await interaction.followup.send(
            embed=report_embed(report, locale, title, self.jobs.pause_for(target)), ephemeral=True
        )

    @app_commands.command(name="pause", description=_("cmd.admin_pause"))
    @app_commands.describe(reason=_("opt.pause_reason"), guild_id=_("opt.pause_guild_id"))
    async def pause(
        self, interaction: discord.Interaction[Any], reason: str | None = None, guild_id: str | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else None
        await self.jobs.pause(reason or "paused by an owner", guild_id=target)
        locale = str(interaction.locale)
        text = t(locale, "admin.paused") if target is None else t(locale, "admin.paused_guild", guild=target)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="resume", description=_("cmd.admin_resume"))
    @app_commands.describe(guild_id=_("opt.resume_guild_id"))
    async def resume(self, interaction: discord.Interaction[Any], guild_id: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = parse_guild_id(guild_id) if guild_id else None
        await self.jobs.resume(guild_id=target)
        locale = str(interaction.locale)
        text = t(locale, "admin.resumed") if target is None else t(locale, "admin.resumed_guild", guild=target)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="queue", description=_("cmd.admin_queue"))
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = str(interaction.locale)
        jobs = await self.jobs.queue_view()
        in_flight = self.jobs.slots_in_flight()
        slots = ", ".join(f"{acct}/{model}: {n}" for (acct, model), n in sorted(in_flight.items())) or "—"
        header = t(locale, "admin.queue_header", count=len(jobs), slots=slots)
        positions = self.jobs.queue_positions()
        lines = [f"`{job.guild_id}` " + job_line(job, locale, positions.get(job.id), None) for job in jobs[:25]]
        embed = discord.Embed(title=header, description=clip("\n".join(lines) or "—", 4000))
        pauses = "\n".join(pause_line(p, locale) for p in self.jobs.pauses()) or t(locale, "admin.no_pauses")
        embed.add_field(name=t(locale, "admin.pauses"), value=clip(pauses, 1024), inline=False)
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="cancel", description=_("cmd.admin_cancel"))
    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.jobs.cancel(job_id, Actor(interaction.user.id, is_owner=True))
        await interaction.followup.send(
            t(
                str(interaction.locale),
                "button.cancelled" if job.is_final else "button.cancel_requested",
                job_id=job.id,
            ),
            ephemeral=True,
        )

    # --- privacy (issue 19) ----------------------------------------------------------------------------
    @app_commands.command(name="forget", description=_("cmd.admin_forget"))
    @app_commands.describe(user_id=_("opt.forget_user_id"))
    async def forget(self, interaction: discord.Interaction[Any], user_id: str) -> None:
        """What /kf2v-forget-me does, for a user id (a request by e-mail, someone who left every server)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.privacy.forget(parse_user_id(user_id))
        await interaction.followup.send(
            forget_summary(outcome, str(interaction.locale)), ephemeral=True, allowed_mentions=NO_PINGS
        )

    # --- spend report (issue 19) -------------------------------------------------------------------------
    @app_commands.command(name="report", description=_("cmd.admin_report"))
    @app_commands.describe(guild_id=_("opt.report_guild_id"))
    async def report(self, interaction: discord.Interaction[Any], guild_id: str | None = None) -> None:
        """The spend chart and CSV of every guild together (with the top guilds), or of one against its budgets."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = str(interaction.locale)
        files = await report_files(self.reports, parse_guild_id(guild_id) if guild_id else None, locale)
        await interaction.followup.send(
            t(locale, "report.attached", days=self.reports.days), files=files, ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(name="redeliver", description=_("cmd.admin_redeliver"))
    async def redeliver(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Post a kept video on demand: now, if it waits for Discord; again, if it was delivered or failed."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome, detail = await self.jobs.worker.redeliver(job_id)
        text = t(str(interaction.locale), f"admin.redeliver_{outcome}", job_id=job_id, state=detail, reason=detail)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


__all__ = ["AdminGroup", "parse_cny", "parse_guild_id", "parse_user_id"]
