"""The model catalog: which models exist per region, what they accept and what they cost.

Everything here is data (the provider changes names, tiers and prices more often than code), kept in
one place and overridable with a JSON file (`KF2V_CATALOG_FILE`) of the same shape as `DEFAULT_CATALOG`.
Money is counted in integer milli-yuan (1 CNY = 1000) so sums never drift.

Each model belongs to an API family, which decides the request shape (one module per family in
`bot.dashscope.families`, which also says what a catalog entry of the family must respect):

* ``kf2v`` — ``POST /services/aigc/image2video/video-synthesis``, ``input.first_frame_url``/``last_frame_url``,
  optional effect ``template``, fixed 5-second silent videos;
* ``media`` — ``POST /services/aigc/video-generation/video-synthesis``, ``input.media`` (a list of
  ``{type, url}``), a whole-second ``duration`` range, sound.

Regions: a model has per region the name it is sent as (``provider_names``), the other names it is recognised
by in answers and task-list rows (``aliases``), its price (``region_prices``, else ``price_per_second``), its
limits and how that region's API takes its media (``media_transport``). It is offered in a region only where it
is documented and this bot can send its media that way (`Catalog.why_not_offered`).

Provenance: every model carries ``sources`` (value path -> the official page that states it, with the day it was
read there: ``{"url", "confirmed_on"}``) and ``unconfirmed`` (value paths no official page confirmed; ``notes``
says why). `Catalog.unconfirmed(region)` lists them for ``kf2v-bot check``; every per-region value of an offered
model has one or the other (`Catalog.undocumented_region_values`). A value path is relative to the model, e.g.
``price_per_second.1080P`` or ``limits.singapore``; a path covers the paths under it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.dashscope.families import FAMILIES, family_named
from bot.dashscope.families.base import MEDIA_TYPES as MEDIA_TYPES
from bot.dashscope.families.base import MediaType as MediaType
from bot.dashscope.families.base import ModelShape
from bot.dashscope.families.base import Transport as Transport

MILLI_PER_CNY = 1000
VIDEO_SECONDS = 5
MB = 1024 * 1024

# The name of a registered API family (`bot.dashscope.families.FAMILIES`). What this bot can send per family
# (`ApiFamily.sendable_transports`): the kf2v family's frames inline; the media family's frames, audio and clips
# through the temporary upload (bot.jobs.uploads). It hosts nothing public, so `public_url` is never possible.
Family = str

# Official pages. A source is {"url", "confirmed_on"}: the day the value was last read on that page (a plain URL
# string is a source without a date, kept for override files written before dates existed).
_KF2V_API = "https://help.aliyun.com/zh/model-studio/image-to-video-by-first-and-last-frame-api-reference"
_KF2V_GUIDE_INTL = "https://www.alibabacloud.com/help/en/model-studio/image-to-video-first-and-last-frames-guide"
_EFFECTS = "https://help.aliyun.com/zh/model-studio/wanx-video-sepical-effects"
_EFFECTS_EN = "https://www.alibabacloud.com/help/en/model-studio/wanx-video-effects"
_SEED_DOC = "file:/work/shared/docs/seed-kf2v-api-zh.txt (an older copy of the kf2v API reference)"
_WAN27_API = "https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference"
_WAN27_API_EN = "https://www.alibabacloud.com/help/en/model-studio/image-to-video-general-api-reference"
_WAN27_GUIDE = "https://help.aliyun.com/zh/model-studio/wan-image-to-video-guide"
_TEMP_UPLOAD = "https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url"
_READ = "2026-12-06"  # the day the pages above were re-read for issue 18


def _src(url: str, confirmed_on: str = _READ) -> dict[str, str]:
    return {"url": url, "confirmed_on": confirmed_on}


_KF2V_IMAGE = {
    "formats": ["JPEG", "PNG", "BMP", "WEBP"],
    "min_side": 240,
    "max_side": 8000,
    "max_bytes": 10 * MB,
}

# What the kf2v family's seed reference priced (CNY per second); no Singapore figure was found for kf2v.
_FLASH_PRICES = {"480P": "0.10", "720P": "0.20", "1080P": "0.48"}
_PLUS_PRICES = {"720P": "0.70"}

DEFAULT_CATALOG: dict[str, Any] = {
    "regions": {
        # The temporary-upload flow (/uploads, oss:// URLs) "is available only in the China (Beijing) region".
        "beijing": {
            "base_url": "https://dashscope.aliyuncs.com/api/v1",
            "temporary_uploads": True,
            "sources": {"temporary_uploads": _src(_TEMP_UPLOAD)},
        },
        "singapore": {
            "base_url": "https://dashscope-intl.aliyuncs.com/api/v1",
            "temporary_uploads": False,
            "sources": {"temporary_uploads": _src(_TEMP_UPLOAD)},
        },
    },
    "models": {
        "wan2.2-kf2v-flash": {
            "family": "kf2v",
            # Documented on both hosts: the zh API reference (Beijing) and the en guide's dashscope-intl sample.
            "provider_names": {"beijing": "wan2.2-kf2v-flash", "singapore": "wan2.2-kf2v-flash"},
            "resolutions": ["480P", "720P", "1080P"],
            "default_resolution": "720P",
            "price_per_second": _FLASH_PRICES,
            "region_prices": {"singapore": _FLASH_PRICES},
            # The kf2v family takes frames as data URIs in the body: nothing to host anywhere.
            "media_transport": {"beijing": "inline", "singapore": "inline"},
            "duration": {"min": 5, "max": 5, "default": 5},
            "sound": {"makes_sound": False, "optional": False},
            "prompt_max_chars": 800,
            "negative_prompt_max_chars": 500,
            "inputs": {"image": _KF2V_IMAGE},
            "media_combinations": [["first_frame", "last_frame"]],
            "template_combinations": [],
            "templates": [],
            "free_seconds": 50,
            "limits": {
                "beijing": {"submit_rps": 2, "max_in_flight": 2},
                "singapore": {"submit_rps": 1, "max_in_flight": 2},
            },
            "sources": {
                "family": _src(_KF2V_API),
                "resolutions": _src(_KF2V_API),
                "duration": _src(_KF2V_API),
                "sound": _src(_KF2V_API),
                "provider_names.beijing": _src(_KF2V_API),
                "provider_names.singapore": _src(_KF2V_GUIDE_INTL),
                "media_transport": _SEED_DOC,
                "price_per_second": _SEED_DOC,
                "free_seconds": _SEED_DOC,
                "limits.beijing": _SEED_DOC,
            },
            "unconfirmed": [
                "price_per_second",
                "region_prices.singapore",
                "free_seconds",
                "limits.beijing",
                "limits.singapore",
                "media_transport",
                "inputs.image",
            ],
            "notes": {
                "price_per_second": "last official figures (seed copy); the current page has no price table",
                "region_prices.singapore": "no Singapore figure found: Beijing's seed figures (may bill more)",
                "free_seconds": "seed copy; not on the current page",
                "limits.beijing": "seed copy (QPS 2, 2 in flight); not on the current page",
                "limits.singapore": "not found; the Singapore plus model's seed figures (QPS 1, 2 in flight)",
                "media_transport": "data URIs per the seed reference, assumed in Singapore too; not re-read",
                "inputs.image": "the sandbox's kf2v figures (10 MB, 240-8000 px); not re-read on the current page",
            },
        },
        "wanx2.1-kf2v-plus": {
            "family": "kf2v",
            # Names move: the zh reference lists `wanx2.1-kf2v-plus`, Singapore and newer pages `wan2.1-kf2v-plus`.
            # Each region sends one and recognises the other in answers and task-list rows.
            "provider_names": {"beijing": "wanx2.1-kf2v-plus", "singapore": "wan2.1-kf2v-plus"},
            "aliases": {"beijing": ["wan2.1-kf2v-plus"], "singapore": ["wanx2.1-kf2v-plus"]},
            "resolutions": ["720P"],
            "default_resolution": "720P",
            "price_per_second": _PLUS_PRICES,
            "region_prices": {"singapore": _PLUS_PRICES},
            "media_transport": {"beijing": "inline", "singapore": "inline"},
            "duration": {"min": 5, "max": 5, "default": 5},
            "sound": {"makes_sound": False, "optional": False},
            "prompt_max_chars": 800,
            "negative_prompt_max_chars": 500,
            "inputs": {"image": _KF2V_IMAGE},
            "media_combinations": [["first_frame", "last_frame"]],
            # An effect uses the first frame only; first+last+template drops the last frame, last+template
            # without a first is an error (effects page): the bot sends the first frame alone.
            "template_combinations": [["first_frame"]],
            # Only what the effects page lists for the first-and-last-frame family: 唐韵翩然 is `hanfu-1` there.
            # `flying` (魔法悬浮) is a first-frame image-to-video effect (wanx2.1-i2v-*, another API), so it is not
            # offered here. The others are named by third-party code only (unconfirmed): a name the provider
            # refuses fails the job with nothing charged and the effect named (job.failed.template_refused).
            "templates": ["hanfu-1", "solaron", "magazine", "mech1", "mech2"],
            "template_names": {
                "hanfu-1": "唐韵翩然",
                "solaron": "机甲变身",
                "magazine": "闪耀封面",
                "mech1": "机械觉醒",
                "mech2": "赛博登场",
            },
            # Effects apply to China (Beijing) only (effects pages, en/id/pt-br).
            "template_regions": ["beijing"],
            "free_seconds": 200,
            "limits": {
                "beijing": {"submit_rps": 2, "max_in_flight": 2},
                "singapore": {"submit_rps": 1, "max_in_flight": 2},
            },
            "sources": {
                "family": _src(_KF2V_API),
                "resolutions": _src(_KF2V_API),
                "duration": _src(_KF2V_API),
                "provider_names.beijing": _src(_KF2V_API),
                "templates.hanfu-1": _src(_EFFECTS),
                "template_names.hanfu-1": _src(_EFFECTS),
                "template_combinations": _src(_EFFECTS),
                "template_regions": _src(_EFFECTS_EN),
                "price_per_second": _SEED_DOC,
                "free_seconds": _SEED_DOC,
                "limits": _SEED_DOC,
                "media_transport": _SEED_DOC,
            },
            "unconfirmed": [
                "provider_names.singapore",
                "aliases",
                "templates.solaron",
                "templates.magazine",
                "templates.mech1",
                "templates.mech2",
                "price_per_second",
                "region_prices.singapore",
                "free_seconds",
                "limits",
                "media_transport",
                "inputs.image",
            ],
            "notes": {
                "provider_names.singapore": "the project's provider notes; the intl reference was not re-read",
                "aliases": "older and newer pages spell the name both ways; which one a row carries is not stated",
                "templates.solaron": "only third-party code lists it; the official table was not retrieved",
                "templates.magazine": "only third-party code lists it",
                "templates.mech1": "only third-party code lists it",
                "templates.mech2": "only third-party code lists it",
                "price_per_second": "last official figures (seed copy); the current page has no price table",
                "region_prices.singapore": "no Singapore figure found: Beijing's seed figure (may bill more)",
                "free_seconds": "seed copy",
                "limits": "seed copy",
                "media_transport": "data URIs per the seed reference; not re-read on the current pages",
                "inputs.image": "the sandbox's kf2v figures; not re-read on the current page",
            },
        },
        "wan2.7-i2v": {
            "family": "media",
            # The zh examples also use the snapshot `wan2.7-i2v-2026-04-25`; the intl pages use `wan2.7-i2v`.
            "provider_names": {"beijing": "wan2.7-i2v", "singapore": "wan2.7-i2v"},
            "resolutions": ["720P", "1080P"],
            "default_resolution": "1080P",
            # Third-party figures (Beijing 0.6 / 1.0 CNY per second); Singapore is dearer (~0.734 / 1.101).
            "price_per_second": {"720P": "0.60", "1080P": "1.00"},
            "region_prices": {"singapore": {"720P": "0.733924", "1080P": "1.100886"}},
            # Audio and clips must be URLs. Beijing: the temporary upload's oss:// URLs. Singapore has no temporary
            # upload, so media must be public http(s) URLs there, which this bot cannot give (it hosts nothing
            # public): documented in Singapore, not offered there (`kf2v-bot check` says so).
            "media_transport": {"beijing": "temporary_upload", "singapore": "public_url"},
            "duration": {"min": 2, "max": 15, "default": 5},
            # Sound by default; the API reference documents no switch (an SDK sample sends an undocumented
            # `parameters.audio`), so "sound off" is not offered.
            "sound": {"makes_sound": True, "optional": False},
            "prompt_max_chars": 5000,
            "negative_prompt_max_chars": 500,
            "inputs": {
                "image": {
                    "formats": ["JPEG", "PNG", "BMP", "WEBP"],
                    "min_side": 240,
                    "max_side": 8000,
                    "max_aspect": 8,
                    "max_bytes": 20 * MB,
                    "alpha": False,
                },
                "audio": {"formats": ["wav", "mp3"], "min_seconds": 2, "max_seconds": 30, "max_bytes": 15 * MB},
                "clip": {
                    "formats": ["mp4", "mov"],
                    "min_seconds": 2,
                    "max_seconds": 10,
                    "min_side": 240,
                    "max_side": 4096,
                    "max_aspect": 8,
                    "max_bytes": 100 * MB,
                },
            },
            "media_combinations": [
                ["first_frame"],
                ["first_frame", "driving_audio"],
                ["first_frame", "last_frame"],
                ["first_frame", "last_frame", "driving_audio"],
                ["first_clip"],
                ["first_clip", "last_frame"],
            ],
            "template_combinations": [],
            "templates": [],
            # The extended video is the whole video (input clip included) and `duration` is its total length.
            "extends_clips": True,
            "free_seconds": 0,
            "limits": {
                "beijing": {"submit_rps": 2, "max_in_flight": 2},
                "singapore": {"submit_rps": 2, "max_in_flight": 2},
            },
            "sources": {
                "family": _WAN27_API,
                "provider_names": _src(_WAN27_API_EN),
                "resolutions": _src(_WAN27_GUIDE),
                "default_resolution": _WAN27_API,
                "duration": _src(_WAN27_GUIDE),
                "sound": _WAN27_API,
                "prompt_max_chars": _WAN27_API,
                "negative_prompt_max_chars": _WAN27_API,
                "inputs": _WAN27_API,
                "media_combinations": _WAN27_GUIDE,
                "extends_clips": _WAN27_GUIDE,
                "media_transport.beijing": _src(_TEMP_UPLOAD),
                "media_transport.singapore": _src(_TEMP_UPLOAD),
            },
            "unconfirmed": [
                "price_per_second",
                "region_prices.singapore",
                "free_seconds",
                "limits",
                "sound.optional",
            ],
            "notes": {
                "price_per_second": "third-party figures; the model-pricing page was not retrieved",
                "region_prices.singapore": "third-party figures",
                "free_seconds": "the guide says 'see model-pricing'; value not found (0 = none assumed)",
                "limits": "rate limits page not retrieved; conservative kf2v-like figures",
                "sound.optional": "no documented switch; only an SDK sample's `audio` flag",
            },
        },
    },
    "default_model": "wan2.2-kf2v-flash",
}


class CatalogError(ValueError):
    """The catalog data (default or override file) is inconsistent."""


# --- the JSON shape, validated (an override file gets field-by-field messages) -------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RawDuration(_Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)
    default: int

    @model_validator(mode="after")
    def _ordered(self) -> _RawDuration:
        if not self.min <= self.default <= self.max:
            raise ValueError("duration needs min <= default <= max")
        return self


class _RawSound(_Strict):
    makes_sound: bool = False
    optional: bool = False


class _RawImage(_Strict):
    formats: list[str] = Field(default_factory=lambda: ["JPEG", "PNG", "BMP", "WEBP"])
    min_side: int = Field(default=240, ge=1)
    max_side: int = Field(default=8000, ge=1)
    max_aspect: float | None = Field(default=None, gt=0)
    max_bytes: int = Field(default=10 * MB, ge=1)
    alpha: bool = True


class _RawTimed(_Strict):
    formats: list[str]
    min_seconds: float = Field(ge=0)
    max_seconds: float = Field(gt=0)
    max_bytes: int = Field(ge=1)
    min_side: int | None = None
    max_side: int | None = None
    max_aspect: float | None = None


class _RawInputs(_Strict):
    image: _RawImage = Field(default_factory=_RawImage)
    audio: _RawTimed | None = None
    clip: _RawTimed | None = None


class _RawSource(_Strict):
    url: str
    confirmed_on: date


class _RawLimits(_Strict):
    submit_rps: float = Field(gt=0)
    max_in_flight: int = Field(ge=1)


class _RawModel(_Strict):
    family: Family = "kf2v"
    provider_names: dict[str, str] = Field(min_length=1)
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    media_transport: dict[str, Transport] = Field(default_factory=dict)
    resolutions: list[str] = Field(min_length=1)
    default_resolution: str
    price_per_second: dict[str, Decimal]
    region_prices: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    duration: _RawDuration | None = None
    sound: _RawSound = Field(default_factory=_RawSound)
    prompt_max_chars: int | None = Field(default=None, ge=1)
    negative_prompt_max_chars: int = Field(default=500, ge=1)
    inputs: _RawInputs = Field(default_factory=_RawInputs)
    media_combinations: list[list[MediaType]] | None = None
    template_combinations: list[list[MediaType]] | None = None
    templates: list[str] = Field(default_factory=list)
    template_names: dict[str, str] = Field(default_factory=dict)
    template_regions: list[str] | None = None
    extends_clips: bool = False
    free_seconds: int = Field(default=0, ge=0)
    limits: dict[str, _RawLimits] = Field(default_factory=dict)
    sources: dict[str, str | _RawSource] = Field(default_factory=dict)
    unconfirmed: list[str] = Field(default_factory=list)
    notes: dict[str, str] = Field(default_factory=dict)

    @field_validator("family")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in FAMILIES:
            raise ValueError(f"unknown API family {name!r} (known: {', '.join(FAMILIES)})")
        return name


class _RawRegion(_Strict):
    base_url: str
    # Whether the provider's temporary upload works there; None: as documented, in Beijing only.
    temporary_uploads: bool | None = None
    sources: dict[str, str | _RawSource] = Field(default_factory=dict)


class _RawCatalog(_Strict):
    regions: dict[str, _RawRegion] = Field(min_length=1)
    models: dict[str, _RawModel] = Field(min_length=1)
    default_model: str | None = None


# --- what the rest of the bot uses ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """How hard one provider account may drive a model: submissions per second, tasks in flight."""

    submit_rps: float
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What a model accepts as a frame image: formats, side lengths, aspect ratio, size, alpha."""

    formats: tuple[str, ...]  # Pillow format names
    min_side: int
    max_side: int
    max_aspect: float | None  # longest / shortest side, None = not limited
    max_bytes: int
    alpha: bool  # False: images with an alpha channel are refused


@dataclass(frozen=True, slots=True)
class TimedMediaLimits:
    """Audio or clip inputs: file extensions, length in seconds, bytes (and sides for clips)."""

    formats: tuple[str, ...]
    min_seconds: float
    max_seconds: float
    max_bytes: int
    min_side: int | None = None
    max_side: int | None = None
    max_aspect: float | None = None


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Every input limit of a model: frames, and driving audio or a clip to continue where it takes them."""

    image: ImageLimits
    audio: TimedMediaLimits | None = None  # None: the model takes no driving audio
    clip: TimedMediaLimits | None = None  # None: the model continues no clip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as the bot offers it: provider names per region, tiers, durations, prices, limits, sources."""

    key: str
    provider_names: dict[str, str]
    resolutions: tuple[str, ...]
    default_resolution: str
    price_per_second_milli: dict[str, int]
    templates: tuple[str, ...]
    free_seconds: int
    limits: dict[str, ModelLimits]
    family: Family = "kf2v"
    duration_range: tuple[int, int] = (VIDEO_SECONDS, VIDEO_SECONDS)
    default_duration: int = VIDEO_SECONDS
    makes_sound: bool = False
    sound_optional: bool = False
    prompt_max_chars: int = 800
    negative_prompt_max_chars: int = 500
    inputs: InputLimits = field(
        default_factory=lambda: InputLimits(ImageLimits(("JPEG", "PNG", "BMP", "WEBP"), 240, 8000, None, 10 * MB, True))
    )
    media_combinations: tuple[frozenset[str], ...] = (frozenset({"first_frame", "last_frame"}),)
    template_combinations: tuple[frozenset[str], ...] = ()
    template_names: dict[str, str] = field(default_factory=dict)
    template_regions: tuple[str, ...] | None = None  # None: wherever the model is offered
    extends_clips: bool = False
    region_price_per_second_milli: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # value path -> URL of the page that states it
    confirmed_on: dict[str, date] = field(default_factory=dict)  # value path -> the day it was read there
    unconfirmed: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # region -> other names it answers with
    media_transport: dict[str, str] = field(default_factory=dict)  # region -> how its API takes the media

    @property
    def fixed_duration(self) -> bool:
        """True when the model takes one length only: /kf2v has no duration to choose."""
        return self.duration_range[0] == self.duration_range[1]

    def allows_duration(self, seconds: int) -> bool:
        """Whether `seconds` lies in the model's range, both ends included."""
        return self.duration_range[0] <= seconds <= self.duration_range[1]

    def describe_durations(self) -> str:
        """'5 s' or '2-15 s': for messages naming the model's range."""
        low, high = self.duration_range
        return f"{low} s" if low == high else f"{low}-{high} s"

    def cost_milli(self, resolution: str, seconds: float = VIDEO_SECONDS, region: str | None = None) -> int:
        """Cost of `seconds` of output at `resolution`, rounded up to a whole milli-yuan.

        `region` picks a regional price when the catalog has one (`region_prices`), else the model's price.
        """
        prices = self.region_price_per_second_milli.get(region or "", self.price_per_second_milli)
        per_second = prices[resolution]
        return int((Decimal(per_second) * Decimal(str(seconds))).to_integral_value(rounding="ROUND_CEILING"))

    def names_in(self, region: str) -> tuple[str, ...]:
        """The provider names of this model in `region`: the one sent first, then the aliases it recognises."""
        sent = self.provider_names.get(region)
        return () if sent is None else (sent, *self.aliases.get(region, ()))

    def price_path(self, region: str) -> str:
        """The catalog value path of the model's price in `region` (for provenance)."""
        return f"region_prices.{region}" if region in self.region_price_per_second_milli else "price_per_second"

    def region_value_paths(self, region: str) -> tuple[str, ...]:
        """The per-region values the bot relies on in `region`: name, aliases, price, limits, media transport."""
        paths = [f"provider_names.{region}", self.price_path(region), f"limits.{region}", f"media_transport.{region}"]
        if self.aliases.get(region):
            paths.insert(1, f"aliases.{region}")
        return tuple(paths)

    def provenance(self, path: str) -> tuple[str, date] | None:
        """(URL, confirmed on) of the dated source covering `path` (itself or a parent path); None if none."""
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            prefix = ".".join(parts[:end])
            if prefix in self.confirmed_on:
                return self.sources[prefix], self.confirmed_on[prefix]
        return None

    def is_unconfirmed(self, path: str) -> bool:
        """Whether `path` (itself or a parent path) is in the model's `unconfirmed` list."""
        parts = path.split(".")
        return any(".".join(parts[:end]) in self.unconfirmed for end in range(len(parts), 0, -1))

    def templates_in(self, region: str) -> tuple[str, ...]:
        """The model's templates usable in `region`; empty where the provider offers none there."""
        if self.template_regions is not None and region not in self.template_regions:
            return ()
        return self.templates


@dataclass(frozen=True, slots=True)
class Catalog:
    """The models the bot runs with (built in, or `KF2V_CATALOG_FILE`) and each region's API base URL."""

    models: dict[str, ModelSpec]
    region_base_urls: dict[str, str]
    default_model: str
    region_uploads: dict[str, bool] = field(default_factory=dict)  # region -> the temporary upload works there

    def model(self, key: str) -> ModelSpec:
        """The spec for catalog key `key`; `CatalogError` when the catalog has no such model."""
        try:
            return self.models[key]
        except KeyError:
            raise CatalogError(f"unknown model {key!r}") from None

    def models_in(self, region: str) -> list[ModelSpec]:
        """The models offered in `region` (documented there and sendable by this bot), in catalog order."""
        return [m for m in self.models.values() if self.why_not_offered(m.key, region) is None]

    def offers(self, key: str, region: str) -> bool:
        """Whether model `key` is offered in `region` (False for an unknown model)."""
        return key in self.models and self.why_not_offered(key, region) is None

    def why_not_offered(self, key: str, region: str) -> str | None:
        """None when the model is offered in `region`, else why not (for `kf2v-bot check` and refusals)."""
        spec = self.model(key)
        if region not in spec.provider_names:
            return f"not documented in {region}"
        transport = spec.media_transport[region]
        if transport == "temporary_upload" and not self.region_uploads.get(region, False):
            return f"its media need the temporary upload, which {region} does not have"
        if transport not in family_named(spec.family).sendable_transports:
            if transport == "public_url":
                return (
                    f"{region}'s API takes its media as public http(s) URLs only (no temporary upload there), "
                    "and this bot hosts nothing public"
                )
            return f"{region}'s API takes its media as {transport}, which this bot does not send ({spec.family} family)"
        return None

    def not_offered(self, region: str) -> list[tuple[str, str]]:
        """(model key, why) for each model documented in `region` but not offered there."""
        return [
            (m.key, why)
            for m in self.models.values()
            if region in m.provider_names and (why := self.why_not_offered(m.key, region)) is not None
        ]

    def recognised_names(self, key: str, region: str) -> frozenset[str]:
        """Every provider name a task of model `key` may carry in `region`'s answers and task list."""
        return frozenset(self.model(key).names_in(region))

    def provider_name(self, key: str, region: str) -> str:
        """The name the provider knows `key` by in `region`; `CatalogError` if unknown or not offered there."""
        spec = self.model(key)
        try:
            return spec.provider_names[region]
        except KeyError:
            raise CatalogError(f"model {key!r} is not offered in region {region!r}") from None

    def key_for_provider_name(self, provider_name: str, region: str | None = None) -> str | None:
        """The catalog key of a provider model name or alias (in `region`, or any); None for an unknown name."""
        for spec in self.models.values():
            regions = [region] if region is not None else list(spec.provider_names)
            if any(provider_name in spec.names_in(r) for r in regions):
                return spec.key
        return None

    def region_for_base_url(self, base_url: str) -> str | None:
        """The region whose API base URL this is (a trailing slash ignored); None for a custom URL."""
        wanted = base_url.rstrip("/")
        for region, url in self.region_base_urls.items():
            if url.rstrip("/") == wanted:
                return region
        return None

    def limits(self, key: str, region: str) -> ModelLimits:
        """The model's limits in `region`, else its first region's (a region the catalog has no numbers for)."""
        spec = self.model(key)
        return spec.limits.get(region) or next(iter(spec.limits.values()))

    def unconfirmed(self, region: str | None = None) -> list[str]:
        """Every value no official source confirmed: "<model>.<value path>: <why>" (for `kf2v-bot check`).

        With `region`: only the models offered there, without values about other regions.
        """
        others = set(self.region_base_urls) - {region} if region is not None else set()
        lines = []
        for spec in self.models_in(region) if region is not None else self.models.values():
            for path in spec.unconfirmed:
                about = path.split(".")
                unused_here = region is not None and (
                    (about[0] == "templates" and not spec.templates_in(region))  # no effects in this region
                    or (about[0] == "price_per_second" and spec.price_path(region) != "price_per_second")
                )
                if others & set(about) or unused_here:
                    continue
                why = spec.notes.get(path)
                lines.append(f"{spec.key}.{path}" + (f": {why}" if why else ""))
        return lines

    def undocumented_region_values(self, region: str) -> list[str]:
        """Per-region values of models offered in `region` with neither a dated source nor an `unconfirmed`
        entry: none in a catalog that keeps its word (a test holds the built-in one to it)."""
        return [
            f"{spec.key}.{path}"
            for spec in self.models_in(region)
            for path in spec.region_value_paths(region)
            if spec.provenance(path) is None and not spec.is_unconfirmed(path)
        ]


def _to_milli(value: Decimal | str | int | float) -> int:
    return int((Decimal(str(value)) * MILLI_PER_CNY).to_integral_value(rounding="ROUND_CEILING"))


def _timed(raw: _RawTimed | None) -> TimedMediaLimits | None:
    if raw is None:
        return None
    return TimedMediaLimits(
        formats=tuple(f.lower() for f in raw.formats),
        min_seconds=raw.min_seconds,
        max_seconds=raw.max_seconds,
        max_bytes=raw.max_bytes,
        min_side=raw.min_side,
        max_side=raw.max_side,
        max_aspect=raw.max_aspect,
    )


def _spec(key: str, raw: _RawModel) -> ModelSpec:
    resolutions = tuple(raw.resolutions)
    prices = {res: _to_milli(p) for res, p in raw.price_per_second.items()}
    missing = [r for r in resolutions if r not in prices]
    if missing:
        raise CatalogError(f"model {key!r} has no price for {', '.join(missing)}")
    if raw.default_resolution not in resolutions:
        raise CatalogError(f"model {key!r}: default resolution is not one of its resolutions")
    region_prices = {region: {r: _to_milli(p) for r, p in table.items()} for region, table in raw.region_prices.items()}
    for region, table in region_prices.items():
        if missing := [r for r in resolutions if r not in table]:
            raise CatalogError(f"model {key!r}: region_prices.{region} has no price for {', '.join(missing)}")
    duration = raw.duration or _RawDuration(min=VIDEO_SECONDS, max=VIDEO_SECONDS, default=VIDEO_SECONDS)
    family = family_named(raw.family)
    combos = tuple(frozenset(c) for c in (raw.media_combinations or family.default_combinations))
    template_combos = tuple(frozenset(c) for c in (raw.template_combinations or []))
    if problem := family.catalog_problem(ModelShape((duration.min, duration.max), combos, template_combos)):
        raise CatalogError(f"model {key!r}: {problem}")
    inputs = InputLimits(
        image=ImageLimits(
            formats=tuple(f.upper() for f in raw.inputs.image.formats),
            min_side=raw.inputs.image.min_side,
            max_side=raw.inputs.image.max_side,
            max_aspect=raw.inputs.image.max_aspect,
            max_bytes=raw.inputs.image.max_bytes,
            alpha=raw.inputs.image.alpha,
        ),
        audio=_timed(raw.inputs.audio),
        clip=_timed(raw.inputs.clip),
    )
    uses = {t for c in (*combos, *template_combos) for t in c}
    if "driving_audio" in uses and inputs.audio is None:
        raise CatalogError(f"model {key!r}: driving_audio is accepted but inputs.audio is missing")
    if "first_clip" in uses and inputs.clip is None:
        raise CatalogError(f"model {key!r}: first_clip is accepted but inputs.clip is missing")
    if raw.templates and not template_combos:
        raise CatalogError(f"model {key!r}: templates need template_combinations")
    if stray := [r for r in raw.aliases if r not in raw.provider_names]:
        raise CatalogError(f"model {key!r}: aliases for region(s) it has no name in: {', '.join(stray)}")
    transports: dict[str, str] = {r: raw.media_transport.get(r, family.default_transport) for r in raw.provider_names}
    sources = {path: s if isinstance(s, str) else s.url for path, s in raw.sources.items()}
    confirmed = {path: s.confirmed_on for path, s in raw.sources.items() if isinstance(s, _RawSource)}
    return ModelSpec(
        key=key,
        provider_names=dict(raw.provider_names),
        resolutions=resolutions,
        default_resolution=raw.default_resolution,
        price_per_second_milli=prices,
        templates=tuple(raw.templates),
        free_seconds=raw.free_seconds,
        limits={region: ModelLimits(lim.submit_rps, lim.max_in_flight) for region, lim in raw.limits.items()}
        or {"beijing": ModelLimits(2, 2)},
        family=raw.family,
        duration_range=(duration.min, duration.max),
        default_duration=duration.default,
        makes_sound=raw.sound.makes_sound,
        sound_optional=raw.sound.optional,
        prompt_max_chars=raw.prompt_max_chars or family.default_prompt_max_chars,
        negative_prompt_max_chars=raw.negative_prompt_max_chars,
        inputs=inputs,
        media_combinations=combos,
        template_combinations=template_combos,
        template_names=dict(raw.template_names),
        template_regions=tuple(raw.template_regions) if raw.template_regions is not None else None,
        extends_clips=raw.extends_clips or any("first_clip" in c for c in combos),
        region_price_per_second_milli=region_prices,
        sources=sources,
        confirmed_on=confirmed,
        unconfirmed=tuple(raw.unconfirmed),
        notes=dict(raw.notes),
        aliases={region: tuple(names) for region, names in raw.aliases.items()},
        media_transport=transports,
    )


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:8]:
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def parse_catalog(data: dict[str, Any]) -> Catalog:
    """Validate the JSON shape (unknown fields refused, every problem named by its path) and build the catalog."""
    try:
        raw = _RawCatalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"catalog is invalid: {_validation_message(exc)}") from None
    models = {key: _spec(key, model) for key, model in raw.models.items()}
    regions = {name: r.base_url for name, r in raw.regions.items()}
    uploads = {
        name: r.temporary_uploads if r.temporary_uploads is not None else name == "beijing"
        for name, r in raw.regions.items()
    }
    for spec in models.values():
        if unknown := [r for r in spec.provider_names if r not in regions]:
            raise CatalogError(f"model {spec.key!r} names unknown region(s) {', '.join(unknown)}")
    for region in regions:  # one name means one model: answers and list rows are matched by name
        owners: dict[str, str] = {}
        for spec in models.values():
            for name in spec.names_in(region):
                if owners.setdefault(name, spec.key) != spec.key:
                    raise CatalogError(f"{region}: {name!r} names both {owners[name]!r} and {spec.key!r}")
    default_model = raw.default_model or next(iter(models))
    if default_model not in models:
        raise CatalogError(f"default model {default_model!r} is not in the catalog")
    return Catalog(models=models, region_base_urls=regions, default_model=default_model, region_uploads=uploads)


def load_catalog(path: Path | None = None) -> Catalog:
    """The built-in catalog, or the override file when one is given."""
    if path is None:
        return parse_catalog(DEFAULT_CATALOG)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"catalog file {path} must hold a JSON object")
    return parse_catalog(data)


def format_cny(milli: int) -> str:
    """1234 -> '1.23' (display only; rounds half up to the fen)."""
    return str((Decimal(milli) / MILLI_PER_CNY).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP"))
