"""Opening the public conversation around a new job: status message, thread, ephemeral confirmation.

Shared by /kf2v, /kf2v-effect and the Regenerate button. The status message is sent with the bot
token (not as an interaction followup) so it can be edited for as long as the job lives.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.discord_ui.render import NO_PINGS, channel_mention, job_buttons, paused_text, status_embed, thread_name
from bot.i18n import t
from bot.jobs.models import Job
from bot.jobs.service import JobService

log = logging.getLogger(__name__)


async def open_conversation(interaction: discord.Interaction[Any], job: Job, jobs: JobService) -> None:
    """Post the status message (with frames as thumbnails), start a thread, confirm privately."""
    locale = str(interaction.locale)
    progress = jobs.progress(job)
    job, where = await start_conversation(interaction, job, jobs)
    text = t(locale, "submit.accepted", job_id=job.id, where=where)
    if progress.position is not None:
        text += " " + t(locale, "status.position", position=progress.position)
    if progress.paused is not None:
        text += "\n" + paused_text(progress.paused, locale)
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def start_conversation(interaction: discord.Interaction[Any], job: Job, jobs: JobService) -> tuple[Job, str]:
    """Post the status message (with frames as thumbnails) and start a thread: (the job attached to them, a
    mention of where to follow it)."""
    locale = str(interaction.locale)
    progress = jobs.progress(job)
    embed = status_embed(job, progress, locale)
    files = []
    first = jobs.frame_path(job.first_frame)
    files.append(discord.File(first, filename=f"first.{first.suffix.lstrip('.')}"))
    embed.set_thumbnail(url=f"attachment://first.{first.suffix.lstrip('.')}")
    if job.last_frame:
        last = jobs.frame_path(job.last_frame)
        files.append(discord.File(last, filename=f"last.{last.suffix.lstrip('.')}"))
        embed.set_image(url=f"attachment://last.{last.suffix.lstrip('.')}")
    channel = interaction.channel
    status: discord.Message | None = None
    thread_id: int | None = None
    if isinstance(channel, discord.abc.Messageable):
        try:
            status = await channel.send(
                embed=embed, files=files, view=job_buttons(job, locale), allowed_mentions=NO_PINGS
            )
        except discord.HTTPException as exc:
            log.warning("job %s: could not post its status message (%s)", job.id, exc.status, extra={"job_id": job.id})
    if status is not None:
        if isinstance(channel, discord.TextChannel):
            try:
                thread = await status.create_thread(name=thread_name(job.request.prompt, job.id, "kf2v"))
                thread_id = thread.id
            except discord.HTTPException as exc:
                log.info("job %s: no thread (%s); replies go to the channel", job.id, exc.status)
        elif isinstance(channel, discord.Thread):
            thread_id = channel.id  # already in a thread: the conversation stays here
        job = await jobs.attach_conversation(job.id, status_message_id=status.id, thread_id=thread_id)
    where = channel_mention(thread_id) if thread_id else (status.jump_url if status is not None else "")
    return job, where
