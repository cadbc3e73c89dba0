"""/kf2v-quota: the guild's budget and usage, for every member; /kf2v-quota-set: managers set member limits and
allowed channels.

Guild managers (Manage Server) may only limit members inside the budget; the budget itself is the
owners' (/kf2v-admin), so a manager can never raise what the guild may spend.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.checks import is_manager
from bot.discord_ui.render import NO_PINGS, channel_mention, report_embed
from bot.discord_ui.report import report_files
from bot.discord_ui.translator import _
from bot.errors import InvalidInput, NotAllowed
from bot.i18n import t
from bot.jobs.reports.service import ReportService
from bot.jobs.service import JobService
from bot.jobs.store import ChannelEdit


def channel_edit(
    allow: discord.abc.Snowflake | None, disallow: discord.abc.Snowflake | None, everywhere: bool
) -> ChannelEdit:
    """The manager's channel change, applied to the allowed channels as they are inside the update's
    transaction (so two managers changing channels at once both count)."""

    def edit(current: tuple[int, ...]) -> tuple[int, ...]:
        channels = [] if everywhere else list(current)
        if allow is not None and allow.id not in channels:
            channels.append(allow.id)
        if disallow is not None:
            if disallow.id not in channels:
                raise InvalidInput("quota.channel_not_listed", channel=channel_mention(disallow.id))
            channels.remove(disallow.id)
        return tuple(channels)

    return edit


class QuotaCog(commands.Cog):
    """`/kf2v-quota` is every member's view; `/kf2v-quota-set` the managers' settings.

    Two top-level commands, not one with subcommands: Discord keeps default permissions (and the overrides a
    server sets in Server Settings → Integrations) per top-level command only, so this is what lets a server
    show the view to everyone and the settings to managers. Overrides can show `/kf2v-quota-set` to anyone;
    the command still checks Manage Server when it runs.
    """

    def __init__(self, jobs: JobService, *, reports: ReportService) -> None:
        self.jobs = jobs
        self.reports = reports

    @app_commands.command(name="kf2v-quota", description=_("cmd.kf2v_quota"))
    @app_commands.guild_only()
    async def kf2v_quota(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._report(interaction, changed=False)

    @app_commands.command(name="kf2v-quota-set", description=_("cmd.kf2v_quota_set"))
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        member_daily_videos=_("opt.member_daily_videos"),
        user_queue_limit=_("opt.user_queue_limit"),
        allow_channel=_("opt.allow_channel"),
        disallow_channel=_("opt.disallow_channel"),
        allow_everywhere=_("opt.allow_everywhere"),
    )
    async def kf2v_quota_set(
        self,
        interaction: discord.Interaction[Any],
        member_daily_videos: app_commands.Range[int, 0, 1000] | None = None,
        user_queue_limit: app_commands.Range[int, 1, 100] | None = None,
        allow_channel: discord.TextChannel | None = None,
        disallow_channel: discord.TextChannel | None = None,
        allow_everywhere: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        if not is_manager(interaction):  # default_permissions is only Discord's default: checked when it runs
            raise NotAllowed("quota.managers_only")
        touches_channels = allow_everywhere or allow_channel is not None or disallow_channel is not None
        changing = touches_channels or member_daily_videos is not None or user_queue_limit is not None
        if changing:
            await self.jobs.set_member_limits(
                interaction.guild_id,
                member_daily_videos=member_daily_videos,
                user_queue_limit=user_queue_limit,
                edit_channels=channel_edit(allow_channel, disallow_channel, allow_everywhere)
                if touches_channels
                else None,
            )
        await self._report(interaction, changed=changing)

    async def _report(self, interaction: discord.Interaction[Any], *, changed: bool) -> None:
        """The guild's budget, usage, member limits and content rules, privately."""
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        jobs = self.jobs
        report = await jobs.budget_report(interaction.guild_id, interaction.user.id)
        title = t(locale, "quota.updated" if changed else "quota.title")
        embed = report_embed(report, locale, title, jobs.pause_for(interaction.guild_id))
        rules = await jobs.rules_summary(interaction.guild_id)
        embed.add_field(
            name=t(locale, "quota.rules"),
            value=t(
                locale, "quota.rules_line", count=rules.own + rules.default, own=rules.own, default=rules.default,
                refusals=rules.refusals_this_month,
            ),
            inline=False,
        )  # fmt: skip
        # Managers also get the spend picture (issue 19): the last 30 days against the budgets, PNG and CSV.
        files = await report_files(self.reports, interaction.guild_id, locale) if is_manager(interaction) else []
        await interaction.followup.send(embed=embed, files=files, ephemeral=True, allowed_mentions=NO_PINGS)
