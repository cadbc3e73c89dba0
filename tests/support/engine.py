"""Shared test plumbing: a real engine (real SQLite file, real aiohttp client) against the emulator."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from bot.app import Services, build_services
from bot.jobs.models import Job, JobRequest
from bot.jobs.ports import Notifier
from bot.jobs.service import Draft
from bot.settings import Settings, load_settings
from tests.support import corpus
from tests.support.recording import RecordingNotifier

API_KEY = "sk-test-0123456789abcdef"


def engine_settings(data_dir: Path, base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": base_url,
        "KF2V_DATA_DIR": data_dir,
        "KF2V_POLL_MIN_INTERVAL": 0.05,
        "KF2V_POLL_MAX_INTERVAL": 0.5,
        "KF2V_USER_COMMANDS_PER_MINUTE": 1000,
        "KF2V_DEFAULT_USER_QUEUE_LIMIT": 100,
        "KF2V_DEFAULT_MEMBER_DAILY_VIDEOS": 1000,
        "KF2V_DEFAULT_DAILY_BUDGET": 1000,
        "KF2V_DEFAULT_MONTHLY_BUDGET": 10000,
    }
    values.update(overrides)
    return load_settings(**values)


async def start_engine(
    data_dir: Path, base_url: str, notifier: Notifier | None = None, **overrides: Any
) -> tuple[Services, RecordingNotifier]:
    recorder = notifier if isinstance(notifier, RecordingNotifier) else RecordingNotifier()
    services = await build_services(engine_settings(data_dir, base_url, **overrides), notifier or recorder)
    services.worker.config = replace(services.worker.config, delivery_backoff_s=0.05, reconcile_grace_s=1.0)
    await services.start()
    return services, recorder


def draft(guild: int = 1, user: int = 10, prompt: str = "a cat looks up at the sky", **kw: Any) -> Draft:
    """A /kf2v as a cog would hand it over; `kw` sets Draft fields and JobRequest options by name."""
    options: dict[str, Any] = {"prompt": prompt, "resolution": "480P"}
    options.update({k: kw.pop(k) for k in list(kw) if k in _OPTIONS})
    values: dict[str, Any] = {
        "guild_id": guild,
        "channel_id": guild * 100,
        "user_id": user,
        "locale": "en-US",
        "first_image": corpus.good_png(320, 240, (200, 30, 30)),
        "last_image": corpus.good_png(320, 240, (30, 30, 200)),
        "request": JobRequest(**options),
    }
    values.update(kw)
    return Draft(**values)


_OPTIONS = frozenset(f.name for f in fields(JobRequest))


async def all_final(services: Services, job_ids: list[int]) -> bool:
    jobs = [await services.store.get(i) for i in job_ids]
    return all(j is not None and j.is_final for j in jobs)


async def jobs_by_id(services: Services, job_ids: list[int]) -> list[Job]:
    out = []
    for i in job_ids:
        job = await services.store.get(i)
        assert job is not None
        out.append(job)
    return out
