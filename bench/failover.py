"""Failover: SIGKILL the process holding the dispatcher lease; seconds until another process writes under it.

Three real processes (`python -m bench.failover --holder URL NAME`) run `DispatchLease.hold` for two accounts
against one PostgreSQL database (created for the run on KF2V_BENCH_DATABASE_URL's server, default the local
one, and dropped after). The one that takes the leases makes a fenced write at once (an epoch-checked
transaction, as a submission or a recovery poll's write is) and prints its wall time. The bench kills the
holder with SIGKILL (no release: the lease must expire), starts a replacement standby, and measures kill ->
the next holder's first fenced write. What it does not include: the new holder's recovery work (reading
the unfinished jobs), which depends on how many there are.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench._common import emit, note
from bot.jobs.db import PostgresDatabase, redact_url
from bot.jobs.worker.lease import DEFAULT_RETRY_S, DEFAULT_TTL_S, DispatchLease, lease_name

ACCOUNTS = ("main", "extra")
PROCESSES = 3
KILLS = {"tiny": 1, "full": 10}  # tiny keeps `bench all --size tiny` (CI) short
# The lease's TTL and standby retry: the defaults for the figures; tiny (proving the path) waits less for expiry.
LEASE_TIMES = {"tiny": (2.0, 0.5), "full": (DEFAULT_TTL_S, DEFAULT_RETRY_S)}


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def holder(url: str, name: str, ttl: float, retry_s: float) -> None:
    """The child: hold the leases when possible; announce the first fenced write after each acquisition."""
    db = await PostgresDatabase.open(url, max_connections=2)
    lease = DispatchLease(db, ACCOUNTS, name, ttl=ttl, retry_s=retry_s)

    async def on_acquired() -> None:
        async with db.transaction() as tx:
            for account in ACCOUNTS:
                fence = lease.fence_for(account)
                assert fence is not None
                await tx.check_epoch(*fence)
        print(f"wrote {name} {time.time():.6f}", flush=True)

    async def on_lost() -> None:
        print(f"lost {name}", flush=True)

    await lease.hold(on_acquired, on_lost)


async def _read_until_write(proc: asyncio.subprocess.Process) -> tuple[str, float]:
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("a holder process ended")
        if line.startswith("wrote "):
            _, name, at = line.split()
            return name, float(at)


async def measure(size: str, **_options: Any) -> dict[str, Any]:
    server = os.environ.get("KF2V_BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    name = f"kf2v_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server, timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server, name)
    procs: dict[str, asyncio.subprocess.Process] = {}
    counter = 0
    ttl, retry_s = LEASE_TIMES.get(size, LEASE_TIMES["full"])

    async def spawn() -> None:
        nonlocal counter
        counter += 1
        child = f"p{counter}"
        procs[child] = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.failover", "--holder", url, child, str(ttl), str(retry_s)),
            stdout=asyncio.subprocess.PIPE,
        )

    takeovers: list[float] = []
    try:
        bootstrap = await PostgresDatabase.open(url, max_connections=1)  # makes the lease table once
        await bootstrap.close()
        for _ in range(PROCESSES):
            await spawn()
        waiting = {n: asyncio.create_task(_read_until_write(p)) for n, p in procs.items()}
        done, _ = await asyncio.wait(waiting.values(), return_when=asyncio.FIRST_COMPLETED, timeout=60)
        current, _at = next(iter(done)).result()
        for _kill in range(KILLS.get(size, KILLS["full"])):
            for task in waiting.values():
                if not task.done():
                    task.cancel()
            killed_at = time.time()
            procs[current].send_signal(signal.SIGKILL)
            await procs.pop(current).wait()
            await spawn()
            waiting = {n: asyncio.create_task(_read_until_write(p)) for n, p in procs.items()}
            done, _ = await asyncio.wait(waiting.values(), return_when=asyncio.FIRST_COMPLETED, timeout=60)
            if not done:
                raise RuntimeError("no process took the lease over within 60 s")
            current, wrote_at = next(iter(done)).result()
            takeovers.append(wrote_at - killed_at)
            note(f"kill {len(takeovers)}: {current} wrote under the lease {takeovers[-1]:.2f}s after the kill")
        for task in waiting.values():
            task.cancel()
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ordered = sorted(takeovers)
    return {
        "bench": "failover",
        "size": size,
        "database": redact_url(server),
        "processes": PROCESSES,
        "kills": len(takeovers),
        "lease_ttl_s": ttl,
        "standby_retry_s": retry_s,
        "lease": lease_name("<account>"),
        "takeover_s_p50": round(statistics.median(ordered), 3),
        "takeover_s_max": round(ordered[-1], 3),
        "target_s": 10.0,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--holder"]:
        asyncio.run(holder(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])))
    else:
        emit(asyncio.run(measure(sys.argv[1] if len(sys.argv) > 1 else "full")))
