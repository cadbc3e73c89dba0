"""PostgreSQL connections cut by a TCP proxy in the test (tests/support/tcp_proxy.py), and what the engine
makes of it (issue 17): the LISTEN connection re-reads the tables after it reconnects, so a job admitted by
another process meanwhile (its notification lost) is dispatched; the dispatcher lease keeper never gives up
when starting to dispatch fails; /healthz says when no process has held the dispatcher lease for TTL + 10 s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.app import LEASE_GRACE_S, build_services
from bot.jobs.db import SqliteDatabase, migrate
from bot.jobs.worker.lease import DispatchLease, lease_name
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import draft, engine_settings, start_engine
from tests.support.recording import RecordingNotifier
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until
from tests.unit.jobs.test_multiprocess import all_delivered


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=17, pending_s=(0.05, 0.2), running_s=(0.2, 0.5)))
    await emu.start()
    yield emu
    await emu.stop()


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def test_a_job_admitted_elsewhere_while_listen_was_cut_is_dispatched(
    tmp_path: Path, postgres_url: str, emulator: DashScopeEmulator
) -> None:
    target = urlsplit(postgres_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    dispatcher, _ = await start_engine(
        tmp_path, emulator.base_url, RecordingNotifier(), KF2V_DATABASE_URL=through(proxy, postgres_url)
    )
    # Another process that only admits (its own worker never starts: it is a standby's admission path).
    admitting = await build_services(
        engine_settings(tmp_path, emulator.base_url, KF2V_DATABASE_URL=postgres_url), RecordingNotifier()
    )
    try:
        await wait_until(lambda: dispatcher.worker.dispatching, within=15)
        assert dispatcher.follower is not None
        resyncs = dispatcher.follower.resyncs
        proxy.cut()  # the dispatcher's LISTEN connection (and its pool) are gone
        job = await admitting.jobs.submit(draft(user=20))  # its notification reaches nobody
        proxy.restore()
        await wait_until(lambda: all_delivered(dispatcher, [job.id]), within=30)
        assert dispatcher.follower.resyncs > resyncs, "the queue was re-read from the table after the reconnect"
        assert emulator.stats()["submissions_accepted"] == 1
    finally:
        await admitting.stop()
        await dispatcher.stop()
        await proxy.stop()


async def test_the_lease_keeper_retries_a_failed_start_and_keeps_the_leases(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "kf2v.sqlite3")
    await migrate(db)
    lease = DispatchLease(db, ["acct-1"], "me", ttl=3.0, retry_s=0.05)
    attempts = 0

    async def start_dispatching() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionResetError("the database went away during recovery")

    async def lost() -> None:
        raise AssertionError("never lost here")

    keeper = asyncio.create_task(lease.hold(start_dispatching, lost))
    try:
        await wait_until(lambda: attempts == 3, within=10)
        assert lease.held and not keeper.done(), "the keeper carries on holding the leases"
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await db.close()


async def test_healthz_fails_when_no_process_held_the_dispatcher_lease_for_ttl_plus_10_s(
    tmp_path: Path, postgres_url: str, emulator: DashScopeEmulator
) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url, KF2V_DATABASE_URL=postgres_url)
    try:
        assert services.lease is not None
        await wait_until(lambda: services.worker.dispatching, within=15)
        check = services.health_checks()["dispatcher_lease"]
        assert await check() == (True, "held")  # type: ignore[operator,misc]
        await services.stop()  # a graceful stop releases the leases: nobody holds them from now on
        names = [lease_name(account) for account in services.lease.accounts]
        conn = await asyncpg.connect(postgres_url)
        try:
            # As if the release had happened a while ago: 5 s (within the grace), then 30 s (past it).
            for lapsed, healthy in ((5, True), (LEASE_GRACE_S + 20, False)):
                await conn.execute(
                    "UPDATE kf2v_leases SET expires_at = clock_timestamp() - make_interval(secs => $1) "
                    "WHERE name = ANY($2::text[])", float(lapsed), names,
                )  # fmt: skip
                reopened = await build_services(
                    engine_settings(tmp_path, emulator.base_url, KF2V_DATABASE_URL=postgres_url), RecordingNotifier()
                )
                try:
                    reopened.lease = DispatchLease(reopened.store.database, services.lease.accounts, "observer")
                    ok, why = await reopened.health_checks()["dispatcher_lease"]()  # type: ignore[operator,misc]
                finally:
                    await reopened.stop()
                assert ok is healthy, why
                if not healthy:
                    assert "no process has held it for" in why
        finally:
            await conn.close()
    finally:
        if not services.http.closed:
            await services.stop()
