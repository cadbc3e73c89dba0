"""Temporary uploads, reused while they are valid: frames, driving audio and clips for the media family.

The provider's temporary storage (`DashScopeClient.upload_file`, see
https://help.aliyun.com/zh/model-studio/get-temporary-file-url) keeps a file 48 h, bound to the main account
and to the model named at upload. So a file is identified here by (content sha256, account, provider model):
the same picture sent again by the same account for the same model reuses its `oss://` URL; another account
or model uploads its own copy.

A cached upload is reused only while it has more than `margin` left: the task that uses it may wait in the
provider's queue and run after the create, and the provider must still find the file then. A job resumed
after a restart asks again: what is still valid is reused (the store is persistent), only what expired is
sent again.

The provider's limit is 100 uploads per second per main account and model (same page), not to be used for
high concurrency; uploads here are spaced per (account, model) at `uploads_per_second`. Errors come
classified by the client (`DashScopeError.retryable`): temporary ones (5xx, 429, network, an expired policy)
are retried with backoff (the server's Retry-After when it gives one), the rest are raised at once.

What is logged: the content hash prefix, size, account fingerprint, model and expiry. Never the policy, its
signature or the upload form (the client never returns them; this module never sees them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.dashscope.errors import DashScopeError
from bot.dashscope.models import UploadedFile
from bot.jobs.db import Database, Row
from bot.jobs.ports import Clock

# Owns the uploads table (the cache below); the store's identity part forgets a rotated key's rows.
TABLES = frozenset({"uploads"})
USES: frozenset[str] = frozenset()

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedUpload:
    """One file in the provider's temporary storage."""

    sha256: str
    account: str  # the client's account fingerprint (never the key)
    model: str  # the PROVIDER's model name the file is bound to
    url: str  # oss://<key>: no signature in it
    expires_at: datetime
    size: int

    def valid_for(self, now: datetime, margin: timedelta) -> bool:
        """True while the file has more than `margin` of life left at `now`."""
        return self.expires_at - now > margin


class UploadStore(Protocol):
    """Where cached uploads survive a restart (the job store implements it; `MemoryUploadStore` for one run)."""

    async def find_upload(self, sha256: str, account: str, model: str) -> CachedUpload | None:
        """The latest upload of this content for this account and model, valid or not."""

    async def save_upload(self, upload: CachedUpload) -> None:
        """Insert or replace the upload of (sha256, account, model)."""

    async def forget_uploads(self, expired_before: datetime) -> int:
        """Remove uploads that expired before the moment; returns how many."""


class Uploader(Protocol):
    """What the cache uses of a provider client (`DashScopeClient`)."""

    async def upload_file(self, model: str, filename: str, data: bytes, content_type: str) -> UploadedFile:
        """Put `data` in the provider's temporary storage for `model`; see `DashScopeClient.upload_file`."""


class MemoryUploadStore:
    """An `UploadStore` for one process run (tests, the bench): forgets everything on restart."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], CachedUpload] = {}

    async def find_upload(self, sha256: str, account: str, model: str) -> CachedUpload | None:
        """The remembered upload of these bytes for this account and model, or None."""
        return self._rows.get((sha256, account, model))

    async def save_upload(self, upload: CachedUpload) -> None:
        """Remember the upload, replacing an earlier one of the same bytes, account and model."""
        self._rows[(upload.sha256, upload.account, upload.model)] = upload

    async def forget_uploads(self, expired_before: datetime) -> int:
        """Forget uploads that expired before `expired_before`; how many were forgotten."""
        gone = [key for key, row in self._rows.items() if row.expires_at < expired_before]
        for key in gone:
            del self._rows[key]
        return len(gone)


class DatabaseUploadStore:
    """The `uploads` table (migration 0004) on the job store's database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._db = db
        self._now = now

    async def find_upload(self, sha256: str, account: str, model: str) -> CachedUpload | None:
        """The stored upload of these bytes for this account and model, or None (expired ones included)."""
        row = await self._db.fetch_one(
            "SELECT sha256, account, model, url, expires_at, size FROM uploads"
            " WHERE sha256 = ? AND account = ? AND model = ?",
            (sha256, account, model),
        )
        return _cached(row) if row is not None else None

    async def save_upload(self, upload: CachedUpload) -> None:
        """Store the upload, replacing an earlier row for the same bytes, account and model."""
        await self._db.execute(
            """INSERT INTO uploads (sha256, account, model, url, expires_at, size, uploaded_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (sha256, account, model) DO UPDATE SET
                   url = excluded.url, expires_at = excluded.expires_at, size = excluded.size,
                   uploaded_at = excluded.uploaded_at""",
            (
                upload.sha256,
                upload.account,
                upload.model,
                upload.url,
                _utc_text(upload.expires_at),
                upload.size,
                _utc_text(self._now()),
            ),
        )

    async def forget_uploads(self, expired_before: datetime) -> int:
        """Delete rows that expired before `expired_before`; how many were deleted."""
        # Fixed-width UTC ISO text compares in time order.
        return await self._db.execute("DELETE FROM uploads WHERE expires_at < ?", (_utc_text(expired_before),))


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cached(row: Row) -> CachedUpload:
    expires = datetime.strptime(str(row["expires_at"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return CachedUpload(
        str(row["sha256"]), str(row["account"]), str(row["model"]), str(row["url"]), expires, int(row["size"])
    )


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """How the cache reuses and retries uploads."""

    # Reuse only with this much life left: a task may wait in the provider's queue before it reads its media.
    margin: timedelta = timedelta(hours=6)
    attempts: int = 4  # tries per file, for temporary errors only
    backoff_s: float = 1.0  # first wait; doubled per retry
    max_backoff_s: float = 30.0
    # Far below the provider's 100/s per account+model (a page that asks for no high concurrency).
    uploads_per_second: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0 or not self.uploads_per_second > 0:
            raise ValueError(f"invalid upload settings: {self}")


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """The URL to send, when it expires, and whether it came from the cache."""

    url: str
    expires_at: datetime
    reused: bool


class UploadCache:
    """`url_for` returns an `oss://` URL for some bytes, uploading only when no valid copy exists."""

    def __init__(
        self,
        store: UploadStore,
        config: UploadConfig | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.config = config or UploadConfig()
        self._now = now
        self._clock = clock
        self._sleep = sleep
        # One upload at a time per file (two jobs with the same frame upload it once).
        self._file_locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = {}  # lock, callers using it
        # The next moment (monotonic) an upload may start, per (account, model).
        self._next_start: dict[tuple[str, str], float] = {}
        self.uploads_sent = 0  # files really sent (for tests and metrics)
        self.reused = 0

    async def url_for(
        self, client: Uploader, account: str, model: str, data: bytes, *, filename: str, content_type: str
    ) -> UploadOutcome:
        """The `oss://` URL of `data` for `account` (the name `client`'s key is known by: its fingerprint, as
        `DashScopeClient.account_id`) and the provider `model`.

        Raises the client's `DashScopeError` when the upload fails for good (not retryable, or out of tries).
        """
        digest = hashlib.sha256(data).hexdigest()
        key = (digest, account, model)
        lock, users = self._file_locks.get(key) or (asyncio.Lock(), 0)
        self._file_locks[key] = (lock, users + 1)
        try:
            async with lock:
                cached = await self.store.find_upload(digest, account, model)
                if cached is not None and cached.valid_for(self._now(), self.config.margin):
                    self.reused += 1
                    log.debug("upload reused: sha256=%s… model=%s account=%s", digest[:12], model, account)
                    return UploadOutcome(cached.url, cached.expires_at, reused=True)
                uploaded = await self._upload(
                    client, account, model, data, filename=filename, content_type=content_type
                )
                if uploaded.sha256 != digest or uploaded.model != model:
                    raise RuntimeError("the client reported an upload of other bytes or another model")
                row = CachedUpload(digest, account, model, uploaded.url, uploaded.expires_at, uploaded.size)
                await self.store.save_upload(row)
                return UploadOutcome(row.url, row.expires_at, reused=False)
        finally:
            lock, users = self._file_locks[key]
            if users == 1:
                del self._file_locks[key]
            else:
                self._file_locks[key] = (lock, users - 1)

    async def _upload(
        self, client: Uploader, account: str, model: str, data: bytes, *, filename: str, content_type: str
    ) -> UploadedFile:
        digest = hashlib.sha256(data).hexdigest()[:12]
        for attempt in range(1, self.config.attempts + 1):
            await self._take_turn(account, model)
            try:
                uploaded = await client.upload_file(model, filename, data, content_type)
            except DashScopeError as exc:
                if not exc.retryable or attempt == self.config.attempts:
                    log.warning(
                        "upload failed for good: sha256=%s… model=%s attempt %d: %s", digest, model, attempt, exc
                    )
                    raise
                wait = self._backoff(attempt, exc.retry_after)
                log.info("upload retry in %.1f s: sha256=%s… model=%s: %s", wait, digest, model, exc)
                await self._sleep(wait)
                continue
            self.uploads_sent += 1
            log.info(
                "uploaded sha256=%s… (%d bytes) model=%s account=%s, valid until %s",
                digest,
                uploaded.size,
                model,
                account,
                uploaded.expires_at.isoformat(timespec="seconds"),
            )
            return uploaded
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        wait = min(self.config.max_backoff_s, self.config.backoff_s * 2.0 ** (attempt - 1))
        if retry_after is not None and retry_after > 0:
            # The server's Retry-After is honoured up to our own ceiling (its value is untrusted input).
            wait = max(wait, min(retry_after, self.config.max_backoff_s))
        return wait

    async def _take_turn(self, account: str, model: str) -> None:
        """Space uploads per (account, model): claim the next slot now, then wait for it."""
        now = self._clock()
        lane = (account, model)
        start = max(now, self._next_start.get(lane, now))
        self._next_start[lane] = start + 1 / self.config.uploads_per_second
        if start > now:
            await self._sleep(start - now)

    async def forget_expired(self) -> int:
        """Drop rows of files the provider deleted already (a housekeeping call)."""
        return await self.store.forget_uploads(self._now())
