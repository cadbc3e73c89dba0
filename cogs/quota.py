"""/kf2v-quota: the guild's budget and usage; managers set member limits and allowed channels here.

Guild managers (Manage Server) may only limit members inside the budget; the budget itself is the
owners' (/kf2v-admin), so a manager can never raise what the guild may spend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalog import format_cny
from bot.discord_notifier import NO_PINGS
from bot.errors import InvalidInput, NotAllowed
from bot.i18n import t
from bot.i18n_discord import _
from bot.jobs.quota import BudgetReport
from bot.jobs.store import ChannelEdit
from bot.views import is_manager

if TYPE_CHECKING:
    from bot.client import VideoBot


def report_embed(report: BudgetReport, locale: str, title: str) -> discord.Embed:
    usage, policy = report.usage, report.policy
    embed = discord.Embed(title=title)
    embed.add_field(
        name=t(locale, "quota.today"),
        value=t(
            locale, "quota.usage_line", spent=format_cny(usage.spent_day), reserved=format_cny(usage.reserved_day),
            budget=format_cny(policy.daily_budget), left=format_cny(report.left_day),
            resets_ts=int(report.periods.day_resets_at.timestamp()),
        ),
        inline=False,
    )  # fmt: skip
    embed.add_field(
        name=t(locale, "quota.month"),
        value=t(
            locale, "quota.usage_line", spent=format_cny(usage.spent_month), reserved=format_cny(usage.reserved_month),
            budget=format_cny(policy.monthly_budget), left=format_cny(report.left_month),
            resets_ts=int(report.periods.month_resets_at.timestamp()),
        ),
        inline=False,
    )  # fmt: skip
    channels = " ".join(f"<#{c}>" for c in policy.allowed_channels) or t(locale, "quota.all_channels")
    embed.add_field(
        name=t(locale, "quota.limits"),
        value=t(
            locale, "quota.limits_line", videos=policy.member_daily_videos, queue=policy.user_queue_limit,
            channels=channels,
        ),
        inline=False,
    )  # fmt: skip
    if report.top_users:
        top = "\n".join(
            t(locale, "quota.top_line", user=f"<@{user}>", videos=videos, spent=format_cny(spent))
            for user, videos, spent in report.top_users
        )
        embed.add_field(name=t(locale, "quota.top"), value=top, inline=False)
    if policy.paused:
        embed.set_footer(text=t(locale, "status.paused"))
    return embed


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
                raise InvalidInput("quota.channel_not_listed", channel=f"<#{disallow.id}>")
            channels.remove(disallow.id)
        return tuple(channels)

    return edit


class QuotaCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.services = bot.services

    @app_commands.command(name="kf2v-quota", description=_("cmd.kf2v_quota"))
    @app_commands.guild_only()
    @app_commands.describe(
        member_daily_videos=_("opt.member_daily_videos"),
        user_queue_limit=_("opt.user_queue_limit"),
        allow_channel=_("opt.allow_channel"),
        disallow_channel=_("opt.disallow_channel"),
        allow_everywhere=_("opt.allow_everywhere"),
    )
    async def kf2v_quota(
        self,
        interaction: discord.Interaction[VideoBot],
        member_daily_videos: app_commands.Range[int, 0, 1000] | None = None,
        user_queue_limit: app_commands.Range[int, 1, 100] | None = None,
        allow_channel: discord.TextChannel | None = None,
        disallow_channel: discord.TextChannel | None = None,
        allow_everywhere: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        budget = self.services.budget
        changing = any(v is not None for v in (member_daily_videos, user_queue_limit, allow_channel, disallow_channel))
        changing = changing or allow_everywhere
        if changing:
            if not is_manager(interaction):
                raise NotAllowed("quota.managers_only")
            touches_channels = allow_everywhere or allow_channel is not None or disallow_channel is not None
            await budget.set_member_limits(
                interaction.guild_id,
                member_daily_videos=member_daily_videos,
                user_queue_limit=user_queue_limit,
                edit_channels=channel_edit(allow_channel, disallow_channel, allow_everywhere)
                if touches_channels
                else None,
            )
        report = await budget.report(interaction.guild_id, interaction.user.id)
        title = t(locale, "quota.updated" if changing else "quota.title")
        await interaction.followup.send(
            embed=report_embed(report, locale, title), ephemeral=True, allowed_mentions=NO_PINGS
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(QuotaCog(bot))  # type: ignore[arg-type]
