"""/kf2v-story end to end: the real bot (discord.py) between the Discord and DashScope emulators.

A four-frame story is three segment jobs; one mp4 is posted in the story's thread whose length follows the
seam rule of bot.jobs.story.join (sum of the segments' frames minus one per seam) and whose frames at the
seams are the keyframes; the ledger balances; Redo segment re-joins; a story over budget is refused whole.
"""

from __future__ import annotations

import io
import re
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image, ImageStat

from bot.jobs.models import ChargeState
from bot.jobs.story.join import expected_frames, seam_indices
from bot.jobs.story.plan import StoryState
from bot.jobs.story.store import StoryStore
from sandbox.discord_emu import UPLOAD_LIMITS, MessageRecord
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, World

KEYFRAMES = [(220, 30, 30), (30, 200, 40), (30, 40, 210), (235, 235, 235)]


async def run_story(world: World, prompt: str, frames: int = 4, user: int = ALICE, locale: str = "en-US") -> Any:
    files = {
        f"frame{k + 1}": (f"k{k + 1}.png", corpus.good_png(320 + 40 * k, 240, KEYFRAMES[k]), "image/png")
        for k in range(frames)
    }
    record = await world.discord.run_command(
        world.guild, world.channel, user, "kf2v-story", {"prompt": prompt}, attachments=files, locale=locale
    )
    await record.wait_response(5)
    return record


def story_videos(world: World) -> list[tuple[MessageRecord, bytes]]:
    return [
        (message, attachment.data)
        for message in world.discord.all_messages()
        for attachment in message.attachments
        if attachment.filename.startswith("story-")
    ]


def decoded(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data), mode="r") as container:
        return [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]


def frame_count(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def close_to(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    mean = ImageStat.Stat(image.convert("RGB")).mean
    return all(abs(m - c) <= 10 for m, c in zip(mean, colour, strict=True))


async def segment_paths(world: World, story_id: int) -> list[str]:
    newest: dict[int, int] = {}
    for j in await StoryStore(world.svc.store.database).segment_jobs(story_id):
        newest[j.segment] = j.job_id
    return [(await world.job(newest[k])).video_path or "" for k in sorted(newest)]


async def test_a_four_frame_story_is_posted_once_as_one_video_with_the_keyframes_at_its_seams(world: World) -> None:
    record = await run_story(world, "dawn | noon | dusk")
    assert "Story #1 is queued: 3 segments" in await world.reply(record)

    await wait_until(lambda: len(story_videos(world)) == 1, within=90)
    message, data = story_videos(world)[0]
    stories = StoryStore(world.svc.store.database)

    async def delivered() -> bool:  # the post is recorded just after it is made
        story = await stories.get(1)
        return story is not None and story.state is StoryState.DELIVERED

    await wait_until(delivered, within=10)
    story = await stories.get(1)
    assert story is not None and story.state is StoryState.DELIVERED
    assert message.channel_id == story.thread_id  # in the story's one thread
    # No segment was posted on its own.
    assert [a.filename for m in world.discord.all_messages() for a in m.attachments if a.filename.endswith(".mp4")] == [
        "story-1.mp4"
    ]
    counts = [frame_count(p) for p in await segment_paths(world, 1)]
    frames = decoded(data)
    assert len(frames) == expected_frames(counts) == sum(counts) - 2
    assert close_to(frames[0], KEYFRAMES[0]) and close_to(frames[-1], KEYFRAMES[3])
    for k, index in enumerate(seam_indices(counts)):
        assert close_to(frames[index], KEYFRAMES[k + 1]), (k, index)
    # The status message shows every segment done.
    status = world.discord.message(story.status_message_id or 0)
    assert status is not None and status.embeds[0]["description"].count("✅") == 3
    # Reserved whole, settled segment by segment, nothing left reserved.
    jobs = [j for j in await world.svc.store.all_jobs() if j.story_id == 1]
    assert len(jobs) == 3 and all(j.charge_state is ChargeState.SETTLED for j in jobs)
    ledger = [e for e in await world.svc.store.ledger() if e.job_id in {j.id for j in jobs}]
    assert sum(e.amount for e in ledger if e.kind == "reserve") == story.cost_reserved
    assert sum(e.amount for e in ledger if e.kind in ("settle", "release")) == story.cost_reserved
    assert world.dashscope.stats()["submissions_accepted"] == 3

    # Redo segment 2 from the select under the video: one more job, budgeted, and the story re-joined.
    press = await world.discord.select(message.id, "kf2v:story-redo:1", ["1"], ALICE)
    await press.wait_response(5)
    await wait_until(lambda: len(story_videos(world)) == 2, within=90)

    async def recorded() -> bool:  # the post is recorded just after it is made
        story = await stories.get(1)
        return story is not None and story.posted_generation == 2

    await wait_until(recorded, within=10)
    again = await stories.get(1)
    assert again is not None and again.generation == 2 and again.posted_generation == 2
    counts = [frame_count(p) for p in await segment_paths(world, 1)]
    assert len(decoded(story_videos(world)[1][1])) == expected_frames(counts)
    assert world.dashscope.stats()["submissions_accepted"] == 4
    redo_job = (await world.svc.store.all_jobs())[-1]
    assert redo_job.segment_index == 1 and redo_job.charge_state is ChargeState.SETTLED


async def test_someone_else_cannot_redo_a_segment(world: World) -> None:
    await run_story(world, "the light changes", frames=3)
    await wait_until(lambda: len(story_videos(world)) == 1, within=90)
    message, _ = story_videos(world)[0]
    press = await world.discord.select(message.id, "kf2v:story-redo:1", ["0"], BOB)
    await press.wait_response(5)
    assert "belongs to someone else" in await world.reply(press)
    assert world.dashscope.stats()["submissions_accepted"] == 2


async def test_a_story_over_budget_is_refused_whole_with_nothing_reserved(world: World) -> None:
    each = world.svc.budget.estimate("wan2.2-kf2v-flash", "720P")
    await world.svc.jobs.set_budgets(world.guild, daily=each * 2 + 1, monthly=None)  # two segments fit, not three
    record = await run_story(world, "dawn | noon | dusk")
    assert "budget" in await world.reply(record)
    assert await world.svc.store.all_jobs() == []
    assert await world.svc.store.ledger() == []


async def test_a_prompt_count_mismatch_names_both_numbers_in_chinese(world: World) -> None:
    record = await run_story(world, "黎明 | 正午", locale="zh-CN")
    assert "你给了 2 个提示词,但有 3 段" in await world.reply(record)
    assert await world.svc.store.all_jobs() == []


def message_with_component(world: World, custom_id: str) -> MessageRecord | None:
    for message in world.discord.all_messages():
        for row in message.components:
            if any(c.get("custom_id") == custom_id for c in row.get("components", [])):
                return message
    return None


async def test_a_segment_failing_twice_offers_the_partial_delivery_button(world: World) -> None:
    await run_story(world, "dawn | FAIL_CONTENT noon | dusk")
    await wait_until(lambda: message_with_component(world, "kf2v:story-partial:1") is not None, within=90)
    offer = message_with_component(world, "kf2v:story-partial:1")
    assert offer is not None and "failed: a segment failed twice" in offer.content and "Charged so far" in offer.content
    assert story_videos(world) == []

    press = await world.discord.press_button(offer.id, "kf2v:story-partial:1", ALICE)
    await press.wait_response(5)
    await wait_until(lambda: len(story_videos(world)) == 1, within=60)
    stories = StoryStore(world.svc.store.database)

    async def partial() -> bool:  # the post is recorded just after it is made
        story = await stories.get(1)
        return story is not None and story.state is StoryState.PARTIAL

    await wait_until(partial, within=10)
    first_segment = (await segment_paths(world, 1))[0]
    assert len(decoded(story_videos(world)[0][1])) == frame_count(first_segment)  # segment 1 only
    # Failed segments were released, the rest settled: nothing left reserved.
    assert all(j.charge_state is not ChargeState.RESERVED for j in await world.svc.store.all_jobs())


async def test_cancel_story_from_its_status_message(world: World) -> None:
    await run_story(world, "dawn | noon | dusk")
    await wait_until(lambda: message_with_component(world, "kf2v:story-cancel:1") is not None, within=30)
    status = message_with_component(world, "kf2v:story-cancel:1")
    assert status is not None
    press = await world.discord.press_button(status.id, "kf2v:story-cancel:1", BOB)
    await press.wait_response(5)
    assert "belongs to someone else" in await world.reply(press)

    press = await world.discord.press_button(status.id, "kf2v:story-cancel:1", ALICE)
    await press.wait_response(5)
    assert "was cancelled" in await world.reply(press)

    async def all_final() -> bool:
        return all(j.state.is_final for j in await world.svc.store.all_jobs())

    await wait_until(all_final, within=60)
    story = await StoryStore(world.svc.store.database).get(1)
    assert story is not None and story.state is StoryState.CANCELED
    assert story_videos(world) == []
    jobs = await world.svc.store.all_jobs()
    ledger = await world.svc.store.ledger()
    assert sum(e.amount for e in ledger if e.kind == "reserve") == story.cost_reserved
    assert sum(e.amount for e in ledger if e.kind in ("settle", "release")) == story.cost_reserved
    assert all(j.charge_state is not ChargeState.RESERVED for j in jobs)
    await wait_until(lambda: message_with_component(world, "kf2v:story-cancel:1") is None, within=10)  # button gone


async def test_a_story_too_large_to_upload_is_posted_as_its_segments_links(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This guild takes uploads of 4 KB at most: the status message's small frame fits, the joined mp4 does not.
    monkeypatch.setitem(UPLOAD_LIMITS, world.discord.guild(world.guild).premium_tier, 4096)
    await run_story(world, "dawn | noon | dusk")

    def links_message() -> MessageRecord | None:
        return next((m for m in world.discord.all_messages() if "larger than this server allows" in m.content), None)

    await wait_until(lambda: links_message() is not None, within=90)
    message = links_message()
    assert message is not None and story_videos(world) == []
    urls = [re.search(r"https?://\S+", line) for line in message.content.splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert len(urls) == 3 and all(urls)
    async with aiohttp.ClientSession() as session:  # each link is the provider's video of that segment
        for found in urls:
            assert found is not None
            async with session.get(found.group(0)) as response:
                assert response.status == 200 and (await response.read())[4:8] == b"ftyp"
    # The select to redo a segment is there all the same, and the post is recorded once.
    assert any(c.get("custom_id") == "kf2v:story-redo:1" for row in message.components for c in row["components"])
    stories = StoryStore(world.svc.store.database)

    async def recorded() -> bool:
        story = await stories.get(1)
        return story is not None and story.state is StoryState.DELIVERED and story.joined_message_id == message.id

    await wait_until(recorded, within=10)
