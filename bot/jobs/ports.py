"""What the job engine needs from the outside, as protocols: the notifier, the provider client, a clock.

The engine reports through `Notifier` (the Discord implementation lives in the Discord layer; tests record the
calls); it talks to the provider through `ProviderClient` (`bot.dashscope.client.DashScopeClient` is the real
one); it measures time with a monotonic `Clock`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bot.dashscope.models import CreatedTask, CreateTaskRequest, TaskPage, TaskResult, UploadedFile
from bot.jobs.models import Job


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands, for the status message."""

    position: int | None = None  # 1 = next to be submitted
    eta_s: float | None = None  # seconds until the video is expected
    elapsed_s: float | None = None  # since the provider started it
    paused: str | None = None  # why the job's submissions are held (an owners' pause), shown with the status


@dataclass(frozen=True, slots=True)
class Video:
    """A finished video on disk, with the provider's link as a fallback for files too large to upload."""

    path: Path
    size: int
    url: str | None  # the provider's link, used when the file is larger than the guild allows
    url_expires_at: datetime | None


class DeliveryError(Exception):
    """The notifier could not post the result. `permanent` means retrying cannot help; `needs_link` means the
    file is larger than the guild accepts and `Video.url` was None: post again with the provider's link."""

    def __init__(self, reason: str, *, permanent: bool = False, needs_link: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.needs_link = needs_link


class Notifier(Protocol):
    """How the engine talks to people: the only door from the job engine to Discord."""

    async def job_updated(self, job: Job, progress: Progress) -> None:
        """Queued, position changed, submitted, running: refresh the job's status message."""

    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        """Post the finished video. Raise DeliveryError on failure.

        `redelivery` is True when an earlier attempt may have posted it already (a restart between
        posting and recording it): the implementation then checks before posting again.
        """

    async def job_failed(self, job: Job) -> None:
        """Explain a failed or cancelled job (job.error_key says why)."""

    async def owner_alert(self, key: str, **params: Any) -> None:
        """Something the bot's owners must act on (a bad key, arrears)."""


class ProviderClient(Protocol):
    """What the worker uses of one provider account's client (`DashScopeClient`)."""

    async def create_task(self, req: CreateTaskRequest) -> CreatedTask:
        """Submit a task; a lost answer raises `SubmissionOutcomeUnknownError`."""

    async def get_task(self, task_id: str) -> TaskResult:
        """Poll one task."""

    async def cancel_task(self, task_id: str) -> None:
        """Cancel a PENDING task."""

    async def list_tasks(
        self, *, start: datetime, end: datetime, model_name: str | None = None, page_no: int = 1, page_size: int = 50
    ) -> TaskPage:
        """One page of the account's tasks created between `start` and `end`."""

    async def download_video(self, url: str, dest: Path, *, max_bytes: int) -> int:
        """Fetch the video at `url` into `dest`; returns its size."""

    def check_video_url(self, url: str) -> None:
        """Raise `ForeignVideoUrlError` unless `url` is on the video URL allow-list (before posting it as a link)."""

    async def upload_file(self, model: str, filename: str, data: bytes, content_type: str) -> UploadedFile:
        """Put `data` in the provider's temporary storage for `model` (the provider's name) -> its oss:// URL."""


class Clock(Protocol):
    """Monotonic seconds (`time.monotonic`); tests and benchmarks may pass their own."""

    def __call__(self) -> float:
        """Seconds from an arbitrary origin: only differences between two readings mean anything."""
        ...
