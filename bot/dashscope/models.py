"""What goes to DashScope and what comes back, as pydantic models.

Requests are built and checked here (`CreateTaskRequest.build`) so nothing the provider would refuse, or
silently truncate, is ever sent. Responses are untrusted data: unknown fields are kept and missing optional ones
are None, but an answer that cannot be read (no `output`, an unknown `task_status`, wrong types) raises
`ValueError`/`TypeError`/`KeyError`/`ValidationError` here, which the client turns into `MalformedAnswerError`.
Nothing unreadable becomes a status: only a literal "UNKNOWN" is `TaskStatus.UNKNOWN`.

Times: poll answers carry "YYYY-MM-DD HH:mm:ss.SSS" without a zone (examples on
https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks); they are read as UTC+8
(`PROVIDER_TZ`, the zone of both regions; unconfirmed: the page names none), so callers rely only on
differences between them. List rows carry epoch milliseconds, which need no zone.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from bot.catalog import MEDIA_TYPES, Catalog, Family, ModelSpec, TimedMediaLimits
from bot.dashscope.errors import DashScopeError, classify
from bot.dashscope.families import FAMILIES, family_named
from bot.dashscope.families.base import ARGUMENT, FamilyInput, MediaType
from bot.dashscope.families.base import RequestValidationError as RequestValidationError
from bot.dashscope.families.kf2v import TaskInput as TaskInput
from bot.dashscope.families.media import MediaInput as MediaInput
from bot.dashscope.families.media import MediaItem as MediaItem
from bot.logs import redact

PROVIDER_TZ = timezone(timedelta(hours=8), "UTC+8")
# The kf2v family's limits (each model's own are in the catalog: `ModelSpec.prompt_max_chars`).
PROMPT_MAX_CHARS = 800
NEGATIVE_PROMPT_MAX_CHARS = 500
SEED_MAX = 2_147_483_647
VIDEO_DURATION_S = 5

_DATA_URI = re.compile(r"data:image/(jpeg|png|bmp|webp);base64,(.+)", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class TaskStatus(StrEnum):
    """A task's status as the provider names it (see the module docstring for unreadable values)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        """Nothing will change any more (UNKNOWN: expired or never existed, also final)."""
        return self in _FINAL

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """Strict: exactly one of the seven documented statuses, else `ValueError`.

        A missing, misspelt or new status is not UNKNOWN (which is final): it is an unreadable answer.
        """
        if isinstance(value, str) and value in _BY_VALUE:
            return _BY_VALUE[value]
        shown = repr(value)[:40]
        raise ValueError(f"not a task status: {shown}")


_FINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN})
_BY_VALUE = {status.value: status for status in TaskStatus}


def parse_provider_time(value: str | None) -> datetime | None:
    """ "2025-02-12 11:03:30.701" (UTC+8) -> aware datetime; None for None/blank/unreadable."""
    if not value:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=PROVIDER_TZ)
        except ValueError:
            continue
    return None


def format_provider_time(moment: datetime) -> str:
    """Aware datetime -> "YYYY-MM-DD HH:mm:ss.SSS" in UTC+8 (what the provider writes)."""
    local = moment.astimezone(PROVIDER_TZ)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def parse_epoch_ms(value: int | float | str | None) -> datetime | None:
    """Epoch milliseconds (or, leniently, a provider time string) -> aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not value.strip().isdigit():
            parsed = parse_provider_time(value)
            return parsed.astimezone(UTC) if parsed else None
        value = int(value.strip())
    return datetime.fromtimestamp(float(value) / 1000, UTC)


def redact_uri(value: str | None) -> str | None:
    """Image or video reference for logs: data URIs reduced to type and size, URLs without their query."""
    return None if value is None else redact(value)


def _check_image(field: str, value: str) -> None:
    if value.startswith("data:"):
        match = _DATA_URI.fullmatch(value)
        if match is None:
            raise RequestValidationError(
                field, "Images must be sent as data:image/(jpeg|png|bmp|webp);base64,... or an http(s) URL."
            )
        payload = match.group(2)
        if not payload or _BASE64.fullmatch(payload) is None or len(payload) % 4:
            raise RequestValidationError(field, "The image data is not valid base64.")
        return
    _check_url(field, value, "Images must be sent as data:image/(jpeg|png|bmp|webp);base64,..., an http(s) URL")


def _check_url(field: str, value: str, what: str) -> None:
    """A public http(s) URL or an `oss://` temporary-upload URL (data URIs are for images only)."""
    if value.startswith(OSS_SCHEME):
        if len(value) > len(OSS_SCHEME) and "/" in value[len(OSS_SCHEME) :]:
            return
        raise RequestValidationError(field, "An oss:// URL needs a bucket and a key.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestValidationError(field, f"{what} or an oss:// URL from a temporary upload.")


def _check_extension(field: str, value: str, limits: TimedMediaLimits, kind: str) -> None:
    # The provider takes the format from the file; the bot can only see the name here. The bytes (length,
    # size) are checked by whoever holds them, before uploading (`TimedMediaLimits`).
    path = value[len(OSS_SCHEME) :] if value.startswith(OSS_SCHEME) else urlsplit(value).path
    extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if extension not in limits.formats:
        raise RequestValidationError(
            field, f"The {kind} must be one of {', '.join(limits.formats)} (a file name ending .{limits.formats[0]})."
        )


OSS_SCHEME = "oss://"
# The create call's path per built-in API family (relative to .../api/v1); each family module names its own.
CREATE_PATHS: dict[str, str] = {name: family.create_path for name, family in FAMILIES.items()}
# Header the provider needs to read oss:// temporary URLs ("otherwise error"):
# https://help.aliyun.com/zh/model-studio/get-temporary-file-url
OSS_RESOLVE_HEADER = "X-DashScope-OssResourceResolve"


class TaskParameters(BaseModel):
    """The `parameters` object of a create request: resolution, duration, prompt extension, seed."""

    model_config = ConfigDict(frozen=True)

    resolution: str
    duration: int = VIDEO_DURATION_S
    prompt_extend: bool = True
    watermark: bool = False
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    # Sent only when the model documents a sound switch (`sound.optional` in the catalog); None = not sent.
    audio: bool | None = None


class CreateTaskRequest(BaseModel):
    """The create call's body. `repr`/`str` never show image data (it can be megabytes and private).

    `family` is not part of the body: it names the API family (`bot.dashscope.families`), whose module gives the
    path (`create_path`) and the input shape (`input` is that family's `FamilyInput`, serialised as it is).
    """

    model_config = ConfigDict(frozen=True)

    model: str
    input: SerializeAsAny[FamilyInput]
    parameters: TaskParameters
    family: Family = Field(default="kf2v", exclude=True)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to POST: unset options left out so the provider applies its defaults."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def create_path(self) -> str:
        """The create endpoint's path for this request's family."""
        return family_named(self.family).create_path

    def media_urls(self) -> list[str]:
        """Every image, audio or clip URL the request sends, in body order (data URIs included)."""
        return self.input.media_urls()

    @property
    def uses_oss(self) -> bool:
        """Some input is an oss:// temporary upload: the create call must send `OSS_RESOLVE_HEADER`."""
        return any(url.startswith(OSS_SCHEME) for url in self.media_urls())

    def __repr__(self) -> str:
        i, p = self.input, self.parameters
        fields = [f"model={self.model!r}", f"family={self.family}", *i.describe()]
        fields += [
            f"prompt_chars={len(i.prompt or '')}",
            f"negative_prompt_chars={len(i.negative_prompt or '')}",
            f"resolution={p.resolution!r}",
            f"duration={p.duration}",
            f"prompt_extend={p.prompt_extend}",
            f"seed={p.seed!r}",
        ]
        return f"CreateTaskRequest({', '.join(fields)})"

    __str__ = __repr__

    @property
    def template_mode(self) -> bool:
        """True when the request names an effect template (the prompt is then optional)."""
        return self.input.uses_template

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        region: str,
        *,
        model_key: str,
        resolution: str | None,
        prompt: str | None,
        negative_prompt: str | None,
        first_frame_uri: str | None,
        last_frame_uri: str | None,
        prompt_extend: bool = True,
        seed: int | None = None,
        template: str | None = None,
        duration: int | None = None,
        driving_audio_url: str | None = None,
        first_clip_url: str | None = None,
        sound: bool | None = None,
    ) -> CreateTaskRequest:
        """Check everything the provider checks (and what it would silently truncate) and build the body.

        Everything follows the model's catalog entry: its family (`bot.dashscope.families`: request shape, path
        and the family's own checks), resolutions,
        duration range (None = the model's default), sound, prompt limits and accepted media combinations.
        Media are given one argument per kind: `first_frame_uri`/`last_frame_uri` (data URI, http(s) or
        oss://), `driving_audio_url` and `first_clip_url` (http(s) or oss://; their bytes — length, size —
        must be checked against `spec.inputs` by the caller, who holds them). For a first_clip, `duration`
        is the TOTAL length of the result, input clip included (the provider returns the whole video).
        `sound`: None = the model's default; False on a model that always makes sound, or True on a silent
        one, is refused. Raises `RequestValidationError` naming the argument at fault. Template mode (effects)
        uses only the first frame and ignores the prompt, so neither prompt is sent then.
        """
        spec = catalog.models.get(model_key)
        if spec is None:
            raise RequestValidationError("model_key", f"Unknown model {model_key!r}.")
        family = family_named(spec.family)
        if (why := catalog.why_not_offered(model_key, region)) is not None:
            raise RequestValidationError("model_key", f"Model {model_key} is not offered in region {region}: {why}.")
        chosen_resolution = resolution if resolution is not None else spec.default_resolution
        if chosen_resolution not in spec.resolutions:
            allowed = ", ".join(spec.resolutions)
            raise RequestValidationError(
                "resolution", f"Model {model_key} does not offer {chosen_resolution}; choose one of {allowed}."
            )
        chosen_duration = spec.default_duration if duration is None else duration
        if isinstance(chosen_duration, bool) or not spec.allows_duration(chosen_duration):
            raise RequestValidationError(
                "duration",
                f"Model {model_key} makes videos of {spec.describe_durations()}; {duration} s is not possible.",
            )
        audio_flag = _sound_flag(spec, model_key, sound)
        if prompt is not None and len(prompt) > spec.prompt_max_chars:
            raise RequestValidationError(
                "prompt", f"The prompt has {len(prompt)} characters; at most {spec.prompt_max_chars} are allowed."
            )
        if negative_prompt is not None and len(negative_prompt) > spec.negative_prompt_max_chars:
            raise RequestValidationError(
                "negative_prompt",
                f"The negative prompt has {len(negative_prompt)} characters; "
                f"at most {spec.negative_prompt_max_chars} are allowed.",
            )
        if seed is not None and not 0 <= seed <= SEED_MAX:
            raise RequestValidationError("seed", f"The seed must be between 0 and {SEED_MAX}.")
        sent: tuple[tuple[MediaType, str | None], ...] = (
            ("first_frame", first_frame_uri),
            ("last_frame", last_frame_uri),
            ("driving_audio", driving_audio_url),
            ("first_clip", first_clip_url),
        )
        given = {kind: value for kind, value in sent if value is not None}
        if template is not None:
            offered = spec.templates_in(region)
            if not spec.templates:
                raise RequestValidationError("template", f"Model {model_key} has no effect templates.")
            if not offered:
                raise RequestValidationError("template", f"Model {model_key} has no effect templates in {region}.")
            if template not in offered:
                known = ", ".join(offered)
                raise RequestValidationError("template", f"Unknown effect template {template!r}; known: {known}.")
            if "last_frame" in given and frozenset(given) not in spec.template_combinations:
                raise RequestValidationError(
                    "last_frame_uri", "An effect template uses only the first frame; leave the last frame out."
                )
            _check_combination(spec, model_key, given, spec.template_combinations)
            prompt = negative_prompt = None
        else:
            _check_combination(spec, model_key, given, spec.media_combinations)
            family.check_prompt(prompt)
        transport = spec.media_transport[region]
        for kind, value in given.items():
            argument = ARGUMENT[kind]
            if value.startswith(OSS_SCHEME) and transport != "temporary_upload":
                raise RequestValidationError(
                    argument, f"Region {region} has no temporary upload for {model_key}: oss:// URLs cannot be read."
                )
            family.check_media(argument, kind, value)
            if kind in ("first_frame", "last_frame"):
                _check_image(argument, value)
            else:
                limits = spec.inputs.audio if kind == "driving_audio" else spec.inputs.clip
                _check_url(argument, value, "Audio and clips must be sent as an http(s) URL")
                if limits is not None:
                    _check_extension(argument, value, limits, "audio" if kind == "driving_audio" else "clip")
        parameters = TaskParameters(
            resolution=chosen_resolution,
            duration=chosen_duration,
            prompt_extend=prompt_extend,
            seed=seed,
            audio=audio_flag,
        )
        provider_model = catalog.provider_name(model_key, region)
        return cls(
            model=provider_model,
            family=family.name,
            input=family.build_input(given, prompt, negative_prompt, template),
            parameters=parameters,
        )


def _sound_flag(spec: ModelSpec, model_key: str, sound: bool | None) -> bool | None:
    """What to send as `parameters.audio`: None (nothing) unless the model documents a switch."""
    if sound is None or sound == spec.makes_sound:
        return sound if spec.sound_optional and sound is not None else None
    if not spec.makes_sound:
        raise RequestValidationError("sound", f"Model {model_key} makes silent videos only.")
    if not spec.sound_optional:
        raise RequestValidationError("sound", f"Model {model_key} always makes sound; it cannot be switched off.")
    return sound


_SHOWN_ORDER = ("first_frame", "first_clip", "last_frame", "driving_audio")  # how the docs write combinations


def _check_combination(
    spec: ModelSpec, model_key: str, given: dict[MediaType, str], allowed: tuple[frozenset[str], ...]
) -> None:
    combo = frozenset(given)
    if combo in allowed:
        return
    shown = " | ".join("+".join(k for k in _SHOWN_ORDER if k in c) for c in allowed) or "none"
    # Blame the start (first frame or clip) when it is missing, else the first extra kind the model refuses here.
    starts = {k for c in allowed for k in c if k in ("first_frame", "first_clip")}
    if not combo & starts:
        argument = "first_frame_uri"
    else:
        removable = [k for k in MEDIA_TYPES if k in combo and combo - {k} in allowed]
        extra = removable or [k for k in MEDIA_TYPES if k in combo and k not in starts] or sorted(combo)
        argument = ARGUMENT[extra[0]]
    if (refused := family_named(spec.family).refused_combination(combo, spec.template_combinations)) is not None:
        raise refused
    given_shown = "+".join(k for k in _SHOWN_ORDER if k in combo) or "nothing"
    raise RequestValidationError(argument, f"Model {model_key} accepts {shown}; {given_shown} is not one of them.")


class _Lenient(BaseModel):
    # Keep unknown fields; accept numbers where text is expected; "model_name" is a provider field, not pydantic's.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, protected_namespaces=())


class CreatedTask(_Lenient):
    """The create answer: the task id the provider gave and its first status."""

    task_id: str
    status: TaskStatus
    request_id: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        """`{"output": {"task_id", "task_status"}, "request_id"}`; raises KeyError/TypeError/ValueError if not."""
        output = data["output"]
        task_id = output["task_id"]
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("create answer without a task_id")
        return cls(
            task_id=task_id,
            status=TaskStatus.parse(output.get("task_status", "PENDING")),
            request_id=data.get("request_id"),
        )


class Usage(_Lenient):
    """What a finished task reports as billed: the video seconds (field names differ per family)."""

    video_duration: float | None = None
    # The media family (wan2.7) bills `duration` (total seconds, an input clip's included) and reports
    # `input_video_duration`/`output_video_duration`; SDK examples also show `video_duration: 0` beside it.
    # https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference
    duration: float | None = None
    input_video_duration: float | None = None
    output_video_duration: float | None = None
    video_count: int | None = None
    SR: int | None = None
    video_ratio: str | None = None

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Self:
        """The billed duration as sent (huge, negative, inf and nan included: the caller clamps it).

        Only `duration` / `video_duration` decide money, so only they must be numbers; the informative fields
        are dropped when their type is wrong rather than failing the answer.
        """
        fields = dict(raw)
        fields["video_duration"] = _billed_duration(raw.get("video_duration"))
        fields["duration"] = _billed_duration(raw.get("duration"))
        for name in ("video_count", "SR", "video_ratio", "input_video_duration", "output_video_duration"):
            if name in fields:
                try:
                    cls.model_validate({name: fields[name]})
                except ValidationError:
                    del fields[name]
        return cls.model_validate(fields)


def _billed_duration(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("usage.video_duration is not a number")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float: absurd, but "as sent" means huge
            return math.inf if value > 0 else -math.inf
    return float(value)  # a numeric string ("5") as sent; anything else raises ValueError


# Fields the poll answer's `output` may not override: they are set from what was checked.
_RESERVED_OUTPUT = frozenset({"task_id", "task_status", "status", "request_id", "usage"})


class TaskResult(_Lenient):
    """One poll's answer. A FAILED task is a normal result (HTTP 200) with `code`/`message` set."""

    task_id: str
    status: TaskStatus
    request_id: str | None = None
    video_url: str | None = None
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    code: str | None = None
    message: str | None = None
    usage: Usage | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any], *, task_id: str) -> Self:
        """Strict where it matters: an object `output` with a known `task_status`, about `task_id` if named.

        Raises `ValueError`/`TypeError`/`ValidationError` for anything else (the client's MalformedAnswerError).
        """
        output = data.get("output")
        if not isinstance(output, dict):
            raise ValueError("task answer without an output object")
        if "task_status" not in output:
            raise ValueError("task answer without a task_status")
        status = TaskStatus.parse(output["task_status"])
        echoed = output.get("task_id")
        if echoed is not None and echoed != task_id:
            raise ValueError("task answer about another task")
        usage = data.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise TypeError("usage is not an object")
        known = {k: v for k, v in output.items() if k not in _RESERVED_OUTPUT}
        return cls(
            **known,
            task_id=task_id,
            status=status,
            request_id=data.get("request_id"),
            usage=Usage.from_api(usage) if usage is not None else None,
        )

    def __repr__(self) -> str:
        # The video URL is signed: only its path is shown.
        return (
            f"TaskResult(task_id={self.task_id!r}, status={self.status.value}, code={self.code!r}, "
            f"video_url={redact_uri(self.video_url)!r}, billed_seconds={self.billed_seconds!r})"
        )

    __str__ = __repr__

    @property
    def billed_seconds(self) -> float | None:
        """Seconds the provider bills for, AS SENT: may be huge, negative, inf or nan. The caller clamps.

        Only successful tasks report usage; None when the answer had none. This reading knows no family (for
        logs and callers without a model at hand): whichever of the families' fields is set, `duration` first.
        The worker charges by the job's family's own reading (`ApiFamily.billed_seconds`).
        """
        if self.usage is None:
            return None
        # `duration` is the media family's bill; where both appear, `video_duration` is 0 in the examples.
        return self.usage.duration if self.usage.duration is not None else self.usage.video_duration

    @property
    def submitted_at(self) -> datetime | None:
        """When the provider accepted the task (aware, from its UTC+8 text); None if absent or unreadable."""
        return parse_provider_time(self.submit_time)

    @property
    def scheduled_at(self) -> datetime | None:
        """When the provider started running the task; None if absent or unreadable."""
        return parse_provider_time(self.scheduled_time)

    @property
    def ended_at(self) -> datetime | None:
        """When the task reached its final state; None if absent or unreadable."""
        return parse_provider_time(self.end_time)

    @property
    def queued_seconds(self) -> float | None:
        """Time spent PENDING (zone-independent: a difference of two provider times)."""
        if self.submitted_at is None or self.scheduled_at is None:
            return None
        return (self.scheduled_at - self.submitted_at).total_seconds()

    @property
    def running_seconds(self) -> float | None:
        """Time spent RUNNING (scheduled to end); None until both times are known."""
        if self.scheduled_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.scheduled_at).total_seconds()

    def error(self) -> DashScopeError | None:
        """For a FAILED task: its output.code/message as a family error (e.g. ContentRejectedError)."""
        if self.status is not TaskStatus.FAILED:
            return None
        return classify(None, self.code or "", self.message or "the task failed", self.request_id)


class TaskSummary(_Lenient):
    """One row of the list endpoint, which covers the whole main account: other keys, apps and the console.

    `api_key_id` (an id of the key that created the task, not the key), `caller_uid` and `region` tell whose
    task it is; numbers are read as text. Times are epoch milliseconds (strings tolerated).
    """

    task_id: str
    status: TaskStatus
    model_name: str | None = None
    request_id: str | None = None
    api_key_id: str | None = None
    caller_uid: str | None = None
    region: str | None = None
    start_time: int | str | None = None
    end_time: int | str | None = None
    gmt_create: int | str | None = None

    @classmethod
    def from_api(cls, row: object) -> Self:
        """A row that cannot be read raises: skipping it could hide a task of ours (and pay twice)."""
        if not isinstance(row, dict):
            raise TypeError("task list row is not an object")
        task_id = row.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task list row without a task_id")
        fields = {k: v for k, v in row.items() if k != "task_status"}
        fields["status"] = TaskStatus.parse(row.get("status", row.get("task_status")))
        summary = cls.model_validate(fields)
        for value in (summary.gmt_create, summary.start_time, summary.end_time):
            _checked_epoch_ms(value)
        return summary

    @property
    def created_at(self) -> datetime | None:
        """When the task was created (aware UTC, from epoch ms); None if the row has no time."""
        return parse_epoch_ms(self.gmt_create)

    @property
    def started_at(self) -> datetime | None:
        """When the task started running; None if it has not."""
        return parse_epoch_ms(self.start_time)

    @property
    def ended_at(self) -> datetime | None:
        """When the task ended; None while it has not."""
        return parse_epoch_ms(self.end_time)


def _checked_epoch_ms(value: int | str | None) -> None:
    """Raise ValueError for a time no datetime can hold (the properties above must never raise later)."""
    try:
        parse_epoch_ms(value)
    except (OverflowError, OSError, ValueError):
        raise ValueError("task list row with an unreadable time") from None


class TaskPage(_Lenient):
    """One page of the provider's task list (used to find a task whose create answer was lost)."""

    request_id: str | None = None
    total: int = 0
    total_page: int = 0
    page_no: int = 1
    page_size: int = 0
    data: list[TaskSummary] = Field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        """Validate one page of the task list; `ValueError`/`TypeError` on a malformed answer."""
        rows = data.get("data") or []
        if not isinstance(rows, list):
            raise ValueError("task list answer whose data is not a list")
        fields = {k: v for k, v in data.items() if k != "data"}
        page = cls.model_validate({**fields, "data": [TaskSummary.from_api(r) for r in rows]})
        if min(page.total, page.total_page, page.page_no, page.page_size) < 0:
            raise ValueError("task list answer with a negative count")
        return page


class UploadPolicy(_Lenient):
    """`GET /uploads?action=getPolicy&model=…` answer's `data` (numbers may come as text or numbers).

    https://help.aliyun.com/zh/model-studio/get-temporary-file-url. Signature and policy are credentials:
    `repr` never shows them.
    """

    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    oss_access_key_id: str
    expire_in_seconds: float = 300
    max_file_size_mb: float = 100
    capacity_limit_mb: float | None = None
    x_oss_object_acl: str = "private"
    x_oss_forbid_overwrite: str = "true"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        """Validate the upload policy answer; `ValueError` when a required field is missing or empty."""
        body = data.get("data")
        if not isinstance(body, dict):
            raise ValueError("upload policy answer without a data object")
        policy = cls.model_validate(body)
        if not all((policy.policy, policy.signature, policy.upload_dir, policy.upload_host)):
            raise ValueError("upload policy with an empty field")
        if not (policy.expire_in_seconds > 0 and policy.max_file_size_mb > 0):
            raise ValueError("upload policy with a non-positive limit")
        return policy

    def __repr__(self) -> str:
        return f"UploadPolicy(upload_dir={self.upload_dir!r}, max_file_size_mb={self.max_file_size_mb})"

    __str__ = __repr__


class UploadedFile(BaseModel):
    """A temporary upload: `url` is `oss://<key>`, usable by the same main account and model until `expires_at`."""

    model_config = ConfigDict(frozen=True)

    url: str
    expires_at: datetime
    model: str
    size: int
    sha256: str
