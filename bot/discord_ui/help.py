"""/kf2v-help's content: the guide, the commands this member can use, the models of the running catalog with
their lengths and prices, and the member's allowance today. Pure functions of plain values (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import discord
from discord import app_commands

from bot.catalog import MB, MILLI_PER_CNY, ModelSpec, format_cny
from bot.discord_ui.render import channel_mentions, paused_text
from bot.discord_ui.translator import declared_text
from bot.i18n import EN, MESSAGES, t
from bot.jobs.models import Pause
from bot.jobs.quota import BudgetReport

HELP_COLOUR = 0x5865F2
FIELD_LIMIT = 1024  # Discord's limit per embed field value
Listed = app_commands.Command[Any, ..., Any] | app_commands.Group | app_commands.ContextMenu


def price_per_second(milli: int) -> str:
    """200 -> '0.2', 734 -> '0.734': a per-second price without trailing zeros (prices have three decimals)."""
    text = format(Decimal(milli) / MILLI_PER_CNY, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def description_of(command: Listed, locale: str) -> str:
    """A command's description in the member's language (with the catalog's values it was built with); a
    message command's name, which is its display text."""
    english = command.name if isinstance(command, app_commands.ContextMenu) else command.description
    filled = command.extras.get("description")
    described = filled if isinstance(filled, app_commands.locale_str) else declared_text(english)
    extras: dict[str, Any] = described.extras if described is not None else {}
    key = extras.get("key")
    if key and key in MESSAGES[EN]:
        return t(locale, key, **(extras.get("params") or {}))
    return english


def may_see(command: Listed, permissions: discord.Permissions) -> bool:
    """Whether Discord shows the command to a member with `permissions` by default (its default_permissions)."""
    needed = command.default_permissions
    return needed is None or permissions.administrator or needed <= permissions


def command_lines(commands: Iterable[Listed], permissions: discord.Permissions, locale: str) -> list[str]:
    """One line per command the member can use: '`/name` — what it does' (message commands: Apps → name)."""
    lines = []
    for command in commands:
        if not may_see(command, permissions):
            continue
        if isinstance(command, app_commands.ContextMenu):
            lines.append(t(locale, "help.menu_line", name=description_of(command, locale)))
        else:
            lines.append(t(locale, "help.command_line", name=command.name, description=description_of(command, locale)))
    return lines


def model_line(spec: ModelSpec, region: str, locale: str) -> str:
    """'**wan2.7-i2v** · 2-15 s · 720P ¥0.6/s, 1080P ¥1/s · with sound · follows an audio file', at the prices
    of the bot's region (what the budget reserves and settles)."""
    per_second = spec.region_price_per_second_milli.get(region, spec.price_per_second_milli)
    prices = ", ".join(
        t(locale, "help.price", resolution=r, price=price_per_second(per_second[r])) for r in spec.resolutions
    )
    extras = ""
    if spec.makes_sound:
        extras += t(locale, "help.sound")
    if spec.inputs.audio is not None:
        extras += t(locale, "help.audio")
    if spec.extends_clips:
        extras += t(locale, "help.extends")
    if spec.templates:
        extras += t(locale, "help.effects", count=len(spec.templates))
    return t(locale, "help.model_line", model=spec.key, lengths=spec.describe_durations(), prices=prices, extras=extras)


def models_text(models: list[ModelSpec], default: str, region: str, locale: str) -> str:
    """Every model offered here, and what the default request costs (as reserved against the budget)."""
    lines = [model_line(spec, region, locale) for spec in models]
    spec = next((m for m in models if m.key == default), models[0] if models else None)
    if spec is not None:
        cost = spec.cost_milli(spec.default_resolution, spec.default_duration, region=region)
        lines.append(
            t(locale, "help.example", model=spec.key, seconds=spec.default_duration,
              resolution=spec.default_resolution, cost=format_cny(cost))
        )  # fmt: skip
    return fit("\n".join(lines))


def allowance_text(report: BudgetReport, pause: Pause | None, locale: str) -> str:
    """What the member may still ask for today: their videos and queue, the server's money left, channels."""
    usage, policy = report.usage, report.policy
    text = t(
        locale, "help.allowance",
        videos_left=max(0, policy.member_daily_videos - usage.member_videos_today), videos=policy.member_daily_videos,
        active=usage.member_active_jobs, queue=policy.user_queue_limit,
        left_day=format_cny(report.left_day), budget_day=format_cny(policy.daily_budget),
        left_month=format_cny(report.left_month), resets_ts=int(report.periods.day_resets_at.timestamp()),
    )  # fmt: skip
    if policy.allowed_channels:
        text += "\n" + t(locale, "help.channels", channels=channel_mentions(policy.allowed_channels))
    if pause is not None:
        text += "\n" + paused_text(pause.reason, locale)
    return fit(text)


def fit(text: str) -> str:
    """A field value within Discord's limit, cut at a line where possible."""
    if len(text) <= FIELD_LIMIT:
        return text
    cut = text[: FIELD_LIMIT - 1]
    return (cut.rsplit("\n", 1)[0] if "\n" in cut else cut) + "…"


def frames_text(spec: ModelSpec, locale: str) -> str:
    """The keyframe advice with the default model's image limits."""
    image = spec.inputs.image
    formats = ", ".join(image.formats)
    return t(locale, "help.frames", formats=formats, min_side=image.min_side, max_side=image.max_side,
             max_mb=image.max_bytes // MB)  # fmt: skip


def help_embeds(
    locale: str,
    *,
    frames: str,
    commands: list[str],
    models: str,
    allowance: str,
) -> list[discord.Embed]:
    """Two embeds (well under the 6,000 characters all embeds of a message may hold): the guide, then what is
    on offer here and the member's allowance."""
    guide = discord.Embed(title=t(locale, "help.title"), description=t(locale, "help.intro"), colour=HELP_COLOUR)
    guide.add_field(name=t(locale, "help.frames_title"), value=frames, inline=False)
    guide.add_field(name=t(locale, "help.prompts_title"), value=t(locale, "help.prompts"), inline=False)
    guide.add_field(name=t(locale, "help.buttons_title"), value=t(locale, "help.buttons"), inline=False)
    offer = discord.Embed(colour=HELP_COLOUR)
    offer.add_field(name=t(locale, "help.commands_title"), value=fit("\n".join(commands)) or "-", inline=False)
    offer.add_field(name=t(locale, "help.models_title"), value=models or "-", inline=False)
    offer.add_field(name=t(locale, "help.allowance_title"), value=allowance, inline=False)
    offer.set_footer(text=t(locale, "help.footer"))
    return [guide, offer]
