from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import InvalidImage
from bot.i18n import EN, MESSAGES, ZH, t
from bot.jobs.images import CheckedImage, ImageLimits, check_image, size_refusal, sniff_format
from bot.settings import Settings
from tests.support import corpus
from tests.support.corpus import BAD_INPUT_KEYS, BAD_INPUTS, DEFAULT_LIMITS, GOOD_INPUTS, MIB
from tests.unit.core.test_i18n import placeholders

IMAGE_KEYS = {
    "image.empty": set(),
    "image.too_large": {"size_mb", "limit_mb"},
    "image.not_an_image": {"what"},
    "image.unrecognised": set(),
    "image.unsupported_format": {"format"},
    "image.animated": set(),
    "image.corrupt": set(),
    "image.too_small": {"width", "height", "min"},
    "image.too_large_dimensions": {"width", "height", "max"},
    "image.bomb": {"width", "height", "max"},
    "image.over_memory": {"width", "height", "pixels", "max_pixels", "side"},
}

UNCHANGED = {"png", "jpeg", "webp", "webp_lossless", "bmp", "grey_jpeg", "mpo_jpeg"}
NORMALISED = {"palette_png", "rgba_png", "cmyk_jpeg", "png16_alpha", "png16_grey", "exif_rotated_jpeg"}


def refusal(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        check_image(data, limits)
    return caught.value


def decode(checked: CheckedImage) -> Image.Image:
    im = Image.open(io.BytesIO(checked.data))
    im.load()
    assert im.format == checked.format or (im.format, checked.format) == ("MPO", "JPEG")
    assert im.size == (checked.width, checked.height)
    return im


def near(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(actual, tuple)
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def noise_png(width: int, height: int, mode: str) -> bytes:
    bands = len(mode)
    raw = bytearray(random.Random(width).randbytes(width * height * bands))
    if mode == "RGBA":
        raw[3::4] = b"\xff" * (width * height)  # opaque, yet the file carries an alpha channel
    buffer = io.BytesIO()
    Image.frombytes(mode, (width, height), bytes(raw)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# --- refusals ------------------------------------------------------------------------------------------


def test_corpus_covers_every_refusal() -> None:
    assert set(BAD_INPUTS) == set(BAD_INPUT_KEYS)
    assert set(BAD_INPUT_KEYS.values()) == set(IMAGE_KEYS)


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_its_key(name: str) -> None:
    error = refusal(BAD_INPUTS[name]())
    assert error.key == BAD_INPUT_KEYS[name]
    assert set(error.params) == IMAGE_KEYS[error.key]
    for locale in ("en-US", "zh-CN"):  # the handler can render it in both languages
        assert t(locale, error.key, **error.params)


@pytest.mark.parametrize(
    ("make", "params"),
    [
        (corpus.huge_file, {"size_mb": 60.0, "limit_mb": 10.0}),
        (lambda: bytes(10 * MIB + 1), {"size_mb": 10.1, "limit_mb": 10.0}),  # never "10 MB; limit 10 MB"
        (corpus.text_named_png, {"what": "TXT"}),
        (corpus.pdf_document, {"what": "PDF"}),
        (lambda: b"<!DOCTYPE html><html><body>403</body></html>", {"what": "HTML"}),
        (lambda: b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(64), {"what": "MP4"}),
        (corpus.animated_gif, {"format": "GIF"}),
        (corpus.tiff_image, {"format": "TIFF"}),
        (corpus.heic_photo, {"format": "HEIC"}),
        (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', {"format": "SVG"}),
        (corpus.tiny_100, {"width": 100, "height": 100, "min": 240}),
        (corpus.too_wide_png, {"width": 8001, "height": 240, "max": 8000}),
        (corpus.bomb_png, {"width": 20000, "height": 20000, "max": 8000}),
        # 8 bytes a pixel (RGBA decoded + RGB flattened), 14 MiB kept for encoding, within 256 MiB.
        (
            corpus.transparent_64mp_png,
            {"width": 8000, "height": 8000, "pixels": "64,000,000", "max_pixels": "31,719,424", "side": "5,632"},
        ),
    ],
)
def test_refusals_say_what_to_change(make: Callable[[], bytes], params: dict[str, object]) -> None:
    assert refusal(make()).params == params


def test_size_refusal_matches_the_check() -> None:
    # Callers refuse from the attachment's announced size before downloading it: same key, same numbers.
    data = bytes(10 * MIB + 1)
    expected = refusal(data)
    assert repr(size_refusal(len(data), DEFAULT_LIMITS.max_bytes)) == repr(expected)


def test_format_is_sniffed_from_the_bytes() -> None:
    assert sniff_format(corpus.good_png()) == "PNG"
    assert sniff_format(corpus.good_jpeg()) == "JPEG"
    assert sniff_format(corpus.good_webp()) == "WEBP"
    assert sniff_format(corpus.good_bmp()) == "BMP"
    assert sniff_format(corpus.animated_gif()) == "GIF"
    assert sniff_format(corpus.heic_photo()) == "HEIC"
    assert sniff_format(corpus.text_named_png()) is None
    assert sniff_format(b"BMW is a car maker.\n") is None  # "BM" alone is not a bitmap
    assert check_image(corpus.good_jpeg(), DEFAULT_LIMITS).format == "JPEG"  # whatever it is called


def test_dimensions_are_reported_as_the_user_sees_them() -> None:
    im = Image.new("RGB", (300, 200), corpus.RED)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", exif=exif.tobytes())
    error = refusal(buffer.getvalue())
    assert (error.key, error.params) == ("image.too_small", {"width": 200, "height": 300, "min": 240})


def test_bomb_is_caught_from_the_header_before_pillow_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: object, **kwargs: object) -> Image.Image:
        raise AssertionError("Pillow must not see a bomb")

    monkeypatch.setattr(Image, "open", no_open)
    assert refusal(corpus.bomb_png()).key == "image.bomb"
    assert len(corpus.bomb_png()) < 100_000  # 400 megapixels in a tiny file


def test_bomb_limit_is_ours_not_pillows() -> None:
    limits = ImageLimits(max_bytes=10 * MIB, min_side=240, max_side=8000, reencode_bytes=7 * MIB, max_pixels=10**6)
    error = refusal(corpus.good_png(1200, 1000), limits)
    assert error.params == {"width": 1200, "height": 1000, "max": 8000}
    assert check_image(corpus.good_png(1000, 1000), limits).width == 1000


def test_a_lower_pillow_threshold_cannot_leak_a_bomb_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # Warnings are errors in this suite: a DecompressionBombWarning would fail the test.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    assert check_image(corpus.good_png(640, 480), DEFAULT_LIMITS).width == 640


# --- accepted pictures -----------------------------------------------------------------------------------


def test_good_corpus_is_split_into_unchanged_and_normalised() -> None:
    assert set(GOOD_INPUTS) == UNCHANGED | NORMALISED


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_fine_pictures_are_sent_byte_for_byte(name: str) -> None:
    data = GOOD_INPUTS[name]()
    checked = check_image(data, DEFAULT_LIMITS)
    assert checked.data == data
    assert not checked.reencoded
    assert (checked.width, checked.height) == (640, 480)
    assert checked.mime == f"image/{checked.format.lower()}"
    decode(checked)


@pytest.mark.parametrize("name", sorted(NORMALISED))
def test_normalised_pictures_are_8_bit_rgb_without_alpha(name: str) -> None:
    checked = check_image(GOOD_INPUTS[name](), DEFAULT_LIMITS)
    assert checked.reencoded
    im = decode(checked)
    assert im.mode == "RGB"
    assert "transparency" not in im.info
    if checked.format == "PNG":
        assert checked.data[24:26] == b"\x08\x02"  # IHDR: 8 bits per sample, truecolour, no alpha


def test_exif_orientation_is_baked_in() -> None:
    checked = check_image(corpus.exif_rotated_jpeg(), DEFAULT_LIMITS)
    assert (checked.format, checked.width, checked.height) == ("JPEG", 320, 480)  # stored 480x320
    im = decode(checked)
    assert im.getexif().get(0x0112) is None  # or the provider might turn it a second time
    assert near(im.getpixel((80, 120)), corpus.BLUE)  # top left
    assert near(im.getpixel((240, 120)), corpus.RED)  # top right
    assert near(im.getpixel((80, 360)), corpus.YELLOW)  # bottom left
    assert near(im.getpixel((240, 360)), corpus.GREEN)  # bottom right


def test_alpha_is_flattened_onto_white_and_png_stays_png() -> None:
    checked = check_image(corpus.rgba_png(), DEFAULT_LIMITS)
    assert checked.format == "PNG"
    im = decode(checked)
    assert im.getpixel((100, 240)) == corpus.BLUE
    assert im.getpixel((540, 240)) == (255, 255, 255)


def test_16_bit_is_scaled_to_8_bit_not_clipped() -> None:
    rgba = decode(check_image(corpus.png16_alpha(), DEFAULT_LIMITS))
    assert rgba.getpixel((100, 240)) == (255, 128, 0)
    assert rgba.getpixel((540, 240)) == (255, 255, 255)
    grey = decode(check_image(corpus.png16_grey(), DEFAULT_LIMITS))
    assert near(grey.getpixel((100, 100)), (128, 128, 128), tolerance=1)


def test_cmyk_becomes_rgb() -> None:
    checked = check_image(corpus.cmyk_jpeg(), DEFAULT_LIMITS)
    assert checked.format == "JPEG"
    assert near(decode(checked).getpixel((320, 240)), (255, 0, 0))


def test_photo_over_7_mb_is_reencoded_under_the_limit() -> None:
    data = corpus.noisy_jpeg_over()
    assert len(data) > 7 * MIB
    with Image.open(io.BytesIO(data)) as source:
        size = source.size
    checked = check_image(data, DEFAULT_LIMITS)
    assert checked.reencoded
    assert checked.format == "JPEG"
    assert len(checked.data) <= DEFAULT_LIMITS.reencode_bytes
    assert decode(checked).size == size


SMALL = ImageLimits(max_bytes=2 * MIB, min_side=240, max_side=8000, reencode_bytes=1 * MIB)


def test_png_that_fits_once_alpha_is_dropped_stays_png() -> None:
    data = noise_png(560, 560, "RGBA")  # ~1.25 MB with alpha, ~0.94 MB without
    assert len(data) > SMALL.reencode_bytes
    checked = check_image(data, SMALL)
    assert (checked.format, checked.reencoded) == ("PNG", True)
    assert len(checked.data) <= SMALL.reencode_bytes


def test_png_too_big_as_png_becomes_jpeg() -> None:
    data = noise_png(700, 700, "RGB")  # ~1.5 MB of incompressible pixels
    checked = check_image(data, SMALL)
    assert (checked.format, checked.reencoded) == ("JPEG", True)
    assert len(checked.data) <= SMALL.reencode_bytes
    assert decode(checked).size == (700, 700)


def test_big_bitmap_becomes_png() -> None:
    checked = check_image(corpus.good_bmp(640, 480), ImageLimits(2 * MIB, 240, 8000, 512 * 1024))
    assert (checked.format, checked.reencoded) == ("PNG", True)
    assert decode(checked).getpixel((0, 0)) == corpus.RED


def test_a_5_mb_photo_passes_untouched() -> None:
    """Below the re-encode threshold a photo is sent as uploaded (its speed is measured in bench/)."""
    data = corpus.photo_jpeg()
    assert 4 * MIB < len(data) <= 7 * MIB
    checked = check_image(data, DEFAULT_LIMITS)
    assert (checked.format, checked.reencoded) == ("JPEG", False)
    assert checked.data is data  # nothing re-encoded, nothing copied


# --- the result -------------------------------------------------------------------------------------------


def test_data_uri_round_trip() -> None:
    data = corpus.good_png()
    checked = check_image(data, DEFAULT_LIMITS)
    prefix, _, payload = checked.data_uri().partition(",")
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(payload, validate=True) == data


def test_repr_does_not_dump_the_bytes() -> None:
    checked = check_image(corpus.photo_jpeg(), DEFAULT_LIMITS)
    text = repr(checked)
    assert len(text) < 200
    assert "4000x3000" in text
    assert checked.sha256[:12] in text


def test_limits_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("KF2V_IMAGE_MIN_SIDE", "KF2V_IMAGE_MAX_SIDE", "KF2V_IMAGE_MAX_BYTES", "KF2V_IMAGE_REENCODE_BYTES"):
        monkeypatch.delenv(name, raising=False)
    assert ImageLimits.from_settings(Settings()) == DEFAULT_LIMITS
    odd = Settings(KF2V_IMAGE_MAX_BYTES=5 * MIB, KF2V_IMAGE_MIN_SIDE=360, KF2V_IMAGE_MAX_SIDE=2000)
    assert ImageLimits.from_settings(odd) == ImageLimits(5 * MIB, 360, 2000, 5 * MIB)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="min_side"):
        ImageLimits(max_bytes=MIB, min_side=500, max_side=400, reencode_bytes=MIB)
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_bytes=0, min_side=1, max_side=400, reencode_bytes=MIB)


# --- messages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(IMAGE_KEYS))
def test_every_image_key_is_in_both_languages(key: str) -> None:
    assert placeholders(MESSAGES[EN][key]) == IMAGE_KEYS[key]
    assert placeholders(MESSAGES[ZH][key]) == IMAGE_KEYS[key]


def test_damaged_files_never_crash_the_check() -> None:
    """Mutated and cut copies of real pictures: every outcome is a result or an `InvalidImage`."""
    seeds = [make() for make in (corpus.exif_rotated_jpeg, corpus.apng, corpus.animated_webp)]
    seeds += [make(300, 300) for make in (corpus.good_png, corpus.good_webp, corpus.good_bmp, corpus.mpo_jpeg)]
    seeds += [corpus.png16_alpha(300, 300), corpus.good_webp(300, 300, lossless=True)]
    rng = random.Random(2024)
    outcomes: set[str] = set()
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 8)):  # mostly in the headers, where parsers are exposed
                data[rng.randrange(min(len(data), 256))] = rng.randrange(256)
        else:
            del data[rng.randrange(1, len(data)) :]
        try:
            check_image(bytes(data), DEFAULT_LIMITS)
            outcomes.add("ok")
        except InvalidImage as error:
            outcomes.add(error.key)
    assert {"ok", "image.corrupt"} <= outcomes


# --- the verdict cache: the same bytes are not decoded twice --------------------------------------------------
def _fields(image: CheckedImage) -> tuple[object, ...]:
    return image.data, image.mime, image.format, image.width, image.height, image.sha256, image.reencoded


async def test_the_same_upload_is_decoded_once_and_checked_alike() -> None:
    from bot.jobs.service import ImageWorkers

    workers = ImageWorkers(1)
    upload = corpus.good_png(640, 480)
    first = await workers.check(upload, DEFAULT_LIMITS)
    again = await workers.check(bytes(upload), DEFAULT_LIMITS)  # equal bytes, another object
    assert workers.checked == 1
    assert _fields(again) == _fields(first) == _fields(check_image(upload, DEFAULT_LIMITS))


async def test_refusals_and_reencoded_images_are_decoded_every_time() -> None:
    from bot.jobs.service import ImageWorkers

    workers = ImageWorkers(1)
    for _ in range(2):
        with pytest.raises(InvalidImage) as refused:
            await workers.check(corpus.truncated_png(), DEFAULT_LIMITS)
        assert refused.value.key == "image.corrupt"
    assert workers.checked == 2
    flattened = [await workers.check(corpus.rgba_png(), DEFAULT_LIMITS) for _ in range(2)]
    assert all(image.reencoded for image in flattened)  # its bytes are not the upload's: never remembered
    assert workers.checked == 4 and len(workers.cache) == 0


async def test_other_limits_check_the_bytes_again() -> None:
    from bot.jobs.service import ImageWorkers

    workers = ImageWorkers(1)
    upload = corpus.good_png(640, 480)
    await workers.check(upload, DEFAULT_LIMITS)
    # 600 px at most: scaled down to 600x450, its short side would be under 460.
    tighter = ImageLimits(max_bytes=10 * MIB, min_side=460, max_side=600, reencode_bytes=7 * MIB)
    with pytest.raises(InvalidImage) as refused:
        await workers.check(upload, tighter)  # passed before, but not under these limits
    assert refused.value.key == "image.too_large_dimensions"
    assert workers.checked == 2


def test_the_cache_keeps_the_most_recent_verdicts_only() -> None:
    from bot.jobs.images import CheckedCache

    cache = CheckedCache(size=2)
    uploads = [corpus.good_png(320, 240, colour) for colour in (corpus.RED, (0, 255, 0), (0, 0, 255))]
    for upload in uploads:
        assert cache.lookup(upload, DEFAULT_LIMITS) is None
        cache.remember(check_image(upload, DEFAULT_LIMITS), DEFAULT_LIMITS)
    assert len(cache) == 2
    assert cache.lookup(uploads[0], DEFAULT_LIMITS) is None  # the oldest went first
    hit = cache.lookup(uploads[2], DEFAULT_LIMITS)
    assert hit is not None and _fields(hit) == _fields(check_image(uploads[2], DEFAULT_LIMITS))
