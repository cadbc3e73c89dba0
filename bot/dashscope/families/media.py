"""The media family (wan2.7-i2v): a first frame or a clip to continue, optionally a last frame and driving audio.

``POST /services/aigc/video-generation/video-synthesis`` with ``input.media`` (a list of ``{type, url}``), a
whole-second ``duration`` range and sound. Every ``url`` is a public http(s) URL or a temporary upload's oss://
URL (no data URIs), so this bot sends them through the temporary upload; the bill is ``usage.duration`` (the
whole video, a continued clip's seconds included).
https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from bot.dashscope.families.base import (
    MEDIA_TYPES,
    BilledUsage,
    FamilyInput,
    MediaType,
    ModelShape,
    OutgoingMedia,
    RequestValidationError,
    Transport,
    upload_name,
)
from bot.logs import redact


class MediaItem(BaseModel):
    """One input of a media-family (wan2.7) request: its type and where the provider fetches it."""

    model_config = ConfigDict(frozen=True)

    type: MediaType
    url: str


class MediaInput(FamilyInput):
    """The media family's input (wan2.7): prompt is optional, `media` is required."""

    media: tuple[MediaItem, ...]

    def url_of(self, kind: str) -> str | None:
        """The URL of the first media item of type `kind`; None when the request has none."""
        return next((m.url for m in self.media if m.type == kind), None)

    def media_urls(self) -> list[str]:
        """The items' URLs in body order."""
        return [m.url for m in self.media]

    def describe(self) -> list[str]:
        """Each item's type and redacted URL."""
        return ["media=[" + ", ".join(f"{m.type}={redact(m.url)!r}" for m in self.media) + "]"]


class MediaFamily:
    """The media family's request, media, bill and catalog rules (`ApiFamily`)."""

    name = "media"
    create_path = "/services/aigc/video-generation/video-synthesis"
    # Its media are URLs: the temporary upload's oss:// ones (this bot hosts nothing public).
    sendable_transports: frozenset[str] = frozenset({"temporary_upload"})
    default_transport: Transport = "temporary_upload"
    default_combinations: tuple[tuple[MediaType, ...], ...] = (("first_frame",),)
    default_prompt_max_chars = 5000

    def catalog_problem(self, model: ModelShape) -> str | None:
        """Any duration range and any combination of its four kinds of media."""
        return None

    def refused_combination(
        self, given: frozenset[str], template_combinations: Sequence[frozenset[str]]
    ) -> RequestValidationError | None:
        """The generic message names the accepted combinations."""
        return None

    def check_prompt(self, prompt: str | None) -> None:
        """The prompt is optional."""

    def check_media(self, argument: str, kind: MediaType, value: str) -> None:
        """The family's `url` is a public http(s) URL or a temporary upload's oss:// URL (its API reference)."""
        if value.startswith("data:"):
            raise RequestValidationError(argument, "Media must be sent as oss:// or http(s) URLs, not data URIs.")

    def build_input(
        self, given: Mapping[MediaType, str], prompt: str | None, negative_prompt: str | None, template: str | None
    ) -> MediaInput:
        """`media` in the documented order: first_frame, last_frame, driving_audio, first_clip."""
        media = tuple(MediaItem(type=kind, url=given[kind]) for kind in MEDIA_TYPES if kind in given)
        return MediaInput(prompt=prompt or None, negative_prompt=negative_prompt or None, media=media)

    def media_to_send(
        self, refs: Mapping[MediaType, str], transport: str, *, name_prefix: str
    ) -> tuple[OutgoingMedia, ...]:
        """A continued clip replaces the first frame; everything goes by the region's transport (a region that
        has no temporary upload does not offer the family: the request builder refuses it there)."""
        how: Transport = "temporary_upload" if transport == "temporary_upload" else "inline"
        start: MediaType = "first_clip" if "first_clip" in refs else "first_frame"
        kinds: tuple[MediaType, ...] = (start, "last_frame", "driving_audio")
        return tuple(OutgoingMedia(k, refs[k], how, upload_name(name_prefix, refs[k])) for k in kinds if k in refs)

    def billed_seconds(self, usage: BilledUsage | None) -> float | None:
        """`usage.duration`; where both appear, `video_duration` is 0 in the examples (read only without it)."""
        if usage is None:
            return None
        return usage.duration if usage.duration is not None else usage.video_duration


FAMILY = MediaFamily()
