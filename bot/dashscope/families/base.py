"""What every provider API family provides (`ApiFamily`), and the few things the families share.

A family is one request shape of the provider's video API: its endpoint, its `input` object, how it takes
frames, audio and clips, how it reports the billed seconds, and which catalog entries make sense for it. This
module imports nothing of the bot: the catalog, the request builder and the worker read a family through
`ApiFamily`, so a family module never needs them (and the catalog can ask a family about its data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

MediaType = Literal["first_frame", "last_frame", "driving_audio", "first_clip"]
MEDIA_TYPES: tuple[MediaType, ...] = ("first_frame", "last_frame", "driving_audio", "first_clip")
# How a region's API takes a model's media: `inline` data URIs in the body, `temporary_upload` oss:// URLs from the
# provider's temporary storage (/uploads), `public_url` http(s) URLs the provider fetches.
Transport = Literal["inline", "temporary_upload", "public_url"]

# The create request's argument that carries each kind of media (`CreateTaskRequest.build`), for error messages.
ARGUMENT: Mapping[str, str] = {
    "first_frame": "first_frame_uri",
    "last_frame": "last_frame_uri",
    "driving_audio": "driving_audio_url",
    "first_clip": "first_clip_url",
}


class RequestValidationError(ValueError):
    """A request the provider would refuse (or truncate), caught before anything is sent.

    `field` is the name of the `CreateTaskRequest.build` argument at fault; `reason` one English sentence.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class FamilyInput(BaseModel):
    """The `input` object of a create request; each family subclasses it with its own shape.

    Every family has a prompt and a negative prompt (both optional to the provider); the rest is the family's.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str | None = None
    negative_prompt: str | None = None

    def media_urls(self) -> list[str]:
        """Every image, audio or clip URL the input sends, in body order (data URIs included)."""
        return []

    def describe(self) -> list[str]:
        """`name=value` texts for the request's repr: media redacted (never their data), no prompt text."""
        return []

    @property
    def uses_template(self) -> bool:
        """True when the input names an effect template (the prompt is then optional)."""
        return False


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a catalog entry says about a model's requests, for its family to judge (`ApiFamily.catalog_problem`)."""

    duration_range: tuple[int, int]
    media_combinations: tuple[frozenset[str], ...]
    template_combinations: tuple[frozenset[str], ...]


@dataclass(frozen=True, slots=True)
class OutgoingMedia:
    """One file a create request carries: which input it fills, the caller's reference to its bytes, how it goes
    (`inline` as a data URI in the body, `temporary_upload` as an oss:// URL) and the file name it is uploaded as
    (the provider takes the format from the name)."""

    kind: MediaType
    ref: str
    transport: Transport
    filename: str


class BilledUsage(Protocol):
    """The fields of a finished task's `usage` that can carry the billed seconds (`bot.dashscope.models.Usage`)."""

    @property
    def video_duration(self) -> float | None:
        """The kf2v family's billed seconds."""
        ...

    @property
    def duration(self) -> float | None:
        """The media family's billed seconds (the whole video)."""
        ...


class ApiFamily(Protocol):
    """One provider API family: its request, its media, its bill and its catalog rules.

    Registered by `name` in `bot.dashscope.families.FAMILIES`; the catalog's `family` field names one.
    """

    @property
    def name(self) -> str:
        """The catalog's name of the family (`"kf2v"`, `"media"`)."""
        ...

    @property
    def create_path(self) -> str:
        """The create call's path, relative to .../api/v1."""
        ...

    # --- catalog -----------------------------------------------------------------------------------------
    @property
    def sendable_transports(self) -> frozenset[str]:
        """How this bot can send the family's media (a region taking them otherwise does not offer the model)."""
        ...

    @property
    def default_transport(self) -> Transport:
        """A region's media transport when the catalog names none."""
        ...

    @property
    def default_combinations(self) -> tuple[tuple[MediaType, ...], ...]:
        """The accepted media combinations when the catalog names none."""
        ...

    @property
    def default_prompt_max_chars(self) -> int:
        """The prompt limit when the catalog names none."""
        ...

    def catalog_problem(self, model: ModelShape) -> str | None:
        """Why a catalog entry of this family cannot be right (one sentence), None when it can."""
        ...

    # --- request -----------------------------------------------------------------------------------------
    def refused_combination(
        self, given: frozenset[str], template_combinations: Sequence[frozenset[str]]
    ) -> RequestValidationError | None:
        """A family's own words for media the model does not accept together (None: the generic message)."""
        ...

    def check_prompt(self, prompt: str | None) -> None:
        """Refuse a prompt the family cannot do without (outside template mode); `RequestValidationError`."""
        ...

    def check_media(self, argument: str, kind: MediaType, value: str) -> None:
        """Refuse a media value the family's API cannot read (before the generic URL checks)."""
        ...

    def build_input(
        self, given: Mapping[MediaType, str], prompt: str | None, negative_prompt: str | None, template: str | None
    ) -> FamilyInput:
        """The checked request's `input` object."""
        ...

    # --- media -------------------------------------------------------------------------------------------
    def media_to_send(
        self, refs: Mapping[MediaType, str], transport: str, *, name_prefix: str
    ) -> tuple[OutgoingMedia, ...]:
        """What to send of a job's media (`refs`: kind -> the caller's reference, a path whose last part is the
        file's name) in a region taking media by `transport`, and under which file names."""
        ...

    # --- bill --------------------------------------------------------------------------------------------
    def billed_seconds(self, usage: BilledUsage | None) -> float | None:
        """The seconds a finished task is billed for, as sent (None: the answer had no usage)."""
        ...


def upload_name(name_prefix: str, ref: str) -> str:
    """`<prefix>-<first 16 characters of the reference's last part>.<its extension>`: short, and the provider
    reads the format from the extension."""
    return f"{name_prefix}-{ref.rsplit('/', 1)[-1][:16]}.{ref.rsplit('.', 1)[-1]}"
