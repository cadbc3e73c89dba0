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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.catalog import Catalog
from bot.dashscope.errors import DashScopeError, classify, redact

PROVIDER_TZ = timezone(timedelta(hours=8), "UTC+8")
PROMPT_MAX_CHARS = 800
NEGATIVE_PROMPT_MAX_CHARS = 500
SEED_MAX = 2_147_483_647
VIDEO_DURATION_S = 5

_DATA_URI = re.compile(r"data:image/(jpeg|png|bmp|webp);base64,(.+)", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class RequestValidationError(ValueError):
    """A request the provider would refuse (or truncate), caught before anything is sent.

    `field` is the name of the `CreateTaskRequest.build` argument at fault; `reason` one English sentence.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TaskStatus(StrEnum):
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
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestValidationError(
            field, "Images must be sent as data:image/(jpeg|png|bmp|webp);base64,... or an http(s) URL."
        )


class TaskInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    first_frame_url: str
    last_frame_url: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    template: str | None = None


class TaskParameters(BaseModel):
    model_config = ConfigDict(frozen=True)

    resolution: str
    duration: int = VIDEO_DURATION_S
    prompt_extend: bool = True
    watermark: bool = False
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class CreateTaskRequest(BaseModel):
    """The create call's body. `repr`/`str` never show image data (it can be megabytes and private)."""

    model_config = ConfigDict(frozen=True)

    model: str
    input: TaskInput
    parameters: TaskParameters

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def __repr__(self) -> str:
        i, p = self.input, self.parameters
        fields = [
            f"model={self.model!r}",
            f"first_frame={redact_uri(i.first_frame_url)!r}",
            f"last_frame={redact_uri(i.last_frame_url)!r}",
            f"template={i.template!r}",
            f"prompt_chars={len(i.prompt or '')}",
            f"negative_prompt_chars={len(i.negative_prompt or '')}",
            f"resolution={p.resolution!r}",
            f"prompt_extend={p.prompt_extend}",
            f"seed={p.seed!r}",
        ]
        return f"CreateTaskRequest({', '.join(fields)})"

    __str__ = __repr__

    @property
    def template_mode(self) -> bool:
        return self.input.template is not None

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
        first_frame_uri: str,
        last_frame_uri: str | None,
        prompt_extend: bool = True,
        seed: int | None = None,
        template: str | None = None,
    ) -> CreateTaskRequest:
        """Check everything the provider checks (and what it would silently truncate) and build the body.

        Raises `RequestValidationError` naming the argument at fault. Template mode (effects) uses only the
        first frame and ignores the prompt, so neither prompt is sent then.
        """
        spec = catalog.models.get(model_key)
        if spec is None:
            raise RequestValidationError("model_key", f"Unknown model {model_key!r}.")
        if region not in spec.provider_names:
            raise RequestValidationError("model_key", f"Model {model_key} is not offered in region {region}.")
        chosen_resolution = resolution if resolution is not None else spec.default_resolution
        if chosen_resolution not in spec.resolutions:
            allowed = ", ".join(spec.resolutions)
            raise RequestValidationError(
                "resolution", f"Model {model_key} does not offer {chosen_resolution}; choose one of {allowed}."
            )
        if prompt is not None and len(prompt) > PROMPT_MAX_CHARS:
            raise RequestValidationError(
                "prompt", f"The prompt has {len(prompt)} characters; at most {PROMPT_MAX_CHARS} are allowed."
            )
        if negative_prompt is not None and len(negative_prompt) > NEGATIVE_PROMPT_MAX_CHARS:
            raise RequestValidationError(
                "negative_prompt",
                f"The negative prompt has {len(negative_prompt)} characters; "
                f"at most {NEGATIVE_PROMPT_MAX_CHARS} are allowed.",
            )
        if seed is not None and not 0 <= seed <= SEED_MAX:
            raise RequestValidationError("seed", f"The seed must be between 0 and {SEED_MAX}.")
        if template is not None:
            if not spec.templates:
                raise RequestValidationError("template", f"Model {model_key} has no effect templates.")
            if template not in spec.templates:
                known = ", ".join(spec.templates)
                raise RequestValidationError("template", f"Unknown effect template {template!r}; known: {known}.")
            if last_frame_uri is not None:
                raise RequestValidationError(
                    "last_frame_uri", "An effect template uses only the first frame; leave the last frame out."
                )
            prompt = negative_prompt = None
        else:
            if last_frame_uri is None:
                raise RequestValidationError("last_frame_uri", "A last frame is required.")
            if prompt is None or not prompt.strip():
                raise RequestValidationError("prompt", "A prompt describing the motion is required.")
        _check_image("first_frame_uri", first_frame_uri)
        if last_frame_uri is not None:
            _check_image("last_frame_uri", last_frame_uri)
        return cls(
            model=catalog.provider_name(model_key, region),
            input=TaskInput(
                first_frame_url=first_frame_uri,
                last_frame_url=last_frame_uri,
                prompt=prompt,
                negative_prompt=negative_prompt or None,
                template=template,
            ),
            parameters=TaskParameters(resolution=chosen_resolution, prompt_extend=prompt_extend, seed=seed),
        )


class _Lenient(BaseModel):
    # Keep unknown fields; accept numbers where text is expected; "model_name" is a provider field, not pydantic's.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, protected_namespaces=())


class CreatedTask(_Lenient):
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
    video_duration: float | None = None
    video_count: int | None = None
    SR: int | None = None
    video_ratio: str | None = None

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Self:
        """The billed duration as sent (huge, negative, inf and nan included: the caller clamps it).

        Only `video_duration` decides money, so only it must be a number; the informative fields are dropped
        when their type is wrong rather than failing the answer.
        """
        fields = dict(raw)
        fields["video_duration"] = _billed_duration(raw.get("video_duration"))
        for name in ("video_count", "SR", "video_ratio"):
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

        Only successful tasks report usage; None when the answer had none.
        """
        return self.usage.video_duration if self.usage is not None else None

    @property
    def submitted_at(self) -> datetime | None:
        return parse_provider_time(self.submit_time)

    @property
    def scheduled_at(self) -> datetime | None:
        return parse_provider_time(self.scheduled_time)

    @property
    def ended_at(self) -> datetime | None:
        return parse_provider_time(self.end_time)

    @property
    def queued_seconds(self) -> float | None:
        """Time spent PENDING (zone-independent: a difference of two provider times)."""
        if self.submitted_at is None or self.scheduled_at is None:
            return None
        return (self.scheduled_at - self.submitted_at).total_seconds()

    @property
    def running_seconds(self) -> float | None:
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
        return parse_epoch_ms(self.gmt_create)

    @property
    def started_at(self) -> datetime | None:
        return parse_epoch_ms(self.start_time)

    @property
    def ended_at(self) -> datetime | None:
        return parse_epoch_ms(self.end_time)


def _checked_epoch_ms(value: int | str | None) -> None:
    """Raise ValueError for a time no datetime can hold (the properties above must never raise later)."""
    try:
        parse_epoch_ms(value)
    except (OverflowError, OSError, ValueError):
        raise ValueError("task list row with an unreadable time") from None


class TaskPage(_Lenient):
    request_id: str | None = None
    total: int = 0
    total_page: int = 0
    page_no: int = 1
    page_size: int = 0
    data: list[TaskSummary] = Field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        rows = data.get("data") or []
        if not isinstance(rows, list):
            raise ValueError("task list answer whose data is not a list")
        fields = {k: v for k, v in data.items() if k != "data"}
        page = cls.model_validate({**fields, "data": [TaskSummary.from_api(r) for r in rows]})
        if min(page.total, page.total_page, page.page_no, page.page_size) < 0:
            raise ValueError("task list answer with a negative count")
        return page
