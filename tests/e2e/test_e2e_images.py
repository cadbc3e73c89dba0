"""End to end (issue 17, item 3): worst-case pictures at once against the real bot, with a decode budget.

Four /kf2v at the same moment: issue 17's 0.3 MB PNG of 8000x8000 transparent pixels, a plain PNG whose
decode takes nearly the whole budget, a phone photo that has to be turned (decoded reduced), an ordinary
pair. Every request is answered (queued, or refused naming the pixel limit), the bot carries on, the shared
budget never held more than its size, and /metrics counts the downloads. The process's peak memory with
the real 48 MP and 64 MP pictures is a benchmark figure: `python -m bench memory`.
"""

from __future__ import annotations

import asyncio
import io
import random
import socket
from typing import Any

import aiohttp
import pytest
from PIL import Image

from cogs.generate import GenerateCog
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, World, delivered

MIB = 1024 * 1024
BUDGET_MB = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def world_settings() -> dict[str, Any]:
    """A 16 MiB budget (and 1 MiB re-encodes): the 256 MiB default's arithmetic on pictures 16× smaller."""
    return dict(
        KF2V_HTTP_HOST="127.0.0.1",
        KF2V_HTTP_PORT=str(free_port()),
        KF2V_IMAGE_MEMORY_BUDGET_MB=str(BUDGET_MB),
        KF2V_IMAGE_REENCODE_BYTES=str(MIB),
        KF2V_DEFAULT_USER_QUEUE_LIMIT="10",
        KF2V_ATTACHMENT_MEMORY_MB="16",
    )


def phone_photo(width: int, height: int) -> bytes:
    """A JPEG stored `width`x`height` whose EXIF says to turn it 90° (what phones write for portraits)."""
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=80, exif=exif.tobytes())
    return buffer.getvalue()


def noise_png(side: int, seed: int) -> bytes:
    """Random pixels: a PNG as large as its raw pixels (3 bytes each), that no compression shrinks."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def plain_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


async def metrics(world: World) -> dict[str, float]:
    port = world.svc.settings.http_port
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("kf2v_attachment", "kf2v_image", "kf2v_images"))
    }


async def test_worst_case_pictures_at_once_are_all_answered_within_the_budget(world: World) -> None:
    pictures = {
        "transparent_64mp": corpus.transparent_64mp_png(),  # 512 MB decoded and flattened: refused
        "plain_16mb": plain_png(2000, 2000),  # 16,000,000 bytes decoded: nearly the whole budget
        "phone": phone_photo(3000, 2250),  # 54 MB turned whole: decoded at 1/2, sent 1125x1500
        "ordinary": corpus.good_jpeg(640, 480),
    }
    ordinary_last = corpus.good_png(320, 240, corpus.BLUE)
    records = await asyncio.gather(
        *(
            world.kf2v(user=ALICE, prompt=f"worst case {name}", first=data, last=ordinary_last)
            for name, data in pictures.items()
        )
    )
    answers = dict(zip(pictures, await asyncio.gather(*(world.reply(r, within=60) for r in records)), strict=True))

    assert "queued" in answers["plain_16mb"]
    assert "queued" in answers["phone"]
    assert "queued" in answers["ordinary"]
    refused = answers["transparent_64mp"]
    assert "8000×8000" in refused and "1,835,008" in refused, refused  # (16 MiB - 2 MiB) / 8 bytes a pixel
    jobs = await world.svc.store.all_jobs()
    assert sorted(job.request.prompt for job in jobs) == [
        "worst case ordinary",
        "worst case phone",
        "worst case plain_16mb",
    ]
    assert {entry.job_id for entry in await world.svc.store.ledger()} == {job.id for job in jobs}  # none for it

    workers = world.svc.jobs.image_workers
    (budget,) = workers.budgets()
    assert budget.total == BUDGET_MB * MIB
    assert 16_000_000 <= budget.peak <= budget.total  # the big decode held nearly all of it, never more
    assert budget.held == 0
    assert workers.refused_over_memory == 1

    phone = next(job for job in jobs if job.request.prompt == "worst case phone")
    stored = world.svc.jobs.media.frame_path(phone.first_frame).read_bytes()
    with Image.open(io.BytesIO(stored)) as sent:
        assert sent.size == (1125, 1500)  # upright, at the size it was decoded at

    await delivered(world, phone.id, within=60)  # the photo that had to be reduced became a video
    # The bot carries on: another member's ordinary request is queued.
    after = await world.kf2v(user=BOB, prompt="after the worst case")
    assert "queued" in await world.reply(after)

    seen = await metrics(world)
    uploaded = sum(len(data) for data in pictures.values()) + 5 * len(ordinary_last) + len(corpus.good_png(320, 240))
    assert seen["kf2v_attachment_bytes_total"] == uploaded
    assert seen["kf2v_attachment_downloads_total"] == 10
    assert seen["kf2v_images_refused_over_memory_total"] == 1
    assert seen["kf2v_image_decode_budget_bytes"] == BUDGET_MB * MIB
    assert seen["kf2v_image_decode_bytes_held"] == 0


async def test_a_burst_of_big_uploads_waits_its_turn_within_the_attachment_budget(world: World) -> None:
    # Six requests of two 2.9 MB frames each (35 MB) against a 16 MiB attachment budget: at most two
    # requests' uploads are held at once, the others wait before downloading; every request is queued.
    frames = [noise_png(980, seed) for seed in range(12)]
    assert all(2.5 * MIB < len(frame) < 3 * MIB for frame in frames)
    assert world.bot is not None
    cog = world.bot.get_cog("GenerateCog")
    assert isinstance(cog, GenerateCog)
    budget = cog.attachments.budget
    async with budget.hold(budget.total):  # taken first, so that the whole burst is seen waiting
        records = await asyncio.gather(
            *(
                world.kf2v(user=ALICE, prompt=f"burst {i}", first=frames[2 * i], last=frames[2 * i + 1])
                for i in range(6)
            )
        )
        await wait_until(lambda: budget.waited == 6, within=30)
        assert (await metrics(world))["kf2v_attachment_bytes_total"] == 0  # nothing downloaded meanwhile
    budget.peak = 0  # what the burst holds from here (no waiter has run yet: nothing awaited since the release)
    answers = await asyncio.gather(*(world.reply(record, within=90) for record in records))
    assert all("queued" in answer for answer in answers), answers
    assert 2 * 2.5 * MIB < budget.peak <= budget.total == 16 * MIB  # then two requests' frames at once, never more
    seen = await metrics(world)
    assert seen["kf2v_attachment_waits_total"] >= 6
    assert seen["kf2v_attachment_bytes_held"] == 0
    assert seen["kf2v_attachment_bytes_total"] == sum(len(frame) for frame in frames)
