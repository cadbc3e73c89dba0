"""The Discord emulator driven by the real discord.py: login, sync, interactions, threads, files, faults."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import struct
import warnings
import zlib
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
import yarl

from sandbox.discord_emu import (
    MIB,
    CommandNotSyncedError,
    CommandUnavailableError,
    DiscordEmulator,
)

with warnings.catch_warnings():
    # discord.py imports the stdlib `audioop` (voice support), deprecated on Python 3.11; warnings are errors here.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

USER_ID = 1_400_000_000_000_000_001
OTHER_USER_ID = 1_400_000_000_000_000_002


def make_png(width: int, height: int) -> bytes:
    """A real (tiny, grey) PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = make_png(4, 3)


class Probe:
    """What the test bot saw and did."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.echoed: list[tuple[str, bytes, int]] = []
        self.presses: list[tuple[int, str]] = []
        self.held: list[discord.Interaction] = []
        self.filesize_limits: list[int] = []
        self.seen: list[tuple[str, str | None, bool, bool]] = []
        self.targets: list[discord.Message] = []


class PanelView(discord.ui.View):
    """A persistent view: fixed custom_id, no timeout, registered with `bot.add_view`."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(timeout=None)
        self.probe = probe

    @discord.ui.button(label="Ping", custom_id="emu:ping", style=discord.ButtonStyle.primary)
    async def ping(self, interaction: discord.Interaction, button: discord.ui.Button[PanelView]) -> None:
        self.probe.presses.append((interaction.user.id, button.custom_id or ""))
        await interaction.response.send_message(f"pong for {interaction.user.id}", ephemeral=True)

    @discord.ui.select(
        custom_id="emu:size",
        options=[discord.SelectOption(label="Small", value="s"), discord.SelectOption(label="Large", value="l")],
    )
    async def size(self, interaction: discord.Interaction, select: discord.ui.Select[PanelView]) -> None:
        await interaction.response.defer()  # a component deferral: type 6, "deferred update"
        await interaction.edit_original_response(content=f"size {select.values[0]}")

    @discord.ui.button(label="Edit", custom_id="emu:edit")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button[PanelView]) -> None:
        current = interaction.message.content if interaction.message is not None else ""
        await interaction.response.send_modal(EditModal(current))


class EditModal(discord.ui.Modal, title="Edit the panel"):
    """Opened from a button; its submit updates the panel message (type 7 from a modal submit)."""

    def __init__(self, current: str) -> None:
        super().__init__(custom_id="emu:edit-modal")
        self.text: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            custom_id="emu:text", default=current, max_length=50
        )
        self.add_item(discord.ui.Label(text="Panel text", component=self.text))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=self.text.value)


class InspectModal(discord.ui.Modal, title="Inspect"):
    """Opened from the message command: a Label-wrapped text input (pre-filled) and a Label-wrapped select."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(custom_id="emu:inspect")
        self.names = names
        self.prompt: discord.ui.TextInput[InspectModal] = discord.ui.TextInput(
            custom_id="emu:prompt", default="a cat", max_length=100, style=discord.TextStyle.paragraph
        )
        self.size: discord.ui.Select[InspectModal] = discord.ui.Select(
            custom_id="emu:size-pick",
            options=[discord.SelectOption(label="480P"), discord.SelectOption(label="720P", default=True)],
        )
        self.add_item(discord.ui.Label(text="Prompt", component=self.prompt))
        self.add_item(discord.ui.Label(text="Resolution", description="Output size", component=self.size))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        names = ",".join(self.names)
        await interaction.response.send_message(f"{self.prompt.value} @ {self.size.values[0]} on {names}")


class EmuTranslator(app_commands.Translator):
    """Localises the message command's name for zh-CN, as the bot's catalog does."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if locale is discord.Locale.chinese and string.message == "Inspect image":
            return "检查图片"
        return None


class JobButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"emu:job:(?P<job>[0-9]+)"):
    """A DynamicItem like the bot's `kf2v:cancel:<job_id>` buttons."""

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Cancel", custom_id=f"emu:job:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        probe = cast(EmuBot, interaction.client).probe
        probe.presses.append((interaction.user.id, self.item.custom_id or ""))
        await interaction.response.edit_message(content=f"job {self.job} cancelled", view=None)


class EmuBot(commands.Bot):
    def __init__(self, probe: Probe, sync_guild: int | None) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, guild_ready_timeout=0.05)
        self.probe = probe
        self.sync_guild = sync_guild

    async def setup_hook(self) -> None:
        await self.tree.set_translator(EmuTranslator())
        build_commands(self)
        self.add_view(PanelView(self.probe))
        self.add_dynamic_items(JobButton)
        if self.sync_guild is not None:
            guild = discord.Object(self.sync_guild)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)


def build_commands(bot: EmuBot) -> None:
    probe = bot.probe

    @bot.tree.command(name="echo", description="Echo an image back in a thread")
    @app_commands.describe(image="An image", text="Some text")
    async def echo(interaction: discord.Interaction, image: discord.Attachment, text: str) -> None:
        await interaction.response.defer()
        data = await image.read()
        probe.echoed.append((image.filename, data, image.width or 0))
        probe.filesize_limits.append(interaction.filesize_limit)
        guild_locale = interaction.guild_locale.value if interaction.guild_locale else None
        perms, app_perms = interaction.permissions, interaction.app_permissions
        probe.seen.append((interaction.locale.value, guild_locale, perms.manage_guild, app_perms.attach_files))
        await interaction.followup.send(f"{text}: {len(data)} bytes")
        original = await interaction.original_response()
        thread = await original.create_thread(name=f"echo {text}")
        await thread.send(file=discord.File(io.BytesIO(data), filename="echo.png"))
        status = await thread.send("working")
        await status.edit(content="done")
        await interaction.followup.send("all done", ephemeral=True)

    @bot.tree.context_menu(name=app_commands.locale_str("Inspect image"))
    async def inspect(interaction: discord.Interaction, message: discord.Message) -> None:
        probe.targets.append(message)
        if not message.attachments:
            await interaction.response.send_message("no attachments", ephemeral=True)
            return
        await interaction.response.send_modal(InspectModal([a.filename for a in message.attachments]))

    tools = app_commands.Group(name="tools", description="Tools")

    @tools.command(name="panel", description="Post a panel with buttons")
    async def panel(interaction: discord.Interaction) -> None:
        view = PanelView(probe)
        view.add_item(JobButton(42))
        await interaction.response.send_message("panel", view=view)

    @tools.command(name="hold", description="Answer and keep the interaction for later")
    async def hold(interaction: discord.Interaction, ephemeral: bool = False) -> None:
        await interaction.response.send_message("holding", ephemeral=ephemeral)
        probe.held.append(interaction)

    @tools.command(name="ignore", description="Keep the interaction unanswered (the test answers it raw)")
    async def ignore(interaction: discord.Interaction) -> None:
        probe.held.append(interaction)

    @tools.command(name="slow", description="Answer too late")
    async def slow(interaction: discord.Interaction, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await interaction.response.send_message("late")

    bot.tree.add_command(tools)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        probe.errors.append(error.original if isinstance(error, app_commands.CommandInvokeError) else error)


@contextlib.asynccontextmanager
async def running_bot(
    emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, sync_guild: int | None
) -> AsyncIterator[EmuBot]:
    monkeypatch.setattr(discord.http.Route, "BASE", emu.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(emu.gateway_url))
    bot = EmuBot(Probe(), sync_guild)
    task: asyncio.Task[None] | None = None
    try:
        await bot.login(emu.bot_token)
        task = asyncio.create_task(bot.connect())
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        yield bot
    finally:
        await bot.close()
        if task is not None:
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def world(emu: DiscordEmulator, *, premium_tier: int = 0) -> tuple[int, int]:
    guild_id = emu.add_guild("Test Guild", premium_tier=premium_tier, locale="de")
    channel_id = emu.add_text_channel(guild_id, "general")
    emu.add_member(guild_id, USER_ID, "alice")
    emu.add_member(guild_id, OTHER_USER_ID, "bob", manage_guild=True)
    return guild_id, channel_id


async def test_login_ready_and_guild_cache(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        await emu.wait_ready()
        assert bot.user is not None and bot.user.id == emu.bot_user_id
        assert bot.application_id == emu.application_id
        guild = bot.get_guild(guild_id)
        assert guild is not None and guild.name == "Test Guild"
        assert guild.preferred_locale == discord.Locale.german
        assert guild.me is not None and guild.me.id == emu.bot_user_id
        channel = guild.get_channel(channel_id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.permissions_for(guild.me).create_public_threads
        assert guild.filesize_limit == 10 * MIB
        assert await bot.is_owner(await bot.fetch_user(emu.owner_id))
        # a guild added while connected arrives as GUILD_CREATE
        late = emu.add_guild("Late Guild", premium_tier=3)
        found = await emu.wait_for(lambda: bot.get_guild(late))
        assert found.filesize_limit == 100 * MIB
    identify = emu.events_of("gateway.identify")
    assert len(identify) == 1
    assert identify[0].data["compression"] == "zlib-stream"
    assert identify[0].data["intents"] == discord.Intents(guilds=True).value
    assert emu.events_of("gateway.connect")[0].data == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert emu.bot_token in emu.tokens_seen


async def test_tree_sync_reaches_emulator(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, _ = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        assert emu.sync_count == 1
        sync = emu.syncs[0]
        assert sync.guild_id == guild_id
        by_name = {c["name"]: c for c in sync.commands}
        assert set(by_name) == {"echo", "tools", "Inspect image"}
        menu = by_name["Inspect image"]
        assert menu["type"] == 3 and "description" not in menu
        assert menu["name_localizations"] == {"zh-CN": "检查图片"}
        assert [(o["name"], o["type"]) for o in by_name["echo"]["options"]] == [("image", 11), ("text", 3)]
        assert {o["name"] for o in by_name["tools"]["options"]} == {"panel", "hold", "ignore", "slow"}
        fetched = await bot.tree.fetch_commands(guild=discord.Object(guild_id))
        assert {c.name for c in fetched} == {"echo", "tools", "Inspect image"}
        # a second sync keeps the command ids, as Discord does
        again = await bot.tree.sync(guild=discord.Object(guild_id))
        assert {c.id for c in again} == {c.id for c in fetched}
        assert emu.sync_count == 2


async def test_echo_command_with_png_attachment(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu, premium_tier=2)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        record = await emu.run_command(
            guild_id,
            channel_id,
            USER_ID,
            "echo",
            {"text": "hello"},
            attachments={"image": ("cat.png", PNG, "image/png")},
            locale="ja",
        )
        response = await record.wait_response(timeout=3)
        assert response.type == 5  # deferred
        # Accepted: the emulator refuses (404/10062) a first callback past Discord's 3-second deadline.
        assert record.acknowledged
        second = await record.wait_followup(timeout=5, count=2)
        assert second.ephemeral and second.content == "all done"
        assert bot.probe.errors == []
        assert bot.probe.echoed == [("cat.png", PNG, 4)]
        assert bot.probe.filesize_limits == [50 * MIB]
        assert bot.probe.seen == [("ja", "de", False, True)]

        original = record.original_message
        assert original is not None and not original.loading
        # right after a deferral, Discord turns the first followup into an edit of the loading message
        assert record.followups[0].id == original.id
        assert original.content == "hello: 75 bytes".replace("75", str(len(PNG)))
        assert emu.messages(channel_id) == [original, second]

        thread = emu.thread_for(original.id)
        assert thread is not None and thread.name == "echo hello" and thread.parent_id == channel_id
        posted = emu.messages(thread.id)
        assert [m.content for m in posted] == ["", "done"]
        attachment = posted[0].attachments[0]
        assert (attachment.filename, attachment.data, attachment.content_type) == ("echo.png", PNG, "image/png")
        assert (attachment.width, attachment.height) == (4, 3)
        assert posted[1].edits == 1 and posted[1].history[0]["content"] == "working"
        assert record.ephemeral_text == "all done"
        cached = bot.get_channel(thread.id)
        assert isinstance(cached, discord.Thread)  # THREAD_CREATE reached the bot


async def test_buttons_reach_the_bot(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        await record.wait_response()
        panel = record.original_message
        assert panel is not None and panel.custom_ids() == ["emu:ping", "emu:edit", "emu:job:42", "emu:size"]

        press = await emu.press_button(panel.id, "emu:ping", OTHER_USER_ID)
        await press.wait_response()
        assert press.ephemeral_text == f"pong for {OTHER_USER_ID}"
        assert bot.probe.presses == [(OTHER_USER_ID, "emu:ping")]

        pick = await emu.select(panel.id, "emu:size", ["l"], USER_ID)
        assert (await pick.wait_response()).type == 6
        await emu.wait_for(lambda: panel.content == "size l")
        assert pick.original_message is panel

        cancel = await emu.press_button(panel.id, "emu:job:42", USER_ID)
        response = await cancel.wait_response()
        assert response.type == 7  # update the message the button was on
        assert panel.content == "job 42 cancelled" and panel.components == []
        assert bot.probe.presses[-1] == (USER_ID, "emu:job:42")
        with pytest.raises(ValueError, match="no component"):
            await emu.press_button(panel.id, "emu:ping", USER_ID)


async def test_upload_over_the_tier_limit_is_413(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _, channel_id = world(emu)
    boosted = emu.add_guild("Boosted", premium_tier=2)
    boosted_channel = emu.add_text_channel(boosted, "media")
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        big = b"\0" * (10 * MIB + 1)
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(file=discord.File(io.BytesIO(big), filename="big.mp4"))
        assert (caught.value.status, caught.value.code) == (413, 40005)
        exact = await channel.send(file=discord.File(io.BytesIO(big[:-1]), filename="ok.mp4"))
        assert exact.attachments[0].size == 10 * MIB
        assert exact.attachments[0].content_type == "video/mp4"
        media = cast(discord.TextChannel, bot.get_channel(boosted_channel))
        sent = await media.send(file=discord.File(io.BytesIO(big), filename="big.mp4"))
        assert sent.attachments[0].size == len(big)
        # several files: each under the limit, but the whole request over 25 MiB
        parts = [discord.File(io.BytesIO(b"\0" * (9 * MIB)), filename=f"p{i}.bin") for i in range(3)]
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(files=parts)
        assert (caught.value.status, caught.value.code) == (413, 40005)


async def test_expired_interaction_token(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="hold")
        await record.wait_response()
        interaction = await emu.wait_for(lambda: bot.probe.held[0] if bot.probe.held else None)
        emu.expire_interaction_token(record)
        with pytest.raises(discord.HTTPException) as caught:
            await interaction.followup.send("too late")
        assert (caught.value.status, caught.value.code) == (401, 50027)
        with pytest.raises(discord.HTTPException) as caught:
            await interaction.edit_original_response(content="too late")
        assert caught.value.code == 50027
        # the bot token still works: post in the channel, edit the response as a fetched message
        channel = cast(discord.TextChannel, interaction.channel)
        sent = await channel.send("the bot token still works")
        assert emu.messages(channel_id)[-1].id == sent.id
        assert record.original_message_id is not None
        response = await channel.fetch_message(record.original_message_id)
        await response.edit(content="edited with the bot token")
        assert record.last_text == "edited with the bot token"
        # an ephemeral response is invisible to the bot token
        hidden = await emu.run_command(guild_id, channel_id, USER_ID, "tools", {"ephemeral": True}, subcommand="hold")
        await hidden.wait_response()
        assert hidden.ephemeral_text == "holding" and hidden.original_message_id is not None
        with pytest.raises(discord.NotFound) as missing:
            await channel.fetch_message(hidden.original_message_id)
        assert missing.value.code == 10008


async def test_token_lifetime_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(interaction_token_ttl=0.2) as emu:
        guild_id, channel_id = world(emu)
        async with running_bot(emu, monkeypatch, guild_id) as bot:
            record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="hold")
            interaction = await emu.wait_for(lambda: bot.probe.held[0] if bot.probe.held else None)
            await interaction.followup.send("in time")
            await asyncio.sleep(0.25)
            assert record.token_expired
            with pytest.raises(discord.HTTPException, match="Invalid Webhook Token"):
                await interaction.followup.send("late")


async def test_injected_429_is_retried(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        emu.inject_rest_errors(429, 2, route_contains="/messages", retry_after=0.05)
        message = await channel.send("after two 429s")
        assert message.content == "after two 429s"
        statuses = [r.status for r in emu.requests if r.route == "POST /channels/{channel_id}/messages"]
        assert statuses == [429, 429, 200]
        emu.inject_rest_errors(429, 1, route_contains="/messages", is_global=True, retry_after=0.05)
        await channel.send("after a global 429")
        assert emu.count_requests("POST", "/messages", status=429) == 3


async def test_rate_limit_headers_pace_discord_py(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(rate_limit=(2, 0.15)) as emu:
        _, channel_id = world(emu)
        async with running_bot(emu, monkeypatch, None) as bot:
            channel = cast(discord.TextChannel, bot.get_channel(channel_id))
            await asyncio.gather(*(channel.send(f"m{i}") for i in range(5)))
            # Five sends against a bucket of two and not one 429: discord.py waited for the windows the
            # headers announced (the emulator answers 429 to any request past the bucket).
            assert emu.count_requests(status=429) == 0
            assert len(emu.messages(channel_id)) == 5


async def test_gateway_disconnect_and_resume(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        resumed = asyncio.Event()

        async def on_resumed() -> None:
            resumed.set()

        bot.add_listener(on_resumed)
        await emu.disconnect_gateway(resume=True)
        # an interaction dispatched while the bot is away is replayed after RESUME
        record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        await record.wait_response(timeout=5)
        await asyncio.wait_for(resumed.wait(), 5)
        resume = emu.events_of("gateway.resume")
        assert len(resume) == 1 and resume[0].data["replayed"] >= 1
        assert len(emu.events_of("gateway.identify")) == 1
        again = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        await again.wait_response(timeout=5)


async def test_missing_thread_permission_is_403(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, _ = world(emu)
    locked = emu.add_text_channel(guild_id, "no-threads", bot_can_create_threads=False)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(locked))
        assert channel.guild.me is not None
        assert not channel.permissions_for(channel.guild.me).create_public_threads
        message = await channel.send("status")
        with pytest.raises(discord.Forbidden) as caught:
            await message.create_thread(name="job")
        assert caught.value.code == 50013
        emu.set_channel_permissions(locked, bot_can_create_threads=True)
        thread = await message.create_thread(name="job")
        assert thread.id == message.id
        with pytest.raises(discord.HTTPException) as again:
            await message.create_thread(name="job again")
        assert again.value.code == 160004


async def test_deleted_channel_is_404(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        emu.delete_channel(channel_id)
        await emu.wait_for(lambda: bot.get_channel(channel_id) is None)  # CHANNEL_DELETE reached the bot
        with pytest.raises(discord.NotFound) as caught:
            await channel.send("anyone?")
        assert caught.value.code == 10003
        with pytest.raises(discord.NotFound):
            await bot.fetch_channel(channel_id)
        with pytest.raises(ValueError, match="not a live channel"):
            await emu.run_command(guild_id, channel_id, USER_ID, "echo")


async def test_message_size_rules(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, None) as bot:
        channel = cast(discord.TextChannel, bot.get_channel(channel_id))
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send("x" * 2001)
        assert (caught.value.status, caught.value.code) == (400, 50035)
        assert "content" in caught.value.text
        crowded = discord.Embed(title="t")
        for i in range(26):
            crowded.add_field(name=f"f{i}", value="v")
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embed=crowded)
        assert "embeds.0.fields" in caught.value.text
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embed=discord.Embed(description="d" * 4097))
        assert "embeds.0.description" in caught.value.text
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embeds=[discord.Embed(description="d" * 4000) for _ in range(2)])
        assert caught.value.code == 50035
        message = await channel.send("x" * 2000, embed=discord.Embed(title="ok"))
        with pytest.raises(discord.HTTPException) as caught:
            await message.edit(content="y" * 2001)
        assert caught.value.code == 50035
        thread_name = "n" * 101
        with pytest.raises(discord.HTTPException) as caught:
            await message.create_thread(name=thread_name)
        assert caught.value.code == 50035


async def test_slow_first_response_misses_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(interaction_response_deadline=0.1) as emu:
        guild_id, channel_id = world(emu)
        async with running_bot(emu, monkeypatch, guild_id) as bot:
            record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", {"seconds": 0.2}, subcommand="slow")
            await emu.wait_for(lambda: bot.probe.errors)
            error = bot.probe.errors[0]
            assert isinstance(error, discord.NotFound) and error.code == 10062
            assert not record.acknowledged


async def test_login_with_the_wrong_token_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(bot_token="right") as emu:
        client = discord.Client(intents=discord.Intents.none())
        with emu.discord_py_overrides():
            try:
                with pytest.raises(discord.LoginFailure):
                    await client.login("wrong")
            finally:
                await client.close()
        assert emu.tokens_seen == {"wrong"}
        assert emu.count_requests("GET", "/users/@me", status=401) == 1


async def test_team_owned_application(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(owner_id=11, team_member_ids=[12, 13]) as emu:
        world(emu)
        async with running_bot(emu, monkeypatch, None) as bot:
            info = await bot.application_info()
            assert info.team is not None
            assert {m.id for m in info.team.members} == {11, 12, 13}
            assert info.team.owner_id == 11
            assert await bot.is_owner(await bot.fetch_user(13))
            assert not await bot.is_owner(await bot.fetch_user(USER_ID))


async def test_run_command_refuses_what_discord_would(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id):
        with pytest.raises(CommandNotSyncedError, match="kf2v"):
            await emu.run_command(guild_id, channel_id, USER_ID, "kf2v")
        with pytest.raises(ValueError, match="required option 'image'"):
            await emu.run_command(guild_id, channel_id, USER_ID, "echo", {"text": "no image"})
        with pytest.raises(ValueError, match="unknown options"):
            await emu.run_command(guild_id, channel_id, USER_ID, "echo", {"txt": "typo"})
        with pytest.raises(ValueError, match="needs a subcommand"):
            await emu.run_command(guild_id, channel_id, USER_ID, "tools")
        with pytest.raises(ValueError, match="not a member"):
            await emu.run_command(guild_id, channel_id, 999, "tools", subcommand="panel")
        emu.commands[guild_id][(1, "tools")]["default_member_permissions"] = str(1 << 5)
        with pytest.raises(CommandUnavailableError):
            await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        allowed = await emu.run_command(guild_id, channel_id, OTHER_USER_ID, "tools", subcommand="panel")
        await allowed.wait_response()
        emu.set_member_permissions(guild_id, USER_ID, manage_guild=True)
        promoted = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        assert int(promoted.payload["member"]["permissions"]) & (1 << 5)
        await promoted.wait_response()


async def test_raw_http_shapes(emu: DiscordEmulator) -> None:
    guild_id, channel_id = world(emu)
    headers = {"Authorization": f"Bot {emu.bot_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.api_base}/users/@me", headers=headers) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
            assert "X-RateLimit-Bucket" in resp.headers
        async with http.get(f"{emu.api_base}/users/@me") as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 0
        async with http.get(f"{emu.api_base}/no/such/route", headers=headers) as resp:
            assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
        async with http.get(f"{emu.api_base}/gateway/bot", headers=headers) as resp:
            assert (await resp.json())["url"] == emu.gateway_url
        emu.inject_rest_errors(429, 1, route_contains="/guilds/")
        async with http.get(f"{emu.api_base}/guilds/{guild_id}", headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 429 and resp.headers["Via"] and body["retry_after"] > 0 and body["global"] is False
        emu.inject_rest_errors(503, 1, method="GET")
        async with http.get(f"{emu.api_base}/guilds/{guild_id}", headers=headers) as resp:
            assert resp.status == 503 and (await resp.json())["message"] == "503: Service Unavailable"
        async with http.get(f"{emu.api_base}/guilds/{guild_id}?with_counts=true", headers=headers) as resp:
            guild = await resp.json()
            assert guild["approximate_member_count"] == 4 and guild["premium_tier"] == 0
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({"content": "file", "attachments": [{"id": 0, "filename": "a.png"}]}))
        form.add_field("files[0]", PNG, filename="a.png", content_type="application/octet-stream")
        async with http.post(f"{emu.api_base}/channels/{channel_id}/messages", data=form, headers=headers) as resp:
            message = await resp.json()
        url = message["attachments"][0]["url"]
        assert re.search(r"\?ex=[0-9a-f]+&is=[0-9a-f]+&hm=[0-9a-f]{64}&$", url)
        async with http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == PNG and resp.headers["Content-Type"] == "image/png"
        async with http.get(message["attachments"][0]["proxy_url"]) as resp:
            assert resp.status == 200
        async with http.get(url.replace("&hm=", "&hm=0")) as resp:
            assert resp.status == 404
        emu.attachment_url_ttl = 0
        expired = emu.attachment_url(emu.attachments[int(message["attachments"][0]["id"])])
        async with http.get(expired) as resp:
            assert resp.status == 404 and await resp.text() == "This content is no longer available."


async def test_many_interactions_with_attachments(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    big = PNG + b"\0" * MIB
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        records = [
            await emu.run_command(
                guild_id,
                channel_id,
                USER_ID,
                "echo",
                {"text": str(i)},
                attachments={"image": (f"{i}.png", big, "image/png")},
            )
            for i in range(30)
        ]
        await asyncio.gather(*(r.wait_followup(timeout=10, count=2) for r in records))
        # Every deferral accepted: the emulator refuses a first callback past Discord's 3-second deadline.
        assert all(r.acknowledged for r in records)
        assert len(bot.probe.echoed) == 30 and bot.probe.errors == []


async def test_raw_gateway_protocol(emu: DiscordEmulator) -> None:
    guild_id, _ = world(emu)
    decompressor = zlib.decompressobj()

    async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        message = await ws.receive(timeout=5)
        if message.type == aiohttp.WSMsgType.BINARY:
            data = bytes(message.data)
            assert data.endswith(b"\x00\x00\xff\xff")  # zlib-stream: every frame ends with Z_SYNC_FLUSH
            return cast(dict[str, Any], json.loads(decompressor.decompress(data)))
        assert message.type == aiohttp.WSMsgType.TEXT, message
        return cast(dict[str, Any], json.loads(message.data))

    identify = {"op": 2, "d": {"token": emu.bot_token, "intents": 1, "properties": {}}}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json&compress=zlib-stream") as ws:
            hello = await receive(ws)
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
            await ws.send_json({"op": 1, "d": None})
            assert (await receive(ws))["op"] == 11
            await ws.send_json(identify)
            ready = await receive(ws)
            assert (ready["t"], ready["s"]) == ("READY", 1)
            assert ready["d"]["resume_gateway_url"] == emu.gateway_url
            assert ready["d"]["guilds"] == [{"id": str(guild_id), "unavailable": True}]
            created = await receive(ws)
            assert (created["t"], created["s"], created["d"]["id"]) == ("GUILD_CREATE", 2, str(guild_id))
            session_id = ready["d"]["session_id"]
            await emu.wait_ready()
            fault = asyncio.create_task(emu.disconnect_gateway(resume=False))
            assert (await receive(ws)) == {"op": 9, "s": None, "t": None, "d": False}
            await ws.close()
            await fault
        # zstd-stream is not spoken: plain text frames, which discord.py reads as they are
        async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json&compress=zstd-stream") as ws:
            assert (await receive(ws))["op"] == 10
            await ws.send_json({"op": 6, "d": {"token": emu.bot_token, "session_id": session_id, "seq": 2}})
            assert (await receive(ws))["op"] == 9  # that session was invalidated
        async with http.ws_connect(emu.gateway_url) as ws:
            await receive(ws)
            await ws.send_json({"op": 2, "d": {"token": emu.bot_token, "intents": 1 | 1 << 15, "properties": {}}})
            closed = await ws.receive(timeout=5)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4014  # privileged intent
        async with http.ws_connect(f"{emu.gateway_url}?encoding=etf") as ws:
            closed = await ws.receive(timeout=5)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4002


async def test_raw_gateway_rejects_a_wrong_token() -> None:
    async with (
        DiscordEmulator(bot_token="right") as emu,
        aiohttp.ClientSession() as http,
        http.ws_connect(emu.gateway_url) as ws,
    ):
        await ws.receive(timeout=5)
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}})
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4004


# ---------------------------------------------------------------- modals and message commands


async def test_modal_from_a_button_updates_the_message(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="panel")
        await record.wait_response()
        panel = record.original_message
        assert panel is not None
        press = await emu.press_button(panel.id, "emu:edit", OTHER_USER_ID)
        modal = await press.wait_modal()
        # discord.py 2.7 sends Label-wrapped inputs (component type 18), the text input pre-filled
        assert modal["custom_id"] == "emu:edit-modal" and modal["title"] == "Edit the panel"
        [label] = modal["components"]
        assert label["type"] == 18 and label["label"] == "Panel text"
        assert label["component"]["type"] == 4 and label["component"]["value"] == "panel"
        assert press.original_message is None  # a modal is no message

        with pytest.raises(ValueError, match="length 51 outside"):
            await emu.submit_modal(press, {"emu:text": "x" * 51})
        with pytest.raises(ValueError, match="no inputs"):
            await emu.submit_modal(press, {"emu:nope": "x"})
        submit = await emu.submit_modal(press, {"emu:text": "renamed"})
        assert submit.type == 5 and submit.user_id == OTHER_USER_ID and submit.parent_id == press.id
        data = submit.payload["data"]
        assert data["custom_id"] == "emu:edit-modal"
        assert data["components"][0]["component"] == {
            "type": 4,
            "id": label["component"].get("id"),
            "custom_id": "emu:text",
            "value": "renamed",
        }
        assert submit.payload["message"]["id"] == str(panel.id)  # submitted from a component: the message rides along
        assert (await submit.wait_response()).type == 7
        assert panel.content == "renamed" and submit.original_message is panel
        with pytest.raises(ValueError, match="already submitted"):
            await emu.submit_modal(press, {"emu:text": "again"})
        assert bot.probe.errors == []


async def test_message_command_with_a_localised_name_and_a_modal(
    emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id) as bot:
        files = [
            ("a.png", PNG, "image/png"),
            ("b.png", make_png(8, 6), "image/png"),
            ("notes.txt", b"hi", "text/plain"),
        ]
        target = emu.post_message(channel_id, USER_ID, "two frames", attachments=files)
        assert target.author_id == USER_ID and [a.filename for a in target.attachments] == [
            "a.png",
            "b.png",
            "notes.txt",
        ]

        with pytest.raises(CommandNotSyncedError):
            await emu.run_message_command(guild_id, channel_id, USER_ID, "Animate", target.id)
        # the user sees (and picks) the zh-CN name; Discord sends the default name
        record = await emu.run_message_command(
            guild_id, channel_id, OTHER_USER_ID, "检查图片", target.id, locale="zh-CN"
        )
        data = record.payload["data"]
        assert record.type == 2 and record.command_type == 3 and record.name == "Inspect image"
        assert data["type"] == 3 and data["name"] == "Inspect image" and data["target_id"] == str(target.id)
        resolved = data["resolved"]["messages"][str(target.id)]
        assert [a["filename"] for a in resolved["attachments"]] == ["a.png", "b.png", "notes.txt"]
        assert resolved["attachments"][1]["width"] == 8 and resolved["author"]["id"] == str(USER_ID)

        modal = await record.wait_modal()
        assert [c["type"] for c in modal["components"]] == [18, 18]
        assert modal["components"][1]["description"] == "Output size"
        seen = bot.probe.targets[-1]
        assert seen.id == target.id and [a.content_type for a in seen.attachments][:2] == ["image/png", "image/png"]

        with pytest.raises(ValueError, match="option values"):
            await emu.submit_modal(record, {"emu:size-pick": ["4K"]})
        with pytest.raises(ValueError, match="length 0 outside"):
            await emu.submit_modal(record, {"emu:prompt": ""})  # required by default
        submit = await emu.submit_modal(record, {"emu:size-pick": ["480P"]})  # the prompt keeps its pre-filled text
        await submit.wait_response()
        reply = submit.original_message
        assert reply is not None and reply.content == "a cat @ 480P on a.png,b.png,notes.txt"
        assert reply.channel_id == channel_id and "message" not in submit.payload

        # a message without attachments: the bot answers privately
        bare = emu.post_message(channel_id, USER_ID, "words only")
        refused = await emu.run_message_command(guild_id, channel_id, USER_ID, "Inspect image", bare.id)
        await refused.wait_response()
        assert refused.ephemeral_text == "no attachments"
        assert refused.original_message is not None and refused.original_message.type == 23  # context menu reply
        with pytest.raises(ValueError, match="not a visible message"):
            await emu.run_message_command(guild_id, channel_id, USER_ID, "Inspect image", reply.id + 10**6)
        assert bot.probe.errors == []


async def _callback(http: aiohttp.ClientSession, emu: DiscordEmulator, record: Any, body: dict[str, Any]) -> Any:
    url = f"{emu.api_base}/interactions/{record.id}/{record.token}/callback"
    async with http.post(url, json=body) as resp:
        return resp.status, (await resp.json() if resp.status != 204 else None)


def _text_modal(count: int = 1, value: str = "v", max_length: int | None = None) -> dict[str, Any]:
    def label(i: int) -> dict[str, Any]:
        text_input: dict[str, Any] = {"type": 4, "custom_id": f"t{i}", "style": 1, "value": value}
        if max_length is not None:
            text_input["max_length"] = max_length
        return {"type": 18, "label": f"Field {i}", "component": text_input}

    return {"type": 9, "data": {"custom_id": "m", "title": "Form", "components": [label(i) for i in range(count)]}}


async def test_modal_rules_discord_enforces(emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    guild_id, channel_id = world(emu)
    async with running_bot(emu, monkeypatch, guild_id), aiohttp.ClientSession() as http:

        async def unanswered() -> Any:
            return await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="ignore")

        record = await unanswered()
        status, body = await _callback(http, emu, record, _text_modal(count=6))
        assert status == 400 and body["code"] == 50035 and "components" in body["errors"]["data"]
        status, body = await _callback(http, emu, record, _text_modal(value="x" * 4001))
        assert status == 400 and "value" in body["errors"]["data"]["components"]["0"]["component"]
        status, body = await _callback(http, emu, record, _text_modal(value="x" * 11, max_length=10))
        assert status == 400 and body["code"] == 50035
        too_long_title = _text_modal()
        too_long_title["data"]["title"] = "t" * 46
        status, body = await _callback(http, emu, record, too_long_title)
        assert status == 400 and "title" in body["errors"]["data"]
        assert not record.acknowledged  # refused modals are no response
        # after a deferral a modal is a second response
        assert (await _callback(http, emu, record, {"type": 5}))[0] == 204
        status, body = await _callback(http, emu, record, _text_modal())
        assert status == 400 and body["code"] == 40060

        # a modal submit cannot answer with another modal
        opener = await unanswered()
        assert (await _callback(http, emu, opener, _text_modal(count=5)))[0] == 204
        submit = await emu.submit_modal(opener, {"t0": "filled"})
        assert [c["component"]["value"] for c in submit.payload["data"]["components"]] == ["filled"] + ["v"] * 4
        status, body = await _callback(http, emu, submit, _text_modal())
        assert status == 400 and body["code"] == 50035 and "type" in body["errors"]
        assert (await _callback(http, emu, submit, {"type": 4, "data": {"content": "thanks"}}))[0] == 204
        assert submit.last_text == "thanks"


async def test_modal_after_the_deadline_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DiscordEmulator(interaction_response_deadline=0.1) as emu:
        guild_id, channel_id = world(emu)
        async with running_bot(emu, monkeypatch, guild_id), aiohttp.ClientSession() as http:
            record = await emu.run_command(guild_id, channel_id, USER_ID, "tools", subcommand="ignore")
            await asyncio.sleep(0.2)
            status, body = await _callback(http, emu, record, _text_modal())
            assert status == 404 and body["code"] == 10062
            with pytest.raises(ValueError, match="did not answer with a modal"):
                await emu.submit_modal(record)


async def test_message_command_limits_at_sync(emu: DiscordEmulator) -> None:
    guild_id, _ = world(emu)
    headers = {"Authorization": f"Bot {emu.bot_token}"}
    url = f"{emu.api_base}/applications/{emu.application_id}/guilds/{guild_id}/commands"
    menus = [{"name": f"Menu {i}", "type": 3} for i in range(6)]
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json=menus, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 50035
        async with http.put(url, json=[{"name": "x" * 33, "type": 3}], headers=headers) as resp:
            assert resp.status == 400 and "name" in (await resp.json())["errors"]["0"]
        async with http.put(url, json=menus[:5], headers=headers) as resp:
            assert resp.status == 200 and [c["type"] for c in await resp.json()] == [3] * 5
