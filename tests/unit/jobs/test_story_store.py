"""The story row and its once-per-generation markers, on both engines (SQLite; PostgreSQL where reachable)."""

from __future__ import annotations

from bot.jobs.db import Database
from bot.jobs.story.plan import StoryState
from bot.jobs.story.store import NewStory, StoryStore


def new_story(frames: int = 4) -> NewStory:
    return NewStory(
        guild_id=10,
        channel_id=20,
        user_id=30,
        locale="zh-CN",
        model="wan2.2-kf2v-flash",
        resolution="480P",
        seed=None,
        prompts=tuple(f"段落 {k}" for k in range(frames - 1)),
        frames=tuple(f"frame{k}.png" for k in range(frames)),
        cost_reserved=3 * 700,
    )


async def test_a_story_is_stored_and_read_back(database: Database) -> None:
    async with database.transaction() as tx:
        story_id = await StoryStore.insert(tx, new_story())
    stories = StoryStore(database)

    story = await stories.get(story_id)

    assert story is not None
    assert (story.segments, story.state, story.prompts[2], story.frames[3]) == (
        3,
        StoryState.RUNNING,
        "段落 2",
        "frame3.png",
    )
    assert story.join_due and not story.post_due and not story.final
    assert [s.id for s in await stories.unfinished()] == [story_id]


async def test_join_and_post_happen_once_per_generation(database: Database) -> None:
    async with database.transaction() as tx:
        story_id = await StoryStore.insert(tx, new_story())
    stories = StoryStore(database)

    assert await stories.mark_posted(story_id, 1, 99, StoryState.DELIVERED) is False  # not joined yet
    assert await stories.mark_joined(story_id, 1, "/data/story1.mp4") is True
    assert await stories.mark_joined(story_id, 1, "/data/story1.mp4") is False  # a second join is refused
    story = await stories.get(story_id)
    assert story is not None and story.post_due
    assert await stories.mark_posted(story_id, 1, 99, StoryState.DELIVERED) is True
    assert await stories.mark_posted(story_id, 1, 100, StoryState.DELIVERED) is False
    done = await stories.get(story_id)
    assert done is not None and done.final and done.joined_message_id == 99
    assert await stories.unfinished() == []

    # A redone segment: the next generation's join and post are due again, once each.
    async with database.transaction() as tx:
        assert await StoryStore.next_generation(tx, story_id, expect_generation=1) == 2
    async with database.transaction() as tx:  # a second Redo read the same delivered generation: refused
        assert await StoryStore.next_generation(tx, story_id, expect_generation=1) is None
    again = await stories.get(story_id)
    assert again is not None and again.state is StoryState.RUNNING and again.join_due
    assert await stories.mark_joined(story_id, 1, "/old.mp4") is False  # a stale generation changes nothing
    assert await stories.mark_joined(story_id, 2, "/data/story1.v2.mp4") is True
    assert await stories.mark_posted(story_id, 2, 101, StoryState.DELIVERED) is True


async def test_the_partial_choice_counts_once_and_only_while_asked(database: Database) -> None:
    async with database.transaction() as tx:
        story_id = await StoryStore.insert(tx, new_story(3))
    stories = StoryStore(database)

    assert await stories.opt_in_partial(story_id) is False  # nothing was asked yet
    assert await stories.set_state(story_id, StoryState.AWAITING_CHOICE, expect=StoryState.RUNNING)
    assert await stories.set_state(story_id, StoryState.AWAITING_CHOICE, expect=StoryState.RUNNING) is False
    assert await stories.opt_in_partial(story_id) is True
    assert await stories.opt_in_partial(story_id) is False
    story = await stories.get(story_id)
    assert story is not None and story.partial_opt_in
