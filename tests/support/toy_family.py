"""A toy API family, as a new family module would hold it (see bot/dashscope/families/kf2v.py), and catalog data
adding one model of it: what tests/unit/dashscope/test_families.py and tests/unit/jobs/test_new_family_job.py
register to show that adding a family is one module plus catalog data.

The toy has its own endpoint, an input shape no built-in family has (`input.images` + `input.text`), takes data
URIs only, makes fixed 3-second videos and bills `usage.video_duration`.
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from bot.catalog import DEFAULT_CATALOG
from bot.dashscope.families.base import (
    ApiFamily,
    BilledUsage,
    FamilyInput,
    MediaType,
    ModelShape,
    OutgoingMedia,
    RequestValidationError,
    Transport,
    upload_name,
)

TOY_PATH = "/services/aigc/toy/video-synthesis"


class ToyInput(FamilyInput):
    """The toy family's input: two pictures in a list and a text, under names no built-in family uses."""

    images: tuple[str, str]
    text: str | None = None

    def media_urls(self) -> list[str]:
        return list(self.images)

    def describe(self) -> list[str]:
        return [f"images=<{len(self.images)} pictures>"]


class ToyFamily:
    name = "toy"
    create_path = TOY_PATH
    sendable_transports: frozenset[str] = frozenset({"inline"})
    default_transport: Transport = "inline"
    default_combinations: tuple[tuple[MediaType, ...], ...] = (("first_frame", "last_frame"),)
    default_prompt_max_chars = 100

    def catalog_problem(self, model: ModelShape) -> str | None:
        if model.duration_range != (3, 3):
            return "the toy family makes 3-second videos only"
        return None

    def refused_combination(
        self, given: frozenset[str], template_combinations: Sequence[frozenset[str]]
    ) -> RequestValidationError | None:
        if given == {"first_frame"}:
            return RequestValidationError("last_frame_uri", "The toy takes two pictures.")
        return None

    def check_prompt(self, prompt: str | None) -> None:
        if prompt is None:
            raise RequestValidationError("prompt", "The toy needs a text.")

    def check_media(self, argument: str, kind: MediaType, value: str) -> None:
        if not value.startswith("data:"):
            raise RequestValidationError(argument, "The toy reads data URIs only.")

    def build_input(
        self, given: Mapping[MediaType, str], prompt: str | None, negative_prompt: str | None, template: str | None
    ) -> ToyInput:
        return ToyInput(images=(given["first_frame"], given["last_frame"]), text=prompt)

    def media_to_send(
        self, refs: Mapping[MediaType, str], transport: str, *, name_prefix: str
    ) -> tuple[OutgoingMedia, ...]:
        return tuple(OutgoingMedia(k, refs[k], "inline", upload_name(name_prefix, refs[k])) for k in refs)

    def billed_seconds(self, usage: BilledUsage | None) -> float | None:
        """The toy's bill is `video_duration`, even where a `duration` comes too (the media family's field)."""
        return None if usage is None else usage.video_duration


def _as_family(family: ApiFamily) -> ApiFamily:  # mypy checks the toy against the Protocol here
    return family


TOY = _as_family(ToyFamily())


def _png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


GREEN, RED = _png((20, 200, 20)), _png((200, 20, 20))


def toy_catalog_data(**changes: Any) -> dict[str, Any]:
    """The built-in catalog with one toy-family model added, as an override file would."""
    data = copy.deepcopy(DEFAULT_CATALOG)
    data["models"]["toy-1"] = {
        "family": "toy",
        "provider_names": {"beijing": "toy-v1"},
        "resolutions": ["720P"],
        "default_resolution": "720P",
        "price_per_second": {"720P": "0.30"},
        "duration": {"min": 3, "max": 3, "default": 3},
        "limits": {"beijing": {"submit_rps": 1, "max_in_flight": 1}},
        **changes,
    }
    return data
