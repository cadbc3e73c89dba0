"""End to end (issue 13): the Remix button and the "Animate with kf2v" message command, with the real bot
(discord.py) against the Discord and DashScope emulators and a real SQLite file."""

from __future__ import annotations

from typing import Any

from bot.jobs.models import ChargeState
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, World, delivered


def inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
    """The modal's inputs in order (discord.py wraps each in a Label, component type 18)."""
    assert all(c["type"] == 18 for c in modal["components"])
    return [c["component"] for c in modal["components"]]


async def test_remix_with_an_edited_prompt(world: World) -> None:
    record = await world.kf2v(prompt="a red square turns blue", resolution="480P")
    await world.reply(record)
    old = await world.latest_job()
    await delivered(world, old.id)
    old = await world.job(old.id)
    assert old.status_message_id is not None and old.thread_id is not None

    def remix_button() -> bool:
        status = world.discord.message(old.status_message_id or 0)
        return status is not None and f"kf2v:remix:{old.id}" in status.custom_ids()

    await wait_until(remix_button, within=10)
    press = await world.discord.press_button(old.status_message_id, f"kf2v:remix:{old.id}", ALICE)
    modal = await press.wait_modal()
    prompt, negative, resolution = inputs(modal)[:3]
    assert prompt["type"] == 4 and prompt["value"] == "a red square turns blue"
    assert negative["type"] == 4 and not negative.get("value")
    assert resolution["type"] == 3
    assert [o["value"] for o in resolution["options"] if o.get("default")] == ["480P"]
    spent_before = len(await world.svc.store.all_jobs())

    submit = await world.discord.submit_modal(
        press, {prompt["custom_id"]: "a red square turns green", resolution["custom_id"]: ["720P"]}
    )
    text = await world.reply(submit)
    assert "queued" in text
    jobs = await world.svc.store.all_jobs()
    assert len(jobs) == spent_before + 1
    new = jobs[-1]
    assert new.parent_job_id == old.id and new.user_id == ALICE
    assert new.request.prompt == "a red square turns green" and new.request.resolution == "720P"
    assert new.request.model == old.request.model and new.request.seed == old.request.seed
    assert (new.first_frame, new.last_frame) == (old.first_frame, old.last_frame)  # the same stored frames
    assert new.cost_reserved > 0 and new.charge_state in (ChargeState.RESERVED, ChargeState.SETTLED)

    async def linked() -> bool:
        job = await world.job(new.id)
        return job.thread_id is not None and any(
            f"#{new.id}" in m.content and f"<#{job.thread_id}>" in m.content
            for m in world.discord.messages(old.thread_id or 0)
        )

    await wait_until(linked, within=10)
    new = await world.job(new.id)
    assert new.thread_id not in (None, old.thread_id)
    status = world.discord.message(new.status_message_id or 0)
    assert status is not None and status.channel_id == world.channel
    await delivered(world, new.id)
    assert world.dashscope.stats()["submissions_accepted"] == 2


async def test_remix_by_someone_else_is_refused_without_a_modal(world: World) -> None:
    record = await world.kf2v()
    await world.reply(record)
    job = await world.latest_job()
    await delivered(world, job.id)
    job = await world.job(job.id)

    def remix_button() -> bool:
        status = world.discord.message(job.status_message_id or 0)
        return status is not None and f"kf2v:remix:{job.id}" in status.custom_ids()

    await wait_until(remix_button, within=10)
    press = await world.discord.press_button(job.status_message_id or 0, f"kf2v:remix:{job.id}", BOB)
    response = await press.wait_response()
    assert response.type == 4 and press.modal is None
    assert press.ephemeral_text == "That job belongs to someone else."
    assert len(await world.svc.store.all_jobs()) == 1


async def test_animate_a_message_with_two_images(world: World) -> None:
    files = [
        ("first.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
        ("notes.txt", b"not a frame", "text/plain"),
        ("last.png", corpus.good_png(320, 240, corpus.BLUE), "image/png"),
    ]
    posted = world.discord.post_message(world.channel, BOB, "two keyframes", attachments=files)
    [menu] = [c for scope in world.discord.commands.values() for c in scope.values() if c["type"] == 3]
    assert menu["name"] == "Animate with kf2v"
    assert menu["name_localizations"]["zh-CN"] == "用 kf2v 生成动画"

    record = await world.discord.run_message_command(world.guild, world.channel, ALICE, "Animate with kf2v", posted.id)
    modal = await record.wait_modal()
    prompt = inputs(modal)[0]
    assert prompt["type"] == 4 and prompt.get("required", True)
    assert not await world.svc.store.all_jobs()  # nothing before the prompt is given
    submit = await world.discord.submit_modal(record, {prompt["custom_id"]: "the square changes colour"})
    assert "queued" in await world.reply(submit)
    job = await world.latest_job()
    assert job.user_id == ALICE and job.channel_id == world.channel
    assert job.request.prompt == "the square changes colour"
    assert job.cost_reserved > 0
    status = world.discord.message(job.status_message_id or 0)
    assert status is not None and status.channel_id == world.channel
    await delivered(world, job.id)


async def test_animate_a_message_with_one_image_offers_the_effects(world: World) -> None:
    files = [("one.png", corpus.good_png(320, 240, corpus.RED), "image/png"), ("a.txt", b"words", "text/plain")]
    posted = world.discord.post_message(world.channel, BOB, "one picture", attachments=files)
    record = await world.discord.run_message_command(world.guild, world.channel, ALICE, "Animate with kf2v", posted.id)
    modal = await record.wait_modal()
    [select] = inputs(modal)
    assert select["type"] == 3
    offered = [option["value"] for option in select["options"]]
    effect_model = world.svc.jobs.effect_model()
    assert offered == list(world.svc.catalog.model(effect_model).templates_in(world.svc.region))
    assert not await world.svc.store.all_jobs()  # nothing before the effect is chosen
    submit = await world.discord.submit_modal(record, {select["custom_id"]: ["hanfu-1"]})
    assert "queued" in await world.reply(submit)
    job = await world.latest_job()
    assert job.user_id == ALICE and job.channel_id == world.channel
    assert job.request.template == "hanfu-1" and job.request.model == effect_model
    assert job.last_frame is None and job.cost_reserved > 0
    await delivered(world, job.id)


async def test_animate_a_message_without_two_images_is_refused_privately(world: World) -> None:
    files = [("notes.txt", b"no picture", "text/plain"), ("clip.mp4", b"\0\0\0\x18ftypmp42", "video/mp4")]
    posted = world.discord.post_message(world.channel, BOB, "no frame", attachments=files)
    record = await world.discord.run_message_command(
        world.guild, world.channel, ALICE, "用 kf2v 生成动画", posted.id, locale="zh-CN"
    )
    response = await record.wait_response()
    assert response.type == 4 and record.modal is None
    text = record.ephemeral_text
    assert text is not None and "0 张" in text and "`clip.mp4`" in text
    english = await world.discord.run_message_command(world.guild, world.channel, ALICE, "Animate with kf2v", posted.id)
    await english.wait_response()
    assert english.ephemeral_text is not None
    assert "has 0" in english.ephemeral_text and "Not images: `notes.txt`, `clip.mp4`" in english.ephemeral_text
    assert not await world.svc.store.all_jobs()
    report = await world.svc.jobs.budget_report(world.guild)
    assert report is not None
