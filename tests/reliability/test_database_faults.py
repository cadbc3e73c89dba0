"""The database away for a while, on both engines, while jobs are in flight (issue 17, item 2).

SQLite: another connection holds the database file's write lock (`BEGIN EXCLUSIVE`, as a backup tool or the
sqlite3 shell would) — every write of the bot waits, then fails with "database is locked" once its busy
timeout (5 s) runs out. PostgreSQL: the bot reaches the server through a TCP proxy in the test that resets
every connection and refuses new ones (a partition, a server restart). Tests run as root, which ignores file
permissions, so a read-only file would not fail the writes: the lock does.

Each run: 8 jobs on a 2-slot account, the fault starts once the provider has tasks, lasts its length (and
until /healthz said 503), then ends. Checked: every job delivered exactly once, one provider task per job,
never more than 2 in flight, /healthz 503 during and 200 after, and a job dispatched after the fault; the
time from the end of the fault to that dispatch is printed (a figure, not asserted: the machine is shared).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from bot.app import Services
from bot.jobs.models import JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import draft, jobs_by_id, start_engine
from tests.support.ledger_check import check_services
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

JOBS = 8
MAX_IN_FLIGHT = 2


class Fault(Protocol):
    async def begin(self) -> None: ...

    async def end(self) -> None: ...


class LockedSqliteFile:
    """Another connection holding the file's write lock."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)

    async def begin(self) -> None:
        await asyncio.to_thread(self._conn.execute, "BEGIN EXCLUSIVE")

    async def end(self) -> None:
        await asyncio.to_thread(self._conn.execute, "ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class CutConnections:
    """The proxy in front of PostgreSQL resets every connection and refuses new ones."""

    def __init__(self, proxy: TcpProxy) -> None:
        self._proxy = proxy

    async def begin(self) -> None:
        self._proxy.cut()

    async def end(self) -> None:
        self._proxy.restore()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=17, pending_s=(0.1, 0.3), running_s=(0.8, 1.5)))
    await emu.start()
    yield emu
    await emu.stop()


async def healthz(http: aiohttp.ClientSession, services: Services) -> tuple[int, dict[str, Any]]:
    assert services.health is not None and services.health.url is not None
    try:
        async with http.get(f"{services.health.url}/healthz") as response:
            return response.status, json.loads(await response.text())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, {"error": repr(exc)}


async def run_outage(
    engine: str, outage_s: float, tmp_path: Path, store_env: dict[str, Any], emulator: DashScopeEmulator
) -> None:
    proxy: TcpProxy | None = None
    env = dict(store_env)
    if engine == "postgresql":
        target = urlsplit(env["KF2V_DATABASE_URL"])
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
        await proxy.start()
        env["KF2V_DATABASE_URL"] = through(proxy, env["KF2V_DATABASE_URL"])
    services, recorder = await start_engine(tmp_path, emulator.base_url, KF2V_HTTP_PORT=free_port(), **env)
    fault: Fault
    if proxy is not None:
        fault = CutConnections(proxy)
    else:
        locker = LockedSqliteFile(services.settings.database_path)
        fault = locker
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        await wait_until(lambda: services.worker.dispatching, within=30)
        jobs = [await services.jobs.submit(draft(user=10 + i % 3, prompt=f"scene {i}")) for i in range(JOBS)]
        await wait_until(lambda: emulator.stats()["submissions_accepted"] >= 1, within=30)

        await fault.begin()
        began = time.monotonic()
        seen_503: dict[str, Any] | None = None
        # The fault lasts `outage_s`, and until /healthz has said 503 (a busy machine may be slow to ask).
        while time.monotonic() - began < outage_s or seen_503 is None:
            status, body = await healthz(http, services)
            if status == 503 and seen_503 is None:
                seen_503 = body
            assert time.monotonic() - began < outage_s + 60, f"/healthz never said 503 during the fault: {body}"
            await asyncio.sleep(0.1)
        lasted = time.monotonic() - began
        await fault.end()
        fault_end = emulator.stats()["uptime_s"]

        async def all_delivered() -> bool:
            return all(j.state is JobState.DELIVERED for j in await jobs_by_id(services, [j.id for j in jobs]))

        await wait_until(all_delivered, within=120, interval=0.2)

        async def healthy() -> bool:
            return (await healthz(http, services))[0] == 200

        await wait_until(healthy, within=30, interval=0.2)
        stats = emulator.stats()
        after = sorted(t["created"] for t in stats["tasks"] if t["created"] > fault_end)
        assert after, "no job was dispatched after the fault ended"
        assert "database" in seen_503["failing"], seen_503
        assert {"dispatcher", "queue-watch"} <= set(seen_503["tasks"]) and "job_work" in seen_503, seen_503
        assert services.worker.counters["job_crashes"] == 0, "a database fault is not a bug of the job's work"
        assert stats["submissions_accepted"] == JOBS, "one provider task per job"
        assert Counter(job_id for job_id, _ in recorder.delivered) == Counter({j.id: 1 for j in jobs})
        peaks = [n for per_model in stats["max_in_flight"].values() for n in per_model.values()]
        assert max(peaks) <= MAX_IN_FLIGHT and stats["violations"] == [], stats["max_in_flight"]
        posts = Counter(job_id for job_id, _ in recorder.delivered)
        money = await check_services(services, emulator, posts, expected_jobs=JOBS)
        assert money.problems == []
        print(
            f"\nRELIABILITY database-outage engine={engine} outage_s={lasted:.1f} jobs={JOBS} "
            f"delivered_once={JOBS} tasks={stats['submissions_accepted']} max_in_flight={max(peaks)} "
            f"next_dispatch_after_fault_s={after[0] - fault_end:.2f} "
            f"healthz_during={seen_503['failing']} database_faults={services.worker.counters['database_faults']} "
            f"{money.summary()}"
        )
    finally:
        await http.close()
        await services.stop()
        if isinstance(fault, LockedSqliteFile):
            fault.close()
        if proxy is not None:
            await proxy.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("outage_s", [1.0, 6.0])
async def test_database_outage_every_job_delivered_once(
    engine: str, outage_s: float, tmp_path: Path, store_env: dict[str, Any], emulator: DashScopeEmulator
) -> None:
    await run_outage(engine, outage_s, tmp_path, store_env, emulator)


# One minute-long case only (the suite's time budget): PostgreSQL, where a minute also outlives the dispatcher
# lease (TTL 6 s), the pool's connections and the LISTEN connection. SQLite's was run by hand (docs/reliability.md).
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["postgresql"])
async def test_database_outage_of_a_minute(
    engine: str, tmp_path: Path, store_env: dict[str, Any], emulator: DashScopeEmulator
) -> None:
    await run_outage(engine, 60.0, tmp_path, store_env, emulator)
