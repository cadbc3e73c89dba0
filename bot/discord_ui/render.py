"""Rendering: status embeds, job lines, the budget report, clipping, thread names, mentions.

Pure functions of the domain's values (no I/O); every message the bot shows is built here or from here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import discord

from bot.catalog import VIDEO_SECONDS, format_cny
from bot.i18n import t
from bot.jobs.models import ChargeState, Job, JobState, Pause
from bot.jobs.ports import Progress
from bot.jobs.quota import BudgetReport

NO_PINGS = discord.AllowedMentions.none()
STATE_COLOURS = {
    JobState.QUEUED: 0x95A5A6,
    JobState.SUBMITTING: 0x3498DB,
    JobState.PENDING: 0x3498DB,
    JobState.RUNNING: 0xF1C40F,
    JobState.SUCCEEDED: 0x2ECC71,
    JobState.DELIVERED: 0x2ECC71,
    JobState.FAILED: 0xE74C3C,
    JobState.CANCELED: 0x7F8C8D,
}


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (Discord's field limits), marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def thread_name(prompt: str, job_id: int, fallback: str) -> str:
    base = " ".join(prompt.split()) or fallback
    return clip(f"#{job_id} {base}", 100)


def length_and_sound(job: Job, locale: str | None) -> str:
    """'8 s, with sound' / '5 s, silent': jobs stored before issue 12 were 5-second silent kf2v videos."""
    seconds = job.request.duration if job.request.duration is not None else VIDEO_SECONDS
    return t(locale, "status.seconds_sound" if job.request.sound else "status.seconds_silent", seconds=seconds)


def status_embed(job: Job, progress: Progress, locale: str | None) -> discord.Embed:
    """The public status message: prompt, model, tier, cost, position/ETA (or the pause holding it), state."""
    state_text = t(locale, f"state.{job.state.value}")
    embed = discord.Embed(
        title=clip(t(locale, "status.title", job_id=job.id, state=state_text), 256),
        description=clip(job.request.prompt or t(locale, "status.effect", template=job.request.template or ""), 4000),
        colour=STATE_COLOURS[job.state],
    )
    cost = job.cost_settled if job.charge_state is ChargeState.SETTLED else job.cost_reserved
    cost_key = "status.cost_settled" if job.charge_state is ChargeState.SETTLED else "status.cost_estimated"
    if job.charge_state is ChargeState.RELEASED:
        cost_key, cost = "status.cost_none", 0
    tier = f"{job.request.model} · {job.request.resolution} · {length_and_sound(job, locale)}"
    embed.add_field(name=t(locale, "status.model"), value=tier, inline=True)
    embed.add_field(name=t(locale, "status.cost"), value=t(locale, cost_key, cost=format_cny(cost)), inline=True)
    embed.add_field(name=t(locale, "status.requester"), value=f"<@{job.user_id}>", inline=True)
    if job.state is JobState.QUEUED:
        if progress.paused is not None:
            embed.add_field(name=t(locale, "status.queue"), value=paused_text(progress.paused, locale), inline=False)
        elif progress.position is not None:
            value = t(locale, "status.position", position=progress.position)
            if progress.eta_s is not None:
                value += " · " + t(locale, "status.eta", ts=int(time.time() + progress.eta_s))
            embed.add_field(name=t(locale, "status.queue"), value=value, inline=False)
    elif job.state in (JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING):
        value = t(locale, f"state.{job.state.value}")
        if progress.elapsed_s is not None:
            value = t(locale, "status.elapsed", seconds=int(progress.elapsed_s))
        if progress.eta_s is not None:
            value += " · " + t(locale, "status.eta", ts=int(time.time() + progress.eta_s))
        embed.add_field(name=t(locale, "status.progress"), value=value, inline=False)
    elif job.state in (JobState.FAILED, JobState.CANCELED) and job.error_key:
        outcome = t(locale, job.error_key, template=job.request.template or "")
        embed.add_field(name=t(locale, "status.outcome"), value=outcome, inline=False)
    if job.request.seed is not None:
        embed.set_footer(text=t(locale, "status.seed", seed=job.request.seed))
    return embed


def paused_text(reason: str, locale: str | None) -> str:
    """Why a job waits: the owners' pause and their reason (their own words, clipped)."""
    return t(locale, "status.paused", reason=clip(reason, 200))


def pause_line(pause: Pause, locale: str | None) -> str:
    """One pause in force for the owners' view: what it holds, since when, why."""
    return t(
        locale,
        "admin.pause_line",
        scope=t(locale, f"admin.pause_scope.{pause.scope.value}", target=pause.target),
        since_ts=int(pause.since.timestamp()),
        reason=clip(pause.reason, 200),
    )


def channel_mention(channel_id: int) -> str:
    return f"<#{channel_id}>"


def channel_mentions(channel_ids: Iterable[int]) -> str:
    return " ".join(channel_mention(c) for c in channel_ids)


def job_line(job: Job, locale: str, position: int | None, eta_s: float | None) -> str:
    state = t(locale, f"state.{job.state.value}")
    if job.deleted_at is not None:
        state = t(locale, "state.deleted")  # the video was taken down (Delete); its cost stays
    where = channel_mention(job.thread_id or job.channel_id)
    cost = job.cost_settled if job.charge_state is ChargeState.SETTLED else job.cost_reserved
    money = t(locale, "status.cost_none") if job.charge_state is ChargeState.RELEASED else f"¥{format_cny(cost)}"
    extra = ""
    if job.state is JobState.QUEUED and position is not None:
        extra = " · " + t(locale, "status.position", position=position)
    if eta_s is not None and not job.is_final:
        extra += " · " + t(locale, "status.eta", ts=int(time.time() + eta_s))
    request = job.request
    prompt = clip(" ".join((request.prompt or request.template or "").split()), 60)
    return f"**#{job.id}** {state} · {request.model} {request.resolution} · {money}{extra} · {where}\n> {prompt}"


def report_embed(report: BudgetReport, locale: str, title: str, pause: Pause | None = None) -> discord.Embed:
    """The guild's budget, usage and limits (/kf2v-quota, /kf2v-admin show); `pause` is what holds its jobs."""
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
    channels = channel_mentions(policy.allowed_channels) or t(locale, "quota.all_channels")
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
    if pause is not None:
        embed.set_footer(text=paused_text(pause.reason, locale))
    return embed


CANCELLABLE = frozenset({JobState.QUEUED, JobState.SUBMITTING, JobState.PENDING})
CANCEL_ID = "kf2v:cancel:{job_id}"
REGENERATE_ID = "kf2v:regen:{job_id}"
REMIX_ID = "kf2v:remix:{job_id}"
EXTEND_ID = "kf2v:extend:{job_id}"
VARY_ID = "kf2v:vary:{job_id}"
DETAILS_ID = "kf2v:details:{job_id}"
DELETE_ID = "kf2v:delete:{job_id}"


def job_buttons(job: Job, locale: str | None, *, extendable: bool = False) -> discord.ui.View:
    """Cancel while it can still be stopped; Regenerate and Remix once it is over; Extend on a delivered video
    whose model continues clips (`extendable`, decided by the caller who knows the catalog)."""
    view = discord.ui.View(timeout=None)
    if job.state in CANCELLABLE and not job.cancel_requested:
        view.add_item(
            discord.ui.Button(
                label=t(locale, "button.cancel"),
                style=discord.ButtonStyle.danger,
                custom_id=CANCEL_ID.format(job_id=job.id),
            )
        )
    if job.state in (JobState.DELIVERED, JobState.FAILED, JobState.CANCELED):
        view.add_item(
            discord.ui.Button(
                label=t(locale, "button.regenerate"),
                style=discord.ButtonStyle.secondary,
                custom_id=REGENERATE_ID.format(job_id=job.id),
            )
        )
        view.add_item(
            discord.ui.Button(
                label=t(locale, "button.remix"),
                style=discord.ButtonStyle.secondary,
                custom_id=REMIX_ID.format(job_id=job.id),
            )
        )
    if extendable and job.state is JobState.DELIVERED:
        view.add_item(
            discord.ui.Button(
                label=t(locale, "button.extend"),
                style=discord.ButtonStyle.primary,
                custom_id=EXTEND_ID.format(job_id=job.id),
            )
        )
    if job.state is JobState.DELIVERED and job.deleted_at is None:  # issue 19: on every delivered result
        for label, style, custom_id in (
            ("button.vary", discord.ButtonStyle.secondary, VARY_ID),
            ("button.details", discord.ButtonStyle.secondary, DETAILS_ID),
            ("button.delete", discord.ButtonStyle.danger, DELETE_ID),
        ):
            view.add_item(
                discord.ui.Button(label=t(locale, label), style=style, custom_id=custom_id.format(job_id=job.id))
            )
    return view
