"""Extend (issue 12): continue a delivered video. The button opens a modal (prompt, seconds to add); the new
job continues the whole video as its first clip, is budgeted as price x the new total (the provider returns
and bills the whole video), and is followed and delivered in the same thread as the video it extends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.catalog import format_cny
from bot.discord_ui.render import NO_PINGS, job_buttons, status_embed
from bot.i18n import t
from bot.jobs.models import Job
from bot.jobs.service import JobService

log = logging.getLogger(__name__)

EXTEND_MODAL_ID = "kf2v:extend-modal:{job_id}"

ExtendSubmitted = Callable[[discord.Interaction[Any], str, int], Awaitable[None]]


class ExtendModal(discord.ui.Modal):
    """The prompt for what happens next and how many seconds to add (the range the model leaves)."""

    def __init__(
        self, job: Job, prompt_max: int, added: tuple[int, int], locale: str, on_submit: ExtendSubmitted
    ) -> None:
        super().__init__(
            title=t(locale, "extend.title", job_id=job.id)[:45], custom_id=EXTEND_MODAL_ID.format(job_id=job.id)
        )
        self._on_submit = on_submit
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph, default=job.request.prompt[:4000] or None,
            max_length=min(prompt_max, 4000), required=True,
        )  # fmt: skip
        low, high = added
        self.seconds: discord.ui.TextInput[Any] = discord.ui.TextInput(
            default=str(min(high, max(low, 3))), max_length=3, required=True
        )
        self.add_item(discord.ui.Label(text=t(locale, "modal.prompt")[:45], component=self.prompt))
        label = f"{t(locale, 'extend.seconds')} ({low}-{high})"
        self.add_item(discord.ui.Label(text=label[:45], component=self.seconds))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        text = self.seconds.value.strip()
        # Not a number: 0, which the service refuses naming the range it allows.
        await self._on_submit(interaction, self.prompt.value, int(text) if text.isdecimal() else 0)


async def post_in_parent_thread(interaction: discord.Interaction[Any], parent: Job, job: Job, jobs: JobService) -> Job:
    """The new job's status message in the parent's thread (or channel), attached so the worker delivers there;
    then the private confirmation with the whole length and the cost reserved."""
    locale = str(interaction.locale)
    where_id = parent.thread_id or parent.channel_id
    status: discord.Message | None = None
    try:
        channel = interaction.client.get_channel(where_id) or await interaction.client.fetch_channel(where_id)
        if isinstance(channel, discord.abc.Messageable):
            status = await channel.send(
                content=t(locale, "extend.started", parent_id=parent.id, total=job.request.duration,
                          cost=format_cny(job.cost_reserved)),
                embed=status_embed(job, jobs.progress(job), locale),
                view=job_buttons(job, locale),
                allowed_mentions=NO_PINGS,
            )  # fmt: skip
    except discord.HTTPException as exc:
        log.warning("job %s: no status message in the thread of #%s (%s)", job.id, parent.id, exc.status)
    if status is not None:
        job = await jobs.attach_conversation(job.id, status_message_id=status.id, thread_id=parent.thread_id)
    text = t(locale, "extend.started", parent_id=parent.id, total=job.request.duration,
             cost=format_cny(job.cost_reserved))  # fmt: skip
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    return job
