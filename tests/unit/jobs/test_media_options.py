"""Duration, sound, driving audio and Extend rules follow the catalog entry of each model."""

from __future__ import annotations

import pytest

from bot.catalog import load_catalog
from bot.errors import InvalidInput
from bot.jobs.media_options import MediaChoice, check_media_options, extend_total

CATALOG = load_catalog()
WAN27 = CATALOG.model("wan2.7-i2v")
FLASH = CATALOG.model("wan2.2-kf2v-flash")


def check(spec_key: str, **args: object) -> MediaChoice:
    values: dict[str, object] = {"duration": None, "sound": None, "with_audio": False, "with_last_frame": True}
    values.update(args)
    return check_media_options(CATALOG, "beijing", CATALOG.model(spec_key), **values)  # type: ignore[arg-type]


def refusal(spec_key: str, **args: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check(spec_key, **args)
    return caught.value


def test_defaults_come_from_the_catalog() -> None:
    assert check("wan2.7-i2v") == MediaChoice(duration=WAN27.default_duration, sound=True)
    assert check("wan2.2-kf2v-flash") == MediaChoice(duration=5, sound=False)


def test_a_duration_within_the_range_is_kept_and_others_name_the_range() -> None:
    assert check("wan2.7-i2v", duration=8).duration == 8
    for asked in (1, 16, True):
        err = refusal("wan2.7-i2v", duration=asked)
        assert (err.key, err.params["min"], err.params["max"]) == ("input.duration_range", 2, 15)


def test_a_kf2v_model_refuses_any_other_duration_naming_its_fixed_length() -> None:
    assert check("wan2.2-kf2v-flash", duration=5).duration == 5
    err = refusal("wan2.2-kf2v-flash", duration=8)
    assert (err.key, err.params["seconds"], err.params["model"]) == ("input.duration_fixed", 5, "wan2.2-kf2v-flash")


def test_sound_that_the_model_cannot_switch_is_refused() -> None:
    assert refusal("wan2.7-i2v", sound=False).key == "input.sound_always"
    assert refusal("wan2.2-kf2v-flash", sound=True).key == "input.sound_never"
    assert check("wan2.7-i2v", sound=True).sound and not check("wan2.2-kf2v-flash", sound=False).sound


def test_audio_needs_a_model_that_takes_it_and_a_documented_combination() -> None:
    assert check("wan2.7-i2v", with_audio=True) == MediaChoice(duration=5, sound=True)
    assert check("wan2.7-i2v", with_audio=True, with_last_frame=False).sound
    err = refusal("wan2.2-kf2v-flash", with_audio=True)
    assert (err.key, err.params["models"]) == ("input.audio_model", "wan2.7-i2v")
    # first_clip + driving_audio is not one of the documented combinations.
    err = refusal("wan2.7-i2v", with_audio=True, with_last_frame=False, with_clip=True)
    assert err.key == "input.media_combination"


def test_an_effect_uses_the_template_combinations() -> None:
    assert check("wanx2.1-kf2v-plus", with_last_frame=False, with_template=True).duration == 5
    assert refusal("wanx2.1-kf2v-plus", with_last_frame=False).key == "input.media_combination"


def test_extend_totals_count_the_clip_and_stay_in_range() -> None:
    assert extend_total(WAN27, 5.0, 3) == 8
    assert extend_total(WAN27, 4.2, 3) == 8  # a partial second of clip counts as a whole one
    assert extend_total(WAN27, 3.02, 4) == 7  # ... but not a container's few hundredths of audio priming
    for spec, clip, added, key in (
        (WAN27, 8.0, 8, "input.extend_seconds"),  # 16 s > 15
        (WAN27, 12.0, 1, "input.extend_clip_long"),  # clips of at most 10 s
        (FLASH, 5.0, 2, "input.extend_model"),
    ):
        with pytest.raises(InvalidInput) as caught:
            extend_total(spec, clip, added)
        assert caught.value.key == key
        if key == "input.extend_seconds":
            assert caught.value.params["most"] == 7
