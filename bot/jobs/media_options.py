"""The media family's request options (issue 12): duration, sound, a driving audio file, a clip to continue.

Every rule reads the model's catalog entry (duration range, sound, accepted media combinations, input limits),
never a model name, so a model added by the override file gets the right checks. All of these run before
any money is reserved: the refusal names the model's own range or limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.catalog import Catalog, ModelSpec
from bot.errors import InvalidInput

CLIP_SLACK_S = 0.1


@dataclass(frozen=True, slots=True)
class MediaChoice:
    """What a request asks of the media options, after the checks: the values the job is stored with."""

    duration: int  # seconds of output (for a continued clip: the whole video, clip included)
    sound: bool  # whether the video will have a soundtrack


def check_media_options(
    catalog: Catalog,
    region: str,
    spec: ModelSpec,
    *,
    duration: int | None,
    sound: bool | None,
    with_audio: bool,
    with_last_frame: bool,
    with_clip: bool = False,
    with_template: bool = False,
) -> MediaChoice:
    """Refuse what the model can't do (InvalidInput naming its range or the models that can); else the choice.

    `duration` None = the model's default; `sound` None = the model's default (sound where it makes sound).
    """
    low, high = spec.duration_range
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise InvalidInput("input.duration_range", model=spec.key, min=low, max=high, asked=duration)
        if spec.fixed_duration and duration != low:
            raise InvalidInput("input.duration_fixed", model=spec.key, seconds=low, asked=duration)
        if not spec.allows_duration(duration):
            raise InvalidInput("input.duration_range", model=spec.key, min=low, max=high, asked=duration)
    chosen_duration = spec.default_duration if duration is None else duration
    chosen_sound = spec.makes_sound if sound is None else sound
    if sound is not None and sound != spec.makes_sound and not spec.sound_optional:
        key = "input.sound_always" if spec.makes_sound else "input.sound_never"
        raise InvalidInput(key, model=spec.key)
    if with_audio:
        if spec.inputs.audio is None:
            raise InvalidInput("input.audio_model", model=spec.key, models=_names(catalog, region, "driving_audio"))
        if sound is False:
            raise InvalidInput("input.audio_silent", model=spec.key)
        chosen_sound = True
    kinds = {"first_clip" if with_clip else "first_frame"}
    kinds |= {"last_frame"} if with_last_frame else set()
    kinds |= {"driving_audio"} if with_audio else set()
    # An effect template has its own combinations (kf2v-plus: the first frame alone).
    allowed = spec.template_combinations if with_template else spec.media_combinations
    if frozenset(kinds) not in allowed:
        raise InvalidInput("input.media_combination", model=spec.key, asked=" + ".join(sorted(kinds)))
    return MediaChoice(duration=chosen_duration, sound=chosen_sound)


def extend_total(spec: ModelSpec, clip_seconds: float, added: int) -> int:
    """The whole length of an extended video: the clip (in whole seconds) plus `added` seconds.

    The provider's `duration` is the total, clip included, and it bills the total (wan2.7 guide, 视频续写:
    https://help.aliyun.com/zh/model-studio/wan-image-to-video-guide). Refused when the model's range can't hold it.
    """
    clip = spec.inputs.clip
    if not spec.extends_clips or clip is None:
        raise InvalidInput("input.extend_model", model=spec.key)
    if clip_seconds > clip.max_seconds:
        raise InvalidInput("input.extend_clip_long", model=spec.key, seconds=round(clip_seconds, 1),
                           max=f"{clip.max_seconds:g}")  # fmt: skip
    # Whole seconds, rounded up, but a container a few hundredths longer than its frames (AAC priming) is not
    # a second longer: 3.02 s counts as 3.
    whole_clip = max(1, math.ceil(clip_seconds - CLIP_SLACK_S))
    low, high = spec.duration_range
    if added < 1 or whole_clip + added > high or whole_clip + added < low:
        raise InvalidInput("input.extend_seconds", model=spec.key, clip=whole_clip, most=max(0, high - whole_clip))
    return whole_clip + added


def _names(catalog: Catalog, region: str, media_type: str) -> str:
    able = [m.key for m in catalog.models_in(region) if any(media_type in c for c in m.media_combinations)]
    return ", ".join(able) or "-"
