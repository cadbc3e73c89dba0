"""Admission end to end (issue 10): the real discord.py against the Discord and DashScope emulators.

KF2V_ALLOWED_GUILDS refuses every command and button elsewhere, in the member's language, with nothing
spent or stored; Regenerate meets every check /kf2v meets (its rate limit: tests/reliability/test_security.py); an
over-budget /kf2v is refused before its frames are downloaded or decoded.
"""

from __future__ import annotations

from bot.i18n import t
from bot.jobs.models import JobState
from bot.jobs.service import Actor
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, MANAGER, OWNER, World


def frames_on_disk(world: World) -> int:
    return sum(1 for p in (world.tmp / "data" / "media" / "frames").rglob("*") if p.is_file())


async def regenerate_shown(world: World, job_id: int) -> int:
    """The status message id once it carries the job's Regenerate button."""
    job = await world.job(job_id)
    assert job.status_message_id is not None

    def shown() -> bool:
        message = world.discord.message(job.status_message_id or 0)
        return message is not None and f"kf2v:regen:{job_id}" in message.custom_ids()

    await wait_until(shown, within=10)
    return job.status_message_id


async def test_outside_the_allowed_guilds_every_command_and_button_is_refused(world: World) -> None:
    discord = world.discord
    # Before the allow-list: a job in guild A, held in the queue so its Cancel button stays.
    await world.svc.jobs.pause("hold")
    assert "queued" in await world.reply(await world.kf2v(user=ALICE))
    held = await world.latest_job()
    assert held.status_message_id is not None
    guild_b = discord.add_guild("Guild B", locale="zh-CN")
    channel_b = discord.add_text_channel(guild_b, "videos")
    for user, name in ((ALICE, "alice"), (BOB, "bob")):
        discord.add_member(guild_b, user, name)
    discord.add_member(guild_b, MANAGER, "manager", manage_guild=True)

    world.overrides["KF2V_ALLOWED_GUILDS"] = str(guild_b)
    await world.stop_bot()
    await world.start_bot()
    jobs_before, ledger_before, frames_before = (
        await world.svc.store.all_jobs(),
        await world.svc.store.ledger(),
        frames_on_disk(world),
    )

    refusal_en = t("en-US", "guild.not_allowed")
    refusal_zh = t("zh-CN", "guild.not_allowed")
    attempts = [
        await world.kf2v(user=ALICE),
        await world.kf2v(user=BOB, locale="zh-CN"),
        await discord.run_command(
            world.guild, world.channel, ALICE, "kf2v-effect", {"template": "hanfu-1"},
            attachments={"image": ("a.png", corpus.good_png(), "image/png")},
        ),
        await discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota-set", {"member_daily_videos": 1}),
        await discord.run_command(world.guild, world.channel, ALICE, "kf2v-jobs"),
        await discord.run_command(world.guild, world.channel, OWNER, "kf2v-admin", subcommand="show"),
        await discord.press_button(held.status_message_id, f"kf2v:cancel:{held.id}", ALICE),
        await discord.press_button(held.status_message_id, f"kf2v:cancel:{held.id}", BOB, locale="zh-CN"),
    ]  # fmt: skip
    answers = [await world.reply(a) for a in attempts]
    expected = [refusal_en, refusal_zh, refusal_en, refusal_en, refusal_en, refusal_en, refusal_en, refusal_zh]
    assert answers == expected, answers
    assert "Nothing was charged" in refusal_en and "未产生任何费用" in refusal_zh

    # Nothing read, spent or stored: no job, no ledger row, no frame, no decode, no policy, no cancel.
    assert await world.svc.store.all_jobs() == jobs_before
    assert await world.svc.store.ledger() == ledger_before
    assert frames_on_disk(world) == frames_before
    assert world.svc.jobs.image_workers.checked == 0
    assert (await world.svc.store.get_policy(world.guild)).member_daily_videos is None
    assert (await world.job(held.id)).state is JobState.QUEUED and not (await world.job(held.id)).cancel_requested
    assert world.dashscope.stats()["calls"].get("create", 0) == 0
    cdn = [r for r in discord.requests if "attachments/" in r.path and r.method == "GET"]
    downloads_before_restart = 2  # the held job's two frames, fetched before the allow-list was set
    assert len(cdn) == downloads_before_restart

    # The allowed guild is served as before.
    record = await discord.run_command(
        guild_b, channel_b, ALICE, "kf2v", {"prompt": "a red square turns blue"},
        attachments={"first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                     "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png")},
        locale="zh-CN",
    )  # fmt: skip
    await world.reply(record)
    latest = await world.latest_job()
    assert latest.guild_id == guild_b and latest.id != held.id
    print(f"\nADMISSION allowed-guilds refused={len(answers)} spent=0 stored=0 allowed_guild_served=1")


async def test_regenerate_meets_every_check_of_kf2v(world: World) -> None:
    discord, svc = world.discord, world.svc
    await svc.jobs.pause("hold")
    assert "queued" in await world.reply(await world.kf2v(user=ALICE, resolution="720P"))
    job = await world.latest_job()
    job = await svc.jobs.cancel(job.id, Actor(ALICE))
    assert job.state is JobState.CANCELED
    await svc.jobs.resume()
    message_id = await regenerate_shown(world, job.id)

    async def press() -> str:
        return await world.reply(await discord.press_button(message_id, f"kf2v:regen:{job.id}", ALICE))

    async def nothing_new() -> None:
        assert [j.id for j in await svc.store.all_jobs()] == [job.id]
        assert [e.kind for e in await svc.store.ledger()] == ["reserve", "release"]

    # 1. The channel is no longer one where videos may be requested.
    other = discord.add_text_channel(world.guild, "requests")
    await world.reply(await discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota-set",
                                                {"allow_channel": other}))  # fmt: skip
    assert f"can't be requested in this channel. Use one of: <#{other}>" in await press()
    await nothing_new()
    await world.reply(await discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota-set",
                                                {"allow_everywhere": True}))  # fmt: skip

    # 2. The bot may no longer attach files here: the video could not be posted.
    discord.set_channel_permissions(world.channel, bot_can_attach=False)
    assert "can't post videos in this channel" in await press()
    await nothing_new()
    discord.set_channel_permissions(world.channel, bot_can_attach=True)

    # 3. The budget: ¥0.50 left today and the video costs ¥1.00.
    await svc.budget.set_budgets(world.guild, daily=500, monthly=None)
    answer = await press()
    assert "¥0.50 of ¥0.50 left" in answer and "costs ¥1.00" in answer
    await nothing_new()

    # 4. The member's daily video limit, set by the guild's managers.
    await svc.budget.set_budgets(world.guild, daily=100_000, monthly=None)
    await svc.budget.set_member_limits(world.guild, member_daily_videos=0)
    assert "today's limit of 0 videos" in await press()
    await nothing_new()
    await svc.budget.set_member_limits(world.guild, member_daily_videos=100)

    # Everything allowed again: the same button queues a new job with the same request.
    assert "queued" in await press()
    new_job = await world.latest_job()
    assert new_job.parent_job_id == job.id and new_job.request.prompt == job.request.prompt
    assert new_job.channel_id == world.channel and new_job.guild_id == world.guild
    assert svc.jobs.image_workers.checked == 2  # only the first job's frames were ever decoded
    print("\nADMISSION regenerate-checks refused=4 (channel, permissions, budget, member limit) accepted=1")


async def test_over_budget_kf2v_is_refused_before_its_frames_are_decoded(world: World) -> None:
    await world.svc.budget.set_budgets(world.guild, daily=1500, monthly=None)
    assert "queued" in await world.reply(await world.kf2v(resolution="720P"))
    assert world.svc.jobs.image_workers.checked == 2
    frames = frames_on_disk(world)
    big = corpus.good_png(2000, 1500, corpus.RED)
    text = await world.reply(await world.kf2v(resolution="720P", first=big, last=big))
    assert "¥0.50 of ¥1.50 left" in text
    assert world.svc.jobs.image_workers.checked == 2  # the refused request's frames were never decoded
    assert frames_on_disk(world) == frames
    cdn = [r for r in world.discord.requests if "attachments/" in r.path and r.method == "GET"]
    assert len(cdn) == 2  # nor even downloaded


async def test_manager_channel_options_change_only_the_channels(world: World) -> None:
    discord = world.discord
    first, second = discord.add_text_channel(world.guild, "one"), discord.add_text_channel(world.guild, "two")

    async def quota(**options: object) -> str:
        record = await discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota-set", options)
        return await world.reply(record)

    await world.svc.budget.set_budgets(world.guild, daily=7000, monthly=None)
    await quota(allow_channel=first)
    await quota(allow_channel=second, member_daily_videos=5)
    await quota(user_queue_limit=4)  # no channel option: the channels are left alone
    policy = await world.svc.store.get_policy(world.guild)
    assert (policy.allowed_channels, policy.member_daily_videos, policy.user_queue_limit) == ((first, second), 5, 4)
    assert "isn't in the allowed list" in await quota(disallow_channel=world.channel, member_daily_videos=1)
    assert await world.svc.store.get_policy(world.guild) == policy  # refused whole: the limit did not change
    await quota(disallow_channel=first)
    policy = await world.svc.store.get_policy(world.guild)
    assert (policy.allowed_channels, policy.daily_budget) == ((second,), 7000)
