"""Reconciliation: a create was sent and its answer lost; find the task it made, if any, before anything else.

Also the account's `api_key_id` (which tells our tasks from a neighbour's in the provider's task list),
remembered, stored, or learned from list rows of tasks we know.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.dashscope.errors import DashScopeError, MalformedAnswerError
from bot.dashscope.models import TaskResult, TaskSummary
from bot.jobs.models import Job, JobState
from bot.jobs.ports import ProviderClient
from bot.jobs.store import utcnow
from bot.jobs.worker.context import TASK_LIFETIME, WorkerContext
from bot.jobs.worker.polling import Poller

log = logging.getLogger(__name__)

# Asked around a lost create's possible creation times, on top of them (the list's own rounding to seconds).
LIST_MARGIN = timedelta(minutes=1)
# The client writes the list's bounds in UTC+8 (`LIST_TZ`), which no page we could read confirms. Should the
# service read them as UTC instead, a narrow window would miss our task and a lost create would be paid
# twice; so the window is also asked for as the other reading would place it (8 h earlier). Rows are matched
# on `gmt_create` (epoch ms, zone-free), so the extra rows cost a page, never a wrong match.
LIST_ZONE_READINGS = (timedelta(0), timedelta(hours=-8))
LIST_PAGE_SIZE = 100  # the list's largest page


async def list_created(
    ctx: WorkerContext, account: str, names: frozenset[str], earliest: datetime, latest: datetime
) -> tuple[list[TaskSummary], bool]:
    """Listed tasks of the model (by each of its provider `names`: a row may carry an alias of the name sent)
    created around [earliest, latest] (far less than the list's 24 h limit), and whether every page was read.

    Each page waits for the account's query gate: list calls count against the same 20 queries/s as polls."""
    client: ProviderClient = ctx.clients[account]
    rows: dict[str, TaskSummary] = {}
    complete = True
    for model, shift in ((name, shift) for name in sorted(names) for shift in LIST_ZONE_READINGS):
        for page_no in range(1, ctx.config.max_list_pages + 1):
            await ctx.poll_gates[account].wait()
            page = await client.list_tasks(
                start=earliest - LIST_MARGIN + shift, end=latest + LIST_MARGIN + shift, model_name=model,
                page_no=page_no, page_size=LIST_PAGE_SIZE,
            )  # fmt: skip
            rows.update((row.task_id, row) for row in page.data)
            if not page.data or page_no >= page.total_page:
                break
        else:
            complete = False
    return list(rows.values()), complete


def _create_window(ctx: WorkerContext, sent: datetime) -> tuple[datetime, datetime]:
    """When, by the provider's clock, a create sent at `sent` can have made its task."""
    skew, timeout = timedelta(seconds=ctx.config.clock_skew_s), timedelta(seconds=ctx.config.request_timeout_s)
    return sent - skew, sent + timeout + skew


class KeyIds:
    """The api_key_id each account's tasks carry in the task list."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._known: dict[str, str] = {}
        self._learning: set[str] = set()  # accounts whose api_key_id is being looked up

    def knows(self, account: str) -> bool:
        """Whether the account's api_key_id is known in memory."""
        return account in self._known

    async def known(self, account: str, rows: list[TaskSummary]) -> str | None:
        """The account's api_key_id: remembered, stored, or learned from listed rows of tasks we know."""
        store = self._ctx.store
        known = self._known.get(account) or await store.api_key_id(account)
        if known is not None:
            self._known[account] = known
            return known
        for row in rows:
            if not row.api_key_id:
                continue
            owner = await store.task_owner(row.task_id)
            if owner is not None and owner[1] == account:
                await self.remember(account, row.api_key_id)
                return row.api_key_id
        return None

    async def remember(self, account: str, api_key_id: str) -> None:
        """Keep the account's api_key_id, in memory and in the store."""
        self._known[account] = api_key_id
        await self._ctx.store.save_api_key_id(account, api_key_id)
        log.info("account %s: its tasks carry api_key_id %s in the task list", account, api_key_id)

    def learn_soon(self, account: str, names: frozenset[str], task_id: str, sent: datetime) -> None:
        """Look up a task we just created in the list, once per account, so the account's api_key_id is known
        before any create answer is lost (reconciliation then needs no polling to tell strangers apart)."""
        if account in self._learning or self._ctx.tasks.closing:
            return
        self._learning.add(account)
        self._ctx.tasks.spawn(self._learn(account, names, task_id, sent), f"learn-key-{account}")

    async def _learn(self, account: str, names: frozenset[str], task_id: str, sent: datetime) -> None:
        ctx = self._ctx
        try:
            await asyncio.sleep(ctx.config.reconcile_grace_s)  # the list may lag behind the create
            earliest, latest = _create_window(ctx, sent)
            rows, _ = await list_created(ctx, account, names, earliest, latest)
            mine = next((row for row in rows if row.task_id == task_id), None)
            if mine is not None and mine.api_key_id and account not in self._known:
                await self.remember(account, mine.api_key_id)
        except DashScopeError as exc:
            log.info("account %s: api_key_id not learned yet (%s)", account, exc.code)
        finally:
            self._learning.discard(account)


class Reconciler:
    """Settles a SUBMITTING job whose create answer was lost: adopt its task, send it again, or fail it."""

    def __init__(self, ctx: WorkerContext, key_ids: KeyIds, poller: Poller) -> None:
        self._ctx = ctx
        self._key_ids = key_ids
        self._poller = poller
        self._adopt_locks: dict[str, asyncio.Lock] = {}

    async def reconcile(self, job: Job, *, lost_at: datetime | None = None) -> None:
        """Find the task a lost create made, if any, before anything else.

        A listed task is this job's only when it is provably so: created by our key (its `api_key_id`,
        learned from list rows of tasks we know), of the model, within [sent - skew, sent + request timeout
        + skew] by the provider's clock, and no job's already. Where that leaves several, or our key's id is
        not known yet, each candidate is polled and what it echoes (`orig_prompt`) compared with the job.
        The job is sent again only once the list, read completely at least `reconcile_grace_s` after the
        answer was lost, shows nothing that could be it; while a task of ours may exist, it waits (holding
        its slot, not the account). After the task lifetime nobody can know any more: it fails, released.
        """
        ctx = self._ctx
        assert job.account is not None and job.submitted_at is not None
        account, sent, cfg = job.account, job.submitted_at, ctx.config
        names = ctx.catalog.recognised_names(job.request.model, ctx.region)  # the name sent and its aliases
        earliest, latest = _create_window(ctx, sent)
        if lost_at is None:  # resumed after a restart: the answer was lost by the time the request timed out
            lost_at = min(utcnow(), sent + timedelta(seconds=cfg.request_timeout_s))
        provable_from = lost_at + timedelta(seconds=cfg.reconcile_grace_s)
        not_ours: set[str] = set()  # candidates whose echo showed they belong to someone else
        delay = 1.0
        while not ctx.stopping:
            if utcnow() - sent > TASK_LIFETIME:
                await self._lost_for_good(job)
                return
            read_at = utcnow()
            try:
                rows, complete = await list_created(ctx, account, names, earliest, latest)
            except DashScopeError as exc:
                ctx.count_error(exc)
                log.warning("job %s: task list unavailable (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            key_id = await self._key_ids.known(account, rows)
            candidates = []
            for row in rows:
                if row.task_id in not_ours or not _could_be(row, key_id, names, earliest, latest):
                    continue
                if await ctx.store.task_owner(row.task_id) is None:
                    candidates.append(row)
            if candidates:
                own = await self._pick_own(job, account, candidates, key_id, not_ours)
                if own is not None and await self._adopt(job, account, own, key_id):
                    return
            elif complete and read_at >= provable_from:
                if job.attempts >= cfg.max_submit_attempts:
                    await self._gave_up_sending(job)
                    return
                ctx.counters["lost_creates_requeued"] += 1
                log.info("job %s never reached the provider; queued again", job.id, extra={"job_id": job.id})
                await ctx.requeue(job, "create lost before the provider")
                return
            pause = cfg.poll_max_interval if candidates else cfg.reconcile_grace_s / 4
            await asyncio.sleep(min(delay, pause))
            delay = min(delay * 2, 30.0)

    async def _pick_own(
        self, job: Job, account: str, candidates: list[TaskSummary], key_id: str | None, not_ours: set[str]
    ) -> TaskSummary | None:
        """The candidate that is provably this job's, or None to look again later."""
        ctx = self._ctx
        lane_busy = ctx.scheduler.limits.outstanding_creates(account, job.request.model) - {job.id}
        if lane_busy:
            # Another create of ours is in the air: its task may be listed already with no owner yet. Decide
            # once its answer has come (at most a request timeout away).
            return None
        if key_id is not None and len(candidates) == 1:
            return candidates[0]
        confirmed: list[TaskSummary] = []
        silent: list[TaskSummary] = []  # finished without echoing anything to compare
        gate = ctx.poll_gates[account]
        for row in candidates:
            await gate.wait()
            try:
                result = await ctx.clients[account].get_task(row.task_id)
            except DashScopeError as exc:
                ctx.count_error(exc)
                if isinstance(exc, MalformedAnswerError):
                    ctx.counters["malformed_answers"] += 1
                return None  # an incomplete picture: ask again later
            verdict = _echo_matches(job, result)
            if verdict is False:
                not_ours.add(row.task_id)
            elif verdict:
                confirmed.append(row)
            elif result.status.is_final:
                silent.append(row)
            else:
                return None  # still PENDING or RUNNING: it echoes the prompt once it succeeds
        sent = job.submitted_at
        assert sent is not None
        closest = _closest_to(sent)
        if confirmed:
            return min(confirmed, key=closest)
        if key_id is not None and silent:
            # Ours (our key) and finished without saying whose: the same key's tasks differ only by job, and
            # a finished task without an echo did not make a video to show anyone.
            return min(silent, key=closest)
        return None

    async def _adopt(self, job: Job, account: str, row: TaskSummary, key_id: str | None) -> bool:
        ctx = self._ctx
        lock = self._adopt_locks.setdefault(account, asyncio.Lock())
        async with lock:
            if await ctx.store.task_owner(row.task_id) is not None:
                return False  # another job's reconciliation took it a moment ago
            job = await ctx.store.transition(
                job.id, JobState.PENDING, expect=JobState.SUBMITTING, task_id=row.task_id, request_id=row.request_id
            )
        if key_id is None and row.api_key_id:
            await self._key_ids.remember(account, row.api_key_id)  # confirmed by its echo: our key's id
        ctx.counters["reconciled"] += 1
        log.info("job %s reconciled with task %s", job.id, row.task_id, extra={"job_id": job.id})
        await self._poller.track(job, account, fresh=False)
        return True

    async def _gave_up_sending(self, job: Job) -> None:
        """`max_submit_attempts` creates went unanswered and none made a task: the link to the provider is not
        working (a slow uplink timing every create out, say). Failed released, owners alerted, not sent again."""
        ctx = self._ctx
        ctx.counters["lost_creates_given_up"] += 1
        log.error(
            "job %s: %d creates sent, no answer and no task; failed without sending it again",
            job.id, job.attempts, extra={"job_id": job.id},
        )  # fmt: skip
        await ctx.fail(job, "job.failed.unanswered", code="CreateUnanswered", release=True)
        await ctx.safe(
            ctx.notifier.owner_alert(
                "alert.creates_unanswered", job_id=job.id, account=job.account or "-", attempts=job.attempts
            )
        )

    async def _lost_for_good(self, job: Job) -> None:
        ctx = self._ctx
        log.error(
            "job %s: its create answer was lost and no task could be proved its within the task lifetime; failed",
            job.id, extra={"job_id": job.id},
        )  # fmt: skip
        await ctx.fail(job, "job.failed.lost", code="ReconcileGaveUp", release=True)
        await ctx.safe(ctx.notifier.owner_alert("alert.lost_create", job_id=job.id, account=job.account or "-"))


def _could_be(
    row: TaskSummary, key_id: str | None, names: frozenset[str], earliest: datetime, latest: datetime
) -> bool:
    """Whether a listed task can be the one a create sent at [earliest, latest] made (before any echo)."""
    created = row.created_at
    if created is None or not earliest <= created <= latest:
        return False
    if row.model_name is not None and row.model_name not in names:
        return False
    return key_id is None or row.api_key_id == key_id


def _echo_matches(job: Job, result: TaskResult) -> bool | None:
    """Whether what the task echoes is this job's request: True, False, or None when it echoes nothing yet
    (the prompt is echoed once the task has succeeded; an effect sends no prompt, so echoes none)."""
    if result.orig_prompt is None:
        return None
    sent_prompt = "" if job.request.template is not None else job.request.prompt
    return result.orig_prompt == sent_prompt


def _closest_to(sent: datetime) -> Callable[[TaskSummary], float]:
    def distance(row: TaskSummary) -> float:
        created = row.created_at
        return abs((created - sent).total_seconds()) if created is not None else math.inf

    return distance
