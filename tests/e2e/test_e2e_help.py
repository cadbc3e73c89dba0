"""End to end (issue 19): /kf2v-help and the descriptions built from the running catalog, with the real bot
(discord.py) against the Discord and DashScope emulators."""

from __future__ import annotations

from typing import Any

from bot.catalog import DEFAULT_CATALOG, format_cny, parse_catalog
from bot.discord_ui.help import model_line
from tests.support.world import ALICE, MANAGER, World, delivered


def synced(world: World, name: str) -> dict[str, Any]:
    [command] = [c for scope in world.discord.commands.values() for (_, n), c in scope.items() if n == name]
    return command


def option(command: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [o for o in command.get("options") or [] if o["name"] == name]
    assert len(found) == 1
    return found[0]


def descriptions(node: dict[str, Any]) -> list[str]:
    """Every description of a synced command, its options and their localisations."""
    texts = [str(node.get("description", ""))] + [
        str(v) for v in (node.get("description_localizations") or {}).values()
    ]
    for child in node.get("options") or []:
        texts += descriptions(child)
    return texts


async def help_embeds(world: World, user: int = ALICE, locale: str = "en-US") -> list[dict[str, Any]]:
    record = await world.discord.run_command(world.guild, world.channel, user, "kf2v-help", locale=locale)
    await world.reply(record)
    [message] = [m for m in record.messages if m.ephemeral and not m.loading]
    return message.embeds


def field(embeds: list[dict[str, Any]], name: str) -> str:
    values = [f["value"] for e in embeds for f in e.get("fields", []) if f["name"] == name]
    assert len(values) == 1, (name, [f["name"] for e in embeds for f in e.get("fields", [])])
    return str(values[0])


async def test_help_lists_the_catalogs_models_prices_and_the_members_allowance(world: World) -> None:
    record = await world.kf2v()  # one video: the allowance below counts it
    await world.reply(record)
    job = await world.latest_job()
    await delivered(world, job.id)
    embeds = await help_embeds(world)
    assert len(embeds) == 2 and sum(len(str(e)) for e in embeds) < 6000
    models = field(embeds, "Models, lengths and prices here")
    for spec in world.svc.jobs.models():
        assert f"**{spec.key}** · {spec.describe_durations()}" in models
    assert "**wan2.7-i2v** · 2-15 s · 720P ¥0.6/s, 1080P ¥1/s · with sound" in models
    assert "**wan2.2-kf2v-flash** · 5 s · 480P ¥0.1/s, 720P ¥0.2/s, 1080P ¥0.48/s" in models
    allowance = field(embeds, "Your allowance today")
    report = await world.svc.jobs.budget_report(world.guild, ALICE)
    policy = report.policy
    assert report.usage.member_videos_today == 1
    assert f"{policy.member_daily_videos - 1} more of {policy.member_daily_videos} videos today" in allowance
    assert f"¥{format_cny(report.left_day)} of ¥{format_cny(policy.daily_budget)} left today" in allowance
    commands = field(embeds, "Commands you can use here")
    assert "`/kf2v`: Make a 2-15 s video from a first and a last frame" in commands
    assert "`/kf2v-help`" in commands and "Animate with kf2v" in commands
    # Hidden by default from members (Manage Server / Administrator): not offered to them in help either.
    assert "/kf2v-rules" not in commands and "/kf2v-admin" not in commands
    manager_commands = field(await help_embeds(world, MANAGER), "Commands you can use here")
    assert "`/kf2v-rules`" in manager_commands and "/kf2v-admin" not in manager_commands


async def test_help_in_chinese(world: World) -> None:
    embeds = await help_embeds(world, locale="zh-CN")
    assert embeds[0]["title"] == "kf2v:用关键帧生成视频"
    models = field(embeds, "此处的模型、时长和价格")
    assert "**wan2.7-i2v** · 2-15 s · 720P ¥0.6/秒, 1080P ¥1/秒 · 有声" in models
    assert "`/kf2v`:用首帧和尾帧生成 2-15 s 的视频" in field(embeds, "你在这里可以使用的命令")
    assert "今天你还可以请求" in field(embeds, "你今天的额度")


async def test_descriptions_name_the_catalogs_lengths_models_and_resolutions(world: World) -> None:
    kf2v = synced(world, "kf2v")
    assert kf2v["description"] == "Make a 2-15 s video from a first and a last frame"
    assert kf2v["description_localizations"]["zh-CN"] == "用首帧和尾帧生成 2-15 s 的视频"
    assert option(kf2v, "duration")["description"].endswith("(wan2.7-i2v: 2-15)")
    assert (
        option(kf2v, "resolution")["description"]
        == "Resolution: 480P/720P/1080P (default: the model's own, 720P/1080P)"
    )
    assert option(kf2v, "model")["description"].startswith("Model (default wan2.2-kf2v-flash;")
    effect = synced(world, "kf2v-effect")
    assert option(effect, "model")["description"] == "Model (effects need wanx2.1-kf2v-plus)"
    help_command = synced(world, "kf2v-help")
    assert help_command["description_localizations"]["zh-CN"].startswith("kf2v 使用说明")
    for command in (c for scope in world.discord.commands.values() for c in scope.values()):
        for text in descriptions(command):
            assert "{" not in text and "5-second" not in text, (command["name"], text)  # every placeholder filled


def test_prices_are_the_bot_regions() -> None:
    catalog = parse_catalog(DEFAULT_CATALOG)
    wan27 = catalog.model("wan2.7-i2v")
    assert "720P ¥0.734/s, 1080P ¥1.101/s" in model_line(wan27, "singapore", "en-US")
    assert "720P ¥0.6/s, 1080P ¥1/s" in model_line(wan27, "beijing", "en-US")


async def test_every_command_is_offered_in_guilds_where_the_bot_is_installed_only(world: World) -> None:
    sent = world.discord.syncs[-1].commands  # as the bot sent them (Discord fills in a default when absent)
    assert len(sent) == len([c for scope in world.discord.commands.values() for c in scope.values()])
    for command in sent:
        # integration_types [0]: guild install only (not user install); contexts [0]: guild channels only.
        assert command.get("integration_types") == [0] and command.get("contexts") == [0], command["name"]
