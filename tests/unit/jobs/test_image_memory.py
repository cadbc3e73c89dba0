"""Issue 17, item 3: pictures are decoded within a memory budget.

Sizes, never times: what was decoded (`decoded_size`), what was planned (`planned_bytes`), what the shared
budget held at its peak. The real process's peak memory under four worst-case pictures at once is a
benchmark figure (`python -m bench memory`).
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.errors import InvalidImage
from bot.i18n import t
from bot.jobs.images import DEFAULT_MEMORY_BUDGET, DecodeBudget, ImageLimits, check_image, plan_decode
from bot.jobs.service import ImageWorkers
from tests.support import corpus
from tests.support.corpus import DEFAULT_LIMITS, MIB
from tests.support.waiting import wait_until


def oriented_jpeg(width: int, height: int, orientation: int) -> bytes:
    """A stored `width`x`height` photo-like JPEG whose EXIF says to turn it (6: 90° clockwise)."""
    im = Image.effect_noise((width, height), 40).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=85, exif=exif.tobytes())
    return buffer.getvalue()


def transparent_png(width: int, height: int) -> bytes:
    im = Image.new("RGBA", (width, height), (0, 0, 255, 255))
    im.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    buffer = io.BytesIO()
    im.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# Everything scaled down 16× in pixels from the real case (48 MP, 256 MiB): same arithmetic, small test.
SMALL_BUDGET = ImageLimits(max_bytes=10 * MIB, min_side=240, max_side=8000, reencode_bytes=MIB, memory_budget=8 * MIB)


def test_the_default_budget_is_256_mib_measured_to_fit_a_512_mib_process_by_bench_memory() -> None:
    assert DEFAULT_LIMITS.memory_budget == DEFAULT_MEMORY_BUDGET == 256 * MIB


def test_a_48_megapixel_phone_photo_is_planned_reduced_within_the_default_budget() -> None:
    # 8000x6000 stored, EXIF 6: decoded whole and turned it would hold 192 MB + 192 MB (Pillow keeps RGB
    # in 4 bytes a pixel), over 256 MiB: decoded at 1/2 instead, turned, sent as 3000x4000.
    plan = plan_decode("RGB", False, 6, (8000, 6000), (6000, 8000), DEFAULT_LIMITS, reducible=True, keep=False)
    assert plan.scale == 2 and plan.decoded_size == (4000, 3000)
    assert plan.steps[-1].size == (3000, 4000)
    assert plan.peak_bytes == 4000 * 3000 * 4 * 2 + 2 * DEFAULT_LIMITS.reencode_bytes <= DEFAULT_LIMITS.memory_budget
    # Upright already and small enough to be sent as uploaded: decoded at 1/8, only to prove it is whole.
    kept = plan_decode("RGB", False, 1, (8000, 6000), (8000, 6000), DEFAULT_LIMITS, reducible=True, keep=True)
    assert (kept.scale, kept.decoded_size, kept.peak_bytes) == (8, (1000, 750), 1000 * 750 * 4)


def test_a_phone_photo_that_must_be_turned_is_decoded_at_the_size_it_is_sent() -> None:
    data = oriented_jpeg(2000, 1500, 6)
    checked = check_image(data, SMALL_BUDGET)
    assert checked.decoded_size == (1000, 750)  # libjpeg's 1/2 scale: 2000x1500 whole would not fit 8 MiB
    assert (checked.width, checked.height, checked.reencoded) == (750, 1000, True)
    assert checked.planned_bytes <= SMALL_BUDGET.memory_budget
    with Image.open(io.BytesIO(checked.data)) as sent:
        assert sent.size == (750, 1000)
    # With room enough, the same photo is decoded and sent whole.
    whole = check_image(data, DEFAULT_LIMITS)
    assert whole.decoded_size == (2000, 1500) and (whole.width, whole.height) == (1500, 2000)


def test_a_jpeg_sent_as_uploaded_is_only_checked_at_one_eighth_of_its_sides() -> None:
    data = corpus.photo_jpeg()  # 4000x3000, 5 MB, upright
    checked = check_image(data, DEFAULT_LIMITS)
    assert checked.data is data and not checked.reencoded
    assert (checked.width, checked.height) == (4000, 3000)
    assert checked.decoded_size == (500, 375)
    assert checked.planned_bytes == 500 * 375 * 4
    with pytest.raises(InvalidImage) as refused:  # reduced, a cut file is still caught
        check_image(data[: len(data) * 2 // 3], DEFAULT_LIMITS)
    assert refused.value.key == "image.corrupt"


def test_a_picture_whose_decode_alone_is_over_the_budget_is_refused_naming_the_pixel_limit() -> None:
    data = transparent_png(1200, 1200)  # RGBA: 4 bytes a pixel decoded, 4 more flattened onto white
    with pytest.raises(InvalidImage) as refused:
        check_image(data, SMALL_BUDGET)
    error = refused.value
    assert error.key == "image.over_memory"
    # (8 MiB - 2 MiB kept for encoding) / 8 bytes a pixel
    assert error.params == {
        "width": 1200,
        "height": 1200,
        "pixels": "1,440,000",
        "max_pixels": "786,432",
        "side": "886",
    }
    assert "786,432" in t("en-US", error.key, **error.params)
    assert "786,432" in t("zh-CN", error.key, **error.params)
    # Under the limit the same kind of picture passes, flattened onto white.
    small = check_image(transparent_png(880, 880), SMALL_BUDGET)
    assert small.reencoded and small.planned_bytes <= SMALL_BUDGET.memory_budget
    with Image.open(io.BytesIO(small.data)) as sent:
        assert sent.mode == "RGB" and sent.getpixel((870, 10)) == (255, 255, 255)


def test_the_64_megapixel_transparent_png_is_refused_before_a_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(self: Image.Image) -> None:
        raise AssertionError("the pixels must not be decoded")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(InvalidImage) as refused:
        check_image(corpus.transparent_64mp_png(), DEFAULT_LIMITS)
    assert refused.value.key == "image.over_memory"
    assert len(corpus.transparent_64mp_png()) < 400_000


def test_a_frame_wider_than_the_provider_takes_is_scaled_down_once() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (9000, 600), (10, 200, 30)).save(buffer, "PNG")
    checked = check_image(buffer.getvalue(), DEFAULT_LIMITS)
    assert (checked.width, checked.height, checked.reencoded) == (8000, 533, True)
    with Image.open(io.BytesIO(checked.data)) as sent:
        assert sent.size == (8000, 533)
        assert sent.getpixel((4000, 266)) == (10, 200, 30)
    # A JPEG is reduced on load first: 16400 px wide is decoded at 1/2, then resampled to 8000.
    wide = io.BytesIO()
    Image.new("RGB", (16400, 300), (200, 30, 30)).save(wide, "JPEG")
    jpeg = check_image(wide.getvalue(), ImageLimits(10 * MIB, 100, 8000, 7 * MIB))
    assert jpeg.decoded_size == (8200, 150) and (jpeg.width, jpeg.height) == (8000, 146)


def test_the_budget_is_held_while_decoding_and_given_back() -> None:
    budget = DecodeBudget(8 * MIB)
    checked = check_image(oriented_jpeg(2000, 1500, 6), SMALL_BUDGET, budget.hold)
    assert budget.peak == checked.planned_bytes > 0
    assert budget.held == 0  # given back
    with pytest.raises(InvalidImage):
        check_image(corpus.truncated_jpeg(), SMALL_BUDGET, budget.hold)
    assert budget.held == 0  # given back by a refusal too


async def test_concurrent_decodes_together_stay_within_the_shared_budget() -> None:
    # Each picture alone plans ~7.9 MiB of an 8 MiB budget: three workers, but one decode at a time.
    workers = ImageWorkers(3)
    budget = workers.budget(SMALL_BUDGET)
    pictures = [transparent_png(880, 880 - i) for i in range(3)]
    everything = budget.hold(budget.total)  # taken first, so that all three are seen waiting
    everything.__enter__()
    checks = asyncio.gather(*(workers.check(p, SMALL_BUDGET) for p in pictures))
    await wait_until(lambda: budget.waited == 3)
    assert budget.held == budget.total  # nobody decoded meanwhile
    everything.__exit__(None, None, None)
    results = await checks
    assert all(r.reencoded for r in results)
    assert max(r.planned_bytes for r in results) <= budget.peak <= SMALL_BUDGET.memory_budget
    assert budget.held == 0
    assert workers.peak == 3  # three threads at once, yet never more bytes than the budget
