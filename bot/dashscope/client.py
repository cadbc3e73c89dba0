"""The DashScope keyframe-to-video HTTP client (aiohttp), stateless apart from its session.

Every call has a timeout and ends either with a parsed model or with one `DashScopeError` subclass (see
`errors.py` for what the caller should do with each). Policy — retries, pacing, limits — belongs to the
caller: this class never retries, so the caller always knows how many requests were really sent.

Logs are DEBUG lines with the URL path only: no API key, no request body, no signed query string.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import SecretStr, ValidationError

from bot.dashscope.errors import (
    DashScopeError,
    ProviderUnavailableError,
    SubmissionOutcomeUnknownError,
    VideoTooLargeError,
    VideoUnavailableError,
    classify,
    redact,
)
from bot.dashscope.models import (
    PROVIDER_TZ,
    CreatedTask,
    CreateTaskRequest,
    TaskPage,
    TaskResult,
    TaskStatus,
)

log = logging.getLogger(__name__)

CREATE_PATH = "/services/aigc/image2video/video-synthesis"
LIST_TIME_FORMAT = "%Y%m%d%H%M%S"  # the official SDK's documented example: 20230420000000
LIST_PAGE_SIZE_MAX = 100
_DOWNLOAD_CHUNK = 256 * 1024
_XML_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")

# Failures before a single byte reached the server: safe to repeat even for a create.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_MALFORMED = (KeyError, TypeError, ValueError, ValidationError)


def account_fingerprint(api_key: str) -> str:
    """ "acct-" + 8 hex of sha256(key): names an account in logs and stats without revealing the key."""
    return "acct-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


def format_list_time(moment: datetime, *, round_up: bool = False) -> str:
    """Aware datetime -> the list endpoint's "YYYYMMDDhhmmss" in provider time (UTC+8), whole seconds.

    `round_up` for the end of a window, so a task created in its last partial second is not cut off.
    """
    if moment.tzinfo is None:
        raise ValueError("list_tasks needs timezone-aware datetimes (use datetime.now(UTC))")
    local = moment.astimezone(PROVIDER_TZ)
    if round_up and local.microsecond:
        local = local.replace(microsecond=0) + timedelta(seconds=1)
    return local.strftime(LIST_TIME_FORMAT)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class DashScopeClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout: float = 30.0,
    ) -> None:
        if not api_key.get_secret_value().strip():
            raise ValueError("the DashScope API key is empty")
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout_s = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._account_id = account_fingerprint(api_key.get_secret_value())

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def base_url(self) -> str:
        return self._base

    def __repr__(self) -> str:
        return f"DashScopeClient(base_url={self._base!r}, account={self._account_id})"

    # --- the four API calls ------------------------------------------------------------------------

    async def create_task(self, req: CreateTaskRequest) -> CreatedTask:
        """Submit a task. A lost answer raises `SubmissionOutcomeUnknownError`: reconcile, don't resubmit."""
        data = await self._call(
            "create",
            "POST",
            CREATE_PATH,
            json_body=req.to_payload(),
            extra_headers={"Content-Type": "application/json", "X-DashScope-Async": "enable"},
        )
        try:
            created = CreatedTask.from_api(data)
        except _MALFORMED:
            raise SubmissionOutcomeUnknownError(
                "the create answer had no task id", http_status=200, request_id=_request_id(data)
            ) from None
        log.debug("dashscope task %s created (%s) for %s", created.task_id, created.status.value, self._account_id)
        return created

    async def get_task(self, task_id: str) -> TaskResult:
        """Poll one task. FAILED is a result (with code/message), not an exception; UNKNOWN likewise."""
        data = await self._call("get", "GET", f"/tasks/{_task_path(task_id)}")
        try:
            return TaskResult.from_api(data, task_id=task_id)
        except _MALFORMED:
            raise ProviderUnavailableError(
                "the task answer could not be read", http_status=200, request_id=_request_id(data)
            ) from None

    async def cancel_task(self, task_id: str) -> None:
        """Cancel a PENDING task. Once it runs the provider refuses (an `InvalidRequestError`)."""
        await self._call("cancel", "POST", f"/tasks/{_task_path(task_id)}/cancel", allow_empty=True)

    async def list_tasks(
        self,
        *,
        start: datetime,
        end: datetime,
        model_name: str | None = None,
        status: TaskStatus | None = None,
        page_no: int = 1,
        page_size: int = 50,
    ) -> TaskPage:
        """The account's tasks created between `start` and `end` (aware datetimes), newest first.

        `model_name` is the provider's name (`catalog.provider_name`). The provider's time zone for the
        window is not documented (UTC+8 assumed): to reconcile a lost submission, pad the window by a day.
        """
        if page_no < 1 or not 1 <= page_size <= LIST_PAGE_SIZE_MAX:
            raise ValueError(f"page_no must be >= 1 and page_size within 1..{LIST_PAGE_SIZE_MAX}")
        params: dict[str, str] = {
            "start_time": format_list_time(start),
            "end_time": format_list_time(end, round_up=True),
            "page_no": str(page_no),
            "page_size": str(page_size),
        }
        if model_name is not None:
            params["model_name"] = model_name
        if status is not None:
            params["status"] = status.value
        data = await self._call("list", "GET", "/tasks", params=params)
        try:
            return TaskPage.from_api(data)
        except _MALFORMED:
            raise ProviderUnavailableError(
                "the task list answer could not be read", http_status=200, request_id=_request_id(data)
            ) from None

    # --- the result video --------------------------------------------------------------------------

    async def download_video(self, url: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the video to a temp file beside `dest`, then rename it into place; returns its size.

        The URL is a signed object-store link: it gets no Authorization header and is never logged with
        its query. Over `max_bytes` -> `VideoTooLargeError`; 403/404/410 -> `VideoUnavailableError`;
        network trouble or 5xx -> `ProviderUnavailableError`. Nothing is left behind on failure.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the video URL is not an http(s) URL")
        shown = f"{parts.netloc}{parts.path}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        handle: BinaryIO | None = None
        total = 0
        started = time.monotonic()
        try:
            async with self._session.get(url, timeout=timeout, allow_redirects=True) as resp:
                if resp.status != 200:
                    body = (await resp.content.read(4096)).decode("utf-8", "replace")
                    raise _video_status_error(resp.status, body, shown)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise VideoTooLargeError(
                        f"the video has {resp.content_length} bytes, more than the {max_bytes} allowed",
                        http_status=200,
                        code="VideoTooLarge",
                    )
                handle = await asyncio.to_thread(open, tmp, "xb", opener=_private_opener)
                async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise VideoTooLargeError(
                            f"the video is larger than the {max_bytes} bytes allowed",
                            http_status=200,
                            code="VideoTooLarge",
                        )
                    await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_close_and_sync, handle)
            handle = None
            await asyncio.to_thread(os.replace, tmp, dest)
        except DashScopeError:
            await _discard(handle, tmp)
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await _discard(handle, tmp)
            raise ProviderUnavailableError(
                f"downloading the video from {shown} failed ({type(exc).__name__})", code="DownloadFailed"
            ) from None
        except BaseException:
            await _discard(handle, tmp)
            raise
        log.debug("dashscope video %s -> %s: %d bytes in %.0f ms", shown, dest.name, total, _ms(started))
        return total

    # --- plumbing ----------------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
        }
        if extra:
            headers.update(extra)
        return headers

    async def _call(
        self,
        op: str,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        extra_headers: dict[str, str] | None = None,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        """One request -> the decoded JSON object of a 2xx answer, or the family error for anything else."""
        is_create = op == "create"
        started = time.monotonic()
        # A BytesIO body: sized (Content-Length, not chunked) and written without blocking the loop on megabytes.
        # A create carries both images (up to ~27 MB of JSON: ~60 ms to encode): a big one is encoded in a
        # thread, where the interpreter's switch interval keeps handing the event loop its turn meanwhile.
        body = None
        if json_body is not None:
            big = is_create and _text_size(json_body.get("input")) > _BIG_BODY
            encoded = await asyncio.to_thread(_encode_json, json_body) if big else _encode_json(json_body)
            body = io.BytesIO(encoded)
        try:
            async with self._session.request(
                method,
                self._base + path,
                data=body,
                params=params,
                headers=self._headers(extra_headers),
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers)
                raw = await resp.read()
        except _NOT_SENT as exc:
            log.debug("dashscope %s %s: not connected (%s)", method, path, type(exc).__name__)
            raise ProviderUnavailableError(
                f"could not connect to the provider ({type(exc).__name__})", code="ConnectionFailed"
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else f"connection lost ({type(exc).__name__})"
            log.debug("dashscope %s %s: %s after %.0f ms", method, path, kind, _ms(started))
            if is_create:
                raise SubmissionOutcomeUnknownError(
                    f"the create request was sent but {kind}: the task may exist", code="OutcomeUnknown"
                ) from None
            raise ProviderUnavailableError(f"the provider {kind}", code="ConnectionLost") from None

        data = _decode(raw)
        request_id = _request_id(data)
        log.debug(
            "dashscope %s %s -> %d in %.0f ms request_id=%s", method, path, status, _ms(started), request_id or "-"
        )
        if 200 <= status < 300:
            if isinstance(data, dict):
                return data
            if allow_empty:
                return {}
            if is_create:
                raise SubmissionOutcomeUnknownError(
                    "the create answer was not valid JSON: the task may exist", http_status=status, code="Malformed"
                )
            raise ProviderUnavailableError("the answer was not valid JSON", http_status=status, code="Malformed")
        if isinstance(data, dict) and (data.get("code") or data.get("message")):
            raise classify(
                status,
                str(data.get("code") or ""),
                redact(str(data.get("message") or ""), self._key.get_secret_value()),
                request_id,
                retry_after=retry_after,
            )
        if is_create and status >= 500:
            # Not DashScope's own error body (a gateway's page): the request may have reached the service.
            raise SubmissionOutcomeUnknownError(
                f"the create request got HTTP {status} without a provider answer: the task may exist",
                http_status=status,
                code="OutcomeUnknown",
            )
        raise classify(status, "", f"HTTP {status} without a provider error body", request_id, retry_after=retry_after)


def _task_path(task_id: str) -> str:
    if not task_id or not task_id.strip():
        raise ValueError("empty task id")
    return quote(task_id, safe="")


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _request_id(data: Any) -> str | None:
    if isinstance(data, dict):
        value = data.get("request_id")
        return str(value) if value else None
    return None


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _video_status_error(status: int, body: str, shown: str) -> DashScopeError:
    match = _XML_CODE.search(body)
    code = match.group(1) if match else f"HTTP{status}"
    message = f"the video at {shown} answered HTTP {status}"
    if status in (429,) or status >= 500:
        return ProviderUnavailableError(message, http_status=status, code=code)
    return VideoUnavailableError(message, http_status=status, code=code)


_BIG_BODY = 1_000_000


def _encode_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _text_size(section: Any) -> int:
    """Characters in a request section's string values (the data URIs of the frames dominate)."""
    return sum(len(v) for v in section.values() if isinstance(v, str)) if isinstance(section, dict) else 0


def _private_opener(path: str, flags: int) -> int:
    """Videos are the members' content: owner-only like the database and the frames."""
    return os.open(path, flags, 0o600)


def _close_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


async def _discard(handle: BinaryIO | None, tmp: Path) -> None:
    def work() -> None:
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)

    await asyncio.shield(asyncio.to_thread(work))
