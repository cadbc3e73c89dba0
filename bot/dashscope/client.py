"""The DashScope keyframe-to-video HTTP client (aiohttp), stateless apart from its session.

Every call has a timeout and ends either with a parsed model or with one `DashScopeError` subclass (see
`errors.py` for what the caller should do with each). Policy — retries, pacing, limits — belongs to the
caller: this class never retries, so the caller always knows how many requests were really sent.

Everything the provider sends is untrusted: answers are read up to `max_answer_bytes`, an answer that cannot be
read is a `MalformedAnswerError` (temporary, never a status), and a result video is fetched only from the
provider's storage or the exact origin of `base_url` (`check_video_url`), one checked hop at a time.

Logs are DEBUG lines with the URL path only: no API key, no request body, no signed query string.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import SecretStr, ValidationError
from yarl import URL

from bot.dashscope.errors import (
    DashScopeError,
    ForeignUploadHostError,
    ForeignVideoUrlError,
    InvalidRequestError,
    MalformedAnswerError,
    NotAVideoError,
    ProviderUnavailableError,
    SubmissionOutcomeUnknownError,
    TaskListTooLongError,
    VideoTooLargeError,
    VideoUnavailableError,
    classify,
)
from bot.dashscope.models import (
    CREATE_PATHS,
    OSS_RESOLVE_HEADER,
    OSS_SCHEME,
    CreatedTask,
    CreateTaskRequest,
    TaskPage,
    TaskResult,
    TaskStatus,
    TaskSummary,
    UploadedFile,
    UploadPolicy,
)
from bot.logs import redact

log = logging.getLogger(__name__)

CREATE_PATH = CREATE_PATHS["kf2v"]  # the kf2v family's; each request names its own (`create_path`)
# Temporary uploads: https://help.aliyun.com/zh/model-studio/get-temporary-file-url
UPLOADS_PATH = "/uploads"
UPLOAD_LIFETIME = timedelta(hours=48)  # files are deleted 48 h after upload
UPLOAD_FILE_MAX_BYTES = 1024 * 1024 * 1024  # "must not exceed 1 GB" (en page), besides the policy's own limit
_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._-]")

# The task list: "manage asynchronous tasks", https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks
# - bounds are "YYYYMMDDhhmmss": the official Python SDK's `list` docstring ("for example: 20230420000000");
# - a window may not exceed 24 hours (400 InvalidParameter): the project's provider notes, quoting that page
#   (its list section was not re-read for this code);
# - zone of the bounds: UTC+8, the zone both regions write their times in. Unconfirmed: no source consulted
#   states it. A window centred on the moment of interest stays right for any zone error under 12 h minus its
#   margin, and rows carry `gmt_create` in epoch ms, which needs no zone.
LIST_TZ = timezone(timedelta(hours=8), "UTC+8")
LIST_TIME_FORMAT = "%Y%m%d%H%M%S"
LIST_WINDOW_MAX = timedelta(hours=24)
# page_no >= 1, page_size 1..100 (the SDK's default is 10): unconfirmed upper bound, what the sandbox enforces.
LIST_PAGE_SIZE_MAX = 100
# `iter_tasks` reads at most this many pages (x 100 rows): a busier window must be narrowed, not walked.
LIST_MAX_PAGES = 20

# An answer bigger than this is not one of ours (a poll answer is a few KB): refused before it fills memory.
MAX_ANSWER_BYTES = 1024 * 1024
# The provider's object storage (OSS) hosts: https://<bucket>.oss-<region>.aliyuncs.com/...
PROVIDER_STORAGE_SUFFIX = ".aliyuncs.com"
MAX_VIDEO_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MP4_SNIFF = 8  # an MP4 starts with a box: 4 bytes of size, then "ftyp"
_DOWNLOAD_CHUNK = 256 * 1024
_ANSWER_CHUNK = 64 * 1024
_XML_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")

# Failures before a single byte reached the server: safe to repeat even for a create.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_MALFORMED = (KeyError, TypeError, ValueError, ValidationError)


def account_fingerprint(api_key: str) -> str:
    """ "acct-" + 8 hex of sha256(key): names an account in logs and stats without revealing the key."""
    return "acct-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


def _list_second(moment: datetime, *, round_up: bool = False) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("list_tasks needs timezone-aware datetimes (use datetime.now(UTC))")
    local = moment.astimezone(LIST_TZ)
    if round_up and local.microsecond:
        return local.replace(microsecond=0) + timedelta(seconds=1)
    return local.replace(microsecond=0)


def format_list_time(moment: datetime, *, round_up: bool = False) -> str:
    """Aware datetime -> the list endpoint's "YYYYMMDDhhmmss" in `LIST_TZ`, whole seconds.

    `round_up` for the end of a window, so a task created in its last partial second is not cut off.
    """
    return _list_second(moment, round_up=round_up).strftime(LIST_TIME_FORMAT)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class DashScopeClient:
    """One provider account's HTTP client: create, poll, list and cancel tasks, upload frames, fetch videos."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout: float = 30.0,
        video_url_hosts: Sequence[str] = (),
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        if not api_key.get_secret_value().strip():
            raise ValueError("the DashScope API key is empty")
        if max_answer_bytes < 1:
            raise ValueError("max_answer_bytes must be positive")
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout_s = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_answer = max_answer_bytes
        self._account_id = account_fingerprint(api_key.get_secret_value())
        self._base_origin = _origin(URL(self._base))
        self._video_hosts, self._video_domains = _host_patterns(video_url_hosts)

    @property
    def account_id(self) -> str:
        """A fingerprint of the API key: names the account in logs and the database, never the key."""
        return self._account_id

    @property
    def base_url(self) -> str:
        """The API base URL this client sends to, as configured."""
        return self._base

    def __repr__(self) -> str:
        return f"DashScopeClient(base_url={self._base!r}, account={self._account_id})"

    # --- the four API calls ------------------------------------------------------------------------

    async def create_task(self, req: CreateTaskRequest) -> CreatedTask:
        """Submit a task. A lost answer raises `SubmissionOutcomeUnknownError`: reconcile, don't resubmit.

        The path is the request's family's; oss:// inputs add `X-DashScope-OssResourceResolve: enable`.
        """
        headers = {"Content-Type": "application/json", "X-DashScope-Async": "enable"}
        if req.uses_oss:
            headers[OSS_RESOLVE_HEADER] = "enable"
        data = await self._call("create", "POST", req.create_path, json_body=req.to_payload(), extra_headers=headers)
        try:
            created = CreatedTask.from_api(data)
        except _MALFORMED:
            raise SubmissionOutcomeUnknownError(
                "the create answer had no task id", http_status=200, request_id=_request_id(data)
            ) from None
        log.debug("dashscope task %s created (%s) for %s", created.task_id, created.status.value, self._account_id)
        return created

    async def get_task(self, task_id: str) -> TaskResult:
        """Poll one task. FAILED is a result (with code/message), not an exception; so is a literal UNKNOWN.

        An answer that cannot be read raises `MalformedAnswerError` (temporary): never a status.
        """
        data = await self._call("get", "GET", f"/tasks/{_task_path(task_id)}")
        try:
            return TaskResult.from_api(data, task_id=task_id)
        except _MALFORMED as exc:
            raise MalformedAnswerError(
                f"the task answer could not be read ({_reason(exc)})", http_status=200, request_id=_request_id(data)
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
        api_key_id: str | None = None,
        page_no: int = 1,
        page_size: int = 50,
    ) -> TaskPage:
        """The main account's tasks created between `start` and `end` (aware datetimes), newest first.

        The list covers every key, app and console user of the account: a row is ours only when the caller can
        prove it (`api_key_id`, model, creation time...). `model_name` is the provider's name
        (`catalog.provider_name`); `api_key_id` is a filter the official SDK sends (whether the service applies
        it is unconfirmed: check each row anyway). Raises `ValueError` before sending anything when the window,
        in the whole seconds actually sent, is longer than `LIST_WINDOW_MAX` (the provider refuses it) or ends
        before it starts. A row or page that cannot be read raises `MalformedAnswerError`.
        """
        if page_no < 1 or not 1 <= page_size <= LIST_PAGE_SIZE_MAX:
            raise ValueError(f"page_no must be >= 1 and page_size within 1..{LIST_PAGE_SIZE_MAX}")
        first, last = _list_second(start), _list_second(end, round_up=True)
        if last < first:
            raise ValueError("the task list window ends before it starts")
        if last - first > LIST_WINDOW_MAX:
            raise ValueError(f"the task list window is {last - first}; the provider allows at most {LIST_WINDOW_MAX}")
        params: dict[str, str] = {
            "start_time": first.strftime(LIST_TIME_FORMAT),
            "end_time": last.strftime(LIST_TIME_FORMAT),
            "page_no": str(page_no),
            "page_size": str(page_size),
        }
        if model_name is not None:
            params["model_name"] = model_name
        if status is not None:
            params["status"] = status.value
        if api_key_id is not None:
            params["api_key_id"] = api_key_id
        data = await self._call("list", "GET", "/tasks", params=params)
        try:
            return TaskPage.from_api(data)
        except _MALFORMED as exc:
            raise MalformedAnswerError(
                f"the task list answer could not be read ({_reason(exc)})",
                http_status=200,
                request_id=_request_id(data),
            ) from None

    async def iter_tasks(
        self,
        *,
        start: datetime,
        end: datetime,
        model_name: str | None = None,
        status: TaskStatus | None = None,
        api_key_id: str | None = None,
        page_size: int = LIST_PAGE_SIZE_MAX,
        max_pages: int = LIST_MAX_PAGES,
    ) -> AsyncIterator[TaskSummary]:
        """Every row of a window, page after page, each task once (rows shift while new tasks arrive).

        Reads at most `max_pages` pages: when the provider reports more, raises `TaskListTooLongError` (before
        yielding anything if the first page says so) rather than returning a partial list in which a task of
        ours could be missing. Same window rules and errors as `list_tasks`.
        """
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        seen: set[str] = set()
        page_no = 1
        while True:
            page = await self.list_tasks(
                start=start,
                end=end,
                model_name=model_name,
                status=status,
                api_key_id=api_key_id,
                page_no=page_no,
                page_size=page_size,
            )
            if page.total_page > max_pages:
                raise TaskListTooLongError(
                    f"the task list has {page.total_page} pages of {page_size}; at most {max_pages} are read",
                    code="TaskListTooLong",
                    request_id=page.request_id,
                )
            for row in page.data:
                if row.task_id not in seen:
                    seen.add(row.task_id)
                    yield row
            if not page.data or page_no >= page.total_page:
                return
            page_no += 1

    # --- temporary uploads ---------------------------------------------------------------------------

    async def upload_file(self, model: str, filename: str, data: bytes, content_type: str) -> UploadedFile:
        """Put `data` in the provider's temporary storage for `model` (the PROVIDER's model name) -> oss:// URL.

        Two requests, never retried here: the upload policy (`GET /uploads?action=getPolicy&model=…`, errors
        classified like every call), then a multipart POST to its `upload_host` with the documented fields, the
        file last. The host must pass the video URL policy (https on *.aliyuncs.com, a configured video host,
        or the exact origin of `base_url`): otherwise `ForeignUploadHostError` and nothing is sent there.
        A file over the policy's `max_file_size_mb` raises `InvalidRequestError` before the POST.
        Upload errors: 5xx/429/network -> `ProviderUnavailableError`; an expired policy -> the same (ask a new
        one); other 4xx -> `InvalidRequestError`. The policy and signature are never logged. The file is bound
        to the main account and the model, and lives 48 h from upload (`expires_at` is counted from before the
        policy was asked, so it errs early).
        """
        if not data:
            raise ValueError("nothing to upload")
        if len(data) > UPLOAD_FILE_MAX_BYTES:
            raise InvalidRequestError(
                f"the file has {len(data)} bytes; uploads are limited to {UPLOAD_FILE_MAX_BYTES}", code="FileTooLarge"
            )
        started_wall = datetime.now(UTC)
        answer = await self._call("upload_policy", "GET", UPLOADS_PATH, params={"action": "getPolicy", "model": model})
        try:
            policy = UploadPolicy.from_api(answer)
        except _MALFORMED as exc:
            raise MalformedAnswerError(
                f"the upload policy could not be read ({_reason(exc)})", http_status=200, request_id=_request_id(answer)
            ) from None
        try:
            host = self._checked_video_url(policy.upload_host)
        except ForeignVideoUrlError:
            raise ForeignUploadHostError(
                "the upload policy names a host outside the provider's storage: nothing was sent",
                code="ForeignUploadHost",
                request_id=_request_id(answer),
            ) from None
        limit = int(policy.max_file_size_mb * 1024 * 1024)
        if len(data) > limit:
            raise InvalidRequestError(
                f"the file has {len(data)} bytes; this model takes uploads of at most {limit}", code="FileTooLarge"
            )
        key = f"{policy.upload_dir.rstrip('/')}/{_upload_name(filename)}"
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("OSSAccessKeyId", policy.oss_access_key_id)
        form.add_field("Signature", policy.signature)
        form.add_field("policy", policy.policy)
        form.add_field("key", key)
        form.add_field("x-oss-object-acl", policy.x_oss_object_acl)
        form.add_field("x-oss-forbid-overwrite", policy.x_oss_forbid_overwrite)
        form.add_field("x-oss-content-type", content_type)
        form.add_field("success_action_status", "200")
        form.add_field("file", data, filename=_upload_name(filename), content_type=content_type)  # must be last
        shown = _shown(host)
        started = time.monotonic()
        connector = aiohttp.TCPConnector(
            resolver=_PublicOnlyResolver(self._base_origin), use_dns_cache=False, force_close=True
        )
        try:
            async with (
                aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as s,
                s.post(host, data=form, timeout=self._timeout, allow_redirects=False) as resp,
            ):
                status = resp.status
                body = await _read_bounded(resp, 64 * 1024) or b""
        except DashScopeError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("dashscope upload to %s failed: %s after %.0f ms", shown, type(exc).__name__, _ms(started))
            raise ProviderUnavailableError(
                f"uploading to {shown} failed ({type(exc).__name__})", code="UploadFailed"
            ) from None
        log.debug("dashscope upload %d bytes to %s -> %d in %.0f ms", len(data), shown, status, _ms(started))
        if status not in (200, 204):
            raise _upload_error(status, body.decode("utf-8", "replace"), shown)
        return UploadedFile(
            url=OSS_SCHEME + key,
            expires_at=started_wall + UPLOAD_LIFETIME,
            model=model,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    # --- the result video --------------------------------------------------------------------------

    def check_video_url(self, url: str) -> None:
        """Raise `ForeignVideoUrlError` unless `url` may be fetched: nothing is requested here.

        Allowed: https on the default port to `*.aliyuncs.com` (the provider's storage) or to a host of
        `video_url_hosts` ("*.example.com" allows its subdomains), or the exact origin (scheme, host, port) of
        `base_url` (how the sandbox on http://127.0.0.1:port is reached). Credentials in the URL and literal IP
        addresses in loopback, private, link-local, reserved or multicast ranges are refused unless that exact
        origin. Names are resolved only when downloading, where `download_video` checks every address it
        connects to (no DNS here: see `_PublicOnlyResolver`).
        """
        self._checked_video_url(url)

    async def download_video(self, url: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the video to a temp file beside `dest`, then rename it into place; returns its size.

        Every hop is checked first (`check_video_url`): a refused URL is never requested. Redirects are
        followed here, at most `MAX_VIDEO_REDIRECTS`, each checked the same way; every address connected to
        must be public unless it is `base_url`'s own origin. The URL is a signed object-store link: it gets
        no Authorization header and is never logged with its query.

        Errors: refused URL -> `ForeignVideoUrlError`; over `max_bytes` (announced or streamed) ->
        `VideoTooLargeError`; not an MP4 -> `NotAVideoError` (all three permanent); 403/404/410 or too many
        redirects -> `VideoUnavailableError`; network trouble or 5xx -> `ProviderUnavailableError`.
        Nothing is left behind on failure.
        """
        target = self._checked_video_url(url)
        shown = _shown(target)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        started = time.monotonic()
        # A session of its own: its resolver checks the addresses actually connected to, so a name that
        # resolves elsewhere between a check and the connection (DNS rebinding) can't slip through. No DNS
        # cache, no proxy from the environment, no cookies carried between hops.
        connector = aiohttp.TCPConnector(
            resolver=_PublicOnlyResolver(self._base_origin), use_dns_cache=False, force_close=True
        )
        try:
            async with aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            ) as session:
                for _hop in range(MAX_VIDEO_REDIRECTS + 1):
                    async with session.get(target, timeout=timeout, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS:
                            target = self._redirect_target(target, resp.headers.get("Location"))
                            log.debug("dashscope video %s redirects to %s", shown, _shown(target))
                            shown = _shown(target)
                            continue
                        total = await _save_video(resp, tmp, max_bytes=max_bytes, shown=shown)
                        break
                else:
                    raise VideoUnavailableError(
                        f"the video at {shown} redirected more than {MAX_VIDEO_REDIRECTS} times",
                        code="TooManyRedirects",
                    )
            await asyncio.to_thread(os.replace, tmp, dest)
        except DashScopeError:
            await _discard(None, tmp)
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await _discard(None, tmp)
            raise ProviderUnavailableError(
                f"downloading the video from {shown} failed ({type(exc).__name__})", code="DownloadFailed"
            ) from None
        except BaseException:
            await _discard(None, tmp)
            raise
        log.debug("dashscope video %s -> %s: %d bytes in %.0f ms", shown, dest.name, total, _ms(started))
        return total

    def _redirect_target(self, current: URL, location: str | None) -> URL:
        if not location:
            raise VideoUnavailableError(f"the video at {_shown(current)} redirected nowhere", code="BadRedirect")
        try:
            following = current.join(URL(location))
        except (ValueError, TypeError):
            raise ForeignVideoUrlError(
                f"the video at {_shown(current)} redirected to an unreadable URL", code="ForeignVideoUrl"
            ) from None
        return self._checked_video_url(following)

    def _checked_video_url(self, url: str | URL) -> URL:
        try:
            parsed = url if isinstance(url, URL) else URL(url)
            host = (parsed.raw_host or "").lower()
            port = parsed.port
        except (ValueError, TypeError):
            raise ForeignVideoUrlError("the video URL cannot be read: not fetched", code="ForeignVideoUrl") from None
        if not parsed.absolute or not host or port is None:
            raise ForeignVideoUrlError("the video URL is not an absolute URL: not fetched", code="ForeignVideoUrl")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise ForeignVideoUrlError("the video URL carries credentials: not fetched", code="ForeignVideoUrl")
        if _origin(parsed) == self._base_origin:
            return parsed
        refused = f"the video URL points to {parsed.scheme}://{host}:{port}, not the provider's storage: not fetched"
        if parsed.scheme != "https" or port != 443:
            raise ForeignVideoUrlError(refused, code="ForeignVideoUrl")
        name = host.rstrip(".")
        literal = _ip_literal(name)
        if literal is not None and not _is_public(literal):
            raise ForeignVideoUrlError(refused, code="ForeignVideoUrl")
        allowed = (
            name.endswith(PROVIDER_STORAGE_SUFFIX)
            or name in self._video_hosts
            or any(name.endswith(domain) for domain in self._video_domains)
        )
        if not allowed:
            raise ForeignVideoUrlError(refused, code="ForeignVideoUrl")
        return parsed

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
                raw = await _read_bounded(resp, self._max_answer)
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

        data = _decode(raw) if raw is not None else None
        request_id = _request_id(data)
        log.debug(
            "dashscope %s %s -> %d in %.0f ms request_id=%s", method, path, status, _ms(started), request_id or "-"
        )
        if 200 <= status < 300:
            if isinstance(data, dict) and not _non_finite_outside_usage(data):
                return data
            if allow_empty and raw is not None and data is None:
                return {}
            if raw is None:
                problem = f"the answer is larger than {self._max_answer} bytes"
            elif isinstance(data, dict):
                problem = "the answer has a non-finite number outside usage"
            else:
                problem = "the answer is not a JSON object"
            if is_create:
                raise SubmissionOutcomeUnknownError(
                    f"{problem}: the task may exist", http_status=status, code="MalformedAnswer", request_id=request_id
                )
            raise MalformedAnswerError(problem, http_status=status, request_id=request_id)
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


def _upload_name(filename: str) -> str:
    """The last path part, in safe characters: it becomes part of the object key."""
    name = _UPLOAD_NAME.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")[:100]
    return name or "file"


_UPLOAD_MESSAGE = re.compile(r"<Message>([^<]{1,200})</Message>")


def _upload_error(status: int, body: str, shown: str) -> DashScopeError:
    """The storage's XML error -> the family (its message can quote the policy: only the code and a hint)."""
    match = _XML_CODE.search(body)
    code = match.group(1) if match else f"HTTP{status}"
    message = _UPLOAD_MESSAGE.search(body)
    expired = message is not None and "expired" in message.group(1).lower()
    text = f"the upload to {shown} answered HTTP {status} ({code})"
    if status == 429 or status >= 500 or expired:
        return ProviderUnavailableError(
            text + (": the policy expired" if expired else ""), http_status=status, code=code
        )
    return InvalidRequestError(text, http_status=status, code=code)


def _task_path(task_id: str) -> str:
    if not task_id or not task_id.strip():
        raise ValueError("empty task id")
    return quote(task_id, safe="")


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is (or says it is) over `limit` bytes: the rest is never read."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_ANSWER_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _decode(raw: bytes) -> Any:
    """JSON or None. `Infinity`/`NaN` are accepted here (Python's json does); `_non_finite_outside_usage` judges."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def _non_finite_outside_usage(data: dict[str, Any]) -> bool:
    """True when a number other than inside the top-level `usage` is inf or nan (`1e999` included).

    `usage` is spared so an absurd bill reaches the caller as sent, to be clamped and reported there.
    """
    pending: list[Any] = [v for k, v in data.items() if k != "usage"]
    while pending:  # iterative: nesting depth is the provider's choice
        value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _request_id(data: Any) -> str | None:
    if isinstance(data, dict):
        value = data.get("request_id")
        return str(value)[:80] if value else None
    return None


def _reason(exc: BaseException) -> str:
    """A short, payload-free reason for a model that would not parse (pydantic messages can quote input)."""
    if isinstance(exc, ValidationError):
        fields = sorted({".".join(str(p) for p in error["loc"]) for error in exc.errors()})
        return "wrong type: " + ", ".join(fields)[:120]
    return redact(str(exc))[:120]


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.raw_host or "").lower(), url.port)


def _host_patterns(hosts: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """KF2V_VIDEO_URL_HOSTS -> (exact hosts, ".domain" suffixes from "*.domain" entries), lowercased."""
    exact: set[str] = set()
    domains: list[str] = []
    for entry in hosts:
        host = entry.strip().lower().rstrip(".")
        if host.startswith("*.") and len(host) > 2:
            domains.append(host[1:])
        elif host and "*" not in host:
            exact.add(host)
    return frozenset(exact), tuple(domains)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only. IPv6 forms that embed an IPv4 address are judged by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class _PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses names with any non-public address.

    It runs inside the download's own connector, so the addresses checked are the ones connected to: the gap
    between a check and the connection that DNS rebinding needs does not exist. `base_origin`'s host and port
    (the sandbox on 127.0.0.1) are exempt, as `check_video_url` allows them.
    """

    def __init__(self, base_origin: tuple[str, str, int | None]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._exempt = (base_origin[1].rstrip("."), base_origin[2])

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if (host.lower().rstrip("."), port) == self._exempt:
            return results
        for result in results:
            address = _ip_literal(result["host"].split("%", 1)[0])
            if address is None or not _is_public(address):
                raise ForeignVideoUrlError(
                    f"the video host {host} resolves to a non-public address: not fetched", code="ForeignVideoUrl"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


def _shown(url: URL) -> str:
    """Host and path: never the query (a signature) nor credentials."""
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    return f"{url.raw_host}{port}{url.raw_path}"


async def _save_video(resp: aiohttp.ClientResponse, tmp: Path, *, max_bytes: int, shown: str) -> int:
    """Stream a 200 answer into `tmp` once its first bytes prove an MP4; returns the size written."""
    if resp.status != 200:
        body = (await resp.content.read(4096)).decode("utf-8", "replace")
        raise _video_status_error(resp.status, body, shown)
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise VideoTooLargeError(
            f"the video has {resp.content_length} bytes, more than the {max_bytes} allowed",
            http_status=200,
            code="VideoTooLarge",
        )
    head = bytearray()
    handle: BinaryIO | None = None
    total = 0
    try:
        async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise VideoTooLargeError(
                    f"the video is larger than the {max_bytes} bytes allowed", http_status=200, code="VideoTooLarge"
                )
            if handle is None:
                head += chunk
                if len(head) < _MP4_SNIFF:
                    continue
                if not _is_mp4(head):
                    raise _not_a_video(shown)
                handle = await asyncio.to_thread(open, tmp, "xb", opener=_private_opener)
                chunk, head = bytes(head), bytearray()
            await asyncio.to_thread(handle.write, chunk)
        if handle is None:  # the whole body is shorter than a box header
            raise _not_a_video(shown)
        await asyncio.to_thread(_close_and_sync, handle)
        handle = None
    finally:
        if handle is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(handle.close)
    return total


def _is_mp4(head: bytes | bytearray) -> bool:
    # ISO base media files (MP4) open with an `ftyp` box: 4 bytes of size, then the type.
    return len(head) >= _MP4_SNIFF and head[4:8] == b"ftyp"


def _not_a_video(shown: str) -> NotAVideoError:
    return NotAVideoError(f"the body at {shown} is not an MP4 video", http_status=200, code="NotAVideo")


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
