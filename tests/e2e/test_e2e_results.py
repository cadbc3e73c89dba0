"""End to end (issue 19): Details, Delete and Vary on a delivered result, and /kf2v `count`, with the real bot
(discord.py) against the Discord and DashScope emulators and a real SQLite file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.catalog import DEFAULT_CATALOG, parse_catalog
from bot.discord_ui.results import command_line, details_message
from bot.errors import InvalidInput, NotAllowed
from bot.jobs.models import ChargeState, Job, JobRequest, JobState
from bot.jobs.ports import Video
from bot.jobs.service import Actor
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, MANAGER, World, delivered


async def delivered_job(world: World, **options: Any) -> Job:
    """A /kf2v by Alice, delivered, with the result buttons on its status message."""
    await world.reply(await world.kf2v(**options))
    job = await world.latest_job()
    await delivered(world, job.id)
    job = await world.job(job.id)

    def has_buttons() -> bool:
        status = world.discord.message(job.status_message_id or 0)
        return status is not None and f"kf2v:delete:{job.id}" in status.custom_ids()

    await wait_until(has_buttons, within=10)
    return job


async def press(world: World, job: Job, action: str, user: int, locale: str = "en-US") -> Any:
    record = await world.discord.press_button(
        job.status_message_id or 0, f"kf2v:{action}:{job.id}", user, locale=locale
    )
    await world.reply(record)
    return record


def reply_message(record: Any) -> Any:
    [message] = [m for m in record.messages if m.ephemeral and not m.loading]
    return message


async def test_details_show_every_parameter_and_a_command_to_make_it_again(world: World) -> None:
    job = await delivered_job(world, seed=42, negative_prompt="blur, text", resolution="480P")
    assert job.actual_prompt  # the emulator rewrites prompts (prompt_extend on)
    status = world.discord.message(job.status_message_id or 0)
    assert status is not None
    assert {f"kf2v:{a}:{job.id}" for a in ("regen", "remix", "vary", "details", "delete")} <= set(status.custom_ids())
    # Any member of the server may look (Bob did not ask for it); the answer is private.
    record = await press(world, job, "details", BOB)
    message = reply_message(record)
    assert message.ephemeral
    assert "```\n/kf2v prompt:a red square turns blue negative_prompt:blur, text model:wan2.2-kf2v-flash " in (
        message.content
    )
    assert "resolution:480P seed:42\n```" in message.content  # no length or sound: the model has no choice
    [embed] = message.embeds
    assert job.actual_prompt in embed["description"] and "a red square turns blue" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "42" and fields["Resolution"] == "480P" and fields["Model"] == "wan2.2-kf2v-flash"
    assert fields["Negative prompt"] == "blur, text" and fields["Length"] == "5 s, silent"
    assert job.charge_state is ChargeState.SETTLED and fields["Cost"] == "¥0.50"
    assert fields["Requested by"] == f"<@{ALICE}>"
    chinese = reply_message(await press(world, job, "details", BOB, locale="zh-CN"))
    assert "要再次生成" in chinese.content and chinese.embeds[0]["title"] == f"视频 #{job.id}:详情"
    # Another server's job is never shown, whatever id a client sends.
    with pytest.raises(NotAllowed):
        await world.svc.jobs.result_for(job.id, world.guild + 1)
    # Persistent: after a restart the same button still answers.
    await world.stop_bot()
    await world.start_bot()
    again = reply_message(await press(world, job, "details", ALICE))
    assert "seed:42" in again.content


async def test_delete_removes_the_posts_records_who_and_keeps_what_was_spent(world: World) -> None:
    job = await delivered_job(world)
    [(video_message, _)] = world.videos()
    assert video_message.channel_id == job.thread_id and job.video_path and Path(job.video_path).exists()
    ledger_before = await world.svc.store.ledger(world.guild)
    report_before = await world.svc.jobs.budget_report(world.guild, ALICE)
    refused = await press(world, job, "delete", BOB)  # neither the requester nor a manager
    assert reply_message(refused).content == "That job belongs to someone else."
    assert not video_message.deleted and (await world.job(job.id)).deleted_by is None

    # Another job's post in the same thread whose marker starts with this one's (#1 and #10): it stays.
    footer = {"footer": {"text": f"kf2v-job-{job.id}0"}}
    thread = world.discord.channel(job.thread_id or 0)
    decoy = world.discord.create_message(
        thread, {"content": "", "embeds": [footer]}, [], type=0, author_id=world.discord.bot_user_id
    )
    record = await press(world, job, "delete", ALICE)
    text = reply_message(record).content
    assert f"Video #{job.id} was deleted" in text and "(¥1.00) stays spent" in text
    status = world.discord.message(job.status_message_id or 0)
    assert video_message.deleted and status is not None and status.deleted
    assert not decoy.deleted
    job = await world.job(job.id)
    assert job.deleted_by == ALICE and job.deleted_at is not None and job.state is JobState.DELIVERED
    assert job.video_path and not Path(job.video_path).exists()  # the kept file goes too
    assert await world.svc.store.ledger(world.guild) == ledger_before  # money already spent stays spent
    report = await world.svc.jobs.budget_report(world.guild, ALICE)
    assert report.usage.spent_day == report_before.usage.spent_day == job.cost_settled
    thread = world.discord.channel(job.thread_id or 0)
    assert thread.name == f"#{job.id} (deleted)"  # the prompt no longer names the thread
    assert any(f"Video #{job.id} was deleted by <@{ALICE}>" in m.content for m in world.discord.messages(thread.id))
    listed = await world.discord.run_command(world.guild, world.channel, ALICE, "kf2v-jobs")
    assert f"**#{job.id}** Deleted · wan2.2-kf2v-flash 720P · ¥1.00" in await world.reply(listed)
    with pytest.raises(InvalidInput) as again:  # the first press wins; a second changes nothing
        await world.svc.jobs.delete_result(job.id, Actor(ALICE), guild_id=world.guild)
    assert again.value.key == "result.already_deleted" and (await world.job(job.id)).deleted_by == ALICE


async def test_a_manager_may_delete_a_members_video(world: World) -> None:
    job = await delivered_job(world)
    text = reply_message(await press(world, job, "delete", MANAGER)).content
    assert "was deleted" in text
    assert (await world.job(job.id)).deleted_by == MANAGER
    assert all(message.deleted for message, _ in world.videos())


async def test_count_makes_variations_reserved_whole_and_delivered_in_one_thread(world: World) -> None:
    record = await world.kf2v(count=3, seed=7)
    text = await world.reply(record)
    jobs = await world.svc.store.all_jobs()
    assert len(jobs) == 3 and text.startswith("3 variations are queued")
    assert [j.request.seed for j in jobs] == [7, 8, 9]
    assert len({(j.first_frame, j.last_frame, j.request.prompt) for j in jobs}) == 1
    assert sum(j.cost_reserved for j in jobs) == 3 * jobs[0].cost_reserved
    for job in jobs:
        await delivered(world, job.id)
    jobs = [await world.job(j.id) for j in jobs]
    thread_id = jobs[0].thread_id
    assert thread_id is not None and all(j.thread_id == thread_id for j in jobs)
    videos = world.videos()
    assert len(videos) == 3 and {m.channel_id for m, _ in videos} == {thread_id}


async def test_count_the_budget_cannot_cover_is_refused_whole(world: World) -> None:
    await world.svc.budget.set_budgets(world.guild, daily=2500, monthly=None)  # two 720P flash videos, not three
    record = await world.kf2v(count=3)
    text = await world.reply(record)
    assert "¥2.50" in text and "¥3.00" in text, text
    assert await world.svc.store.all_jobs() == [] and await world.svc.store.ledger(world.guild) == []
    assert world.dashscope.stats()["submissions_accepted"] == 0
    bad = await world.kf2v(count=5)
    assert "from 1 to 4" in await world.reply(bad)


async def test_vary_makes_new_seeds_in_the_results_thread(world: World) -> None:
    job = await delivered_job(world, seed=11)
    text = reply_message(await press(world, job, "vary", ALICE)).content
    assert text.startswith("2 variations are queued") and f"<#{job.thread_id}>" in text
    variations = [j for j in await world.svc.store.all_jobs() if j.parent_job_id == job.id]
    assert len(variations) == 2
    assert len({j.request.seed for j in variations}) == 2 and all(j.request.seed is not None for j in variations)
    assert all(j.request.prompt == job.request.prompt and j.first_frame == job.first_frame for j in variations)
    for variation in variations:
        await delivered(world, variation.id)
        variation = await world.job(variation.id)
        assert variation.thread_id == job.thread_id
        status = world.discord.message(variation.status_message_id or 0)
        assert status is not None and status.channel_id == job.thread_id
    assert {m.channel_id for m, _ in world.videos()} == {job.thread_id}


async def test_vary_the_budget_cannot_cover_is_refused_whole(world: World) -> None:
    job = await delivered_job(world)  # 720P flash: ¥1.00
    await world.svc.budget.set_budgets(world.guild, daily=2500, monthly=None)  # ¥1.50 left: one more, not two
    text = reply_message(await press(world, job, "vary", ALICE)).content
    assert "¥1.50 of ¥2.50 left" in text and "¥2.00" in text, text
    assert [j.id for j in await world.svc.store.all_jobs()] == [job.id]
    report = await world.svc.jobs.budget_report(world.guild, ALICE)
    assert report.usage.reserved_day == 0


async def test_count_past_the_members_queue_limit_is_refused_whole(world: World) -> None:
    await world.svc.jobs.set_member_limits(world.guild, user_queue_limit=2)
    text = await world.reply(await world.kf2v(count=3))
    assert "3 more videos would make 3 waiting for you; the limit is 2" in text
    assert await world.svc.store.all_jobs() == []


async def test_result_buttons_are_refused_outside_the_allowed_guilds(world: World) -> None:
    job = await delivered_job(world)
    await world.stop_bot()
    world.overrides["KF2V_ALLOWED_GUILDS"] = str(world.guild + 1)  # this server is no longer served
    await world.start_bot()
    for action in ("details", "delete", "vary"):
        text = reply_message(await press(world, job, action, ALICE)).content
        assert text.startswith("This bot is not enabled in this server"), (action, text)
    assert (await world.job(job.id)).deleted_by is None and all(not m.deleted for m, _ in world.videos())
    assert len(await world.svc.store.all_jobs()) == 1


async def test_delete_where_no_thread_could_be_made_removes_the_post_in_the_channel(world: World) -> None:
    world.discord.set_channel_permissions(world.channel, bot_can_create_threads=False)
    job = await delivered_job(world)
    assert job.thread_id is None
    [(video_message, _)] = world.videos()
    assert video_message.channel_id == world.channel
    assert "was deleted" in reply_message(await press(world, job, "delete", ALICE)).content
    status = world.discord.message(job.status_message_id or 0)
    assert video_message.deleted and status is not None and status.deleted


def stored_job(request: JobRequest, **fields: Any) -> Job:
    """A delivered job as the store returns it (for the pure Details functions)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = dict(
        id=12, guild_id=1, channel_id=2, user_id=ALICE, locale="en-US", request=request, first_frame="a.png",
        last_frame="b.png", parent_job_id=None, state=JobState.DELIVERED, queue_seq=1, account="acct", task_id="t",
        request_id="r", attempts=1, delivery_attempts=0, error_code=None, error_key=None, error_detail=None,
        cost_reserved=5000, cost_settled=5000, charge_state=ChargeState.SETTLED, period_day="2026-12-06",
        period_month="2026-12", actual_prompt=None, video_path=None, video_url_expires_at=None,
        status_message_id=None, thread_id=None, cancel_requested=False, created_at=now, submitted_at=now,
        started_at=now, finished_at=now, delivered_at=now, updated_at=now,
    )  # fmt: skip
    values.update(fields)
    return Job(**values)


def test_the_command_line_names_only_what_the_model_lets_a_member_choose() -> None:
    catalog = parse_catalog(DEFAULT_CATALOG)
    wan27 = catalog.model("wan2.7-i2v")
    request = JobRequest(
        model="wan2.7-i2v", resolution="1080P", prompt="a `tick`\nthen a tock", prompt_extend=False, seed=3,
        duration=8, sound=True,
    )  # fmt: skip
    line = command_line(stored_job(request), wan27)
    assert (
        line
        == "/kf2v prompt:a ˋtickˋ then a tock model:wan2.7-i2v resolution:1080P prompt_extend:False seed:3 duration:8"
    )
    effect = JobRequest(model="wanx2.1-kf2v-plus", resolution="720P", template="hanfu-1")
    assert command_line(stored_job(effect), catalog.model("wanx2.1-kf2v-plus")) == (
        "/kf2v-effect template:hanfu-1 model:wanx2.1-kf2v-plus"
    )
    extended = stored_job(replace(request, first_clip="clip.mp4"), parent_job_id=7)
    assert command_line(extended, wan27) is None
    content, _ = details_message(extended, wan27, "en-US")
    assert "continues video #7" in content


async def test_a_redelivery_is_not_fooled_by_another_jobs_marker_in_the_thread(world: World) -> None:
    """Variations share a thread: job N's redelivery must not take job N0's post (kf2v-job-N0) for its own."""
    job = await delivered_job(world)
    [(posted, attachment)] = world.videos()
    world.discord.delete_message(posted)  # as if the post had never been made before a restart
    thread = world.discord.channel(job.thread_id or 0)
    footer = {"footer": {"text": f"kf2v-job-{job.id}0"}}
    world.discord.create_message(
        thread, {"content": "", "embeds": [footer]}, [], type=0, author_id=world.discord.bot_user_id
    )
    assert job.video_path is not None
    video = Video(Path(job.video_path), len(attachment.data), None, None)
    await world.svc.notifier.deliver(job, video, redelivery=True)
    [(again, _)] = [(m, a) for m, a in world.videos() if not m.deleted]
    assert again.channel_id == job.thread_id and again.id != posted.id


async def test_delete_after_the_thread_archived_itself(world: World) -> None:
    """Threads archive themselves after a day of quiet; Discord refuses deletes in an archived thread (50083)."""
    job = await delivered_job(world)
    [(video_message, _)] = world.videos()
    world.discord.channel(job.thread_id or 0).archived = True  # auto-archived; the bot's cache was not told
    assert "was deleted" in reply_message(await press(world, job, "delete", ALICE)).content
    assert video_message.deleted
    assert world.discord.channel(job.thread_id or 0).name == f"#{job.id} (deleted)"
