"""/kf2v-forget-me end to end, on both engines (issue 19): real discord.py against the Discord emulator, the
DashScope emulator, the real SQLite file or PostgreSQL database. After the member confirms, a job of theirs
that was in flight still finishes and is posted, then is erased; afterwards no column of any table, no file
of the data folder and no log line written since the confirmation names them (user id, prompt text)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.jobs.db import SqliteDatabase
from bot.jobs.models import JobState
from bot.logs import TextFormatter
from sandbox.discord_emu import MessageRecord
from tests.support.scan import files_naming, rows_naming
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, OWNER, World, delivered

FIRST_PROMPT = "qz7 a paper boat drifts past the lighthouse"
SECOND_PROMPT = "qz7 the lighthouse beam sweeps the bay"


@pytest.fixture
def world_settings(store_env: dict[str, Any]) -> dict[str, Any]:
    return dict(store_env)


_NO_MESSAGE = MessageRecord(id=0, channel_id=0, guild_id=None, author_id=0)


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [TextFormatter().format(record) for record in caplog.records]


async def test_forget_me_erases_the_member_after_their_job_in_flight_is_delivered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    store = world.svc.store
    first = await world.kf2v(ALICE, FIRST_PROMPT)
    await world.reply(first)
    await delivered(world, (await world.latest_job()).id)
    await world.reply(await world.kf2v(BOB, "a kite over the dunes"))
    bobs = await world.latest_job()
    assert bobs.user_id == BOB
    # Alice's second job waits in the queue (her server is paused) while she asks to be forgotten.
    await world.svc.jobs.pause("privacy test", guild_id=world.guild)
    second = await world.kf2v(ALICE, SECOND_PROMPT)
    await world.reply(second)
    in_flight = await world.latest_job()
    assert in_flight.user_id == ALICE and in_flight.state is JobState.QUEUED
    texts = [FIRST_PROMPT, SECOND_PROMPT]
    assert await rows_naming(store.database, ALICE, texts)  # the scan finds her before

    ask = await world.discord.run_command(world.guild, world.channel, ALICE, "kf2v-forget-me")
    confirmation = await ask.wait_done(10)
    assert "can't be undone" in confirmation.content
    erase = next(c for c in confirmation.custom_ids() if c)
    world.svc.privacy.pending_poll_s = 0.2
    caplog.set_level(logging.INFO)
    caplog.clear()
    pressed = await world.discord.press_button(confirmation.id, erase, ALICE)
    await pressed.wait_response(10)

    def summary() -> str | None:
        text = confirmation.content
        return text if text.startswith("Erased:") else None

    await wait_until(summary, within=20)
    assert "1 requests" in (summary() or "") and "1 still in progress" in (summary() or "")
    job = await world.job(in_flight.id)
    assert job.user_id == ALICE  # still in flight: its delivery needs to know whom to answer

    await world.svc.jobs.resume(guild_id=world.guild)
    await delivered(world, in_flight.id)  # it finishes and is posted first ...

    async def erased() -> bool:  # ... then the sweeper erases it (its log line comes after the files are scrubbed)
        swept = any("privacy: anonymised 1 jobs" in line for line in log_lines(caplog))
        return swept and not await rows_naming(store.database, ALICE, texts)

    await wait_until(erased, within=30)
    assert (await world.job(in_flight.id)).anonymised_at is not None
    needles = [FIRST_PROMPT.encode(), SECOND_PROMPT.encode(), str(ALICE).encode()]
    assert files_naming(world.tmp / "data" / "media", needles) == []
    if isinstance(store.database, SqliteDatabase):
        assert files_naming(world.tmp / "data", [FIRST_PROMPT.encode(), SECOND_PROMPT.encode()]) == []
    lines = log_lines(caplog)
    assert any("a member's data was erased" in line for line in lines)
    assert [line for line in lines if str(ALICE) in line or "lighthouse" in line] == []
    # Bob and the money are untouched.
    bob = await world.job(bobs.id)
    assert bob.user_id == BOB and bob.request.prompt == "a kite over the dunes"
    assert sum(e.amount for e in await store.ledger() if e.kind == "settle") == sum(
        j.cost_settled for j in await store.all_jobs()
    )
    assert (await world.job(in_flight.id)).cost_settled > 0


async def test_an_owner_forgets_a_user_id_and_nobody_else_may(world: World) -> None:
    await world.reply(await world.kf2v(BOB, "qz7 Bob's kite over the dunes"))
    bobs = await world.latest_job()
    await delivered(world, bobs.id)
    refused = await world.discord.run_command(
        world.guild, world.channel, ALICE, "kf2v-admin", {"user_id": str(BOB)}, subcommand="forget",
        ignore_default_permissions=True,
    )  # fmt: skip
    assert "Only the bot's owners" in await world.reply(refused)
    assert await rows_naming(world.svc.store.database, BOB, ["Bob's kite"])

    done = await world.discord.run_command(
        world.guild, world.channel, OWNER, "kf2v-admin", {"user_id": str(BOB)}, subcommand="forget"
    )
    assert "Erased: 1 requests" in await world.reply(done)
    assert await rows_naming(world.svc.store.database, BOB, ["Bob's kite"]) == []
    # Its prompt and frames are gone: Regenerate on the old result says so instead of sending an empty prompt.
    status = (await world.job(bobs.id)).status_message_id
    assert status is not None
    regen = f"kf2v:regen:{bobs.id}"
    await wait_until(lambda: regen in (world.discord.message(status) or _NO_MESSAGE).custom_ids(), within=10)
    pressed = await world.discord.press_button(status, regen, OWNER)
    assert "were erased" in await world.reply(pressed)
    assert len(await world.svc.store.all_jobs()) == 1
