"""A local DashScope keyframe-to-video service that behaves as Alibaba documents it, not as our client expects.

What it reproduces (condensed in the project's provider doc; sources cited next to each value):

* the four routes under `/api/v1` — create (`X-DashScope-Async: enable` required), poll, cancel, list — with
  the provider's answer shapes, error bodies `{request_id, code, message}` and status codes;
* the provider's input checks (model, resolution, images decoded with Pillow: format, bytes, sides), and
  its silent truncation of long prompts (counted in `truncated_prompts`: the bot must refuse them itself);
* main accounts: several API keys may belong to one account (`accounts`); the limits — at most
  `max_in_flight` tasks PENDING/RUNNING and `submit_rps` create attempts per sliding second — are per main
  account and model, shared by all its keys; poll, cancel and the task list see every task of the account;
* what happens past the concurrency limit: 429 (`over_limit="reject"`) or accepted and held PENDING until a
  slot frees (`over_limit="hold"`), since reports differ;
* the task list as documented: at most 24 hours per query, rows with `api_key_id`, `caller_uid`, `region`;
* a neighbour (`neighbour_rate`): another key of the same account creating tasks of the same models;
* a task lifecycle on a monotonic clock (PENDING -> RUNNING -> SUCCEEDED/FAILED), with provider durations
  divided by `time_scale`; videos are real H.264 mp4s rendered on first download, behind signed-looking URLs;
* injected faults: 5xx, 429, latency, dropped connections, broken JSON (`faults`), and the provider's less
  polite truths: lost create answers, malformed 200 polls, absurd bills, a `video_url` on a foreign host
  (a trap listener counts what reaches it), slow uploads; requests of a route held unanswered until a test
  releases them (`hold`).

Everything it sees is counted in `stats()` / `GET /_sandbox/stats`. Keys are never stored: a key is
named by `fingerprint(key)` ("acct-" + 8 hex of sha256), the same id the client logs.

It keeps its own copy of the model list (derived from `bot.catalog.DEFAULT_CATALOG`: the names documented in its
region, aliases included) and does not import the client, so a bug in one is not mirrored by the other.

Regions: `region` is what its list rows say ("cn-beijing" or "ap-southeast-1", Singapore). Each serves only the
models documented there, and the temporary upload (/uploads, oss:// URLs) only in Beijing: "This feature is
available only in the China (Beijing) region" (https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url).
What Singapore answers instead is unconfirmed: here a 400 InvalidParameter for the policy and InvalidURL for an
oss:// URL in a create.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import copy
import hashlib
import hmac
import io
import json
import logging
import math
import random
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from aiohttp import web
from PIL import Image, ImageOps, UnidentifiedImageError

from bot.catalog import DEFAULT_CATALOG

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CREATE_PATH = API_PREFIX + "/services/aigc/image2video/video-synthesis"
# wan2.7's path: https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference
MEDIA_CREATE_PATH = API_PREFIX + "/services/aigc/video-generation/video-synthesis"
# Temporary uploads: https://help.aliyun.com/zh/model-studio/get-temporary-file-url
UPLOADS_PATH = API_PREFIX + "/uploads"
OSS_UPLOAD_PATH = "/_sandbox/oss"  # the emulator's own upload_host (an origin the client accepts: its base)
OSS_BUCKET = "dashscope-instant"
OSS_HEADER = "X-DashScope-OssResourceResolve"
UPLOAD_TTL_S = 48 * 3600.0  # files are deleted 48 h after upload
UPLOAD_POLICY_TTL_S = 300  # the doc's example expire_in_seconds
UPLOAD_MAX_FILE_MB = 100  # the doc's example max_file_size_mb
UPLOAD_QPS = 100  # per main account and model, cannot be raised (current zh page)
UPLOAD_STORE_MAX_BYTES = 512 * 1024 * 1024  # the sandbox's own memory bound, not a provider figure
MEDIA_TYPES = ("first_frame", "last_frame", "driving_audio", "first_clip")
VIDEO_PREFIX = "/_sandbox/videos/"
ROUTES = ("create", "get", "cancel", "list", "video", "upload_policy", "upload")
API_ROUTES = frozenset({"create", "get", "cancel", "list"})
# Times the provider writes ("YYYY-MM-DD HH:mm:ss.SSS" in answers) and reads (the list's start_time/end_time,
# "YYYYMMDDhhmmss", the format in the official SDK's VideoSynthesis.list docstring) are Beijing time, UTC+8, in
# both regions. The answers' samples in the kf2v API reference (seed-kf2v-api-zh.txt) and
# https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks are consistent with it; no page
# we could reach states the zone of the list's bounds in words: unconfirmed.
PROVIDER_TZ = timezone(timedelta(hours=8))
# "Query task list": a start_time..end_time range over 24 hours is refused with 400 InvalidParameter
# (https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks, as condensed in the project's
# provider doc). Without bounds the emulator lists the last 24 hours (the default is unconfirmed).
LIST_WINDOW_MAX_S = 24 * 3600
LIST_PAGE_SIZE_MAX = 100  # unconfirmed: the docs give the default (10), not the maximum
TASK_STATUSES = ("PENDING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
MALFORMED_POLL_KINDS = ("no_output", "null_output", "no_status", "unknown_status", "wrong_types")
ABSURD_BILLS = {"huge": 1_000_000, "infinity": math.inf, "nan": math.nan, "negative": -5}
OVER_LIMIT_MODES = ("reject", "hold")
TRAP_MARK = "{trap}"  # in foreign_video_url: replaced by the origin of the emulator's trap listener
PROMPT_MAX = 800
NEGATIVE_PROMPT_MAX = 500
SEED_MAX = 2_147_483_647
IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}
IMAGE_MIMES = {"image/jpeg", "image/jpg", "image/png", "image/bmp", "image/webp"}
_DATA_URI = re.compile(r"data:([^;,]*);base64,(.*)", re.DOTALL)
_RENDER_CACHE = 16
_ARRIVED = web.RequestKey("arrived", float)  # emulator clock when the request's headers arrived
MAX_BODY_BYTES = 64 * 1024 * 1024
# The region names list rows carry (the official SDK's `region` filter), and the catalog's name for each.
CATALOG_REGIONS = {"cn-beijing": "beijing", "ap-southeast-1": "singapore"}
UPLOAD_REGIONS = frozenset({"cn-beijing"})  # the temporary upload: Beijing only (see the module docstring)
QUERY_QPS = 20  # task queries per second per main account (polls and task-list pages together)


def fingerprint(api_key: str) -> str:
    return "acct-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


# --- configuration -------------------------------------------------------------------------------------


@dataclass
class FaultConfig:
    """Injected trouble. Rates are shares of requests in 0..1; all off by default.

    error: 500 InternalError or 503 ModelServingError, before any processing (no task is created).
    throttle: 429 Throttling, before processing (a fault, not a limit violation).
    latency_s: added before answering. drop: the connection is closed without an answer AFTER processing
    (a create's task exists: the outcome is really unknown to the caller). malformed: 200 with broken JSON,
    also after processing. `routes`: None = the four API routes; name "video" to disturb downloads too
    (only latency, error and drop apply there; a dropped download is cut off mid-body).
    """

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_s: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    routes: frozenset[str] | None = None

    def applies(self, route: str) -> bool:
        return route in (self.routes if self.routes is not None else API_ROUTES)


@dataclass
class EmulatorConfig:
    """Knobs of the emulator; provider durations (pending, running, TTL) are divided by `time_scale`.

    Main accounts: `accounts` maps API keys to a main-account name; other keys belong to `default_account`
    when set, else each key is its own account (named by its fingerprint). Limits are per account and model.

    The provider's less polite truths, all off by default:
    over_limit: past the in-flight limit, "reject" (429 Throttling.RateQuota) or "hold" (accepted, held
      PENDING until a slot of the account frees, first come first served).
    neighbour_rate: tasks per second another key of each known account creates, of the models that account
      used (Poisson arrivals; they take the account's slots and burst budget like anyone's).
    lose_create_answer_rate: share of successful creates whose answer is lost (connection dropped after the
      task was created).
    malformed_poll_rate: share of polls answered 200 with an unreadable body, of the `malformed_poll_kinds`
      (None = all of MALFORMED_POLL_KINDS).
    absurd_billing: SUCCEEDED answers bill `usage.video_duration` of "huge" (1000000), "infinity" (the bare
      JSON token Infinity), "nan" or "negative" (-5).
    foreign_video_url: SUCCEEDED answers point `video_url` there; "{trap}" in it is replaced by the origin
      of the trap listener, which counts every request it gets (`foreign_requests` in stats).
      With foreign_video_redirect, video_url stays on the emulator, which answers it 302 -> that URL.
    upload_bytes_per_s: create bodies are read at this rate, so a 20 MB create outlasts the caller's timeout.
      A caller that gives up and resets the connection (aiohttp does) cuts the upload: no task, counted in
      `uploads_cut`. One that closes gracefully still delivers what it sent: the task is then created and
      its answer goes nowhere, as on a real slow link.
    """

    api_key: str | None = field(default=None, repr=False)  # None: any non-empty Bearer key is an account
    time_scale: float = 1.0
    pending_s: tuple[float, float] = (0.2, 1.0)
    running_s: tuple[float, float] = (1.0, 3.0)
    max_in_flight: int = 2
    submit_rps: float = 2.0
    # Per provider model name: (max_in_flight, submit_rps), overriding the two above (e.g. Singapore's 1/s).
    model_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    fail_word: str = "FAIL_CONTENT"
    reject_word: str = "REJECT_CONTENT"
    task_ttl_s: float = 86_400.0
    seed: int | None = None
    # Pad served videos with an mp4 `free` box up to this size, so a benchmark can download ~8 MB files.
    video_min_bytes: int = 0
    image_max_bytes: int = 10 * 1024 * 1024
    image_min_side: int = 240
    image_max_side: int = 8000
    faults: FaultConfig = field(default_factory=FaultConfig)
    accounts: dict[str, str] = field(default_factory=dict, repr=False)  # API key -> main-account name
    default_account: str | None = None
    region: str = "cn-beijing"
    over_limit: str = "reject"
    neighbour_rate: float = 0.0
    lose_create_answer_rate: float = 0.0
    malformed_poll_rate: float = 0.0
    malformed_poll_kinds: tuple[str, ...] | None = None
    absurd_billing: str | None = None
    foreign_video_url: str | None = None
    foreign_video_redirect: bool = False
    upload_bytes_per_s: float | None = None
    # Names move (issue 18): the name a task of model X is shown under in task-list rows, e.g.
    # {"wan2.1-kf2v-plus": "wanx2.1-kf2v-plus"}; a `model_name` filter matches the shown name only.
    listed_model_names: dict[str, str] = field(default_factory=dict)
    # Task queries (polls and list pages) per main account and sliding second, past which a 429 Throttling
    # answers. The provider allows 20 (QUERY_QPS, the project's provider notes: "all RAM users together; list
    # calls count"); None = not enforced (time-compressed runs poll faster than a real second allows).
    query_qps: float | None = None

    @classmethod
    def realistic(cls, **overrides: Any) -> EmulatorConfig:
        """The provider's observed timings: up to 2.5 min queued, 4-6 min running."""
        values: dict[str, Any] = {"pending_s": (0.0, 150.0), "running_s": (240.0, 360.0)}
        values.update(overrides)
        return cls(**values)

    def limits_for(self, model: str) -> tuple[int, float]:
        return self.model_limits.get(model, (self.max_in_flight, self.submit_rps))

    def account_of(self, api_key: str) -> str:
        """The main account a key belongs to."""
        named = self.accounts.get(api_key)
        if named is not None:
            return named
        return self.default_account if self.default_account is not None else fingerprint(api_key)

    def public(self) -> dict[str, Any]:
        """JSON view without any key (only fingerprints)."""
        data = asdict(self)
        data.pop("api_key")
        data["fixed_api_key"] = fingerprint(self.api_key) if self.api_key else None
        data["accounts"] = {fingerprint(key): name for key, name in self.accounts.items()}
        routes = self.faults.routes
        data["faults"]["routes"] = sorted(routes) if routes is not None else None
        if self.malformed_poll_kinds is not None:
            data["malformed_poll_kinds"] = list(self.malformed_poll_kinds)
        return data


def _check_config(cfg: EmulatorConfig) -> None:
    if cfg.query_qps is not None and not cfg.query_qps > 0:
        raise ValueError("query_qps must be positive (or None)")
    if cfg.region not in CATALOG_REGIONS:
        raise ValueError(f"region must be one of {', '.join(CATALOG_REGIONS)}")
    if not cfg.time_scale > 0:
        raise ValueError("time_scale must be positive")
    for name in ("pending_s", "running_s"):
        low, high = getattr(cfg, name)
        if not 0 <= low <= high:
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
    if cfg.max_in_flight < 1 or not cfg.submit_rps > 0:
        raise ValueError("max_in_flight must be >= 1 and submit_rps > 0")
    for model, (slots, rps) in cfg.model_limits.items():
        if slots < 1 or not rps > 0:
            raise ValueError(f"model_limits[{model!r}] must be (slots >= 1, rps > 0)")
    if not cfg.task_ttl_s > 0 or cfg.video_min_bytes < 0:
        raise ValueError("task_ttl_s must be positive and video_min_bytes >= 0")
    f = cfg.faults
    for name in ("error_rate", "throttle_rate", "drop_rate", "malformed_rate"):
        if not 0 <= getattr(f, name) <= 1:
            raise ValueError(f"faults.{name} must be within 0..1")
    if f.latency_s < 0:
        raise ValueError("faults.latency_s must be >= 0")
    if f.routes is not None and not f.routes <= set(ROUTES):
        raise ValueError(f"faults.routes must be a subset of {', '.join(ROUTES)}")
    for name in ("lose_create_answer_rate", "malformed_poll_rate"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be within 0..1")
    if not (cfg.neighbour_rate >= 0 and math.isfinite(cfg.neighbour_rate)):
        raise ValueError("neighbour_rate must be a finite number >= 0")
    if cfg.over_limit not in OVER_LIMIT_MODES:
        raise ValueError(f"over_limit must be one of {', '.join(OVER_LIMIT_MODES)}")
    if cfg.absurd_billing is not None and cfg.absurd_billing not in ABSURD_BILLS:
        raise ValueError(f"absurd_billing must be None or one of {', '.join(ABSURD_BILLS)}")
    kinds = cfg.malformed_poll_kinds
    if kinds is not None and (not kinds or not set(kinds) <= set(MALFORMED_POLL_KINDS)):
        raise ValueError(f"malformed_poll_kinds must be a non-empty subset of {', '.join(MALFORMED_POLL_KINDS)}")
    if cfg.upload_bytes_per_s is not None and not cfg.upload_bytes_per_s > 0:
        raise ValueError("upload_bytes_per_s must be positive (or None)")
    if cfg.foreign_video_url is not None and not cfg.foreign_video_url.startswith(("http://", "https://", TRAP_MARK)):
        raise ValueError("foreign_video_url must be an http(s) URL, or start with {trap}")
    if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in cfg.accounts.items()):
        raise ValueError("accounts must map non-empty API keys to non-empty account names")


def _coerce(name: str, value: Any) -> Any:
    """JSON values (lists) into the dataclass field types (tuples, frozensets)."""
    if name in ("pending_s", "running_s") and value is not None:
        low, high = value
        return (float(low), float(high))
    if name == "routes" and value is not None:
        return frozenset(str(v) for v in value)
    if name == "model_limits" and value is not None:
        return {str(k): (int(v[0]), float(v[1])) for k, v in dict(value).items()}
    if name in ("accounts", "listed_model_names") and value is not None:
        return {str(k): str(v) for k, v in dict(value).items()}
    if name == "malformed_poll_kinds" and value is not None:
        return tuple(str(v) for v in value)
    if name in ("neighbour_rate", "lose_create_answer_rate", "malformed_poll_rate") and value is not None:
        return float(value)
    if name == "upload_bytes_per_s" and value is not None:
        return float(value)
    return value


# --- the model list (own copy) -------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatedModel:
    name: str
    resolutions: tuple[str, ...]
    default_resolution: str
    templates: tuple[str, ...]
    usage_sr: bool  # wan2.2 reports SR (480/720/1080); the 2.1 plus model reports video_ratio "standard"
    family: str = "kf2v"  # "kf2v": image2video path, *_frame_url; "media": video-generation path, input.media
    durations: tuple[int, int] = (5, 5)
    default_duration: int = 5
    combinations: tuple[frozenset[str], ...] = ()
    prompt_max: int = PROMPT_MAX
    negative_prompt_max: int = NEGATIVE_PROMPT_MAX
    inputs: dict[str, Any] = field(default_factory=dict)  # the catalog's "inputs" (image/audio/clip limits)


def emulated_models(catalog: dict[str, Any] | None = None, region: str = "beijing") -> dict[str, EmulatedModel]:
    """The models served in `region` (a catalog region name), by every name they are documented under there."""
    data = copy.deepcopy(catalog if catalog is not None else DEFAULT_CATALOG)
    models: dict[str, EmulatedModel] = {}
    for key, raw in data["models"].items():
        duration = raw.get("duration") or {"min": 5, "max": 5, "default": 5}
        sent = raw["provider_names"].get(region)
        names = [sent, *raw.get("aliases", {}).get(region, [])] if sent is not None else []
        for name in names:
            models[name] = EmulatedModel(
                name=name,
                resolutions=tuple(raw["resolutions"]),
                default_resolution=raw["default_resolution"],
                templates=tuple(raw.get("templates", ())),
                usage_sr="2.1" not in key,
                family=raw.get("family", "kf2v"),
                durations=(int(duration["min"]), int(duration["max"])),
                default_duration=int(duration["default"]),
                combinations=tuple(frozenset(c) for c in raw.get("media_combinations", ())),
                prompt_max=int(raw.get("prompt_max_chars", PROMPT_MAX)),
                negative_prompt_max=int(raw.get("negative_prompt_max_chars", NEGATIVE_PROMPT_MAX)),
                inputs=dict(raw.get("inputs", {})),
            )
    return models


# --- tasks ---------------------------------------------------------------------------------------------


@dataclass
class _Image:
    """An input frame: decoded bytes (data URI) or a URL the emulator did not fetch."""

    data: bytes | None = None
    url: str | None = None

    def digest(self) -> str:
        raw = self.data if self.data is not None else (self.url or "").encode()
        return hashlib.sha256(raw).hexdigest()


@dataclass
class _Task:
    task_id: str
    account: str  # the main account: every key of it sees the task and shares its limits
    key_id: str  # fingerprint of the key that created it
    api_key_id: str  # what the list shows for that key
    neighbour: bool  # created by the emulated neighbour, not by a caller
    model: EmulatedModel
    request_id: str
    created: float  # emulator clock (monotonic) seconds
    created_wall: float  # epoch seconds
    pending: float  # real seconds (already divided by time_scale)
    running: float
    fails: bool
    resolution: str
    prompt: str | None
    actual_prompt: str | None
    template: str | None
    first: _Image
    last: _Image | None
    family: str = "kf2v"
    duration: int = 5  # seconds of output (a continued clip's included)
    audio: bytes | None = None  # driving audio (an uploaded file), else a tone is rendered
    clip: bytes | None = None  # first_clip (an uploaded file): the result starts with it
    clip_seconds: float = 0.0
    start_at: float | None = None  # None: held PENDING until the account has a free slot
    canceled_at: float | None = None
    polls: int = 0
    polls_after_finished: int = 0
    billed_seconds: float | None = None  # the `usage` seconds last answered for it (SUCCEEDED)

    @property
    def ready(self) -> float:
        return self.created + self.pending

    @property
    def started(self) -> float:
        return self.start_at if self.start_at is not None else math.inf

    @property
    def finished(self) -> float:
        return self.canceled_at if self.canceled_at is not None else self.started + self.running

    def status(self, now: float) -> str:
        if self.canceled_at is not None and now >= self.canceled_at:
            return "CANCELED"
        if now < self.started:
            return "PENDING"
        if now < self.finished:
            return "RUNNING"
        return "FAILED" if self.fails else "SUCCEEDED"

    def occupies(self, moment: float) -> bool:
        """Running at `moment` (a held or canceled task holds no running slot)."""
        return self.canceled_at is None and self.started <= moment < self.finished

    def wall(self, moment: float) -> float:
        return self.created_wall + (moment - self.created)


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _provider_time(epoch: float) -> str:
    local = datetime.fromtimestamp(epoch, PROVIDER_TZ)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def _parse_list_time(value: str | None, name: str) -> float | None:
    """The list endpoint's window bound: "YYYYMMDDhhmmss" (the SDK's format) or "YYYY-MM-DD HH:mm:ss", UTC+8."""
    if value is None or value == "":
        return None
    for fmt in ("%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=PROVIDER_TZ).timestamp()
        except ValueError:
            continue
    raise _ApiError(400, "InvalidParameter", f"{name} must look like 20230420000000.")


def _extend_prompt(prompt: str) -> str:
    # prompt_extend: the provider rewrites the prompt with added detail; any added description will do here.
    if re.search(r"[\u4e00-\u9fff]", prompt):
        return prompt + "画面细腻,光线自然柔和,镜头运动平稳流畅。"
    return prompt + " Fine detail, soft natural light, smooth and steady camera motion."


def _inspect_image(value: str, name: str, cfg: EmulatorConfig, limits: dict[str, Any] | None = None) -> _Image:
    """The provider's image checks. Runs in a thread: decoding a 10 MB image takes a while."""
    if value.startswith(("http://", "https://")):
        return _Image(url=value)
    match = _DATA_URI.fullmatch(value) if value.startswith("data:") else None
    if match is None:
        raise _ApiError(400, "InvalidURL", f"The {name} is neither an http(s) URL nor a base64 data URI.")
    mime, payload = match.group(1).lower(), match.group(2)
    if mime not in IMAGE_MIMES:
        raise _ApiError(400, "InvalidImageFormat", f"The {name} has an unsupported image type.")
    if len(payload) * 3 // 4 > cfg.image_max_bytes + 3:
        raise _ApiError(400, "InvalidFile.Size", f"The image of {name} exceeds {cfg.image_max_bytes} bytes.")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _ApiError(400, "InvalidParameter.DataUri", f"The data URI of {name} is not valid base64.") from None
    if limits is not None:  # the model's own limits (wan2.7: 20 MB, 1:8-8:1, no alpha)
        return _check_image_bytes(
            raw,
            name,
            int(limits.get("max_bytes", cfg.image_max_bytes)),
            int(limits.get("min_side", cfg.image_min_side)),
            int(limits.get("max_side", cfg.image_max_side)),
            limits.get("max_aspect"),
            bool(limits.get("alpha", True)),
        )
    return _check_image_bytes(raw, name, cfg.image_max_bytes, cfg.image_min_side, cfg.image_max_side, None)


def _check_image_bytes(
    raw: bytes, name: str, max_bytes: int, low: int, high: int, max_aspect: float | None, alpha: bool = True
) -> _Image:
    if len(raw) > max_bytes:
        raise _ApiError(400, "InvalidFile.Size", f"The image of {name} exceeds {max_bytes} bytes.")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image_format = image.format or ""
            width, height = image.size
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _ApiError(400, "InvalidFile.Content", f"The image of {name} cannot be decoded.") from None
    if image_format not in IMAGE_FORMATS:
        raise _ApiError(400, "InvalidImageFormat", f"The image of {name} is {image_format or 'of unknown format'}.")
    if not (low <= width <= high and low <= height <= high):
        raise _ApiError(
            400,
            "InvalidFile.Resolution",
            f"The image of {name} is {width}x{height}; width and height must be within {low}-{high} pixels.",
        )
    if max_aspect is not None and max(width, height) / min(width, height) > max_aspect:
        raise _ApiError(400, "InvalidFile.AspectRatio", f"The image of {name} is wider than 1:{max_aspect:g}.")
    if not alpha and has_alpha:
        raise _ApiError(400, "InvalidFile.Content", f"The image of {name} has an alpha channel.")
    return _Image(data=raw)


def _placeholder(url: str) -> bytes:
    """A URL input is not fetched: render a flat colour derived from it instead."""
    digest = hashlib.sha256(url.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (1280, 720), (digest[0], digest[1], digest[2])).save(buf, "PNG")
    return buf.getvalue()


def _render(first: _Image, last: _Image | None, resolution: str) -> bytes:
    from sandbox.video import render_crossfade  # imports PyAV: only when a video is really needed

    first_bytes = first.data if first.data is not None else _placeholder(first.url or "")
    if last is None:
        # Effect template: one picture in; fade to its negative so the result visibly moves.
        with Image.open(io.BytesIO(first_bytes)) as image:
            buf = io.BytesIO()
            ImageOps.invert(image.convert("RGB")).save(buf, "PNG")
        last_bytes = buf.getvalue()
    else:
        last_bytes = last.data if last.data is not None else _placeholder(last.url or "")
    return render_crossfade(first_bytes, last_bytes, resolution=resolution)


def _render_media(task: _Task) -> bytes:
    """wan2.7's output: `duration` seconds with sound; a continued clip comes back whole (clip + new part)."""
    from sandbox.video import render_video

    first = None
    if task.clip is None:
        first = task.first.data if task.first.data is not None else _placeholder(task.first.url or "")
    last = None
    if task.last is not None:
        last = task.last.data if task.last.data is not None else _placeholder(task.last.url or "")
    return render_video(
        first, last, resolution=task.resolution, seconds=task.duration, audio=task.audio, clip=task.clip
    )


def _probe_seconds(data: bytes, name: str) -> float:
    from sandbox.video import media_seconds

    try:
        return media_seconds(data)
    except ValueError:
        raise _ApiError(400, "InvalidFile.Content", f"The file of {name} cannot be decoded.") from None


def _probe_size(data: bytes, name: str) -> tuple[int, int]:
    from sandbox.video import video_size

    try:
        return video_size(data)
    except ValueError:
        raise _ApiError(400, "InvalidFile.Content", f"The file of {name} cannot be decoded.") from None


def _extension(url: str) -> str:
    path = url.split("?", 1)[0].rsplit("/", 1)[-1]
    return path.rsplit(".", 1)[-1].lower() if "." in path else ""


def _check_timed(data: bytes | None, url: str, name: str, limits: dict[str, Any]) -> float | None:
    """Format (by the file name), bytes and length of a driving audio or a first clip; its seconds if read."""
    formats = [f.lower() for f in limits.get("formats", [])]
    if _extension(url) not in formats:
        raise _ApiError(400, "InvalidFile.Format", f"The file of {name} must be one of {', '.join(formats)}.")
    if data is None:
        return None  # a public URL: the sandbox fetches nothing
    if len(data) > int(limits["max_bytes"]):
        raise _ApiError(400, "InvalidFile.Size", f"The file of {name} exceeds {limits['max_bytes']} bytes.")
    seconds = _probe_seconds(data, name)
    low, high = float(limits["min_seconds"]), float(limits["max_seconds"])
    if not low <= seconds <= high + 0.05:  # container durations round up by a frame or two
        raise _ApiError(
            400, "InvalidFile.Duration", f"The file of {name} lasts {seconds:.1f} s; it must be {low:g}-{high:g} s."
        )
    if limits.get("min_side") is not None:
        width, height = _probe_size(data, name)
        side_low, side_high = int(limits["min_side"]), int(limits["max_side"])
        if not (side_low <= width <= side_high and side_low <= height <= side_high):
            raise _ApiError(
                400, "InvalidFile.Resolution", f"The clip is {width}x{height}; sides must be {side_low}-{side_high}."
            )
    return seconds


@dataclass
class _Upload:
    account: str
    model: str
    data: bytes
    stored: float  # emulator clock


def _free_box_header(size: int) -> bytes:
    return size.to_bytes(4, "big") + b"free"


# --- the emulator --------------------------------------------------------------------------------------


@dataclass(eq=False)
class RouteHold:
    """Requests of one route held unanswered (`DashScopeEmulator.hold`) until `release()`: a request on its way
    for as long as a test needs, wherever the caller is then (a restart can land on it for certain)."""

    route: str
    skip: int  # requests of the route that pass before it holds any
    remaining: int  # requests it still holds
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0  # requests waiting on it now

    def release(self) -> None:
        """Let the held requests go on, and hold no more."""
        self.remaining = 0
        self.released.set()


@dataclass(frozen=True)
class _Caller:
    account: str  # main account
    key_id: str  # fingerprint of the key
    api_key_id: str  # the id the task list shows for the key
    neighbour: bool = False


def api_key_id(api_key: str) -> str:
    """The task list's `api_key_id` for a key: stable, digits, and no way back to the key.

    The real id's format is unconfirmed (the SDK's list() takes it as a string filter); digits make a client
    that wrongly expects a number or a string meet both over time: the list sends it as a string.
    """
    return str(int.from_bytes(hashlib.sha256(b"api-key-id\n" + api_key.encode()).digest()[:5], "big"))


def caller_uid(account: str) -> str:
    """A main account's uid (Alibaba Cloud uids are 16 digits; the one per account is an assumption)."""
    return str(10**15 + int.from_bytes(hashlib.sha256(b"uid\n" + account.encode()).digest()[:6], "big"))


def _neighbour_key(account: str) -> str:
    return f"neighbour-of:{account}"  # never a Bearer key anyone sends: it only names the neighbour


class DashScopeEmulator:
    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        _check_config(self.config)
        self._clock = clock
        self._wall = wall_clock
        self._epoch = clock()
        self._rng = random.Random(self.config.seed)
        # The neighbour draws from its own generator so switching it on does not reshuffle every other draw.
        self._neighbour_rng = random.Random(None if self.config.seed is None else self.config.seed + 1)
        self._models = emulated_models(region=CATALOG_REGIONS[self.config.region])
        self._url_secret = secrets.token_bytes(16)
        self._tasks: dict[str, _Task] = {}
        self._active: dict[tuple[str, str], list[_Task]] = {}
        self._held: dict[tuple[str, str], list[_Task]] = {}  # over_limit="hold": FIFO of tasks without a slot
        self._advanced_to = -math.inf  # the last moment _advance looked at
        self._attempts: dict[tuple[str, str], list[float]] = {}  # every create attempt of the account
        self._own_attempts: dict[tuple[str, str], list[float]] = {}  # the same, without the neighbour's
        self._occupied: dict[tuple[str, str], int] = {}
        self._account_models: dict[str, list[str]] = {}  # models each account has asked for, first use first
        self._renders: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._rendering: dict[tuple[str, str, str], asyncio.Task[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self._trap_runner: web.AppRunner | None = None
        self._trap_origin: str | None = None
        self._neighbour_job: asyncio.Task[None] | None = None
        self._base_url: str | None = None
        # counters
        self._calls = dict.fromkeys(ROUTES, 0)
        self._holds: list[RouteHold] = []
        self._faults = {
            "error": 0, "throttle": 0, "drop": 0, "malformed": 0, "latency": 0,
            "lost_create_answer": 0, "malformed_poll": 0, "absurd_bill": 0, "foreign_video_url": 0,
        }  # fmt: skip
        self._malformed_polls = dict.fromkeys(MALFORMED_POLL_KINDS, 0)
        self._accepted = 0
        self._by_key_model: dict[str, dict[str, int]] = {}
        self._max_in_flight: dict[str, dict[str, int]] = {}
        self._max_running: dict[str, dict[str, int]] = {}
        self._violations: list[dict[str, Any]] = []
        self._refused_for_others = 0
        self._held_count = 0
        self._neighbour = {"created": 0, "refused": 0}
        self._rejected: dict[str, int] = {}
        self._truncated = 0
        self._cancels = 0
        self._image_urls: list[str] = []
        self._videos_rendered = 0
        self._videos_served = 0
        self._bytes_served = 0
        self._foreign_requests: list[str] = []
        self._uploads_cut = 0
        self._list_refused_range = 0
        self._query_times: dict[str, list[float]] = {}  # per account: arrivals of polls and list pages
        self._queries_throttled = 0
        self._uploads: dict[str, _Upload] = {}  # object key -> file (48 h, bound to account and model)
        self._upload_attempts: dict[tuple[str, str], list[float]] = {}
        self._uploads_stored = 0
        self._oss_header_missing = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(CREATE_PATH, self._route("create", self._create))
        app.router.add_post(MEDIA_CREATE_PATH, self._route("create", self._create_media))
        app.router.add_get(UPLOADS_PATH, self._route("upload_policy", self._upload_policy))
        app.router.add_post(OSS_UPLOAD_PATH, self._oss_upload)
        app.router.add_get(API_PREFIX + "/tasks", self._route("list", self._list))
        app.router.add_get(API_PREFIX + "/tasks/{task_id}", self._route("get", self._get))
        app.router.add_post(API_PREFIX + "/tasks/{task_id}/cancel", self._route("cancel", self._cancel))
        app.router.add_get(VIDEO_PREFIX + "{name}", self._video)
        app.router.add_get("/_sandbox/stats", self._stats_handler)
        app.router.add_get("/_sandbox/config", self._config_get)
        app.router.add_post("/_sandbox/config", self._config_post)
        app.router.add_post("/_sandbox/occupy", self._occupy_handler)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); returns the base URL ending in /api/v1.

        Also starts the trap listener (another port of the same host, for `foreign_video_url`) and the
        neighbour's loop (idle while `neighbour_rate` is 0).
        """
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        # A wildcard address is not something to connect to: show loopback instead.
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}  # noqa: S104 - a lookup, not a bind
        shown = wildcard.get(host, f"[{host}]" if ":" in host else host)
        self._base_url = f"http://{shown}:{bound}{API_PREFIX}"

        trap = web.Application()
        trap.router.add_route("*", "/{tail:.*}", self._trap)
        trap_runner = web.AppRunner(trap, access_log=None, handle_signals=False)
        await trap_runner.setup()
        await web.TCPSite(trap_runner, host, 0).start()
        self._trap_runner = trap_runner
        self._trap_origin = f"http://{shown}:{trap_runner.addresses[0][1]}"
        self._neighbour_job = asyncio.create_task(self._neighbour_loop(), name="sandbox-neighbour")
        return self._base_url

    async def stop(self) -> None:
        for job in self._rendering.values():
            job.cancel()
        if self._neighbour_job is not None:
            self._neighbour_job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._neighbour_job
            self._neighbour_job = None
        for runner in (self._runner, self._trap_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._trap_runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    @property
    def trap_origin(self) -> str:
        """Origin (scheme://host:port) of the trap listener that counts requests to foreign video URLs."""
        if self._trap_origin is None:
            raise RuntimeError("the emulator is not started")
        return self._trap_origin

    def api_key_id(self, api_key: str) -> str:
        """The `api_key_id` the task list shows for tasks this key created."""
        return api_key_id(api_key)

    def neighbour_api_key_id(self, account: str) -> str:
        return api_key_id(_neighbour_key(account))

    # --- run-time control ------------------------------------------------------------------------------

    def update(self, **changes: Any) -> None:
        """Change timings, limits or faults while running (new tasks use new timings).

        Fault fields may be given flat (`error_rate=0.2`) or as `faults=FaultConfig(...)`/a dict.
        Raises ValueError (nothing changed) for an unknown name or an invalid value.
        """
        cfg = replace(self.config, faults=replace(self.config.faults))
        config_names = {f.name for f in fields(EmulatorConfig)} - {"faults"}
        fault_names = {f.name for f in fields(FaultConfig)}
        try:
            for name, value in changes.items():
                if name == "faults":
                    if isinstance(value, dict):
                        value = replace(cfg.faults, **{k: _coerce(k, v) for k, v in value.items()})
                    if not isinstance(value, FaultConfig):
                        raise ValueError("faults must be a FaultConfig or a dict of its fields")
                    cfg.faults = value
                elif name in fault_names:
                    setattr(cfg.faults, name, _coerce(name, value))
                elif name in config_names:
                    setattr(cfg, name, _coerce(name, value))
                else:
                    raise ValueError(f"unknown emulator setting {name!r}")
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        _check_config(cfg)
        if cfg.seed != self.config.seed:
            self._rng = random.Random(cfg.seed)
            self._neighbour_rng = random.Random(None if cfg.seed is None else cfg.seed + 1)
        if cfg.region != self.config.region:
            self._models = emulated_models(region=CATALOG_REGIONS[cfg.region])
        self.config = cfg

    def hold(self, route: str, *, skip: int = 0, count: int = 1) -> RouteHold:
        """Hold the next `count` requests of `route` (one of ROUTES) once `skip` more have passed, before they are
        handled, until `release()`: nothing is done for them meanwhile (a policy or a create still on its way)."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}")
        hold = RouteHold(route, self._calls[route] + skip, count)
        self._holds.append(hold)
        return hold

    async def _wait_if_held(self, route: str) -> None:
        for hold in self._holds:
            if hold.route == route and hold.remaining > 0 and self._calls[route] > hold.skip:
                hold.remaining -= 1
                hold.held += 1
                try:
                    await hold.released.wait()
                finally:
                    hold.held -= 1
                return

    def occupy_slots(self, api_key: str, model: str, n: int) -> None:
        """Someone else on the key's main account holds `n` of this model's in-flight slots (0 frees them)."""
        self._occupied[(self.config.account_of(api_key), model)] = max(0, int(n))

    # --- statistics -------------------------------------------------------------------------------------

    def _rel(self, moment: float) -> float:
        return round(moment - self._epoch, 3)

    def stats(self) -> dict[str, Any]:
        """Everything seen so far. Accounts are main-account names (a key's fingerprint by default)."""
        now = self._clock()
        self._advance(now)
        timeline = []
        for task in self._tasks.values():
            status = self._visible_status(task, now)
            started = task.started if now >= task.started and task.canceled_at is None else None
            timeline.append(
                {
                    "task_id": task.task_id,
                    "model": task.model.name,
                    "key": task.key_id,
                    "account": task.account,
                    "api_key_id": task.api_key_id,
                    "neighbour": task.neighbour,
                    "created": self._rel(task.created),
                    "started": self._rel(started) if started is not None else None,
                    "finished": self._rel(task.finished) if now >= task.finished else None,
                    "status": status,
                    "polls": task.polls,
                    "polls_after_finished": task.polls_after_finished,
                    "billed_seconds": task.billed_seconds,  # what its SUCCEEDED answers billed (None: none given)
                }
            )
        return {
            "uptime_s": self._rel(now),
            "calls": dict(self._calls),
            "submissions_accepted": self._accepted,
            "submissions_by_key_model": copy.deepcopy(self._by_key_model),
            # Limit refusals the callers caused themselves (the neighbour and occupy_slots not counted).
            "throttled": len(self._violations),
            "violations": list(self._violations),
            # Refusals (or holds) only because others on the account used its slots or its burst budget.
            "refused_for_others": self._refused_for_others,
            "held": self._held_count,
            "faults": dict(self._faults),
            "malformed_polls": dict(self._malformed_polls),
            "max_in_flight": copy.deepcopy(self._max_in_flight),
            "max_running": copy.deepcopy(self._max_running),  # peak RUNNING at once, tracked in "hold" mode
            "in_flight_now": self._in_flight_now(now),
            "neighbour": dict(self._neighbour),
            "rejected": dict(self._rejected),
            "list_ranges_refused": self._list_refused_range,
            "queries_throttled": self._queries_throttled,
            "truncated_prompts": self._truncated,
            "cancels": self._cancels,
            "image_urls": list(self._image_urls),
            "videos_rendered": self._videos_rendered,
            "videos_served": self._videos_served,
            "video_bytes_served": self._bytes_served,
            "foreign_requests": len(self._foreign_requests),
            "foreign_request_paths": list(self._foreign_requests),
            "uploads_cut": self._uploads_cut,
            "uploads_stored": self._uploads_stored,
            "oss_header_missing": self._oss_header_missing,
            "tasks": timeline,
        }

    def _in_flight_now(self, now: float) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for (account, model), tasks in self._active.items():
            count = sum(1 for t in tasks if t.status(now) in ("PENDING", "RUNNING"))
            if count:
                result.setdefault(account, {})[model] = count
        return result

    # --- plumbing shared by the API routes -------------------------------------------------------------

    def _route(
        self, name: str, handler: Callable[[web.Request, _Caller], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            self._calls[name] += 1
            await self._wait_if_held(name)
            request[_ARRIVED] = self._clock()
            faults = self.config.faults
            disturbed = faults.applies(name)
            if disturbed and faults.latency_s > 0:
                self._faults["latency"] += 1
                await asyncio.sleep(faults.latency_s)
            try:
                caller = self._authenticate(request)
                if disturbed and self._roll(faults.error_rate):
                    self._faults["error"] += 1
                    if self._rng.random() < 0.5:
                        raise _ApiError(500, "InternalError", "An internal error has occured, please try again later.")
                    raise _ApiError(503, "ModelServingError", "The model is overloaded, please try again later.")
                if disturbed and self._roll(faults.throttle_rate):
                    self._faults["throttle"] += 1
                    raise _ApiError(429, "Throttling", "Requests throttling triggered.")
                response: web.StreamResponse = await handler(request, caller)
            except _ApiError as exc:
                if 400 <= exc.status < 500 and exc.status != 429 and exc.code != "InvalidApiKey":
                    self._rejected[exc.code] = self._rejected.get(exc.code, 0) + 1
                response = _error(exc.status, exc.code, exc.message)
            lost = name == "create" and response.status == 200 and self._roll(self.config.lose_create_answer_rate)
            if lost or (disturbed and self._roll(faults.drop_rate)):
                self._faults["lost_create_answer" if lost else "drop"] += 1
                if request.transport is not None:
                    request.transport.abort()  # the client sees the connection die without an answer
                return response
            if disturbed and self._roll(faults.malformed_rate):
                self._faults["malformed"] += 1
                broken = '{"request_id": "' + str(uuid.uuid4()) + '", "output": {"task_id": '
                return web.Response(status=200, text=broken, content_type="application/json")
            return response

        return wrapped

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _authenticate(self, request: web.Request) -> _Caller:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        cfg = self.config
        fixed = cfg.api_key
        # With a fixed key, the keys named in `accounts` are accepted too (they are keys of the sandbox).
        known = fixed is None or any(
            hmac.compare_digest(key.encode(), candidate.encode()) for candidate in (fixed, *cfg.accounts)
        )
        if scheme.lower() != "bearer" or not key or not known:
            raise _ApiError(401, "InvalidApiKey", "Invalid API-key provided.")
        caller = _Caller(account=cfg.account_of(key), key_id=fingerprint(key), api_key_id=api_key_id(key))
        self._account_models.setdefault(caller.account, [])
        return caller

    def _scaled(self, seconds: float) -> float:
        return seconds / self.config.time_scale

    def _find(self, task_id: str, account: str, now: float) -> _Task | None:
        """Tasks of another main account, and expired ones, do not exist (the provider answers UNKNOWN).

        Any key of the account sees all its tasks: "You can query all tasks under the Alibaba Cloud account
        that owns the current API key, including tasks submitted with any API key under that account"
        (https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks).
        """
        task = self._tasks.get(task_id)
        if task is None or task.account != account:
            return None
        if now - task.created > self._scaled(self.config.task_ttl_s):
            return None
        return task

    def _visible_status(self, task: _Task, now: float) -> str:
        if now - task.created > self._scaled(self.config.task_ttl_s):
            return "UNKNOWN"
        return task.status(now)

    # --- create ----------------------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        """The request body, read no faster than `upload_bytes_per_s` when that is set.

        Like a real server, it notices a caller that gave up only when the connection is reset, or when it
        writes the answer: a gracefully closed connection still delivers what was sent.
        """
        rate = self.config.upload_bytes_per_s
        if rate is None:
            return await request.read()
        began = self._clock()
        received = bytearray()
        try:
            async for chunk in request.content.iter_chunked(64 * 1024):
                received += chunk
                if len(received) > MAX_BODY_BYTES:
                    raise _ApiError(413, "RequestEntityTooLarge", "The request body is too large.")
                due = began + len(received) / rate - self._clock()
                if due > 0:
                    await asyncio.sleep(due)
        except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError):
            self._uploads_cut += 1  # the caller gave up mid-upload: no task
            raise _ApiError(400, "InvalidParameter", "The request body was cut off.") from None
        return bytes(received)

    async def _create_media(self, request: web.Request, caller: _Caller) -> web.Response:
        return await self._create(request, caller, family="media")

    async def _create(self, request: web.Request, caller: _Caller, family: str = "kf2v") -> web.Response:
        if request.headers.get("X-DashScope-Async", "").strip().lower() != "enable":
            raise _ApiError(403, "AccessDenied", "current user api does not support synchronous calls")
        raw = await self._read_body(request)
        try:
            # Two 10 MB images make a 27 MB body: parse big ones off the event loop.
            body = await asyncio.to_thread(json.loads, raw) if len(raw) > 1_000_000 else json.loads(raw)
        except ValueError:
            raise _ApiError(400, "InvalidParameter", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "InvalidParameter", "The request body must be a JSON object.")
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            raise _ApiError(400, "InvalidParameter", "Model is required.")
        model = self._models.get(model_name)
        if model is None:
            raise _ApiError(400, "InvalidParameter", "Model not exist.")
        if model.family != family:
            # The provider's answer for a model on the other family's path is unconfirmed; a 400 is certain.
            raise _ApiError(400, "InvalidParameter", f"Model {model_name} is not supported by this API.")
        used = self._account_models.setdefault(caller.account, [])
        if model_name not in used:
            used.append(model_name)

        self._check_burst(caller, model_name, request.get(_ARRIVED, self._clock()))
        oss_enabled = request.headers.get(OSS_HEADER, "").strip().lower() == "enable"
        if model.family == "media":
            spec = await self._validate_media(body, model, caller, oss_enabled)
        else:
            spec = await self._validate(body, model, caller, oss_enabled)
        prompt, negative = spec["prompt"], spec["negative_prompt"]
        if spec["template"] is None and any(
            self.config.reject_word and self.config.reject_word in (text or "") for text in (prompt, negative)
        ):
            raise _ApiError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        for image in (spec["first"], spec["last"]):
            if image is not None and image.url is not None:
                self._image_urls.append(image.url.split("?", 1)[0])  # never keep a signed query
        task = self._admit(caller, model, spec)  # no await in there: check and creation are one step
        return web.json_response(
            {"request_id": task.request_id, "output": {"task_id": task.task_id, "task_status": "PENDING"}}
        )

    def _admit(self, caller: _Caller, model: EmulatedModel, spec: dict[str, Any]) -> _Task:
        """The in-flight check and the task's creation. Raises the 429 past the limit in "reject" mode."""
        now = self._clock()
        self._advance(now)
        cfg = self.config
        key = (caller.account, model.name)
        slots, _ = cfg.limits_for(model.name)
        active = self._active_tasks(caller.account, model.name, now)
        occupied = self._occupied.get(key, 0)
        over = len(active) + occupied >= slots
        if over:
            own = sum(1 for t in active if not t.neighbour)
            if caller.neighbour:
                pass  # the neighbour's own trouble: counted by the caller of _admit
            elif own >= slots:
                self._violation(caller, model.name, "in_flight", now)
            else:
                self._refused_for_others += 1
            if cfg.over_limit == "reject":
                # The provider's code for this case is unconfirmed; every Throttling* means "later".
                raise _ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
            self._held_count += 1

        template = spec["template"]
        prompt = spec["prompt"]
        task = _Task(
            task_id=str(uuid.uuid4()),
            account=caller.account,
            key_id=caller.key_id,
            api_key_id=caller.api_key_id,
            neighbour=caller.neighbour,
            model=model,
            request_id=str(uuid.uuid4()),
            created=now,
            created_wall=self._wall(),
            pending=self._scaled(self._rng.uniform(*cfg.pending_s)),
            running=self._scaled(self._rng.uniform(*cfg.running_s)),
            fails=template is None and bool(cfg.fail_word) and cfg.fail_word in (prompt or ""),
            resolution=spec["resolution"],
            prompt=prompt if template is None else None,
            actual_prompt=_extend_prompt(prompt) if template is None and spec["prompt_extend"] and prompt else None,
            template=template,
            first=spec["first"],
            last=spec["last"],
            family=model.family,
            duration=spec.get("duration", 5),
            audio=spec.get("audio"),
            clip=spec.get("clip"),
            clip_seconds=spec.get("clip_seconds", 0.0),
        )
        if cfg.over_limit == "hold":
            self._held.setdefault(key, []).append(task)  # a slot is given by _advance, first come first served
        else:
            task.start_at = task.ready
        self._tasks[task.task_id] = task
        active.append(task)
        self._accepted += 1
        per_key = self._by_key_model.setdefault(caller.key_id, {})
        per_key[model.name] = per_key.get(model.name, 0) + 1
        peaks = self._max_in_flight.setdefault(caller.account, {})
        peaks[model.name] = max(peaks.get(model.name, 0), len(active))
        self._advance(now)
        log.info(
            "sandbox task %s created for %s (%s) on %s (%s, pending %.1fs, running %.1fs)",
            task.task_id, caller.key_id, caller.account, model.name, task.resolution, task.pending, task.running,
        )  # fmt: skip
        return task

    def _advance(self, now: float) -> None:
        """Give held tasks their running slots, at the moment a slot was free, up to `now`.

        A held task starts at the earliest moment >= its ready time (and >= the start of every task queued
        before it) at which fewer than `slots - occupied` tasks of its account and model were running. A task
        still held after an earlier pass could not start before that pass's `now` (finished tasks may since
        have been forgotten, so those moments are not looked at again).
        """
        for (account, model), queue in self._held.items():
            slots = self.config.limits_for(model)[0] - self._occupied.get((account, model), 0)
            peers = self._active.get((account, model), [])
            floor = -math.inf
            while queue:
                task = queue[0]
                if task.canceled_at is not None:
                    queue.pop(0)
                    continue
                placed = [t for t in peers if t.start_at is not None]
                latest_start = max((t.started for t in placed), default=-math.inf)
                earliest = max(task.ready, floor, latest_start, self._advanced_to)
                moments = [earliest, *sorted(t.finished for t in placed if t.finished > earliest)]
                start = next((m for m in moments if m <= now and sum(1 for t in placed if t.occupies(m)) < slots), None)
                if start is None:
                    break
                task.start_at = start
                floor = start
                queue.pop(0)
                running = sum(1 for t in placed if t.occupies(start)) + 1
                peaks = self._max_running.setdefault(account, {})
                peaks[model] = max(peaks.get(model, 0), running)
        self._advanced_to = max(self._advanced_to, now)

    def _active_tasks(self, account: str, model: str, now: float) -> list[_Task]:
        tasks = [t for t in self._active.get((account, model), []) if t.status(now) in ("PENDING", "RUNNING")]
        self._active[(account, model)] = tasks
        return tasks

    def _check_burst(self, caller: _Caller, model: str, arrived: float) -> None:
        """Sliding window over every create attempt of the main account that got this far, refused ones included.

        `submit_rps` of 2 means at most 2 attempts in any 1-second window [s, s+1); below 1/s, one per 1/rps
        seconds. An attempt is timed when its headers arrived (not when its megabytes of body were read), so
        attempts may be checked slightly out of order: they are kept sorted and every window holding the new
        one is checked. The neighbour's attempts count against the account; a refusal is the callers' own
        violation only when their attempts alone are over.
        """
        _, rps = self.config.limits_for(model)
        allowed = max(1, math.floor(rps))
        window = allowed / rps
        key = (caller.account, model)
        everyone = self._attempts.setdefault(key, [])
        own = self._own_attempts.setdefault(key, [])
        horizon = self._clock() - 2 * window
        for attempts in (everyone, own):
            del attempts[: bisect.bisect_right(attempts, horizon)]  # too old to matter
        bisect.insort(everyone, arrived)
        if not caller.neighbour:
            bisect.insort(own, arrived)
        if not _window_over(everyone, arrived, window, allowed):
            return
        if caller.neighbour:
            pass
        elif _window_over(own, arrived, window, allowed):
            self._violation(caller, model, "burst", self._clock())
        else:
            self._refused_for_others += 1
        raise _ApiError(429, "Throttling.BurstRate", "Requests rate limit exceeded, please try again later.")

    def _violation(self, caller: _Caller, model: str, kind: str, now: float) -> None:
        self._violations.append(
            {"t": self._rel(now), "key": caller.account, "caller": caller.key_id, "model": model, "kind": kind}
        )
        log.warning("sandbox limit violation: %s on %s by %s (%s)", kind, model, caller.key_id, caller.account)

    # --- the neighbour ---------------------------------------------------------------------------------

    async def _neighbour_loop(self) -> None:
        """Another key of each known account creates tasks of the models that account used."""
        while True:
            rate = self.config.neighbour_rate
            if rate <= 0:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(self._neighbour_rng.expovariate(rate))
            try:
                for account in list(self._known_accounts()):
                    models = self._account_models.get(account) or []
                    if models:
                        self._neighbour_submit(account, self._models[self._neighbour_rng.choice(models)])
            except Exception:
                log.exception("sandbox neighbour failed; it carries on")  # a bug here must not stop the sandbox

    def _known_accounts(self) -> list[str]:
        named = list(dict.fromkeys(self.config.accounts.values()))
        return named + [a for a in self._account_models if a not in named]

    def _neighbour_submit(self, account: str, model: EmulatedModel) -> _Task | None:
        key = _neighbour_key(account)
        caller = _Caller(account=account, key_id=fingerprint(key), api_key_id=api_key_id(key), neighbour=True)
        number = self._neighbour["created"] + self._neighbour["refused"] + 1
        first = _Image(url=f"https://neighbour.invalid/frames/{number}-first.png")
        spec = {
            "prompt": f"the neighbour's own video #{number}",
            "negative_prompt": None,
            "template": None,
            "resolution": model.default_resolution,
            "prompt_extend": True,
            "first": first,
            "last": _Image(url=f"https://neighbour.invalid/frames/{number}-last.png"),
        }
        try:
            self._check_burst(caller, model.name, self._clock())
            task = self._admit(caller, model, spec)
        except _ApiError:
            self._neighbour["refused"] += 1
            return None
        self._neighbour["created"] += 1
        return task

    async def _validate(
        self, body: dict[str, Any], model: EmulatedModel, caller: _Caller, oss_enabled: bool
    ) -> dict[str, Any]:
        inp = body.get("input")
        params = body.get("parameters", {})
        if not isinstance(inp, dict):
            raise _ApiError(400, "InvalidParameter", "input is required and must be an object.")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _ApiError(400, "InvalidParameter", "parameters must be an object.")

        def text(name: str) -> str | None:
            value = inp.get(name)
            if value is not None and not isinstance(value, str):
                raise _ApiError(400, "InvalidParameter", f"input.{name} must be a string.")
            return value

        first, last = text("first_frame_url"), text("last_frame_url")
        prompt, negative, template = text("prompt"), text("negative_prompt"), text("template")
        if not first:
            raise _ApiError(400, "InvalidParameter", "input.first_frame_url is required.")
        if template is not None:
            if not model.templates:
                raise _ApiError(400, "InvalidParameter", f"Model {model.name} does not support template.")
            if template not in model.templates:
                raise _ApiError(400, "InvalidParameter", f"Template {template} is not supported.")
            last = None  # effect templates use only the first frame
        resolution = params.get("resolution", model.default_resolution)
        if resolution not in model.resolutions:
            raise _ApiError(
                400, "InvalidParameter", f"resolution must be one of {', '.join(model.resolutions)} for {model.name}."
            )
        duration = params.get("duration", 5)
        if duration != 5 or isinstance(duration, bool):
            raise _ApiError(400, "InvalidParameter", "duration must be 5.")
        for flag in ("prompt_extend", "watermark"):
            if flag in params and not isinstance(params[flag], bool):
                raise _ApiError(400, "InvalidParameter", f"{flag} must be a boolean.")
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
            raise _ApiError(400, "InvalidParameter", f"seed must be an integer within 0..{SEED_MAX}.")
        # The provider silently truncates long prompts: accept, but count it (the bot must refuse first).
        if prompt is not None and len(prompt) > PROMPT_MAX:
            self._truncated += 1
            prompt = prompt[:PROMPT_MAX]
        if negative is not None and len(negative) > NEGATIVE_PROMPT_MAX:
            self._truncated += 1
            negative = negative[:NEGATIVE_PROMPT_MAX]
        first_image = await self._frame(first, "first_frame_url", model, caller, oss_enabled)
        last_image = await self._frame(last, "last_frame_url", model, caller, oss_enabled) if last else None
        return {
            "prompt": prompt,
            "negative_prompt": negative,
            "template": template,
            "resolution": resolution,
            "prompt_extend": params.get("prompt_extend", True),
            "first": first_image,
            "last": last_image,
        }

    # --- media inputs (wan2.7) and oss:// files -------------------------------------------------------

    def _oss_file(self, url: str, name: str, model: EmulatedModel, caller: _Caller, oss_enabled: bool) -> bytes:
        """An oss:// URL's bytes: only with the resolve header, only for the account and model that uploaded it."""
        if self.config.region not in UPLOAD_REGIONS:
            raise _ApiError(400, "InvalidURL", f"The {name} is an oss:// URL; this region has no temporary storage.")
        if not oss_enabled:
            self._oss_header_missing += 1
            # "otherwise error" (get-temporary-file-url): the exact code is unconfirmed.
            raise _ApiError(
                400, "InvalidParameter", f"The {name} is an oss:// URL; set {OSS_HEADER}: enable to use it."
            )
        self._expire_uploads()
        key = url.removeprefix("oss://")
        stored = self._uploads.get(key)
        if stored is None or stored.account != caller.account or stored.model != model.name:
            raise _ApiError(400, "InvalidURL", f"The {name} cannot be read: no such file for this account and model.")
        return stored.data

    async def _frame(self, value: str, name: str, model: EmulatedModel, caller: _Caller, oss_enabled: bool) -> _Image:
        limits = model.inputs.get("image", {}) if model.family == "media" else None
        if value.startswith("oss://"):
            raw = self._oss_file(value, name, model, caller, oss_enabled)
            encoded = "data:image/png;base64," + base64.b64encode(raw).decode()  # checked like a data URI
            image = await asyncio.to_thread(_inspect_image, encoded, name, self.config, limits or {})
            return image
        return await asyncio.to_thread(_inspect_image, value, name, self.config, limits)

    async def _validate_media(
        self, body: dict[str, Any], model: EmulatedModel, caller: _Caller, oss_enabled: bool
    ) -> dict[str, Any]:
        """wan2.7's checks, per https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference."""
        inp = body.get("input")
        params = body.get("parameters") or {}
        if not isinstance(inp, dict):
            raise _ApiError(400, "InvalidParameter", "input is required and must be an object.")
        if not isinstance(params, dict):
            raise _ApiError(400, "InvalidParameter", "parameters must be an object.")
        prompt, negative = inp.get("prompt"), inp.get("negative_prompt")
        for label, value in (("prompt", prompt), ("negative_prompt", negative)):
            if value is not None and not isinstance(value, str):
                raise _ApiError(400, "InvalidParameter", f"input.{label} must be a string.")
        media = inp.get("media")
        if not isinstance(media, list) or not media:
            raise _ApiError(400, "InvalidParameter", "input.media is required and must be a non-empty list.")
        urls: dict[str, str] = {}
        for item in media:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"]:
                raise _ApiError(400, "InvalidParameter", "Each input.media item needs a type and a url.")
            kind = item.get("type")
            if kind not in MEDIA_TYPES:
                raise _ApiError(400, "InvalidParameter", f"input.media type {str(kind)[:40]!r} is not supported.")
            if kind in urls:
                raise _ApiError(400, "InvalidParameter", f"input.media has more than one {kind}.")
            urls[kind] = item["url"]
        if frozenset(urls) not in model.combinations:
            raise _ApiError(400, "InvalidParameter", f"The media combination {'+'.join(sorted(urls))} is invalid.")
        resolution = params.get("resolution", model.default_resolution)
        if resolution not in model.resolutions:
            raise _ApiError(
                400, "InvalidParameter", f"resolution must be one of {', '.join(model.resolutions)} for {model.name}."
            )
        duration = params.get("duration", model.default_duration)
        low, high = model.durations
        if isinstance(duration, bool) or not isinstance(duration, int) or not low <= duration <= high:
            raise _ApiError(400, "InvalidParameter", f"duration must be an integer within {low}..{high}.")
        for flag in ("prompt_extend", "watermark"):
            if flag in params and not isinstance(params[flag], bool):
                raise _ApiError(400, "InvalidParameter", f"{flag} must be a boolean.")
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
            raise _ApiError(400, "InvalidParameter", f"seed must be an integer within 0..{SEED_MAX}.")
        # Longer prompts are truncated, not refused (the bot must refuse them itself): counted.
        if prompt is not None and len(prompt) > model.prompt_max:
            self._truncated += 1
            prompt = prompt[: model.prompt_max]
        if negative is not None and len(negative) > model.negative_prompt_max:
            self._truncated += 1
            negative = negative[: model.negative_prompt_max]

        frames: dict[str, _Image] = {}
        for kind in ("first_frame", "last_frame"):
            if kind in urls:
                frames[kind] = await self._frame(urls[kind], kind, model, caller, oss_enabled)
        files: dict[str, bytes | None] = {}
        seconds: dict[str, float | None] = {}
        for kind, limits_name in (("driving_audio", "audio"), ("first_clip", "clip")):
            if kind not in urls:
                continue
            url = urls[kind]
            if url.startswith("oss://"):
                data: bytes | None = self._oss_file(url, kind, model, caller, oss_enabled)
            elif url.startswith(("http://", "https://")):
                data = None  # a public URL: never fetched by the sandbox
                self._image_urls.append(url.split("?", 1)[0])
            else:
                raise _ApiError(400, "InvalidURL", f"The {kind} must be an http(s) or oss:// URL.")
            files[kind] = data
            seconds[kind] = await asyncio.to_thread(_check_timed, data, url, kind, model.inputs[limits_name])
        clip_seconds = seconds.get("first_clip") or 0.0
        if clip_seconds and clip_seconds >= duration:
            # duration counts the input clip; a result no longer than the clip is refused (the code is unconfirmed).
            raise _ApiError(400, "InvalidParameter", f"duration must exceed the input clip's {clip_seconds:.1f} s.")
        clip = files.get("first_clip")
        first = frames.get("first_frame") or _Image(data=clip, url=None if clip else urls.get("first_clip"))
        return {
            "prompt": prompt,
            "negative_prompt": negative,
            "template": None,
            "resolution": resolution,
            "prompt_extend": params.get("prompt_extend", True),
            "first": first,
            "last": frames.get("last_frame"),
            "duration": duration,
            "audio": files.get("driving_audio"),
            "clip": clip,
            "clip_seconds": clip_seconds,
        }

    # --- temporary uploads ----------------------------------------------------------------------------

    def _policy_signature(self, policy: str) -> str:
        return base64.b64encode(hmac.new(self._url_secret, policy.encode(), hashlib.sha1).digest()).decode()

    def _expire_uploads(self) -> None:
        horizon = self._clock() - self._scaled(UPLOAD_TTL_S)
        for key in [k for k, f in self._uploads.items() if f.stored < horizon]:
            del self._uploads[key]

    async def _upload_policy(self, request: web.Request, caller: _Caller) -> web.Response:
        """`GET /api/v1/uploads?action=getPolicy&model=…`: fields under `data` (not `output`), numbers as numbers."""
        if self.config.region not in UPLOAD_REGIONS:
            raise _ApiError(
                400, "InvalidParameter", "Temporary file upload is available only in the China (Beijing) region."
            )
        if request.query.get("action") != "getPolicy":
            raise _ApiError(400, "InvalidParameter", "action must be getPolicy.")
        model = self._models.get(request.query.get("model", ""))
        if model is None:
            raise _ApiError(400, "InvalidParameter", "Model not exist.")
        arrived = request.get(_ARRIVED, self._clock())
        attempts = self._upload_attempts.setdefault((caller.account, model.name), [])
        del attempts[: bisect.bisect_right(attempts, arrived - 2.0)]
        bisect.insort(attempts, arrived)
        if _window_over(attempts, arrived, 1.0, UPLOAD_QPS):
            raise _ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
        day = datetime.fromtimestamp(self._wall(), PROVIDER_TZ).strftime("%Y-%m-%d")
        upload_dir = f"{OSS_BUCKET}/{caller.account}/{day}/{uuid.uuid4().hex}"
        document = {
            "expiration": self._wall() + UPLOAD_POLICY_TTL_S,
            "account": caller.account,
            "model": model.name,
            "dir": upload_dir,
            "max_bytes": UPLOAD_MAX_FILE_MB * 1024 * 1024,
        }
        policy = base64.b64encode(json.dumps(document).encode()).decode()
        return web.json_response(
            {
                "request_id": str(uuid.uuid4()),
                "data": {
                    "policy": policy,
                    "signature": self._policy_signature(policy),
                    "upload_dir": upload_dir,
                    "upload_host": f"{request.scheme}://{request.host}{OSS_UPLOAD_PATH}",
                    "expire_in_seconds": UPLOAD_POLICY_TTL_S,
                    "max_file_size_mb": UPLOAD_MAX_FILE_MB,
                    "capacity_limit_mb": 999999999,
                    "oss_access_key_id": "LTAI5tSandboxKey",
                    "x_oss_object_acl": "private",
                    "x_oss_forbid_overwrite": "true",
                },
            }
        )

    async def _oss_upload(self, request: web.Request) -> web.Response:
        """The upload host: an OSS PostObject form, checked against the policy it carries; `file` must be last."""
        self._calls["upload"] += 1
        fields: dict[str, str] = {}
        order: list[str] = []
        data: bytes | None = None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    return _oss_error(400, "InvalidArgument", "Malformed form.")
                order.append(part.name)
                if part.name == "file":
                    data = bytes(await part.read())
                else:
                    fields[part.name] = (await part.read()).decode("utf-8", "replace")
        except (ValueError, AssertionError, aiohttp.ClientError):
            return _oss_error(400, "InvalidArgument", "Malformed form.")
        if data is None or order[-1] != "file":
            return _oss_error(400, "InvalidArgument", "The file must be the last field of the form.")
        policy, signature = fields.get("policy", ""), fields.get("Signature", "")
        if not hmac.compare_digest(signature.encode(), self._policy_signature(policy).encode()):
            return _oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        document = json.loads(base64.b64decode(policy))
        if self._wall() > float(document["expiration"]):
            return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        key = fields.get("key", "")
        if not key.startswith(document["dir"] + "/") or len(key) <= len(document["dir"]) + 1:
            return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: key.")
        if len(data) > int(document["max_bytes"]):
            return _oss_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        self._expire_uploads()
        if key in self._uploads and fields.get("x-oss-forbid-overwrite") == "true":
            return _oss_error(409, "FileAlreadyExists", "The object you specified already exists.")
        if sum(len(f.data) for f in self._uploads.values()) + len(data) > UPLOAD_STORE_MAX_BYTES:
            return _oss_error(403, "QuotaExceeded", "The sandbox's upload store is full.")
        self._uploads[key] = _Upload(document["account"], document["model"], data, self._clock())
        self._uploads_stored += 1
        return web.Response(status=200)

    # --- poll, cancel, list ----------------------------------------------------------------------------

    def _count_query(self, request: web.Request, caller: _Caller) -> None:
        """A poll or list page: 429 past `query_qps` of the account's queries in a sliding second."""
        if self.config.query_qps is None:
            return
        arrived = request.get(_ARRIVED, self._clock())
        times = self._query_times.setdefault(caller.account, [])
        del times[: bisect.bisect_right(times, arrived - 2.0)]
        bisect.insort(times, arrived)
        if _window_over(times, arrived, 1.0, int(self.config.query_qps)):
            self._queries_throttled += 1
            raise _ApiError(429, "Throttling", "Requests rate limit exceeded, please try again later.")

    async def _get(self, request: web.Request, caller: _Caller) -> web.Response:
        self._count_query(request, caller)
        task_id = request.match_info["task_id"]
        now = self._clock()
        self._advance(now)
        task = self._find(task_id, caller.account, now)
        if task is None:
            return web.json_response(
                {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            )
        status = task.status(now)
        task.polls += 1
        if status in ("SUCCEEDED", "FAILED", "CANCELED"):
            task.polls_after_finished += 1
        if self._roll(self.config.malformed_poll_rate):
            return self._malformed_poll(task)
        # PENDING answers carry submit_time; RUNNING ones also scheduled_time (when it started running), as
        # in the field table of https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks.
        output: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "submit_time": _provider_time(task.created_wall),
        }
        if status != "PENDING" and (task.canceled_at is None or task.canceled_at > task.started):
            output["scheduled_time"] = _provider_time(task.wall(task.started))
        if status in ("SUCCEEDED", "FAILED", "CANCELED"):
            output["end_time"] = _provider_time(task.wall(task.finished))
        body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": output}
        if status == "SUCCEEDED":
            output["video_url"] = self._answer_video_url(request, task)
            if task.prompt is not None:
                output["orig_prompt"] = task.prompt
            if task.actual_prompt is not None:
                output["actual_prompt"] = task.actual_prompt
            usage: dict[str, Any] = {"video_duration": 5, "video_count": 1}
            if task.family == "media":
                # wan2.7 bills `duration`: the whole output, a continued clip's seconds included.
                usage = {
                    "duration": task.duration,
                    "input_video_duration": round(task.clip_seconds, 3),
                    "output_video_duration": task.duration,
                    "SR": int(task.resolution.rstrip("Pp")),
                    "video_count": 1,
                }
            elif task.model.usage_sr:
                usage["SR"] = int(task.resolution.rstrip("Pp"))
            else:
                usage["video_ratio"] = "standard"
            absurd = self.config.absurd_billing
            if absurd is not None:
                usage["duration" if task.family == "media" else "video_duration"] = ABSURD_BILLS[
                    absurd
                ]  # json.dumps writes the bare token Infinity/NaN
                self._faults["absurd_bill"] += 1
            task.billed_seconds = usage["duration" if task.family == "media" else "video_duration"]
            body["usage"] = usage
        elif status == "FAILED":
            output["code"] = "DataInspectionFailed"
            output["message"] = "Output data may contain inappropriate content."
            body["usage"] = None
        return web.json_response(body)

    def _malformed_poll(self, task: _Task) -> web.Response:
        """A 200 answer a careful client cannot read: it must retry, never conclude anything."""
        kinds = self.config.malformed_poll_kinds or MALFORMED_POLL_KINDS
        kind = kinds[self._rng.randrange(len(kinds))]
        self._faults["malformed_poll"] += 1
        self._malformed_polls[kind] += 1
        body: dict[str, Any] = {"request_id": str(uuid.uuid4())}
        if kind == "null_output":
            body["output"] = None
        elif kind == "no_status":
            body["output"] = {"task_id": task.task_id, "submit_time": _provider_time(task.created_wall)}
        elif kind == "unknown_status":
            body["output"] = {"task_id": task.task_id, "task_status": "PROCESSING"}
        elif kind == "wrong_types":
            body["output"] = {"task_id": 7, "task_status": ["SUCCEEDED"], "video_url": {"url": None}}
            body["usage"] = {"video_duration": "five"}
        return web.json_response(body)

    async def _cancel(self, request: web.Request, caller: _Caller) -> web.Response:
        task_id = request.match_info["task_id"]
        now = self._clock()
        self._advance(now)
        task = self._find(task_id, caller.account, now)
        if task is None or task.status(now) != "PENDING":
            # The provider's answer here is not documented; "UnsupportedOperation" is what its task API is
            # reported to send when the task is no longer PENDING. Any 4xx reads as "too late to cancel".
            raise _ApiError(
                400,
                "UnsupportedOperation",
                "Failed to cancel the task, please confirm if the task is in PENDING status.",
            )
        task.canceled_at = now
        self._cancels += 1
        return web.json_response({"request_id": str(uuid.uuid4())})

    async def _list(self, request: web.Request, caller: _Caller) -> web.Response:
        """Every task of the caller's main account, whatever key created it, newest first.

        The range rule and the row fields follow the "Query task list" section of
        https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks; the filters are those
        the official SDK sends (VideoSynthesis.list: model_name, api_key_id, region, status, page_no, page_size).
        """
        self._count_query(request, caller)
        query = request.query
        now = self._clock()
        self._advance(now)
        start = _parse_list_time(query.get("start_time"), "start_time")
        end = _parse_list_time(query.get("end_time"), "end_time")
        if end is None:
            end = self._wall() if start is None else start + LIST_WINDOW_MAX_S
        if start is None:
            start = end - LIST_WINDOW_MAX_S
        if end < start or end - start > LIST_WINDOW_MAX_S:
            self._list_refused_range += 1
            raise _ApiError(
                400, "InvalidParameter", "The time range between start_time and end_time cannot exceed 24 hours."
            )
        try:
            page_no = int(query.get("page_no", "1"))
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            raise _ApiError(400, "InvalidParameter", "page_no and page_size must be integers.") from None
        if page_no < 1 or not 1 <= page_size <= LIST_PAGE_SIZE_MAX:
            raise _ApiError(
                400, "InvalidParameter", f"page_no must be >= 1 and page_size within 1..{LIST_PAGE_SIZE_MAX}."
            )
        status_filter = query.get("status")
        if status_filter is not None and status_filter not in TASK_STATUSES:
            raise _ApiError(400, "InvalidParameter", "status is not a task status.")
        model_filter = query.get("model_name")
        key_filter = query.get("api_key_id")
        region_filter = query.get("region")
        if region_filter and region_filter != self.config.region:
            rows: list[tuple[float, dict[str, Any]]] = []
        else:
            rows = self._list_rows(caller.account, now, start, end, model_filter, key_filter, status_filter)
        rows.sort(key=lambda row: row[0], reverse=True)
        total = len(rows)
        first = (page_no - 1) * page_size
        return web.json_response(
            {
                "request_id": str(uuid.uuid4()),
                "total": total,
                "total_page": math.ceil(total / page_size),
                "page_no": page_no,
                "page_size": page_size,
                "data": [row for _, row in rows[first : first + page_size]],
            }
        )

    def _list_rows(
        self,
        account: str,
        now: float,
        start: float,
        end: float,
        model_filter: str | None,
        key_filter: str | None,
        status_filter: str | None,
    ) -> list[tuple[float, dict[str, Any]]]:
        rows = []
        uid = caller_uid(account)
        for task in self._tasks.values():
            if self._find(task.task_id, account, now) is None:
                continue
            if task.created_wall < start or task.created_wall >= end + 1:  # the end second is included
                continue
            status = task.status(now)
            listed_name = self.config.listed_model_names.get(task.model.name, task.model.name)
            if (
                (model_filter and listed_name != model_filter)
                or (key_filter and task.api_key_id != key_filter)
                or (status_filter and status != status_filter)
            ):
                continue
            started = task.started if now >= task.started and task.canceled_at is None else None
            row = {
                "task_id": task.task_id,
                "status": status,
                "model_name": listed_name,
                "request_id": task.request_id,
                "api_key_id": task.api_key_id,
                "caller_uid": uid,
                "region": self.config.region,
                "gmt_create": int(task.created_wall * 1000),
                "start_time": int(task.wall(started) * 1000) if started is not None else None,
                "end_time": int(task.wall(task.finished) * 1000) if now >= task.finished else None,
            }
            rows.append((task.created_wall, row))
        return rows

    # --- videos ----------------------------------------------------------------------------------------

    def _signature(self, task_id: str, expires: int) -> str:
        mac = hmac.new(self._url_secret, f"{task_id}\n{expires}".encode(), hashlib.sha1).digest()
        return base64.b64encode(mac).decode()

    def _foreign_url(self) -> str | None:
        url = self.config.foreign_video_url
        if url is None:
            return None
        if TRAP_MARK in url:
            url = url.replace(TRAP_MARK, self.trap_origin)
        return url

    def _answer_video_url(self, request: web.Request, task: _Task) -> str:
        foreign = self._foreign_url()
        if foreign is not None and not self.config.foreign_video_redirect:
            self._faults["foreign_video_url"] += 1
            return foreign
        return self._video_url(request, task)

    async def _trap(self, request: web.Request) -> web.Response:
        """Another service on the host: it only counts who came, and answers with something MP4-looking."""
        self._foreign_requests.append(f"{request.method} {request.path}")
        log.warning("sandbox trap listener got %s %s", request.method, request.path)
        body = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(1024)
        return web.Response(body=body, content_type="video/mp4")

    def _video_url(self, request: web.Request, task: _Task) -> str:
        # Shaped like the provider's signed OSS links; valid for the task's TTL after it finished.
        expires = int(task.wall(task.finished) + self._scaled(self.config.task_ttl_s))
        signature = quote(self._signature(task.task_id, expires), safe="")
        return (
            f"{request.scheme}://{request.host}{VIDEO_PREFIX}{task.task_id}.mp4"
            f"?Expires={expires}&OSSAccessKeyId=LTAI5tSandboxKey&Signature={signature}"
        )

    async def _video(self, request: web.Request) -> web.StreamResponse:
        self._calls["video"] += 1
        faults = self.config.faults
        disturbed = faults.applies("video")
        if disturbed and faults.latency_s > 0:
            self._faults["latency"] += 1
            await asyncio.sleep(faults.latency_s)
        if disturbed and self._roll(faults.error_rate):
            self._faults["error"] += 1
            return _oss_error(503, "ServiceUnavailable", "Please reduce your request rate.")
        name = request.match_info["name"]
        task = self._tasks.get(name.removesuffix(".mp4"))
        now = self._clock()
        self._advance(now)
        if task is None or not name.endswith(".mp4") or self._visible_status(task, now) != "SUCCEEDED":
            return _oss_error(404, "NoSuchKey", "The specified key does not exist.")
        try:
            expires = int(request.query.get("Expires", ""))
        except ValueError:
            return _oss_error(403, "AccessDenied", "Invalid Expires.")
        given = request.query.get("Signature", "")
        if not hmac.compare_digest(given.encode(), self._signature(task.task_id, expires).encode()):
            return _oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        if self._wall() > expires:
            return _oss_error(403, "AccessDenied", "Request has expired.")
        foreign = self._foreign_url()
        if foreign is not None and self.config.foreign_video_redirect:
            self._faults["foreign_video_url"] += 1
            raise web.HTTPFound(foreign)

        video = await self._video_bytes(task)
        pad = self.config.video_min_bytes - len(video)
        pad = pad if pad >= 8 else 0
        total = len(video) + pad
        response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Accept-Ranges": "none"})
        response.content_length = total
        await response.prepare(request)
        drop_at = total // 2 if disturbed and self._roll(faults.drop_rate) else None
        sent = 0
        for chunk in _chunks(video, pad):
            if drop_at is not None and sent + len(chunk) > drop_at:
                await response.write(chunk[: drop_at - sent])
                self._faults["drop"] += 1
                if request.transport is not None:
                    request.transport.abort()  # the download is cut off mid-body
                return response
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        self._videos_served += 1
        self._bytes_served += total
        return response

    async def _video_bytes(self, task: _Task) -> bytes:
        last_key = task.last.digest() if task.last is not None else "template"
        key = (task.first.digest(), last_key, task.resolution)
        if task.family == "media":
            extra = [str(task.duration)]
            extra += [hashlib.sha256(b).hexdigest() if b is not None else "-" for b in (task.audio, task.clip)]
            key = (key[0], key[1] + "|" + "|".join(extra), key[2])
        cached = self._renders.get(key)
        if cached is not None:
            self._renders.move_to_end(key)
            return cached
        job = self._rendering.get(key)
        if job is None:
            # Rendering is CPU work (about a second): a thread keeps the emulator answering meanwhile.
            if task.family == "media":
                job = asyncio.ensure_future(asyncio.to_thread(_render_media, task))
            else:
                job = asyncio.ensure_future(asyncio.to_thread(_render, task.first, task.last, task.resolution))
            self._rendering[key] = job
        try:
            video = await asyncio.shield(job)
        finally:
            if job.done():
                self._rendering.pop(key, None)
        if key not in self._renders:
            self._videos_rendered += 1
            self._renders[key] = video
            while len(self._renders) > _RENDER_CACHE:
                self._renders.popitem(last=False)
        return video

    # --- sandbox control routes ------------------------------------------------------------------------

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _config_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.public())

    async def _config_post(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("send a JSON object of settings")
            self.update(**changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.config.public())

    async def _occupy_handler(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            self.occupy_slots(str(body["api_key"]), str(body["model"]), int(body["n"]))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'send {"api_key": ..., "model": ..., "n": ...}'}, status=400)
        return web.json_response({"ok": True})


def _window_over(attempts: list[float], arrived: float, window: float, allowed: int) -> bool:
    """Does any window [s, s + window) that holds `arrived` hold more than `allowed` of the sorted attempts?"""
    first = bisect.bisect_right(attempts, arrived - window)
    last = bisect.bisect_right(attempts, arrived)
    return any(
        bisect.bisect_left(attempts, start + window) - bisect.bisect_left(attempts, start) > allowed
        for start in attempts[first:last]
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"request_id": str(uuid.uuid4()), "code": code, "message": message},
        status=status,
    )


def _oss_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex.upper()[:24]}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _chunks(video: bytes, pad: int, size: int = 256 * 1024) -> Iterator[bytes]:
    for offset in range(0, len(video), size):
        yield video[offset : offset + size]
    if pad:
        yield _free_box_header(pad)
        remaining = pad - 8
        zeros = bytes(min(size, remaining))
        while remaining > 0:
            piece = min(size, remaining)
            yield zeros[:piece]
            remaining -= piece
