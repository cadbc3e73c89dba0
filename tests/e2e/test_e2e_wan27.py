"""End to end (issue 12): the real bot, the Discord emulator and the DashScope emulator's wan2.7 path.

An 8-second 1080P first+last video delivered with sound and charged 8 x the catalog price; a driving audio
file; refusals before any reservation (a duration asked of a kf2v model, an audio file over its limit); a
restart in the middle of a job's uploads that resumes without uploading or paying twice.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

import av
import pytest

from bot.catalog import load_catalog
from bot.jobs.models import ChargeState
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, World, delivered

WAN27 = load_catalog().model("wan2.7-i2v")


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(i / 5))) for i in range(int(seconds * rate))))
    return out.getvalue()


def decoded(video: bytes) -> tuple[set[str], float]:
    """Stream kinds and length (s) of an mp4, read with PyAV."""
    with av.open(io.BytesIO(video), mode="r") as container:
        assert container.duration is not None
        return {s.type for s in container.streams}, container.duration / 1_000_000


async def kf2v(world: World, audio: bytes | None = None, **options: Any) -> Any:
    files = {
        "first_frame": ("first.png", corpus.good_png(480, 320, corpus.RED), "image/png"),
        "last_frame": ("last.png", corpus.good_png(480, 320, corpus.BLUE), "image/png"),
    }
    if audio is not None:
        files["audio"] = ("voice.wav", audio, "audio/wav")
    record = await world.discord.run_command(
        world.guild, world.channel, ALICE, "kf2v", {"prompt": "the card turns over", **options}, attachments=files
    )
    await record.wait_response(5)
    return record


async def reservations(world: World) -> int:
    return sum(1 for entry in await world.svc.store.ledger(world.guild) if entry.kind == "reserve")


async def test_eight_seconds_at_1080p_with_sound_charged_eight_times_the_price(world: World) -> None:
    record = await kf2v(world, model="wan2.7-i2v", resolution="1080P", duration=8)
    assert "queued" in (await world.reply(record)).lower()
    job = await world.latest_job()
    assert (job.request.duration, job.request.sound) == (8, True)
    await delivered(world, job.id, within=90)
    job = await world.job(job.id)
    price = WAN27.price_per_second_milli["1080P"]
    assert job.cost_reserved == 8 * price
    assert (job.charge_state, job.cost_settled) == (ChargeState.SETTLED, 8 * price)
    [(_, attachment)] = world.videos()
    kinds, seconds = decoded(attachment.data)
    assert "audio" in kinds and "video" in kinds
    assert seconds == pytest.approx(8, abs=0.2)
    # The frames went through the provider's temporary storage (the create carried oss:// URLs).
    assert world.dashscope.stats()["calls"].get("upload", 0) == 2
    status = world.discord.message(job.status_message_id or 0)
    assert status is not None
    shown = " ".join(f.get("value", "") for e in status.embeds for f in e.get("fields", []))
    assert "8 s, with sound" in shown


async def test_a_driving_audio_file_is_uploaded_and_the_video_has_sound(world: World) -> None:
    record = await kf2v(world, audio=wav(3.0), model="wan2.7-i2v", resolution="720P", duration=4)
    await world.reply(record)
    job = await world.latest_job()
    assert job.request.audio is not None and job.request.audio.endswith(".wav")
    await delivered(world, job.id, within=90)
    [(_, attachment)] = world.videos()
    kinds, seconds = decoded(attachment.data)
    assert "audio" in kinds and seconds == pytest.approx(4, abs=0.2)
    assert world.dashscope.stats()["calls"].get("upload", 0) == 3  # two frames and the audio
    assert (await world.job(job.id)).cost_settled == 4 * WAN27.price_per_second_milli["720P"]


async def test_a_duration_asked_of_a_kf2v_model_is_refused_before_any_reservation(world: World) -> None:
    record = await kf2v(world, model="wan2.2-kf2v-flash", duration=8)
    text = await world.reply(record)
    assert "wan2.2-kf2v-flash" in text and "5-second" in text
    assert await world.svc.store.all_jobs() == [] and await reservations(world) == 0
    assert not [r for r in world.discord.requests if "attachments/" in r.path]  # refused before downloads


async def test_an_audio_file_too_long_is_refused_naming_its_limit(world: World) -> None:
    record = await kf2v(world, audio=wav(31.0), model="wan2.7-i2v", duration=5)
    text = await world.reply(record)
    assert "31" in text and f"{WAN27.inputs.audio.max_seconds:g} s" in text  # type: ignore[union-attr]
    assert await world.svc.store.all_jobs() == [] and await reservations(world) == 0
    assert world.dashscope.stats()["calls"].get("upload", 0) == 0


async def test_sound_off_is_refused_where_the_model_cannot_switch_it(world: World) -> None:
    text = await world.reply(await kf2v(world, model="wan2.7-i2v", sound=False))
    assert "always adds a soundtrack" in text
    assert await reservations(world) == 0


async def test_a_restart_in_the_middle_of_the_uploads_resumes_without_paying_twice(world: World) -> None:
    # The first frame's upload policy is answered, the second's is held: the bot is stopped once the first
    # frame is stored and while the second frame's policy is on its way (held, whatever the machine's load:
    # a timed delay let a slow test stop the bot in the middle of the second upload instead).
    second_policy = world.dashscope.hold("upload_policy", skip=1)
    record = await kf2v(world, model="wan2.7-i2v", resolution="720P", duration=3)
    await world.reply(record)
    job = await world.latest_job()

    async def first_upload_recorded() -> bool:
        # Recorded by the bot (not only received by the provider: one stopped in between is sent again).
        rows = await world.svc.store.database.fetch_all("SELECT url FROM uploads")
        return len(rows) == 1

    await wait_until(first_upload_recorded, within=30)
    await wait_until(lambda: second_policy.held == 1, within=30)
    assert world.dashscope.stats()["calls"].get("upload", 0) == 1
    await world.stop_bot()
    second_policy.release()
    await world.start_bot()
    await delivered(world, job.id, within=90)
    job = await world.job(job.id)
    # The first frame's upload was reused from the database; only the second was sent again.
    assert world.dashscope.stats()["calls"].get("upload", 0) == 2
    assert world.dashscope.stats()["submissions_accepted"] == 1
    assert await reservations(world) == 1
    assert job.cost_settled == 3 * WAN27.price_per_second_milli["720P"]
    assert len(world.videos()) == 1


async def test_extend_continues_the_delivered_video_in_its_thread_with_the_whole_video_billed(world: World) -> None:
    record = await kf2v(world, model="wan2.7-i2v", resolution="720P", duration=3)
    await world.reply(record)
    parent = await world.latest_job()
    await delivered(world, parent.id, within=90)
    parent = await world.job(parent.id)
    extend_id = f"kf2v:extend:{parent.id}"

    def extend_button() -> bool:
        status = world.discord.message(parent.status_message_id or 0)
        return status is not None and extend_id in status.custom_ids()

    await wait_until(extend_button, within=10)
    press = await world.discord.press_button(parent.status_message_id or 0, extend_id, ALICE)
    modal = await press.wait_modal()
    prompt, seconds = (c["component"] for c in modal["components"])
    submit = await world.discord.submit_modal(
        press, {prompt["custom_id"]: "the card flies away", seconds["custom_id"]: "4"}
    )
    price = WAN27.price_per_second_milli["720P"]
    text = await world.reply(submit)
    # The cost is shown before it starts: the whole video (3 s + 4 s) at the tier's price.
    assert f"#{parent.id}" in text and "7 s" in text and f"¥{7 * price / 1000:.2f}" in text
    child = await world.latest_job()
    assert child.parent_job_id == parent.id and child.request.first_clip is not None
    assert (child.request.duration, child.cost_reserved) == (7, 7 * price)
    await delivered(world, child.id, within=90)
    child = await world.job(child.id)
    assert child.thread_id == parent.thread_id  # followed and delivered in the same thread
    posted = [(m, a) for m, a in world.videos() if m.channel_id == parent.thread_id]
    assert len(posted) == 2
    kinds, seconds_long = decoded(posted[-1][1].data)
    assert "audio" in kinds and seconds_long == pytest.approx(7, abs=0.2)  # the whole video, as posted
    assert child.cost_settled == 7 * price
