"""Builds everything once: settings -> database -> VideoBot -> notifier -> services -> cogs.

One aiohttp session, one database connection, one worker; passed down explicitly, no globals.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import aiohttp

from bot.background import BackgroundTasks, TaskHealth
from bot.catalog import Catalog
from bot.dashscope.client import DashScopeClient, account_fingerprint
from bot.discord_ui.attachments import AttachmentReader
from bot.discord_ui.buttons import JobButtons
from bot.discord_ui.checks import Owners
from bot.discord_ui.client import StartupRefused, VideoBot, point_discord_at, serve_until
from bot.discord_ui.notifier import DiscordNotifier
from bot.health import HealthCheck, HealthServer, Metrics
from bot.jobs.db import is_database_fault
from bot.jobs.images import ImageLimits
from bot.jobs.media import MediaStore
from bot.jobs.models import PauseScope
from bot.jobs.ports import Notifier
from bot.jobs.privacy.service import PrivacyService
from bot.jobs.privacy.store import PrivacyStore
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.reports.service import ReportService
from bot.jobs.reports.store import ReportStore
from bot.jobs.scheduler import AccountLimits, Scheduler
from bot.jobs.service import ImageWorkers, JobService, UserRateLimiter
from bot.jobs.store import JobStore, utcnow
from bot.jobs.story import stories_available
from bot.jobs.story.service import SegmentRouter
from bot.jobs.worker import Worker, WorkerConfig
from bot.jobs.worker.follow import JobFollower
from bot.jobs.worker.lease import DispatchLease
from bot.logs import register_secret, setup_logging
from bot.settings import Settings, load_catalog_for
from cogs.admin import AdminGroup
from cogs.animate import AnimateCog
from cogs.generate import GenerateCog
from cogs.help import HelpCog
from cogs.jobs import JobsCog
from cogs.privacy import PrivacyCog
from cogs.quota import QuotaCog
from cogs.rules import RulesGroup


class Gateway(Protocol):
    """What the health check reads of the Discord client."""

    def is_ready(self) -> bool: ...

    def is_closed(self) -> bool: ...


log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0
# `run` exits with this (EX_TEMPFAIL) after losing the dispatcher lease: its supervisor (systemd
# Restart=on-failure, Compose restart: unless-stopped) starts it again, as a standby.
EXIT_LEASE_LOST = 75
# /healthz fails once no process has held the dispatcher lease for this long past its expiry (TTL + this
# since its last renewal): a takeover normally happens within one retry after the expiry.
LEASE_GRACE_S = 10.0
STORY_COG = "cogs.story"  # imported only when PyAV is installed


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    region: str
    http: aiohttp.ClientSession
    store: JobStore
    media: MediaStore
    budget: BudgetService
    scheduler: Scheduler
    worker: Worker
    jobs: JobService
    notifier: Notifier
    privacy: PrivacyService
    reports: ReportService
    health: HealthServer | None = None
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    metrics: Metrics | None = None
    gateway: Gateway | None = None
    # PostgreSQL (several processes): the dispatcher leases, other processes' job changes, and the signal
    # that this process lost the leases and must go (run_bot exits EXIT_LEASE_LOST).
    lease: DispatchLease | None = None
    follower: JobFollower | None = None
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """SQLite: the worker starts here, as always. PostgreSQL: every process follows the others' job changes
        and admits jobs; only the holder of the dispatcher leases runs the worker (submits, polls, delivers)."""
        await self.jobs.load_pause_state()
        if self.store.dialect == "postgresql":
            await self._start_shared()
        else:
            await self.worker.start()
        self.background.supervise("housekeeping", self._housekeeping)
        self.background.supervise("privacy-sweep", self.privacy.run)
        if self.metrics is not None:
            self.metrics.attach(tasks=self.supervised_tasks)
        if self.settings.http_port:
            await self._start_health()

    def supervised_tasks(self) -> list[TaskHealth]:
        """Every supervised long-lived task of this process: the worker's and the services' own."""
        return [*self.worker.tasks.supervised.values(), *self.background.supervised.values()]

    @property
    def standby(self) -> bool:
        """A process waiting for the dispatcher leases (it serves interactions and admits jobs meanwhile)."""
        return self.lease is not None and not self.worker.alive and not self.lease_lost.is_set()

    async def _start_shared(self) -> None:
        self.follower = JobFollower(self.worker, self.background)
        await self.follower.start()
        # "none" is the scheduler's account when no key is configured: still one dispatcher, not one per process.
        lease = self.lease = DispatchLease(self.store.database, sorted(self.worker.clients) or ["none"], process_name())
        self.store.fence_for = lease.fence_for
        self.background.supervise("dispatch-lease", lambda: lease.hold(self._start_dispatching, self._lease_taken_over))
        self.background.spawn(self._leave_when_fenced(), "lease-loss")

    async def _start_dispatching(self) -> None:
        """The leases are ours: recover SUBMITTING jobs through reconciliation, poll PENDING/RUNNING ones, deliver
        SUCCEEDED ones, and dispatch the queue."""
        # The standby's mirror of the queue may hold jobs that are in flight by now; recovery rebuilds it from
        # the rows (a mirrored job that is in flight would otherwise free that job's slot when picked).
        if self.worker.alive:
            return  # started already (the lease's keeper was restarted): the worker's queue is the dispatcher's
        queue = self.worker.scheduler.queue
        for job_id in list(queue.positions()):
            queue.remove(job_id)
        await self.jobs.load_pause_state()  # pauses set through other processes meanwhile
        await self.worker.start()

    async def _lease_taken_over(self) -> None:
        """The heartbeat found another holder: stop as a refused fenced write does, then wait for the shutdown
        (this process never dispatches again: its supervisor restarts it as a standby)."""
        self.worker.lease_lost.set()
        await asyncio.Event().wait()

    async def _leave_when_fenced(self) -> None:
        await self.worker.lease_lost.wait()
        log.error("dispatcher lease lost to another process: stopping the worker; exiting for a restart as a standby")
        # Nothing more is submitted (fencing refuses the writes anyway); in-flight work stays in its rows.
        await self.worker.stop(grace_s=1.0)
        self.lease_lost.set()

    async def _start_health(self) -> None:
        assert self.metrics is not None
        metrics = self.metrics

        def tasks_shown() -> dict[str, object]:
            return {
                "tasks": {t.name: {"state": t.state, "restarts": t.restarts} for t in self.supervised_tasks()},
                "job_work": self.worker.supervisor.summary(),
            }

        self.health = HealthServer(
            metrics, self.health_checks(), host=self.settings.http_host, port=self.settings.http_port, info=tasks_shown
        )
        url = await self.health.start()
        log.info("health and metrics on %s", url)

    def health_checks(self) -> dict[str, HealthCheck]:
        """What `/healthz` checks: the database answers (and takes writes), the gateway is connected, the
        worker dispatches where it should, every supervised task runs, and (PostgreSQL) some process has held
        the dispatcher lease within its TTL + `LEASE_GRACE_S`."""

        async def database_ok() -> tuple[bool, str]:
            return await self.store.ping(), "answers"

        def gateway_ok() -> bool:
            return self.gateway is None or (self.gateway.is_ready() and not self.gateway.is_closed())

        def worker_ok() -> tuple[bool, str]:
            if self.lease_lost.is_set():
                return False, "dispatcher lease lost: exiting for a restart"
            if self.lease is not None and not self.lease.held and not self.worker.alive:
                keeper = self.background.supervised.get("dispatch-lease")
                ok = keeper is not None and keeper.state == "running"
                return ok, "standby" if ok else "standby, but the lease keeper is not running"
            if self.worker.dispatching:
                return True, "dispatching"
            return False, "the dispatcher is not running" if not self.worker.alive else "the dispatcher is restarting"

        def tasks_ok() -> tuple[bool, str]:
            down = sorted(t.name for t in self.supervised_tasks() if t.state == "restarting")
            return not down, f"restarting: {', '.join(down)}" if down else "all running"

        checks: dict[str, HealthCheck] = {
            "database": database_ok, "gateway": gateway_ok, "worker": worker_ok, "tasks": tasks_ok,
        }  # fmt: skip
        if self.lease is not None:
            lease = self.lease

            async def lease_ok() -> tuple[bool, str]:
                try:
                    unheld = await lease.unheld_for()
                except Exception as exc:
                    if not is_database_fault(exc):
                        raise
                    return True, "unknown while the database does not answer"
                if unheld == 0:
                    return True, "held"
                return unheld <= LEASE_GRACE_S, f"no process has held it for {unheld:.0f} s past its expiry"

            checks["dispatcher_lease"] = lease_ok
        return checks

    async def _housekeeping(self) -> None:
        """Remove stored videos and frames past the retention period."""
        while True:
            try:
                await self.sweep_media()
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def sweep_media(self) -> int:
        cutoff = utcnow() - timedelta(days=self.settings.video_retention_days)
        removed = 0
        for job in await self.store.jobs_with_media_before(cutoff):
            if job.video_path:
                self.media.video_path(job.id).unlink(missing_ok=True)
                await self.store.update(job.id, video_path=None)
                removed += 1
        keep = await self.store.frames_in_use(cutoff)
        removed += await asyncio.to_thread(self.media.sweep_frames, keep, cutoff)
        return removed

    async def stop(self) -> None:
        """Stop taking jobs; in-flight ones stay resumable from their rows."""
        if self.follower is not None:
            await self.follower.stop()
        await self.worker.stop()
        await self.background.close(2.0)  # after the worker: the lease is released (standbys told) once it stopped
        close = getattr(self.notifier, "close", None)
        if close is not None:
            await close()
        if self.health is not None:
            await self.health.stop()
        await self.http.close()
        await self.store.close()


def process_name() -> str:
    """Who holds a dispatcher lease, for operators reading the leases table: host, pid, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def open_store(settings: Settings) -> JobStore:
    """The store KF2V_DATABASE_URL selects (PostgreSQL), else the SQLite file in KF2V_DATA_DIR; migrated.

    The data dir is made either way: frames and videos stay on this process's disk (a shared volume when
    several hosts run against one PostgreSQL).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.data_dir.chmod(0o700)
    return await JobStore.from_settings(settings)


def account_name(place: int) -> str:
    """A configured account's stable name: "primary" (DASHSCOPE_API_KEY), then "extra-1", "extra-2"..."""
    return "primary" if place == 0 else f"extra-{place}"


async def build_services(
    settings: Settings,
    notifier: Notifier,
    *,
    store: JobStore | None = None,
    gateway: Gateway | None = None,
) -> Services:
    """Everything the engine needs, built in dependency order around the given notifier."""
    catalog = load_catalog_for(settings)
    region = settings.region(catalog)
    if store is None:
        store = await open_store(settings)
    media = MediaStore(settings.data_dir / "media")
    http = aiohttp.ClientSession()
    clients = {}
    for place, key in enumerate(settings.api_keys()):
        # Named by its place in the configuration, which a rotated key keeps (see docs/deployment.md: rotating a key).
        account = account_name(place)
        clients[account] = DashScopeClient(
            http,
            base_url=settings.dashscope_base_url,
            api_key=key,
            timeout=settings.request_timeout,
            video_url_hosts=settings.video_url_hosts,
        )
        fingerprint = account_fingerprint(key.get_secret_value())
        previous = await store.bind_account(account, fingerprint)
        if previous is not None and previous != fingerprint:
            log.warning(
                "account %s: its API key changed (fingerprint %s -> %s); its jobs in flight carry on with the new "
                "key, its api_key_id in the task list is learned again, and a pause for the old key is lifted",
                account, previous, fingerprint,
            )  # fmt: skip
            await store.delete_pause(PauseScope.ACCOUNT, account)  # a bad or unpaid key's pause: a new key
    if not clients:  # `check`/tests without a key still build; nothing can be submitted
        log.warning("no DashScope API key configured: jobs will wait in the queue")
    limits = {
        spec.key: (
            min(settings.max_concurrent_tasks, catalog.limits(spec.key, region).max_in_flight),
            min(settings.submit_rps, catalog.limits(spec.key, region).submit_rps),
        )
        for spec in catalog.models_in(region)
    }
    scheduler = Scheduler(AccountLimits(list(clients) or ["none"], limits))
    if not clients:
        scheduler.limits.pause("none", "no API key configured")
    budget = BudgetService(
        store,
        catalog,
        Defaults(
            daily_budget=settings.default_daily_budget_milli,
            monthly_budget=settings.default_monthly_budget_milli,
            member_daily_videos=settings.default_member_daily_videos,
            user_queue_limit=settings.default_user_queue_limit,
        ),
        settings.tz,
        region=region,
    )
    # Metrics exist before the worker so its job events reach them from the first one.
    metrics = Metrics(store=store, scheduler=scheduler) if settings.http_port else None
    worker = Worker(
        store=store,
        media=media,
        clients=clients,
        catalog=catalog,
        region=region,
        scheduler=scheduler,
        budget=budget,
        notifier=notifier,
        config=WorkerConfig(
            poll_min_interval=settings.poll_min_interval,
            poll_max_interval=settings.poll_max_interval,
            detection_target_s=settings.poll_target_delay,
            max_video_bytes=settings.max_video_bytes,
            request_timeout_s=settings.request_timeout,
            video_keep_s=max(1.0, settings.video_retention_days) * 86400.0,  # at least the 24 h the link lives
        ),
        on_event=metrics.observe_job if metrics is not None else None,
    )
    if metrics is not None:
        metrics.attach(worker=worker)  # its counters: read at scrape time
    jobs = JobService(
        store=store,
        media=media,
        budget=budget,
        worker=worker,
        catalog=catalog,
        region=region,
        image_limits=ImageLimits.from_settings(settings),
        rate_limiter=UserRateLimiter(settings.user_commands_per_minute),
        image_workers=ImageWorkers(settings.image_workers),
        on_rule_refusal=metrics.observe_rule_refusal if metrics is not None else None,
    )
    privacy = PrivacyService(PrivacyStore(store.database), media, settings.retention_days)
    return Services(
        settings=settings,
        catalog=catalog,
        region=region,
        http=http,
        store=store,
        media=media,
        budget=budget,
        scheduler=scheduler,
        worker=worker,
        jobs=jobs,
        notifier=notifier,
        privacy=privacy,
        reports=ReportService(ReportStore(store.database), budget),
        metrics=metrics,
        gateway=gateway,
    )


@dataclass
class DiscordApp:
    """The running bot: the Discord client and the services around it (neither points at the other)."""

    bot: VideoBot
    services: Services

    async def login(self, token: str) -> None:
        """Log in (syncs the commands), then start the engine: jobs resume before the gateway connects."""
        await self.bot.login(token)
        await self.services.start()

    async def run(self, token: str) -> None:
        await self.login(token)
        await self.bot.connect()

    async def close(self) -> None:
        """Stop taking jobs (in-flight ones stay resumable), then disconnect."""
        try:
            await self.services.stop()
        finally:
            if not self.bot.is_closed():
                await self.bot.close()


async def build_discord_app(
    settings: Settings, *, guild_ready_timeout: float = 2.0, edit_interval: float = 3.0
) -> DiscordApp:
    """store -> VideoBot -> DiscordNotifier(bot) -> services(notifier) -> cogs and buttons (each with its service)."""
    store = await open_store(settings)
    bot = VideoBot(
        store,
        allowed_guilds=settings.allowed_guilds,
        dev_guild_id=settings.dev_guild_id,
        guild_ready_timeout=guild_ready_timeout,
        shard_count=settings.shard_count,
        shard_ids=settings.shard_ids,
    )
    owners = Owners(bot, settings.owner_ids)
    notifier = DiscordNotifier(bot, owners, edit_interval=edit_interval)
    # Story segments are joined, not posted one by one: the router sends their events to the story.
    router = SegmentRouter(notifier)
    services = await build_services(settings, router, store=store, gateway=bot)
    jobs = services.jobs
    notifier.extendable = lambda job: jobs.extend_limits(job) is not None
    attachments = AttachmentReader(services.http, settings.attachment_memory_mb * 1024 * 1024)
    if services.metrics is not None:
        services.metrics.attach(images=lambda: image_counters(jobs.image_workers, attachments))
    await bot.add_cog(GenerateCog(jobs, image_max_bytes=settings.image_max_bytes, attachments=attachments))
    await bot.add_cog(AnimateCog(bot.tree, jobs, image_max_bytes=settings.image_max_bytes, attachments=attachments))
    await bot.add_cog(JobsCog(jobs))
    await bot.add_cog(QuotaCog(jobs, reports=services.reports))
    await bot.add_cog(HelpCog(jobs))
    await bot.add_cog(PrivacyCog(services.privacy))
    bot.tree.add_command(AdminGroup(jobs, owners, privacy=services.privacy, reports=services.reports))
    bot.tree.add_command(RulesGroup(jobs, owners))
    bot.add_job_buttons(JobButtons(jobs, owners, settings.allowed_guilds))
    if stories_available():
        # cogs.story imports PyAV (the `video` extra): loaded by name, only when it is installed.
        story_cog = importlib.import_module(STORY_COG)
        await story_cog.install(
            bot,
            jobs,
            router,
            owners,
            allowed_guilds=settings.allowed_guilds,
            image_max_bytes=settings.image_max_bytes,
            attachments=attachments,
        )
    else:
        log.info("/kf2v-story is off: PyAV is not installed (pip install 'kf2v-bot[video]')")
    return DiscordApp(bot, services)


def image_counters(workers: ImageWorkers, attachments: AttachmentReader) -> dict[str, float]:
    """What /metrics shows of the image path: attachment downloads and the decode budget."""
    budgets = list(workers.budgets())
    return {
        "attachment_bytes": attachments.bytes_read,
        "attachment_downloads": attachments.downloads,
        "attachments_refused": attachments.refused,
        "attachment_bytes_held": attachments.budget.held,
        "attachment_waits": attachments.budget.waited,
        "decode_budget_bytes": sum(b.total for b in budgets),
        "decode_bytes_held": sum(b.held for b in budgets),
        "decode_bytes_peak": max((b.peak for b in budgets), default=0),
        "decode_waits": sum(b.waited for b in budgets),
        "refused_over_memory": workers.refused_over_memory,
    }


def register_secrets(settings: Settings) -> None:
    for secret in [settings.discord_token, *settings.api_keys()]:
        if secret is not None and secret.get_secret_value():
            register_secret(secret.get_secret_value())


async def run_bot(settings: Settings) -> int:
    """`kf2v-bot run`: until SIGINT/SIGTERM; then stop taking jobs and leave the rest resumable."""
    setup_logging(settings.log_level, settings.log_format)
    register_secrets(settings)
    point_discord_at(settings.discord_api_base, settings.discord_gateway)
    app = await build_discord_app(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lost = app.services.lease_lost

    async def stop_on_lease_loss() -> None:
        await lost.wait()
        stop.set()

    lease_watch = asyncio.create_task(stop_on_lease_loss())
    assert settings.discord_token is not None
    closed = False
    try:
        async with app.bot:
            try:
                await serve_until(
                    app.run(settings.discord_token.get_secret_value()), stop, api_base=settings.discord_api_base
                )
                log.info("shutting down: no new jobs; in-flight jobs resume on the next start")
            finally:
                # Inside `async with app.bot`, whose exit closes the bot's HTTP session: a post under way finishes
                # (and is recorded) before Discord is disconnected.
                closed = True
                await app.close()
    except StartupRefused as refused:
        print(f"kf2v-bot: {refused.line}", file=sys.stderr)
        return refused.exit_code
    finally:
        lease_watch.cancel()
        if not closed:
            await app.close()
    return EXIT_LEASE_LOST if lost.is_set() else 0


__all__ = ["DiscordApp", "Services", "build_discord_app", "build_services", "open_store", "register_secrets", "run_bot"]
