"""One ledger check for every reliability campaign, independent of the bot's own money code.

It reads the `jobs` and `ledger` tables directly (sqlite3 or asyncpg, not the bot's store), prices each job
from the raw catalog data (`DEFAULT_CATALOG`: CNY a second per resolution, per region when it has its own)
and the seconds the provider billed (the DashScope emulator's record of each task's `usage`), and says what
is wrong, in words:

* every job is final and its money moved once: SETTLED or RELEASED, nothing left RESERVED;
* its ledger rows: one reserve of its reservation, then one settle of what it was charged or one release of
  the reservation; or, for a job charged when the provider finished whose video could then never be shown
  (issue 17), one settle and one release of the same amount (a refund: RELEASED, nothing spent);
* a SETTLED job was charged at most its reservation, and exactly the catalog's price for what the provider
  billed (a bill that is not a number of seconds within the video's length counts as the video's length,
  rounded up to a whole milli-CNY); its task is one the provider billed;
* a DELIVERED job is SETTLED (a video members can see is paid for), and nothing is charged without one;
* per guild, the ledger's settled sum equals the jobs' settled money, and the guild's spend the bot reports.

`delivery_problems` counts "delivered exactly once" for every job from what the member side recorded.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bot.catalog import DEFAULT_CATALOG
from sandbox.dashscope_emulator import DashScopeEmulator

FINAL_STATES = frozenset({"delivered", "failed", "canceled"})
# A charge without a video is allowed only where a video existed and was lost on our side after the provider
# billed it (never on the path the issue names: members must see what they pay for).
CHARGED_WITHOUT_VIDEO: frozenset[str] = frozenset()


@dataclass
class LedgerReport:
    """What the check found: counts for the campaign's printout, and every problem in words."""

    jobs: int = 0
    settled: int = 0
    released: int = 0
    settled_milli: int = 0
    spend_by_guild: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"ledger: jobs={self.jobs} settled={self.settled} released={self.released} "
            f"settled_milli={self.settled_milli} problems={len(self.problems)}"
        )


def billed_by_task(emulator: DashScopeEmulator) -> dict[str, tuple[str, float | None]]:
    """Task id -> (status, the seconds its SUCCEEDED answers billed), from the emulator's own record."""
    return {t["task_id"]: (t["status"], t["billed_seconds"]) for t in emulator.stats()["tasks"] if not t["neighbour"]}


def price_milli(model: str, resolution: str, seconds: float, region: str = "beijing") -> int:
    """The catalog's price of `seconds` of `resolution` output, rounded up to a whole milli-CNY."""
    spec = DEFAULT_CATALOG["models"][model]
    per_second = spec.get("region_prices", {}).get(region, spec["price_per_second"])[resolution]
    milli = Decimal(str(per_second)) * 1000 * Decimal(str(seconds))
    return int(milli.to_integral_value(rounding=ROUND_CEILING))


def _video_seconds(model: str, duration: int | None) -> int:
    if duration is not None:
        return int(duration)
    return int(DEFAULT_CATALOG["models"][model].get("duration", {}).get("default", 5))


def _chargeable(billed: float | None, length: int) -> float:
    """The seconds to price: the bill when it is a number of seconds the video can last, else its length."""
    if billed is None or not math.isfinite(billed) or billed < 0 or billed > length:
        return float(length)
    return float(billed)


async def read_tables(database: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(jobs, ledger rows) straight from the database: a SQLite file path or a postgresql:// URL."""
    jobs_sql = (
        "SELECT id, guild_id, state, charge_state, cost_reserved, cost_settled, model, resolution, duration, "
        "task_id FROM jobs ORDER BY id"
    )
    ledger_sql = "SELECT job_id, guild_id, kind, amount FROM ledger ORDER BY id"
    text = str(database)
    if text.startswith(("postgresql://", "postgres://")):
        conn = await asyncpg.connect(text)
        try:
            return [dict(r) for r in await conn.fetch(jobs_sql)], [dict(r) for r in await conn.fetch(ledger_sql)]
        finally:
            await conn.close()

    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with sqlite3.connect(f"file:{text}?mode=ro", uri=True, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return (
                [dict(r) for r in conn.execute(jobs_sql).fetchall()],
                [dict(r) for r in conn.execute(ledger_sql).fetchall()],
            )

    return await asyncio.to_thread(read)


async def check_ledger(
    database: str | Path,
    *,
    billed: Mapping[str, tuple[str, float | None]] | None,
    reported_spend: Mapping[int, int] | None = None,
    region: str = "beijing",
    expect_final: bool = True,
) -> LedgerReport:
    """Every problem of the campaign's money (see the module's docstring); `billed` from `billed_by_task`
    (None: a campaign whose provider record is gone, priced at the video's length), `reported_spend` the
    bot's own figure per guild (`JobStore.spend_by_guild`). `expect_final=False` checks a campaign in the
    middle: an unfinished job holding exactly its one reservation is fine."""
    jobs, ledger = await read_tables(database)
    report = LedgerReport(jobs=len(jobs))
    problems = report.problems
    rows: dict[int, Counter[str]] = defaultdict(Counter)
    amounts: dict[tuple[int, str], int] = {}
    ledger_spend: dict[int, int] = defaultdict(int)
    known = {int(j["id"]): j for j in jobs}
    for row in ledger:
        job_id, kind, amount = int(row["job_id"]), str(row["kind"]), int(row["amount"])
        rows[job_id][kind] += 1
        amounts[(job_id, kind)] = amount
        job = known.get(job_id)
        if job is None:
            problems.append(f"ledger {kind} of {amount} for job {job_id}, which does not exist")
        elif int(row["guild_id"]) != int(job["guild_id"]):
            problems.append(f"job {job_id}: ledger {kind} booked to guild {row['guild_id']}, not {job['guild_id']}")
        if kind == "settle":
            ledger_spend[int(row["guild_id"])] += amount
    jobs_spend: dict[int, int] = defaultdict(int)
    for job in jobs:
        job_id, state, charge = int(job["id"]), str(job["state"]), str(job["charge_state"])
        reserved, settled = int(job["cost_reserved"]), int(job["cost_settled"] or 0)
        kinds = rows[job_id]
        if state not in FINAL_STATES and expect_final:
            problems.append(f"job {job_id} is still {state}")
        if kinds["reserve"] != 1 or amounts.get((job_id, "reserve")) != reserved:
            problems.append(f"job {job_id}: reserve rows {kinds['reserve']} of {amounts.get((job_id, 'reserve'))}, "
                            f"reservation {reserved}")  # fmt: skip
        if charge == "reserved":
            if state in FINAL_STATES or expect_final:
                problems.append(f"job {job_id} ({state}) still holds its reservation of {reserved}")
            if kinds["settle"] or kinds["release"]:
                problems.append(f"job {job_id}: reserved but ledger rows {dict(kinds)}")
            continue
        refund = amounts.get((job_id, "settle"))
        if (
            charge == "released"
            and kinds["settle"] == kinds["release"] == 1
            and amounts.get((job_id, "release")) == refund
        ):
            report.released += 1  # charged when the provider finished, given back: the video was never shown
            ledger_spend[int(job["guild_id"])] -= refund or 0
            if state == "delivered":
                problems.append(f"job {job_id} was delivered but not charged")
            continue
        own, other = ("settle", "release") if charge == "settled" else ("release", "settle")
        if kinds[other] or kinds[own] != 1:
            problems.append(f"job {job_id}: {charge} but ledger rows {dict(kinds)}")
        if charge == "released":
            report.released += 1
            if amounts.get((job_id, "release")) != reserved:
                problems.append(f"job {job_id}: released {amounts.get((job_id, 'release'))} of {reserved} reserved")
            if state == "delivered":
                problems.append(f"job {job_id} was delivered but not charged")
            continue
        report.settled += 1
        report.settled_milli += settled
        jobs_spend[int(job["guild_id"])] += settled
        if amounts.get((job_id, "settle")) != settled:
            problems.append(f"job {job_id}: settled {settled} but the ledger says {amounts.get((job_id, 'settle'))}")
        if settled > reserved:
            problems.append(f"job {job_id}: charged {settled}, more than its reservation {reserved}")
        if state in FINAL_STATES and state != "delivered" and state not in CHARGED_WITHOUT_VIDEO:
            problems.append(f"job {job_id} was charged {settled} but ended {state}: money without a video")
        length = _video_seconds(str(job["model"]), job["duration"])
        bill: float | None = None
        if billed is not None:
            status, bill = billed.get(str(job["task_id"]), ("unknown", None))
            if status != "SUCCEEDED":
                problems.append(f"job {job_id}: charged for task {job['task_id']}, which the provider shows {status}")
        due = min(reserved, price_milli(str(job["model"]), str(job["resolution"]), _chargeable(bill, length), region))
        if settled != due:
            problems.append(f"job {job_id}: charged {settled}, the catalog's price for the bill ({bill} s) is {due}")
    report.spend_by_guild = dict(jobs_spend)
    if {g: m for g, m in ledger_spend.items() if m} != {g: m for g, m in jobs_spend.items() if m}:
        problems.append(f"settled per guild: ledger {dict(ledger_spend)} but jobs {dict(jobs_spend)}")
    if reported_spend is not None and {g: s for g, s in reported_spend.items() if s} != {
        g: s for g, s in jobs_spend.items() if s
    }:
        problems.append(f"the bot reports spend {dict(reported_spend)} but the jobs were charged {dict(jobs_spend)}")
    return report


def delivery_problems(
    job_states: Mapping[int, str], posts: Counter[int], *, expected_jobs: int | None = None
) -> list[str]:
    """ "Delivered exactly once" for every job: each DELIVERED job's video posted once, no other job's at all,
    no post of a job the database doesn't know, and (when given) as many jobs as the campaign made."""
    problems = []
    if expected_jobs is not None and len(job_states) != expected_jobs:
        problems.append(f"{len(job_states)} jobs in the database, the campaign made {expected_jobs}")
    for job_id, state in sorted(job_states.items()):
        wanted = 1 if state == "delivered" else 0
        if posts.get(job_id, 0) != wanted:
            problems.append(f"job {job_id} ({state}) posted {posts.get(job_id, 0)} times")
    problems += [
        f"a post of job {job_id}, which the database doesn't have" for job_id in posts if job_id not in job_states
    ]
    return problems


async def job_states(database: str | Path) -> dict[int, str]:
    """Job id -> state, read directly."""
    jobs, _ = await read_tables(database)
    return {int(j["id"]): str(j["state"]) for j in jobs}


def posts_of(delivered: Iterable[int]) -> Counter[int]:
    """A RecordingNotifier's deliveries (job ids, one per post) as counts."""
    return Counter(delivered)


async def check_services(
    services: Any, emulator: DashScopeEmulator, posts: Counter[int], *, expected_jobs: int | None = None
) -> LedgerReport:
    """The whole check on a running engine (`bot.app.Services`): money from its database, deliveries from
    `posts` (videos_per_job of the Discord emulator, or a RecordingNotifier's). Delivery problems are added
    to the report's problems."""
    settings = services.settings
    source: str | Path = settings.database_url or settings.database_path
    report = await check_ledger(
        source, billed=billed_by_task(emulator), reported_spend=await services.store.spend_by_guild()
    )
    report.problems += delivery_problems(await job_states(source), posts, expected_jobs=expected_jobs)
    return report
