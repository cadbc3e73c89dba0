"""A delivered result's Details and Delete, and variations posted into one thread (issue 19).

Details is built from the job alone (pure functions); Delete and the variations talk to Discord with the bot
token, like the notifier, so they work however long after the video was posted.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.catalog import ModelSpec, format_cny
from bot.discord_ui.channels import BEST_EFFORT_ERRORS, messageable
from bot.discord_ui.conversation import start_conversation
from bot.discord_ui.notifier import MARKER
from bot.discord_ui.render import NO_PINGS, STATE_COLOURS, clip, job_buttons, length_and_sound, status_embed
from bot.i18n import t
from bot.jobs.models import ChargeState, Job
from bot.jobs.service import JobService

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # messages of a thread searched for a job's video post (variations share one thread)


def one_line(text: str) -> str:
    """User text as one line inside a code block: no line breaks, no backticks to end the block."""
    return " ".join(text.split()).replace("`", "ˋ")


def command_line(job: Job, spec: ModelSpec | None) -> str | None:
    """The command that asks for this video again (attach the same frames); None for a continued clip, which no
    command makes. Length and sound are named only where the job's model (`spec`) lets them be chosen."""
    request = job.request
    if request.first_clip is not None:
        return None
    if request.template is not None:
        return f"/kf2v-effect template:{request.template} model:{request.model}"
    parts = ["/kf2v", f"prompt:{one_line(request.prompt)}"]
    if request.negative_prompt:
        parts.append(f"negative_prompt:{one_line(request.negative_prompt)}")
    parts += [f"model:{request.model}", f"resolution:{request.resolution}"]
    if not request.prompt_extend:
        parts.append("prompt_extend:False")
    if request.seed is not None:
        parts.append(f"seed:{request.seed}")
    if spec is not None and not spec.fixed_duration and request.duration is not None:
        parts.append(f"duration:{request.duration}")
    if spec is not None and spec.sound_optional and request.sound is False:
        parts.append("sound:False")
    return " ".join(parts)


def job_cost(job: Job, locale: str) -> str:
    """'¥1.00' settled, '¥1.00 (estimated)' while reserved, 'nothing charged' once released."""
    if job.charge_state is ChargeState.RELEASED:
        return t(locale, "status.cost_none")
    if job.charge_state is ChargeState.SETTLED:
        return t(locale, "status.cost_settled", cost=format_cny(job.cost_settled))
    return t(locale, "status.cost_estimated", cost=format_cny(job.cost_reserved))


def details_message(job: Job, spec: ModelSpec | None, locale: str) -> tuple[str, discord.Embed]:
    """(content with the copyable command, embed with every parameter) for the Details button's private reply."""
    request = job.request
    prompt = request.prompt or t(locale, "status.effect", template=request.template or "")
    rewritten = job.actual_prompt or t(locale, "details.not_rewritten")
    description = (
        f"**{t(locale, 'details.prompt')}**\n{clip(prompt, 1900)}\n\n"
        f"**{t(locale, 'details.actual_prompt')}**\n{clip(rewritten, 1900)}"
    )
    embed = discord.Embed(
        title=t(locale, "details.title", job_id=job.id), description=clip(description, 4000),
        colour=STATE_COLOURS[job.state],
    )  # fmt: skip
    if request.negative_prompt:
        embed.add_field(name=t(locale, "details.negative"), value=clip(request.negative_prompt, 1024), inline=False)
    embed.add_field(name=t(locale, "status.model"), value=request.model, inline=True)
    embed.add_field(name=t(locale, "details.resolution"), value=request.resolution, inline=True)
    embed.add_field(name=t(locale, "details.length"), value=length_and_sound(job, locale), inline=True)
    seed = str(request.seed) if request.seed is not None else t(locale, "details.seed_provider")
    embed.add_field(name=t(locale, "result.seed"), value=seed, inline=True)
    embed.add_field(name=t(locale, "status.cost"), value=job_cost(job, locale), inline=True)
    embed.add_field(name=t(locale, "status.requester"), value=f"<@{job.user_id}>", inline=True)
    embed.add_field(name=t(locale, "details.created"), value=f"<t:{int(job.created_at.timestamp())}:f>", inline=True)
    line = command_line(job, spec)
    if line is None:
        return t(locale, "details.no_command", parent_id=job.parent_job_id or job.id), embed
    content = t(locale, "details.command") + "\n```\n" + clip(line, 1800) + "\n```"
    return content, embed


async def unarchive(client: discord.Client, thread_id: int, what: str) -> None:
    """Make an archived thread active again (the bot opened it, so it may): messages in an archived thread can't
    be deleted (50083) and a result is often deleted after the thread archived itself. Read fresh from Discord,
    not the cache, which may not have seen the archiving."""
    try:
        thread = await client.fetch_channel(thread_id)
        if isinstance(thread, discord.Thread) and thread.archived and not thread.locked:
            await thread.edit(archived=False)
    except BEST_EFFORT_ERRORS as exc:
        log.info("%s: its thread was not unarchived: %r", what, exc)


async def remove_result_messages(client: discord.Client, job: Job, locale: str) -> int:
    """Delete the job's video post(s) and its status message, and take the prompt out of the name of the
    thread opened for it; say in that thread who removed it. Best effort per message: returns how many
    messages were deleted (an already deleted one is not counted)."""
    deleted = 0
    bot_id = client.user.id if client.user is not None else 0
    marker = MARKER.format(job_id=job.id)
    if job.thread_id:
        await unarchive(client, job.thread_id, f"job {job.id}")
    # The video is in the job's thread, or in its channel where the thread refused the bot at delivery.
    for where_id in dict.fromkeys(i for i in (job.thread_id, job.channel_id) if i):
        try:
            where: Any = await messageable(client, where_id)
            async for message in where.history(limit=HISTORY_LIMIT):
                if message.author.id == bot_id and any(e.footer and e.footer.text == marker for e in message.embeds):
                    deleted += await _delete(message, job)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("job %s: could not look for its video post to delete: %r", job.id, exc)
        if deleted:
            break
    if job.status_message_id:
        try:
            channel: Any = await messageable(client, job.channel_id)
            deleted += await _delete(channel.get_partial_message(job.status_message_id), job)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("job %s: could not delete its status message: %r", job.id, exc)
    if job.thread_id and job.thread_id == job.status_message_id:  # the thread was opened for this job alone
        try:
            thread: Any = await messageable(client, job.thread_id)
            if isinstance(thread, discord.Thread):
                await thread.edit(name=clip(t(locale, "delete.thread_name", job_id=job.id), 100))
        except BEST_EFFORT_ERRORS as exc:
            log.info("job %s: thread not renamed after delete: %r", job.id, exc)
    if job.thread_id:
        try:
            thread = await messageable(client, job.thread_id)
            note = t(locale, "delete.note", job_id=job.id, user=f"<@{job.deleted_by}>")
            await thread.send(note, allowed_mentions=NO_PINGS)
        except BEST_EFFORT_ERRORS as exc:
            log.info("job %s: no removal note in its thread: %r", job.id, exc)
    return deleted


async def _delete(message: discord.Message | discord.PartialMessage, job: Job) -> int:
    try:
        await message.delete()
    except discord.NotFound:
        return 0  # already gone (deleted by a moderator)
    except discord.HTTPException as exc:
        log.warning("job %s: message %s not deleted (%s)", job.id, message.id, exc.status)
        return 0
    return 1


async def post_variations(
    interaction: discord.Interaction[Any], jobs: JobService, variations: list[Job], thread_id: int | None
) -> list[Job]:
    """Each variation's status message where the job is followed (its channel: the channel of the command, or
    the thread of the result Vary was pressed on), attached to `thread_id` so the worker delivers it there: the
    variations of one request end up together in one thread."""
    locale = str(interaction.locale)
    attached = []
    for job in variations:
        where_id = job.channel_id
        status: discord.Message | None = None
        try:
            channel: Any = interaction.client.get_channel(where_id) or await interaction.client.fetch_channel(where_id)
            status = await channel.send(
                embed=status_embed(job, jobs.progress(job), locale), view=job_buttons(job, locale),
                allowed_mentions=NO_PINGS,
            )  # fmt: skip
        except BEST_EFFORT_ERRORS as exc:
            log.warning("job %s: no status message for the variation (%r)", job.id, exc)
        if status is not None:
            job = await jobs.attach_conversation(job.id, status_message_id=status.id, thread_id=thread_id)
        attached.append(job)
    return attached


async def open_variations(interaction: discord.Interaction[Any], jobs: JobService, variations: list[Job]) -> None:
    """/kf2v with `count`: the first variation opens the conversation (status message and thread), the others
    post their status next to it and are delivered in its thread; one private confirmation for all."""
    locale = str(interaction.locale)
    first, where = await start_conversation(interaction, variations[0], jobs)
    await post_variations(interaction, jobs, variations[1:], first.thread_id)
    await interaction.followup.send(variations_accepted(variations, locale, where), ephemeral=True)


def variations_accepted(variations: list[Job], locale: str, where: str) -> str:
    """'3 variations are queued: #4, #5, #6 (¥3.00 reserved in all). Follow them in …'."""
    return t(
        locale, "vary.accepted", count=len(variations), job_ids=", ".join(f"#{j.id}" for j in variations),
        cost=format_cny(sum(j.cost_reserved for j in variations)), where=where,
    )  # fmt: skip
