"""Bad input through /kf2v and /kf2v-effect end to end, in English and in Chinese, one module-wide world.

Each case is refused with the message of its own key in the user's language (the whole message: its fixed
text around the placeholders), and leaves nothing behind: no request of any kind to the provider, no job,
no ledger row, no file in the data dir but the database. English: the 16 bad files of the corpus, 5 bad
options and an effect template with the flash model (22). Chinese: 7 of the bad files, 4 bad options and
the effect with the flash model (12). 34 distinct refusals in all, each its own test.

Then the three hard-but-valid pictures (CMYK JPEG, 16-bit PNG with alpha, EXIF-rotated JPEG) are accepted
and stored normalised (the EXIF one turned upright).
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bot.i18n import MESSAGES
from bot.jobs.models import JobState
from tests.support import corpus
from tests.support.waiting import wait_until
from tests.support.world import ALICE, World, close_world, make_world

# Options refused before anything is read or spent: (options, message key).
OPTION_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "prompt_801": ({"prompt": "x" * 801}, "input.prompt_long"),
    "prompt_blank": ({"prompt": "   \u200b\u200b  "}, "input.prompt_blank"),
    "seed_out_of_range": ({"seed": 2_147_483_648}, "input.seed"),
    "1080p_with_plus": ({"model": "wanx2.1-kf2v-plus", "resolution": "1080P"}, "input.resolution"),
    "negative_prompt_501": ({"negative_prompt": "n" * 501}, "input.negative_long"),
}
ZH_OPTION_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "prompt_801": ({"prompt": "长" * 801}, "input.prompt_long"),
    "prompt_zero_width": ({"prompt": " \u200b\u200c\u200d\ufeff  "}, "input.prompt_blank"),
    "seed_out_of_range": ({"seed": 2_147_483_648}, "input.seed"),
    "1080p_with_plus": ({"model": "wanx2.1-kf2v-plus", "resolution": "1080P"}, "input.resolution"),
}
ZH_IMAGES = [
    "empty",
    "text_named_png",
    "truncated_png",
    "huge_file",
    "bomb_png",
    "animated_gif",
    "tiny_100",
    "transparent_64mp_png",
]
EFFECT_WITH_FLASH = ("effect_with_flash", "input.template_model")

# (locale, kind, case): 23 in English, 13 in Chinese.
CASES = (
    [("en-US", "image", c) for c in sorted(corpus.BAD_INPUTS)]
    + [("en-US", "option", c) for c in OPTION_CASES]
    + [("en-US", "effect", EFFECT_WITH_FLASH[0])]
    + [("zh-CN", "image", c) for c in ZH_IMAGES]
    + [("zh-CN", "option", c) for c in ZH_OPTION_CASES]
    + [("zh-CN", "effect", EFFECT_WITH_FLASH[0])]
)


def message_pattern(locale: str, key: str) -> re.Pattern[str]:
    """The whole message of `key` in the locale's language, any value standing in for each placeholder."""
    template = MESSAGES["zh" if locale.startswith("zh") else "en"][key]
    parts = re.split(r"\{[^}]*\}", template)
    assert any(part.strip() for part in parts), key  # a message made only of placeholders would prove nothing
    return re.compile(".+?".join(re.escape(part) for part in parts), re.DOTALL)


def expected_key(kind: str, case: str, locale: str) -> str:
    if kind == "image":
        return corpus.BAD_INPUT_KEYS[case]
    if kind == "option":
        return (ZH_OPTION_CASES if locale.startswith("zh") else OPTION_CASES)[case][1]
    return EFFECT_WITH_FLASH[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One world for every refusal (they change nothing, which each test checks)."""
    w = await make_world(tmp_path_factory.mktemp("refusals"))
    yield w
    await close_world(w)


async def nothing_left(world: World, provider_calls_before: dict[str, int]) -> None:
    assert world.dashscope.stats()["calls"] == provider_calls_before  # no request of any kind: nothing submitted
    assert await world.svc.store.all_jobs() == []
    assert await world.svc.store.ledger() == []  # nothing charged, nothing reserved
    data = world.tmp / "data"
    left = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("kf2v.sqlite3")]
    assert left == []  # nothing on disk but the database (the media dir holds no frame)


def test_the_campaign_counts_each_refusal_once() -> None:
    assert len(CASES) == len(set(CASES)) == 36
    assert sum(locale == "en-US" for locale, _, _ in CASES) == 23


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("locale", "kind", "case"), CASES)
async def test_bad_input_is_refused_with_its_own_message_and_leaves_nothing(
    shared: World, locale: str, kind: str, case: str
) -> None:
    before = dict(shared.dashscope.stats()["calls"])
    if kind == "image":
        record = await shared.kf2v(first=corpus.BAD_INPUTS[case](), locale=locale)
    elif kind == "option":
        options = dict((ZH_OPTION_CASES if locale.startswith("zh") else OPTION_CASES)[case][0])
        record = await shared.kf2v(prompt=options.pop("prompt", "a cat looks up"), locale=locale, **options)
    else:
        record = await shared.discord.run_command(
            shared.guild, shared.channel, ALICE, "kf2v-effect", {"template": "hanfu-1", "model": "wan2.2-kf2v-flash"},
            attachments={"image": ("a.png", corpus.good_png(), "image/png")}, locale=locale,
        )  # fmt: skip
    text = await shared.reply(record)
    assert message_pattern(locale, expected_key(kind, case, locale)).search(text), (locale, case, text)
    await nothing_left(shared, before)


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
