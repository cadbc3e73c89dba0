"""The "Animate with kf2v" message command: a message's first two images + a prompt from a modal -> /kf2v;
a message with one image -> an effect template from a modal -> /kf2v-effect (where the region has effects).

The modal must be the first answer (within Discord's 3 s), so before it only the attachments Discord sent
with the message are looked at; the download, every check of /kf2v and the budget come after submit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.attachments import AttachmentReader
from bot.discord_ui.checks import require_post_permissions
from bot.discord_ui.conversation import open_conversation
from bot.discord_ui.errors import reply_error
from bot.discord_ui.modals import AnimateModal, EffectModal
from bot.discord_ui.translator import _
from bot.i18n import t
from bot.jobs.models import JobRequest
from bot.jobs.service import Draft, JobService
from cogs.generate import read_attachment

FRAMES = 2


def is_image(attachment: discord.Attachment) -> bool:
    """What the uploader's client claimed; the bytes are sniffed at admission like any /kf2v frame."""
    return (attachment.content_type or "").split(";")[0].strip().lower().startswith("image/")


class AnimateCog(commands.Cog):
    def __init__(
        self,
        tree: app_commands.CommandTree[Any],
        jobs: JobService,
        *,
        image_max_bytes: int,
        attachments: AttachmentReader,
    ) -> None:
        self.tree = tree
        self.jobs = jobs
        self.image_max_bytes = image_max_bytes
        self.attachments = attachments
        # Context menus can't be declared in a cog's body; the name is display text, localised by the
        # translator (see bot.discord_ui.translator).
        self.menu = app_commands.ContextMenu(name=_("menu.animate"), callback=self.animate)
        app_commands.guild_only()(self.menu)

    async def cog_load(self) -> None:
        self.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.tree.remove_command(self.menu.name, type=self.menu.type)

    async def animate(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        locale = str(interaction.locale)
        images = [a for a in message.attachments if is_image(a)]
        templates = self._effect_templates()
        if len(images) == 1 and templates:

            async def chosen(modal_interaction: discord.Interaction[Any], template: str) -> None:
                request = JobRequest(model=self.jobs.effect_model(), template=template)
                await self._submit(modal_interaction, images, request)

            await interaction.response.send_modal(EffectModal(message.id, templates, locale, chosen))
            return
        if len(images) < FRAMES:
            others = [a.filename for a in message.attachments if not is_image(a)]
            text = t(locale, "animate.missing", found=len(images), needed=FRAMES)
            if others:
                text += " " + t(locale, "animate.not_images", names=", ".join(f"`{n}`" for n in others))
            await interaction.response.send_message(text, ephemeral=True)
            return
        frames = images[:FRAMES]
        spec = next((m for m in self.jobs.models() if m.key == self.jobs.catalog.default_model), None)

        async def submitted(modal_interaction: discord.Interaction[Any], prompt: str, negative: str | None) -> None:
            await self._submit(modal_interaction, frames, JobRequest(prompt=prompt, negative_prompt=negative))

        await interaction.response.send_modal(AnimateModal(message.id, spec, locale, submitted))

    def _effect_templates(self) -> dict[str, str]:
        """The effect model's templates in this region (name -> its display name), empty where there are none."""
        spec = next((m for m in self.jobs.models() if m.key == self.jobs.effect_model()), None)
        if spec is None:
            return {}
        return {key: spec.template_names.get(key, "") for key in spec.templates_in(self.jobs.region)}

    async def _submit(
        self, interaction: discord.Interaction[Any], frames: list[discord.Attachment], request: JobRequest
    ) -> None:
        """As /kf2v (two frames) or /kf2v-effect (one): defer, cheap checks, download, admission (budget),
        conversation in the message's channel."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild_only
            require_post_permissions(interaction)
            draft = Draft(
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=interaction.user.id,
                locale=str(interaction.locale),
                request=request,
            )
            await self.jobs.precheck(draft)
            reader, cap = self.attachments, self.image_max_bytes
            async with reader.holding(*frames):  # a burst waits its turn to download
                first = await read_attachment(reader, frames[0], cap)
                last = await read_attachment(reader, frames[1], cap) if len(frames) > 1 else None
                job = await self.jobs.submit_checked(replace(draft, first_image=first, last_image=last))
                del first, last  # the bytes go with the hold
            await open_conversation(interaction, job, self.jobs)
        except Exception as exc:
            await reply_error(interaction, exc)
