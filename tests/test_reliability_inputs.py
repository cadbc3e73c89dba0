"""Bad input through /kf2v end to end: the cases of the issue the corpus tests don't already cover.

Covered in tests/test_e2e_discord.py (English): the whole bad-image corpus (text file named .png,
truncated PNG, empty, 60 MB, 20000x20000 bomb, animated GIF, 100x100, ...), prompt of 801, blank prompt,
seed out of range, 1080P with the plus model, effect template with the flash model.

Here: the three hard-but-valid pictures of the list (CMYK JPEG, 16-bit PNG with alpha, EXIF-rotated JPEG)
are accepted and stored normalised (the EXIF one turned upright), and a Chinese-locale run of refusals,
each checked for its own message in Chinese and for "nothing submitted, nothing charged, nothing on disk".
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bot.i18n import MESSAGES
from bot.jobs.models import JobState
from tests import corpus
from tests.e2e import ALICE, World, close_world, make_world
from tests.harness import wait_until

ZH_IMAGES = ["empty", "text_named_png", "truncated_png", "huge_file", "bomb_png", "animated_gif", "tiny_100"]
ZH_TEXT: dict[str, tuple[dict[str, Any], str]] = {
    "prompt_801": ({"prompt": "长" * 801}, "input.prompt_long"),
    "prompt_zero_width": ({"prompt": " \u200b\u200c\u200d\ufeff  "}, "input.prompt_blank"),
    "seed_out_of_range": ({"seed": 2_147_483_648}, "input.seed"),
    "1080p_with_plus": ({"model": "wanx2.1-kf2v-plus", "resolution": "1080P"}, "input.resolution"),
}


def zh(key: str) -> str:
    """The longest fixed part of the Chinese message (between its placeholders)."""
    return max(re.split(r"\{[^}]*\}", MESSAGES["zh"][key]), key=len).strip()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One world for the refusals (they change nothing, which each test checks)."""
    w = await make_world(tmp_path_factory.mktemp("zh"))
    yield w
    await close_world(w)


async def nothing_left(world: World) -> None:
    assert world.dashscope.stats()["calls"]["create"] == 0  # nothing submitted
    assert await world.svc.store.all_jobs() == []
    assert await world.svc.store.ledger() == []  # nothing charged
    data = world.tmp / "data"
    left = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("kf2v.sqlite3")]
    assert left == []  # nothing on disk but the database


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", ZH_IMAGES)
async def test_bad_image_refused_in_chinese(shared: World, case: str) -> None:
    record = await shared.kf2v(first=corpus.BAD_INPUTS[case](), locale="zh-CN")
    text = await shared.reply(record)
    assert zh(corpus.BAD_INPUT_KEYS[case]) in text, (case, text)
    await nothing_left(shared)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", sorted(ZH_TEXT))
async def test_bad_option_refused_in_chinese(shared: World, case: str) -> None:
    options, key = ZH_TEXT[case]
    options = dict(options)
    record = await shared.kf2v(prompt=options.pop("prompt", "一只猫抬头看天"), locale="zh-CN", **options)
    text = await shared.reply(record)
    assert zh(key) in text, (case, text)
    await nothing_left(shared)


@pytest.mark.asyncio(loop_scope="module")
async def test_effect_with_the_flash_model_refused_in_chinese(shared: World) -> None:
    record = await shared.discord.run_command(
        shared.guild, shared.channel, ALICE, "kf2v-effect", {"template": "hanfu-1", "model": "wan2.2-kf2v-flash"},
        attachments={"image": ("a.png", corpus.good_png(), "image/png")}, locale="zh-CN",
    )  # fmt: skip
    assert zh("input.template_model") in await shared.reply(record)
    await nothing_left(shared)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path)
    yield w
    await close_world(w)


def near(pixel: Any, expected: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel[:3], expected, strict=True))


async def test_hard_but_valid_pictures_are_accepted_and_stored_normalised(world: World) -> None:
    cases = {"exif_rotated_jpeg": corpus.exif_rotated_jpeg(), "cmyk_jpeg": corpus.cmyk_jpeg(),
             "png16_alpha": corpus.png16_alpha()}  # fmt: skip
    jobs = {}
    for name, data in cases.items():
        record = await world.kf2v(first=data, prompt=f"{name} comes alive", resolution="480P")
        assert "queued" in await world.reply(record), name
        jobs[name] = await world.latest_job()
    frames = {name: Image.open(io.BytesIO(world.svc.media.read_frame(job.first_frame))) for name, job in jobs.items()}
    upright = frames["exif_rotated_jpeg"].convert("RGB")
    assert upright.size == (320, 480)  # stored 480x320 with orientation 6: turned, as a viewer shows it
    assert near(upright.getpixel((80, 120)), corpus.BLUE) and near(upright.getpixel((240, 120)), corpus.RED)
    assert near(upright.getpixel((80, 360)), corpus.YELLOW) and near(upright.getpixel((240, 360)), corpus.GREEN)
    assert upright.getexif().get(0x0112) is None  # and not turned a second time by the provider
    assert frames["cmyk_jpeg"].mode == "RGB" and near(frames["cmyk_jpeg"].getpixel((320, 240)), (255, 0, 0))
    flat = frames["png16_alpha"]
    assert flat.mode == "RGB" and flat.getpixel((100, 240)) == (255, 128, 0)

    async def delivered() -> bool:
        states = [(await world.job(j.id)).state for j in jobs.values()]
        return all(s is JobState.DELIVERED for s in states)

    await wait_until(delivered, within=30)
    assert world.dashscope.stats()["rejected"] == {}  # the provider took every normalised frame
    print(f"\nRELIABILITY hard-valid-inputs accepted={len(jobs)} delivered={len(jobs)}")
