"""The kf2v family: first and last frame to a 5-second silent video, or a first frame and an effect template.

``POST /services/aigc/image2video/video-synthesis`` with ``input.first_frame_url``/``last_frame_url`` (data
URIs in the body: nothing to host anywhere), optional ``template``; the bill is ``usage.video_duration``.
https://help.aliyun.com/zh/model-studio/image-to-video-by-first-and-last-frame-api-reference
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

VIDEO_SECONDS = 5
FRAMES: frozenset[str] = frozenset({"first_frame", "last_frame"})


class TaskInput(FamilyInput):
    """The kf2v family's input."""

    first_frame_url: str
    last_frame_url: str | None = None
    template: str | None = None

    def media_urls(self) -> list[str]:
        """The frames, first then last."""
        return [u for u in (self.first_frame_url, self.last_frame_url) if u is not None]

    def describe(self) -> list[str]:
        """Frames redacted, and the template."""
        return [
            f"first_frame={_redacted(self.first_frame_url)!r}",
            f"last_frame={_redacted(self.last_frame_url)!r}",
            f"template={self.template!r}",
        ]

    @property
    def uses_template(self) -> bool:
        """An effect template is named: the prompt is optional and the last frame is not sent."""
        return self.template is not None


def _redacted(value: str | None) -> str | None:
    return None if value is None else redact(value)


class Kf2vFamily:
    """The kf2v family's request, media, bill and catalog rules (`ApiFamily`)."""

    name = "kf2v"
    create_path = "/services/aigc/image2video/video-synthesis"
    sendable_transports: frozenset[str] = frozenset({"inline"})
    default_transport: Transport = "inline"
    default_combinations: tuple[tuple[MediaType, ...], ...] = (("first_frame", "last_frame"),)
    default_prompt_max_chars = 800

    def catalog_problem(self, model: ModelShape) -> str | None:
        """The family makes 5-second videos from frames only."""
        if model.duration_range != (VIDEO_SECONDS, VIDEO_SECONDS):
            return f"the kf2v family makes {VIDEO_SECONDS}-second videos only"
        for combo in (*model.media_combinations, *model.template_combinations):
            if not combo <= FRAMES:
                return f"the kf2v family takes frames only, not {sorted(combo)}"
        return None

    def refused_combination(
        self, given: frozenset[str], template_combinations: Sequence[frozenset[str]]
    ) -> RequestValidationError | None:
        """A first frame alone lacks its last frame (or, on a model with effects, a template)."""
        if given != {"first_frame"}:
            return None
        if not template_combinations:
            return RequestValidationError("last_frame_uri", "A last frame is required.")
        return RequestValidationError("last_frame_uri", "A last frame is required (or an effect template).")

    def check_prompt(self, prompt: str | None) -> None:
        """Without a template the prompt is what drives the motion: required."""
        if prompt is None or not prompt.strip():
            raise RequestValidationError("prompt", "A prompt describing the motion is required.")

    def check_media(self, argument: str, kind: MediaType, value: str) -> None:
        """Frames may be data URIs, http(s) or oss:// URLs: the generic checks say it all."""

    def build_input(
        self, given: Mapping[MediaType, str], prompt: str | None, negative_prompt: str | None, template: str | None
    ) -> TaskInput:
        """Template mode sends the first frame alone (the builder has cleared the prompts then)."""
        return TaskInput(
            first_frame_url=given["first_frame"],
            last_frame_url=given.get("last_frame") if template is None else None,
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            template=template,
        )

    def media_to_send(
        self, refs: Mapping[MediaType, str], transport: str, *, name_prefix: str
    ) -> tuple[OutgoingMedia, ...]:
        """Everything inline (the family's only transport): its frames as data URIs. Anything else a job might
        carry goes the same way, for the request builder to refuse rather than be dropped unseen."""
        return tuple(
            OutgoingMedia(kind, refs[kind], "inline", upload_name(name_prefix, refs[kind]))
            for kind in MEDIA_TYPES
            if kind in refs
        )

    def billed_seconds(self, usage: BilledUsage | None) -> float | None:
        """`usage.video_duration` (a `duration`, the media family's field, is read if one ever comes instead)."""
        if usage is None:
            return None
        return usage.video_duration if usage.video_duration is not None else usage.duration


FAMILY = Kf2vFamily()
