"""The upload cache against the real client and the DashScope emulator over 127.0.0.1: reuse per (content,
account, model), re-upload of what expired, retries of temporary errors only, one upload for concurrent
askers, spacing per account+model, and no policy or signature in the logs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import InvalidRequestError, ProviderUnavailableError
from bot.jobs.uploads import DatabaseUploadStore, MemoryUploadStore, UploadCache, UploadConfig, UploadStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig, FaultConfig
from tests.support.postgres import OpenDatabase

MODEL = "wan2.7-i2v"
OTHER_MODEL = "wan2.2-kf2v-flash"


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(buf, "PNG")
    return buf.getvalue()


class Sleeps:
    """Records the waits asked for and moves its own monotonic clock past them instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.on_sleep: list[Any] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()


def backoffs(sleeps: Sleeps) -> list[float]:
    """The retry waits (the spacing between uploads is 1/5 s by default, a backoff 1 s or more)."""
    return [w for w in sleeps.waits if w >= 1.0]


def heal(emulator: DashScopeEmulator) -> None:
    emulator.update(faults=FaultConfig())


def cache_over(store: UploadStore, config: UploadConfig | None = None, **kwargs: Any) -> UploadCache:
    sleeps = kwargs.pop("sleeps", None) or Sleeps()
    return UploadCache(store, config, clock=sleeps.clock, sleep=sleeps, **kwargs)


class Wall:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    async with DashScopeEmulator(EmulatorConfig(submit_rps=50, max_in_flight=5)) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(emulator: DashScopeEmulator, session: aiohttp.ClientSession, key: str = "sk-upl-a") -> DashScopeClient:
    return DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(key), timeout=20)


def uploads_sent(emulator: DashScopeEmulator) -> int:
    return int(emulator.stats()["calls"].get("upload", 0))


async def test_same_bytes_same_account_and_model_are_uploaded_once(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    store = MemoryUploadStore()
    cache = cache_over(store)
    client = client_for(emulator, session)
    frame = png((10, 200, 30))
    first = await cache.url_for(client, client.account_id, MODEL, frame, filename="first.png", content_type="image/png")
    again = await cache.url_for(
        client, client.account_id, MODEL, frame, filename="renamed.png", content_type="image/png"
    )
    assert first.url.startswith("oss://") and not first.reused
    assert again == type(first)(first.url, first.expires_at, reused=True)
    assert uploads_sent(emulator) == 1
    # Another model or another account: the provider binds files to both, so each gets its own copy.
    other = client_for(emulator, session, "sk-upl-b")
    other_model = await cache.url_for(
        client, client.account_id, OTHER_MODEL, frame, filename="first.png", content_type="image/png"
    )
    other_account = await cache.url_for(
        other, other.account_id, MODEL, frame, filename="first.png", content_type="image/png"
    )
    assert len({first.url, other_model.url, other_account.url}) == 3
    assert uploads_sent(emulator) == 3
    # A cache built after a restart over the same store reuses what is still valid.
    restarted = cache_over(store)
    assert (
        await restarted.url_for(client, client.account_id, MODEL, frame, filename="f.png", content_type="image/png")
    ).reused
    assert uploads_sent(emulator) == 3


async def test_only_what_nears_expiry_is_uploaded_again(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    wall = Wall()
    store = MemoryUploadStore()
    cache = cache_over(store, UploadConfig(margin=timedelta(hours=6)), now=wall)
    client = client_for(emulator, session)
    old, fresh = png((1, 2, 3)), png((4, 5, 6))
    old_first = await cache.url_for(client, client.account_id, MODEL, old, filename="old.png", content_type="image/png")
    fresh_first = await cache.url_for(
        client, client.account_id, MODEL, fresh, filename="fresh.png", content_type="image/png"
    )
    # The client stamps expiry from the real clock; the store is told `fresh` was uploaded 30 h after `old`.
    row = await store.find_upload(hashlib.sha256(fresh).hexdigest(), client.account_id, MODEL)
    assert row is not None
    await store.save_upload(replace(row, expires_at=row.expires_at + timedelta(hours=30)))
    wall.at += timedelta(hours=43)  # old: 5 h left < the 6 h margin; fresh: 35 h left
    old_again = await cache.url_for(client, client.account_id, MODEL, old, filename="old.png", content_type="image/png")
    fresh_again = await cache.url_for(
        client, client.account_id, MODEL, fresh, filename="fresh.png", content_type="image/png"
    )
    assert not old_again.reused and old_again.url != old_first.url
    assert fresh_again.reused and fresh_again.url == fresh_first.url
    assert uploads_sent(emulator) == 3
    wall.at += timedelta(days=3)
    assert await cache.forget_expired() == 2


async def test_temporary_errors_are_retried_and_the_rest_raised_at_once(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    sleeps = Sleeps()
    cache = cache_over(MemoryUploadStore(), UploadConfig(attempts=3, backoff_s=1.0), sleeps=sleeps)
    client = client_for(emulator, session)
    # Every policy request fails with a 5xx until the second backoff; the third try goes through.
    emulator.update(faults=FaultConfig(error_rate=1.0, routes=frozenset({"upload_policy"})))
    sleeps.on_sleep.append(lambda: heal(emulator) if backoffs(sleeps) == [1.0, 2.0] else None)
    done = await cache.url_for(
        client, client.account_id, MODEL, png((7, 7, 7)), filename="a.png", content_type="image/png"
    )
    assert done.url.startswith("oss://")
    assert sleeps.waits == [1.0, 2.0]
    assert cache.uploads_sent == 1

    # Still failing after every try: the client's classified error comes out.
    emulator.update(faults=FaultConfig(error_rate=1.0, routes=frozenset({"upload_policy"})))
    sleeps.on_sleep.clear()
    with pytest.raises(ProviderUnavailableError):
        await cache.url_for(
            client, client.account_id, MODEL, png((8, 8, 8)), filename="b.png", content_type="image/png"
        )
    emulator.update(faults=FaultConfig())

    # Not retryable (over the provider's size limit): raised on the first try, nothing sent.
    before = len(backoffs(sleeps))
    with pytest.raises(InvalidRequestError):
        await cache.url_for(
            client, client.account_id, MODEL, bytes(101 * 1024 * 1024), filename="c.wav", content_type="audio/wav"
        )
    assert backoffs(sleeps)[before:] == []
    assert uploads_sent(emulator) == 1


async def test_concurrent_askers_share_one_upload_and_uploads_are_spaced(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    sleeps = Sleeps()
    cache = UploadCache(MemoryUploadStore(), UploadConfig(uploads_per_second=4), clock=lambda: 100.0, sleep=sleeps)
    client = client_for(emulator, session)
    frame = png((50, 60, 70))
    results = await asyncio.gather(
        *(
            cache.url_for(client, client.account_id, MODEL, frame, filename="x.png", content_type="image/png")
            for _ in range(5)
        )
    )
    assert len({r.url for r in results}) == 1 and sum(not r.reused for r in results) == 1
    assert uploads_sent(emulator) == 1
    # Three more files on the same account+model with a frozen clock: each waits one more slot (1/4 s).
    for shade in (1, 2, 3):
        await cache.url_for(
            client, client.account_id, MODEL, png((shade, 0, 0)), filename="y.png", content_type="image/png"
        )
    assert sleeps.waits == [0.25, 0.5, 0.75]
    # Another model is another lane: no wait.
    await cache.url_for(client, client.account_id, OTHER_MODEL, frame, filename="x.png", content_type="image/png")
    assert sleeps.waits == [0.25, 0.5, 0.75]


async def test_logs_never_hold_the_policy_or_its_signature(
    emulator: DashScopeEmulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sleeps = Sleeps()
    cache = cache_over(MemoryUploadStore(), UploadConfig(attempts=2), sleeps=sleeps)
    client = client_for(emulator, session)
    await cache.url_for(client, client.account_id, MODEL, png((90, 9, 9)), filename="s.png", content_type="image/png")
    # And an upload that fails for good (the policy call answers 5xx every time), logged as a warning.
    emulator.update(faults=FaultConfig(error_rate=1.0, routes=frozenset({"upload_policy"})))
    with pytest.raises(ProviderUnavailableError):
        await cache.url_for(
            client, client.account_id, MODEL, png((91, 9, 9)), filename="t.png", content_type="image/png"
        )
    # The emulator's policy is base64 JSON ("eyJ…") and its access key id is fixed; the signature is named.
    for secret in ("LTAI5tSandboxKey", "eyJ", "ignature", "policy="):
        assert secret not in caplog.text
    assert any("uploaded sha256=" in r.getMessage() for r in caplog.records)
    assert any(r.name == "bot.dashscope.client" and "/uploads" in r.getMessage() for r in caplog.records)
    assert any("upload failed for good" in r.getMessage() for r in caplog.records)


async def test_the_database_store_keeps_uploads_across_a_restart(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession, open_database_of_engine: OpenDatabase
) -> None:
    client = client_for(emulator, session)
    frame = png((120, 130, 140))
    before = cache_over(DatabaseUploadStore(await open_database_of_engine()))
    first = await before.url_for(client, client.account_id, MODEL, frame, filename="a.png", content_type="image/png")
    # Another process (or the same one after a restart) on the same database: reused, nothing sent again.
    after_store = DatabaseUploadStore(await open_database_of_engine())
    after = cache_over(after_store)
    again = await after.url_for(client, client.account_id, MODEL, frame, filename="a.png", content_type="image/png")
    assert again.reused and (again.url, again.expires_at) == (first.url, first.expires_at)
    assert uploads_sent(emulator) == 1
    # An upsert replaces the row; forget removes only what expired.
    row = await after_store.find_upload(hashlib.sha256(frame).hexdigest(), client.account_id, MODEL)
    assert row is not None and row.size == len(frame)
    await after_store.save_upload(replace(row, url="oss://x/y.png", expires_at=row.expires_at - timedelta(days=3)))
    replaced = await after_store.find_upload(row.sha256, row.account, row.model)
    assert replaced is not None and replaced.url == "oss://x/y.png"
    assert await after_store.forget_uploads(datetime.now(UTC)) == 1
    assert await after_store.find_upload(row.sha256, row.account, row.model) is None
