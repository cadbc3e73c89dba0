"""A local DashScope keyframe-to-video service, faithful enough that a client passing here passes for real.

What it reproduces (see /docs of the provider, condensed in the project docs):

* the four routes under `/api/v1` — create (`X-DashScope-Async: enable` required), poll, cancel, list — with
  the provider's answer shapes, error bodies `{request_id, code, message}` and status codes;
* the provider's input checks (model, resolution, images decoded with Pillow: format, bytes, sides), and
  its silent truncation of long prompts (counted in `truncated_prompts`: the bot must refuse them itself);
* the account limits, exactly, per API key and model: at most `max_in_flight` tasks PENDING/RUNNING and
  at most `submit_rps` create attempts per sliding second (every refusal is a recorded violation);
* a task lifecycle on a monotonic clock (PENDING -> RUNNING -> SUCCEEDED/FAILED), with provider durations
  divided by `time_scale`; videos are real H.264 mp4s rendered on first download, behind signed-looking URLs;
* injected faults (5xx, 429, latency, dropped connections, broken JSON) to exercise the caller's recovery.

Everything it sees is counted in `stats()` / `GET /_sandbox/stats`. Keys are never stored: an account is
named by `fingerprint(key)` ("acct-" + 8 hex of sha256), the same id the client logs.

It keeps its own copy of the model list (derived from `bot.catalog.DEFAULT_CATALOG`, both regions' names) and
does not import the client, so a bug in one is not mirrored by the other.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
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

from aiohttp import web
from PIL import Image, ImageOps, UnidentifiedImageError

from bot.catalog import DEFAULT_CATALOG

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CREATE_PATH = API_PREFIX + "/services/aigc/image2video/video-synthesis"
VIDEO_PREFIX = "/_sandbox/videos/"
ROUTES = ("create", "get", "cancel", "list", "video")
API_ROUTES = frozenset({"create", "get", "cancel", "list"})
PROVIDER_TZ = timezone(timedelta(hours=8))  # both regions write their times in UTC+8
PROMPT_MAX = 800
NEGATIVE_PROMPT_MAX = 500
SEED_MAX = 2_147_483_647
IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}
IMAGE_MIMES = {"image/jpeg", "image/jpg", "image/png", "image/bmp", "image/webp"}
_DATA_URI = re.compile(r"data:([^;,]*);base64,(.*)", re.DOTALL)
_RENDER_CACHE = 16
_ARRIVED = web.RequestKey("arrived", float)  # emulator clock when the request's headers arrived


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
    """Knobs of the emulator; provider durations (pending, running, TTL) are divided by `time_scale`."""

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

    @classmethod
    def realistic(cls, **overrides: Any) -> EmulatorConfig:
        """The provider's observed timings: up to 2.5 min queued, 4-6 min running."""
        values: dict[str, Any] = {"pending_s": (0.0, 150.0), "running_s": (240.0, 360.0)}
        values.update(overrides)
        return cls(**values)

    def limits_for(self, model: str) -> tuple[int, float]:
        return self.model_limits.get(model, (self.max_in_flight, self.submit_rps))

    def public(self) -> dict[str, Any]:
        """JSON view without the key (only whether one is fixed, and its fingerprint)."""
        data = asdict(self)
        data.pop("api_key")
        data["fixed_api_key"] = fingerprint(self.api_key) if self.api_key else None
        routes = self.faults.routes
        data["faults"]["routes"] = sorted(routes) if routes is not None else None
        return data


def _check_config(cfg: EmulatorConfig) -> None:
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


def _coerce(name: str, value: Any) -> Any:
    """JSON values (lists) into the dataclass field types (tuples, frozensets)."""
    if name in ("pending_s", "running_s") and value is not None:
        low, high = value
        return (float(low), float(high))
    if name == "routes" and value is not None:
        return frozenset(str(v) for v in value)
    if name == "model_limits" and value is not None:
        return {str(k): (int(v[0]), float(v[1])) for k, v in dict(value).items()}
    return value


# --- the model list (own copy) -------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatedModel:
    name: str
    resolutions: tuple[str, ...]
    default_resolution: str
    templates: tuple[str, ...]
    usage_sr: bool  # wan2.2 reports SR (480/720/1080); the 2.1 plus model reports video_ratio "standard"


def emulated_models(catalog: dict[str, Any] | None = None) -> dict[str, EmulatedModel]:
    data = copy.deepcopy(catalog if catalog is not None else DEFAULT_CATALOG)
    models: dict[str, EmulatedModel] = {}
    for key, raw in data["models"].items():
        for name in raw["provider_names"].values():
            models[name] = EmulatedModel(
                name=name,
                resolutions=tuple(raw["resolutions"]),
                default_resolution=raw["default_resolution"],
                templates=tuple(raw.get("templates", ())),
                usage_sr="2.1" not in key,
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
    account: str
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
    canceled_at: float | None = None
    polls: int = 0
    polls_after_finished: int = 0

    @property
    def started(self) -> float:
        return self.created + self.pending

    @property
    def finished(self) -> float:
        return self.canceled_at if self.canceled_at is not None else self.created + self.pending + self.running

    def status(self, now: float) -> str:
        if self.canceled_at is not None and now >= self.canceled_at:
            return "CANCELED"
        if now < self.started:
            return "PENDING"
        if now < self.finished:
            return "RUNNING"
        return "FAILED" if self.fails else "SUCCEEDED"

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


def _inspect_image(value: str, name: str, cfg: EmulatorConfig) -> _Image:
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
    if len(raw) > cfg.image_max_bytes:
        raise _ApiError(400, "InvalidFile.Size", f"The image of {name} exceeds {cfg.image_max_bytes} bytes.")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image_format = image.format or ""
            width, height = image.size
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _ApiError(400, "InvalidFile.Content", f"The image of {name} cannot be decoded.") from None
    if image_format not in IMAGE_FORMATS:
        raise _ApiError(400, "InvalidImageFormat", f"The image of {name} is {image_format or 'of unknown format'}.")
    low, high = cfg.image_min_side, cfg.image_max_side
    if not (low <= width <= high and low <= height <= high):
        raise _ApiError(
            400,
            "InvalidFile.Resolution",
            f"The image of {name} is {width}x{height}; width and height must be within {low}-{high} pixels.",
        )
    return _Image(data=raw)


def _placeholder(url: str) -> bytes:
    """A URL input is not fetched: render a flat colour derived from it instead."""
    digest = hashlib.sha256(url.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (1280, 720), (digest[0], digest[1], digest[2])).save(buf, "PNG")
    return buf.getvalue()


def _render(first: _Image, last: _Image | None, resolution: str) -> bytes:
    from bot.sandbox.video import render_crossfade  # imports PyAV: only when a video is really needed

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


def _free_box_header(size: int) -> bytes:
    return size.to_bytes(4, "big") + b"free"


# --- the emulator --------------------------------------------------------------------------------------


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
        self._models = emulated_models()
        self._url_secret = secrets.token_bytes(16)
        self._tasks: dict[str, _Task] = {}
        self._active: dict[tuple[str, str], list[_Task]] = {}
        self._attempts: dict[tuple[str, str], list[float]] = {}
        self._occupied: dict[tuple[str, str], int] = {}
        self._renders: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._rendering: dict[tuple[str, str, str], asyncio.Task[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        # counters
        self._calls = dict.fromkeys(ROUTES, 0)
        self._faults = {"error": 0, "throttle": 0, "drop": 0, "malformed": 0, "latency": 0}
        self._accepted = 0
        self._by_key_model: dict[str, dict[str, int]] = {}
        self._max_in_flight: dict[str, dict[str, int]] = {}
        self._violations: list[dict[str, Any]] = []
        self._rejected: dict[str, int] = {}
        self._truncated = 0
        self._cancels = 0
        self._image_urls: list[str] = []
        self._videos_rendered = 0
        self._videos_served = 0
        self._bytes_served = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(CREATE_PATH, self._route("create", self._create))
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
        """Serve on host:port (0 = any free port); returns the base URL ending in /api/v1."""
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
        return self._base_url

    async def stop(self) -> None:
        for job in self._rendering.values():
            job.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
        self.config = cfg

    def occupy_slots(self, api_key: str, model: str, n: int) -> None:
        """Someone else on the same account holds `n` of this model's in-flight slots (0 frees them)."""
        self._occupied[(fingerprint(api_key), model)] = max(0, int(n))

    # --- statistics -------------------------------------------------------------------------------------

    def _rel(self, moment: float) -> float:
        return round(moment - self._epoch, 3)

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        timeline = []
        for task in self._tasks.values():
            status = self._visible_status(task, now)
            started = task.started if now >= task.started and task.canceled_at is None else None
            timeline.append(
                {
                    "task_id": task.task_id,
                    "model": task.model.name,
                    "key": task.account,
                    "created": self._rel(task.created),
                    "started": self._rel(started) if started is not None else None,
                    "finished": self._rel(task.finished) if now >= task.finished else None,
                    "status": status,
                    "polls": task.polls,
                    "polls_after_finished": task.polls_after_finished,
                }
            )
        return {
            "uptime_s": self._rel(now),
            "calls": dict(self._calls),
            "submissions_accepted": self._accepted,
            "submissions_by_key_model": copy.deepcopy(self._by_key_model),
            "throttled": len(self._violations),
            "violations": list(self._violations),
            "faults": dict(self._faults),
            "max_in_flight": copy.deepcopy(self._max_in_flight),
            "in_flight_now": self._in_flight_now(now),
            "rejected": dict(self._rejected),
            "truncated_prompts": self._truncated,
            "cancels": self._cancels,
            "image_urls": list(self._image_urls),
            "videos_rendered": self._videos_rendered,
            "videos_served": self._videos_served,
            "video_bytes_served": self._bytes_served,
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
        self, name: str, handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            request[_ARRIVED] = self._clock()
            self._calls[name] += 1
            faults = self.config.faults
            disturbed = faults.applies(name)
            if disturbed and faults.latency_s > 0:
                self._faults["latency"] += 1
                await asyncio.sleep(faults.latency_s)
            try:
                account = self._authenticate(request)
                if disturbed and self._roll(faults.error_rate):
                    self._faults["error"] += 1
                    if self._rng.random() < 0.5:
                        raise _ApiError(500, "InternalError", "An internal error has occured, please try again later.")
                    raise _ApiError(503, "ModelServingError", "The model is overloaded, please try again later.")
                if disturbed and self._roll(faults.throttle_rate):
                    self._faults["throttle"] += 1
                    raise _ApiError(429, "Throttling", "Requests throttling triggered.")
                response: web.StreamResponse = await handler(request, account)
            except _ApiError as exc:
                if 400 <= exc.status < 500 and exc.status != 429 and exc.code != "InvalidApiKey":
                    self._rejected[exc.code] = self._rejected.get(exc.code, 0) + 1
                response = _error(exc.status, exc.code, exc.message)
            if disturbed and self._roll(faults.drop_rate):
                self._faults["drop"] += 1
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

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        expected = self.config.api_key
        if (
            scheme.lower() != "bearer"
            or not key
            or (expected is not None and not hmac.compare_digest(key.encode(), expected.encode()))
        ):
            raise _ApiError(401, "InvalidApiKey", "Invalid API-key provided.")
        return fingerprint(key)

    def _scaled(self, seconds: float) -> float:
        return seconds / self.config.time_scale

    def _find(self, task_id: str, account: str, now: float) -> _Task | None:
        """Tasks of another account, and expired ones, do not exist (the provider answers UNKNOWN)."""
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

    async def _create(self, request: web.Request, account: str) -> web.Response:
        if request.headers.get("X-DashScope-Async", "").strip().lower() != "enable":
            raise _ApiError(403, "AccessDenied", "current user api does not support synchronous calls")
        raw = await request.read()
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

        self._check_burst(account, model_name, request.get(_ARRIVED, self._clock()))
        spec = await self._validate(body, model)
        prompt, negative = spec["prompt"], spec["negative_prompt"]
        if spec["template"] is None and any(
            self.config.reject_word and self.config.reject_word in (text or "") for text in (prompt, negative)
        ):
            raise _ApiError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")

        # No await from here on: the in-flight check and the task's creation are one atomic step.
        now = self._clock()
        slots, _ = self.config.limits_for(model_name)
        active = self._active_tasks(account, model_name, now)
        occupied = self._occupied.get((account, model_name), 0)
        if len(active) + occupied >= slots:
            self._violation(account, model_name, "in_flight", now)
            # The provider's code for this case is unconfirmed; every Throttling* means "later".
            raise _ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")

        cfg = self.config
        task = _Task(
            task_id=str(uuid.uuid4()),
            account=account,
            model=model,
            request_id=str(uuid.uuid4()),
            created=now,
            created_wall=self._wall(),
            pending=self._scaled(self._rng.uniform(*cfg.pending_s)),
            running=self._scaled(self._rng.uniform(*cfg.running_s)),
            fails=spec["template"] is None and bool(cfg.fail_word) and cfg.fail_word in (prompt or ""),
            resolution=spec["resolution"],
            prompt=prompt if spec["template"] is None else None,
            actual_prompt=_extend_prompt(prompt)
            if spec["template"] is None and spec["prompt_extend"] and prompt
            else None,
            template=spec["template"],
            first=spec["first"],
            last=spec["last"],
        )
        self._tasks[task.task_id] = task
        active.append(task)
        self._accepted += 1
        per_key = self._by_key_model.setdefault(account, {})
        per_key[model_name] = per_key.get(model_name, 0) + 1
        peaks = self._max_in_flight.setdefault(account, {})
        peaks[model_name] = max(peaks.get(model_name, 0), len(active))
        log.info(
            "sandbox task %s created for %s on %s (%s, pending %.1fs, running %.1fs)",
            task.task_id, account, model_name, task.resolution, task.pending, task.running,
        )  # fmt: skip
        return web.json_response(
            {"request_id": task.request_id, "output": {"task_id": task.task_id, "task_status": "PENDING"}}
        )

    def _active_tasks(self, account: str, model: str, now: float) -> list[_Task]:
        tasks = [t for t in self._active.get((account, model), []) if t.status(now) in ("PENDING", "RUNNING")]
        self._active[(account, model)] = tasks
        return tasks

    def _check_burst(self, account: str, model: str, arrived: float) -> None:
        """Sliding window over every create attempt that got this far, refused ones included.

        `submit_rps` of 2 means at most 2 attempts in any 1-second window [s, s+1); below 1/s, one per 1/rps
        seconds. An attempt is timed when its headers arrived (not when its megabytes of body were read), so
        attempts may be checked slightly out of order: they are kept sorted and every window holding the new
        one is checked.
        """
        _, rps = self.config.limits_for(model)
        allowed = max(1, math.floor(rps))
        window = allowed / rps
        attempts = self._attempts.setdefault((account, model), [])
        del attempts[: bisect.bisect_right(attempts, self._clock() - 2 * window)]  # too old to matter
        bisect.insort(attempts, arrived)
        first = bisect.bisect_right(attempts, arrived - window)
        last = bisect.bisect_right(attempts, arrived)
        for start in attempts[first:last]:
            if bisect.bisect_left(attempts, start + window) - bisect.bisect_left(attempts, start) > allowed:
                self._violation(account, model, "burst", self._clock())
                raise _ApiError(429, "Throttling.BurstRate", "Requests rate limit exceeded, please try again later.")

    def _violation(self, account: str, model: str, kind: str, now: float) -> None:
        self._violations.append({"t": self._rel(now), "key": account, "model": model, "kind": kind})
        log.warning("sandbox limit violation: %s on %s by %s", kind, model, account)

    async def _validate(self, body: dict[str, Any], model: EmulatedModel) -> dict[str, Any]:
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
        cfg = self.config
        first_image = await asyncio.to_thread(_inspect_image, first, "first_frame_url", cfg)
        last_image = await asyncio.to_thread(_inspect_image, last, "last_frame_url", cfg) if last else None
        for image in (first_image, last_image):
            if image is not None and image.url is not None:
                self._image_urls.append(image.url.split("?", 1)[0])  # never keep a signed query
        return {
            "prompt": prompt,
            "negative_prompt": negative,
            "template": template,
            "resolution": resolution,
            "prompt_extend": params.get("prompt_extend", True),
            "first": first_image,
            "last": last_image,
        }

    # --- poll, cancel, list ----------------------------------------------------------------------------

    async def _get(self, request: web.Request, account: str) -> web.Response:
        task_id = request.match_info["task_id"]
        now = self._clock()
        task = self._find(task_id, account, now)
        if task is None:
            return web.json_response(
                {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            )
        status = task.status(now)
        task.polls += 1
        if status in ("SUCCEEDED", "FAILED", "CANCELED"):
            task.polls_after_finished += 1
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
            output["video_url"] = self._video_url(request, task)
            if task.prompt is not None:
                output["orig_prompt"] = task.prompt
            if task.actual_prompt is not None:
                output["actual_prompt"] = task.actual_prompt
            usage: dict[str, Any] = {"video_duration": 5, "video_count": 1}
            if task.model.usage_sr:
                usage["SR"] = int(task.resolution.rstrip("Pp"))
            else:
                usage["video_ratio"] = "standard"
            body["usage"] = usage
        elif status == "FAILED":
            output["code"] = "DataInspectionFailed"
            output["message"] = "Output data may contain inappropriate content."
            body["usage"] = None
        return web.json_response(body)

    async def _cancel(self, request: web.Request, account: str) -> web.Response:
        task_id = request.match_info["task_id"]
        now = self._clock()
        task = self._find(task_id, account, now)
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

    async def _list(self, request: web.Request, account: str) -> web.Response:
        query = request.query
        start = _parse_list_time(query.get("start_time"), "start_time")
        end = _parse_list_time(query.get("end_time"), "end_time")
        try:
            page_no = int(query.get("page_no", "1"))
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            raise _ApiError(400, "InvalidParameter", "page_no and page_size must be integers.") from None
        if page_no < 1 or not 1 <= page_size <= 100:
            raise _ApiError(400, "InvalidParameter", "page_no must be >= 1 and page_size within 1..100.")
        status_filter = query.get("status")
        if status_filter is not None and status_filter not in (
            "PENDING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN",
        ):  # fmt: skip
            raise _ApiError(400, "InvalidParameter", "status is not a task status.")
        model_filter = query.get("model_name")
        now = self._clock()
        rows: list[tuple[float, dict[str, Any]]] = []
        for task in self._tasks.values():
            if self._find(task.task_id, account, now) is None:
                continue
            if start is not None and task.created_wall < start:
                continue
            if end is not None and task.created_wall >= end + 1:  # the end second is included
                continue
            status = task.status(now)
            if (model_filter and task.model.name != model_filter) or (status_filter and status != status_filter):
                continue
            started = task.started if now >= task.started and task.canceled_at is None else None
            rows.append(
                (
                    task.created_wall,
                    {
                        "task_id": task.task_id,
                        "status": status,
                        "model_name": task.model.name,
                        "request_id": task.request_id,
                        "gmt_create": int(task.created_wall * 1000),
                        "start_time": int(task.wall(started) * 1000) if started is not None else None,
                        "end_time": int(task.wall(task.finished) * 1000) if now >= task.finished else None,
                    },
                )
            )
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

    # --- videos ----------------------------------------------------------------------------------------

    def _signature(self, task_id: str, expires: int) -> str:
        mac = hmac.new(self._url_secret, f"{task_id}\n{expires}".encode(), hashlib.sha1).digest()
        return base64.b64encode(mac).decode()

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
        cached = self._renders.get(key)
        if cached is not None:
            self._renders.move_to_end(key)
            return cached
        job = self._rendering.get(key)
        if job is None:
            # Rendering is CPU work (about a second): a thread keeps the emulator answering meanwhile.
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
