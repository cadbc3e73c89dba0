"""One exception family for everything the provider (or the way to it) can answer.

The split follows what the caller must do, not where the error came from:

* `ThrottledError`, `ProviderUnavailableError` — temporary (`retryable = True`): back off, keep the job queued.
* `InvalidRequestError`, `ContentRejectedError` — the user's input: say what is wrong, never retry.
* `AccountProblemError` — key, billing or permission: alert the owner, pause submissions.
* `SubmissionOutcomeUnknownError` — a create was sent but its answer was lost: the task may exist. Reconcile
  with `list_tasks`, never resubmit blindly (that could pay twice).
* `MalformedAnswerError` — a 2xx answer that cannot be read: temporary (a `ProviderUnavailableError`), never final.
* `ForeignVideoUrlError`, `NotAVideoError`, `VideoTooLargeError` — the result video must not (or cannot usefully)
  be fetched: permanent, one attempt only.

`str()` of every error is `"<Class> http=<s> code=<c> request_id=<r>: <message>"` and goes through `bot.logs.redact`, so
it is safe to log: no API key, no base64 payload, no signed query string.
"""

from __future__ import annotations

from typing import ClassVar

from bot.logs import redact

# Error texts are for a log line, not for reading a whole provider answer.
_MAX_MESSAGE = 300


def clip_message(text: str) -> str:
    """`text` redacted (see `bot.logs.redact`) and cut to a log line's length."""
    text = redact(text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


class DashScopeError(Exception):
    """Base of the family. Unknown provider codes without an HTTP status land here (not retryable)."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.http_status = http_status
        self.code = code or ""
        self.message = clip_message(message or "")
        self.request_id = request_id
        # Seconds the server asked us to wait (Retry-After), when it said so.
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        http = self.http_status if self.http_status is not None else "-"
        return (
            f"{type(self).__name__} http={http} code={self.code or '-'} "
            f"request_id={self.request_id or '-'}: {self.message}"
        )

    def __repr__(self) -> str:
        return f"<{self}>"


class ThrottledError(DashScopeError):
    """429 Throttling*: a submission or in-flight limit of the account (ours, or someone else's use of it)."""

    retryable = True


class ProviderUnavailableError(DashScopeError):
    """5xx, a timeout or lost connection on a call that is safe to repeat, or an answer we could not parse."""

    retryable = True


class MalformedAnswerError(ProviderUnavailableError):
    """A 2xx answer that cannot be read: not JSON, over the size bound, no (or a null) `output`, a missing or
    unknown `task_status`, wrong types, a non-finite number outside `usage`.

    Temporary by design: the provider's data is never an order, so an unreadable answer says nothing about the
    task. Callers retry with backoff and never treat it as a final state.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str = "MalformedAnswer",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, code=code, request_id=request_id, retry_after=retry_after)


class InvalidRequestError(DashScopeError):
    """400 InvalidParameter / InvalidURL / InvalidImageFormat / InvalidFile.* / BadRequest.* and other 4xx."""


class ContentRejectedError(DashScopeError):
    """DataInspectionFailed / IPInfringementSuspect: the content check refused the input (or the output)."""


class AccountProblemError(DashScopeError):
    """Key, permission or billing: 401 InvalidApiKey, 403 AccessDenied*, Arrearage, overdue bills, free tier."""


class SubmissionOutcomeUnknownError(DashScopeError):
    """A create was sent but its answer was lost (timeout, reset, malformed answer): the task may exist.

    Retrying is safe only after `list_tasks` shows no task was created for this submission.
    """

    retryable = False


class VideoUnavailableError(DashScopeError):
    """The result video's URL answered 403/404/410 (expired or wrong signature): downloading again won't help."""


class VideoTooLargeError(DashScopeError):
    """The result video is larger than the caller allowed; nothing was kept on disk. Permanent: don't retry."""


class NotAVideoError(VideoUnavailableError):
    """The result URL answered with a body that is not an MP4 (no `ftyp` box at offset 4); nothing was kept."""


class ForeignVideoUrlError(DashScopeError):
    """The result URL (or a redirect) points outside the provider's storage: it was never requested.

    Permanent: the same task will keep answering the same URL, and fetching it could reach services on the
    bot's own host or network (cloud metadata, the metrics port).
    """


class ForeignUploadHostError(ForeignVideoUrlError):
    """An upload policy named an `upload_host` outside the provider's storage: nothing was sent there.

    Permanent like `ForeignVideoUrlError`: the same bytes (and a signed form) must not go elsewhere.
    """


class TaskListTooLongError(DashScopeError):
    """The task list for a window has more pages than the caller allowed: narrow the window instead."""


_ACCOUNT_CODES = frozenset(
    {
        "InvalidApiKey",
        "Arrearage",
        "Model.AccessDenied",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "CommodityNotPurchased",
    }
)
_CONTENT_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
_UNAVAILABLE_CODES = frozenset({"SystemError", "ModelServiceFailed", "ModelServingError", "ModelUnavailable"})
_INVALID_CODES = frozenset({"InvalidParameter", "InvalidURL", "InvalidImageFormat"})


def _is_account(code: str, message: str) -> bool:
    return (
        code in _ACCOUNT_CODES
        or code.startswith(("AccessDenied", "AllocationQuota."))
        # Sent as a 429 whose code may look like throttling; it is the free tier running out, not a burst.
        or "free allocated quota exceeded" in message.lower()
    )


def classify(
    http_status: int | None,
    code: str | None,
    message: str | None,
    request_id: str | None,
    *,
    retry_after: float | None = None,
) -> DashScopeError:
    """Map a provider answer (or a FAILED task's output.code, with http_status None) to the family."""
    code = (code or "").strip()
    message = message or ""
    text = message or code or (f"HTTP {http_status}" if http_status else "provider error")

    def make(cls: type[DashScopeError]) -> DashScopeError:
        return cls(text, http_status=http_status, code=code, request_id=request_id, retry_after=retry_after)

    if _is_account(code, message) or http_status in (401, 403):
        return make(AccountProblemError)
    if code in _CONTENT_CODES or code.startswith(("DataInspectionFailed", "IPInfringementSuspect")):
        return make(ContentRejectedError)
    if code.startswith("Throttling") or http_status == 429:
        return make(ThrottledError)
    if code in _UNAVAILABLE_CODES or code.startswith("InternalError") or (http_status or 0) >= 500:
        return make(ProviderUnavailableError)
    if (
        code in _INVALID_CODES
        or code.startswith(("InvalidParameter", "InvalidFile", "BadRequest"))
        or (http_status is not None and 400 <= http_status < 500)
    ):
        return make(InvalidRequestError)
    return make(DashScopeError)
