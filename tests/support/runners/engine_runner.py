"""A real engine process for crash tests:
`python -m tests.support.runners.engine_runner DATA_DIR BASE_URL POSTS [SUBMIT]`.

It delivers by appending a line to POSTS (the stand-in for a Discord thread: a redelivery first looks
there, as the Discord notifier looks at the thread's history), submits SUBMIT jobs when asked, and exits
0 once every job in the database is final. The test kills it with SIGKILL at random moments.
KF2V_DATABASE_URL in its environment puts the store on PostgreSQL (the settings read it), as for `kf2v-bot run`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from bot.app import build_services
from bot.jobs.models import Job, JobState
from bot.jobs.ports import Progress, Video
from tests.support.engine import draft, engine_settings


class FileNotifier:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _posted(self) -> set[int]:
        if not self.path.exists():
            return set()
        return {int(line.split()[1]) for line in self.path.read_text().splitlines() if line.startswith("video ")}

    async def job_updated(self, job: Job, progress: Progress) -> None:
        return None

    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        if redelivery and job.id in self._posted():
            return
        with self.path.open("a") as handle:
            handle.write(f"video {job.id} {video.size}\n")
            handle.flush()

    async def job_failed(self, job: Job) -> None:
        with self.path.open("a") as handle:
            handle.write(f"failed {job.id} {job.error_key}\n")

    async def owner_alert(self, key: str, **params: Any) -> None:
        return None


async def main(data_dir: Path, base_url: str, posts: Path, submit: int) -> int:
    settings = engine_settings(data_dir, base_url)
    services = await build_services(settings, FileNotifier(posts))
    await services.start()
    try:
        for i in range(submit):
            await services.jobs.submit(draft(guild=1 + i % 3, user=100 + i % 7, prompt=f"scene {i}"))
        while True:
            counts = await services.store.count_by_state()
            if counts and all(state.is_final for state in counts):
                return 0
            await asyncio.sleep(0.05)
    finally:
        await services.stop()


if __name__ == "__main__":
    submit = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), submit)))


__all__ = ["JobState", "main"]
