"""How the worker talks to people: the only door from the job engine to Discord.

The engine reports through this protocol; the Discord implementation lives with the cogs side
(`bot.discord_notifier`), and tests use `RecordingNotifier`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bot.jobs.models import Job


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands, for the status message."""

    position: int | None = None  # 1 = next to be submitted
    eta_s: float | None = None  # seconds until the video is expected
    elapsed_s: float | None = None  # since the provider started it


@dataclass(frozen=True, slots=True)
class Video:
    path: Path
    size: int
    url: str | None  # the provider's link, used when the file is larger than the guild allows
    url_expires_at: datetime | None


class DeliveryError(Exception):
    """The notifier could not post the result. `permanent` means retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Notifier(Protocol):
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


@dataclass
class RecordingNotifier:
    """A notifier that remembers every call: for tests, benchmarks and the headless engine."""

    updates: list[tuple[int, str, Progress]] = field(default_factory=list)
    delivered: list[tuple[int, Video]] = field(default_factory=list)
    failed: list[tuple[int, str | None]] = field(default_factory=list)
    alerts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_deliveries: int = 0  # the next N deliveries raise a transient DeliveryError

    async def job_updated(self, job: Job, progress: Progress) -> None:
        self.updates.append((job.id, job.state.value, progress))

    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        if self.fail_deliveries > 0:
            self.fail_deliveries -= 1
            raise DeliveryError("injected failure")
        if redelivery and any(job_id == job.id for job_id, _ in self.delivered):
            return
        self.delivered.append((job.id, video))

    async def job_failed(self, job: Job) -> None:
        self.failed.append((job.id, job.error_key))

    async def owner_alert(self, key: str, **params: Any) -> None:
        self.alerts.append((key, params))
