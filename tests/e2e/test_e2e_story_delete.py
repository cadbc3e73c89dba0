"""End to end (issue 19): Delete under a posted story, with the real bot against both emulators (needs PyAV,
like every story test)."""

from __future__ import annotations

from pathlib import Path

from bot.jobs.story.plan import StoryState
from bot.jobs.story.store import StoryStore
from tests.e2e.test_e2e_story import run_story, story_videos
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, World


async def test_delete_takes_a_posted_story_down_and_keeps_what_was_spent(world: World) -> None:
    await world.reply(await run_story(world, "dawn | dusk", frames=3))
    stories = StoryStore(world.svc.store.database)

    async def posted() -> bool:
        story = await stories.get(1)
        return story is not None and story.state is StoryState.DELIVERED and story.joined_message_id is not None

    await wait_until(posted, within=90)
    story = await stories.get(1)
    assert story is not None
    segments = [Path(p) for p in (await stories.current_videos(1)).values()]
    assert len(segments) == 2 and all(p.exists() for p in segments)  # kept for a redo
    [(message, _)] = story_videos(world)
    assert "kf2v:story-delete:1" in message.custom_ids()
    ledger_before = await world.svc.store.ledger(world.guild)
    charged = await stories.charged(1)

    # Details: any member, privately: each segment's prompt and what the provider used, a copyable command.
    details = await world.discord.press_button(message.id, "kf2v:story-details:1", BOB)
    await world.reply(details)
    [answer] = [m for m in details.messages if m.ephemeral and not m.loading]
    assert "```\n/kf2v-story prompt:dawn | dusk model:wan2.2-kf2v-flash resolution:720P" in answer.content
    assert "the same 3 keyframes" in answer.content
    [embed] = answer.embeds
    assert "**Segment 1** (frame 1 → 2): dawn" in embed["description"] and "**Segment 2**" in embed["description"]
    segment_jobs = [j for j in await world.svc.store.all_jobs() if j.story_id == 1]
    assert all(
        j.actual_prompt and "> " + " ".join(j.actual_prompt.split())[:60] in embed["description"] for j in segment_jobs
    )
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Cost"] == f"¥{charged / 1000:.2f}" and fields["Requested by"] == f"<@{ALICE}>"

    refused = await world.discord.press_button(message.id, "kf2v:story-delete:1", BOB)
    assert await world.reply(refused) == "That job belongs to someone else."
    assert not message.deleted

    record = await world.discord.press_button(message.id, "kf2v:story-delete:1", ALICE)
    text = await world.reply(record)
    assert text.startswith("Story #1 was deleted.") and f"(¥{charged / 1000:.2f}) stays spent" in text
    status = world.discord.message(story.status_message_id or 0)
    assert message.deleted and status is not None and status.deleted
    story = await stories.get(1)
    assert story is not None and story.deleted_by == ALICE and story.deleted_at is not None
    assert not any(p.exists() for p in segments)  # no redo of a deleted story: its videos go
    assert await world.svc.store.ledger(world.guild) == ledger_before
    thread = world.discord.channel(story.thread_id or 0)
    assert thread.name == "Story #1 (deleted)"
    assert any(f"Story #1 was deleted by <@{ALICE}>" in m.content for m in world.discord.messages(thread.id))
