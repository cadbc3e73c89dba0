"""A notifier that remembers every call: for tests, benchmarks and headless engine runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.jobs.models import Job
from bot.jobs.ports import DeliveryError, Progress, Video


@dataclass
class RecordingNotifier:
    """Records updates, deliveries, failures and owner alerts; can fail the next N deliveries."""

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


@dataclass
class PostLogNotifier(RecordingNotifier):
    """A RecordingNotifier whose posts outlive the process: one "posted JOB_ID" line per post, appended to
    `log` (shared by every process of a kill campaign), and a redelivery looks there first, as the Discord
    notifier looks for its earlier post in the thread."""

    log: Path = field(default_factory=lambda: Path("posts.log"))

    def posted(self) -> list[int]:
        if not self.log.exists():
            return []
        return [int(line.split()[1]) for line in self.log.read_text().splitlines() if line.startswith("posted ")]

    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        if redelivery and job.id in self.posted():
            return
        await super().deliver(job, video, redelivery=redelivery)
        with self.log.open("a") as handle:
            handle.write(f"posted {job.id}\n")
