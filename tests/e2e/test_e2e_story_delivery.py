"""A story's joined video is posted like a job's video: a temporary refusal by Discord (an outage, a permission
taken away) is retried with a capped back-off until the post goes through, not left waiting for an event that
never comes (issue 17: 1.5 CNY charged, nothing posted)."""

from __future__ import annotations

import pytest

from bot.jobs.story.plan import StoryState
from bot.jobs.story.service import SegmentRouter
from bot.jobs.story.store import StoryStore
from tests.e2e.test_e2e_story import run_story, story_videos
from tests.support.waiting import wait_until
from tests.support.world import World


@pytest.mark.parametrize("refusal", [503, 403])
async def test_the_joined_video_is_posted_once_discord_takes_it_again(world: World, refusal: int) -> None:
    router = world.svc.notifier
    assert isinstance(router, SegmentRouter) and router.stories is not None
    router.stories.post_backoff_s, router.stories.post_backoff_max_s = 0.05, 0.1  # time compressed 300x
    stories = StoryStore(world.svc.store.database)
    record = await run_story(world, "dawn | dusk", frames=3)
    await world.reply(record)

    async def thread() -> int | None:
        story = await stories.get(1)
        return story.thread_id if story is not None else None

    await wait_until(thread, within=30)
    where = await thread() or 0
    fault = world.discord.inject_rest_errors(
        refusal, None, route_contains=f"/channels/{where}/messages", method="POST", code=50013 if refusal == 403 else 0
    )
    await wait_until(lambda: fault.taken >= 3, within=90)  # refused three times: retried, not forgotten
    fault.stop()

    async def delivered() -> bool:
        story = await stories.get(1)
        return story is not None and story.state is StoryState.DELIVERED  # posted, then recorded

    await wait_until(delivered, within=30)
    assert len(story_videos(world)) == 1
