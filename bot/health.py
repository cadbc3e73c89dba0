"""`/healthz` and `/metrics` over HTTP: a small aiohttp server, off unless KF2V_HTTP_PORT > 0.

Nothing here knows Discord: the health checks are injected (a bool or a sync/async callable returning
one), and the metrics read the store, the scheduler and the worker through narrow protocols. Every
`Metrics` owns its own `CollectorRegistry`, so a process (or a test) can build as many as it likes.

Wiring (bot/app.py)::

    metrics = Metrics(store=store, scheduler=scheduler)  # before the worker: it reports every job event
    worker = Worker(..., on_event=metrics.observe_job)  # a constructor argument, never patched in later
    metrics.attach(worker=worker)  # the worker's counters, read at scrape time
    server = HealthServer.from_settings(
        settings, metrics,
        {"database": store.ping, "gateway": lambda: bot.is_ready() and not bot.is_closed(),
         "worker": lambda: worker.alive},
    )
    if server is not None:
        log.info("health and metrics on %s", await server.start())
    ...
    if server is not None:
        await server.stop()
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from bot.catalog import MILLI_PER_CNY
from bot.jobs.models import Job, JobState
from bot.jobs.rules import ContentRule
from bot.settings import Settings

log = logging.getLogger(__name__)

# The 0.0.4 text format: what generate_latest writes and what every Prometheus version reads.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A check answers ok or not, optionally with a few words saying why (shown in the body under "details").
CheckResult = bool | tuple[bool, str]
HealthCheck = bool | Callable[[], CheckResult | Awaitable[CheckResult]]

# Seconds. Waits run from a few seconds (idle account) to hours (a busy shared account); a task at the
# provider takes minutes (the documented example: 2.5 min queued + 6 min running).
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
RUN_BUCKETS = (15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 450.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0)
JOB_EVENTS = ("submitted", "running", "succeeded", "delivered", "failed", "canceled")


class StoreStats(Protocol):
    async def count_by_state(self) -> Mapping[JobState, int]: ...

    async def spend_by_guild(self) -> Mapping[int, int]: ...


class QueueStats(Protocol):
    def guild_depths(self) -> Mapping[int, int]: ...


class LimitStats(Protocol):
    def in_flight(self) -> Mapping[tuple[str, str], int]: ...


class SchedulerStats(Protocol):
    @property
    def queue(self) -> QueueStats: ...

    @property
    def limits(self) -> LimitStats: ...


class WorkerStats(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...

    @property
    def errors_by_code(self) -> Mapping[str, int]: ...


class TaskStats(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def restarts(self) -> int: ...


class _Collector:
    """Reads the live objects (and the last store snapshot) at scrape time."""

    def __init__(self, owner: Metrics) -> None:
        self._owner = owner

    def collect(self) -> Iterable[Metric]:
        o = self._owner
        jobs = GaugeMetricFamily("kf2v_jobs", "Jobs in the database by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], o._jobs_by_state.get(state, 0))
        yield jobs

        spend = GaugeMetricFamily(
            "kf2v_guild_spend_cny", "Money settled per guild since the database began (CNY).", labels=["guild"]
        )
        for guild_id, milli in sorted(o._spend_by_guild.items()):
            spend.add_metric([str(guild_id)], milli / MILLI_PER_CNY)
        yield spend
        yield GaugeMetricFamily(
            "kf2v_store_up", "1 when the last read of the database for metrics worked.", value=1 if o._store_ok else 0
        )

        depths = dict(o.scheduler.queue.guild_depths()) if o.scheduler is not None else {}
        queued = {g: n for g, n in depths.items() if n > 0}
        yield GaugeMetricFamily("kf2v_queue_jobs", "Jobs waiting in the fair queue.", value=sum(queued.values()))
        yield GaugeMetricFamily("kf2v_queue_guilds", "Guilds with at least one queued job.", value=len(queued))
        yield GaugeMetricFamily(
            "kf2v_queue_max_guild_depth",
            "Queued jobs of the guild with the most.",
            value=max(queued.values(), default=0),
        )

        in_flight = GaugeMetricFamily(
            "kf2v_provider_tasks_in_flight",
            "Provider tasks in flight per account (a key fingerprint) and model.",
            labels=["account", "model"],
        )
        if o.scheduler is not None:
            for (account, model), n in sorted(o.scheduler.limits.in_flight().items()):
                in_flight.add_metric([account, model], n)
        yield in_flight

        counters = dict(o.worker.counters) if o.worker is not None else {}
        for name, key, text in (
            ("kf2v_provider_submissions", "submissions", "Create-task requests sent to the provider."),
            ("kf2v_provider_throttles", "throttled", "Create-task requests answered with a 429 throttle."),
            ("kf2v_provider_polls", "polls", "Task status queries sent to the provider."),
            ("kf2v_provider_malformed_answers", "malformed_answers", "Provider answers that could not be read."),
            ("kf2v_bills_clamped", "bills_clamped", "Provider bills over the catalog's duration, clamped."),
            ("kf2v_video_urls_refused", "video_urls_refused", "Video URLs outside the provider's storage, refused."),
            ("kf2v_job_crashes", "job_crashes", "Unexpected exceptions in a job's work (each resumed from its row)."),
        ):
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        errors = CounterMetricFamily("kf2v_provider_errors", "Provider errors by code.", labels=["code"])
        if o.worker is not None:
            for code, n in sorted(o.worker.errors_by_code.items()):
                errors.add_metric([code], n)
        yield errors

        tasks = list(o.tasks()) if o.tasks is not None else []
        up = GaugeMetricFamily(
            "kf2v_task_up", "1 while a supervised long-lived task runs (0: restarting after a fault).", labels=["task"]
        )
        restarts = CounterMetricFamily(
            "kf2v_task_restarts", "Restarts of a supervised long-lived task after it failed.", labels=["task"]
        )
        for task in sorted(tasks, key=lambda t: t.name):
            up.add_metric([task.name], 1 if task.state == "running" else 0)
            restarts.add_metric([task.name], task.restarts)
        yield up
        yield restarts
        if o.worker is not None:
            yield CounterMetricFamily(
                "kf2v_database_faults",
                "Job steps interrupted by a database fault (each resumed from its row once the database answered).",
                value=dict(o.worker.counters).get("database_faults", 0),
            )
        images = dict(o.images()) if o.images is not None else {}
        for name, key, text, family in IMAGE_SERIES:
            yield family(name, text, value=images.get(key, 0))


# What the image path reports (bot.app.image_counters): attachment downloads and the decode memory budget.
IMAGE_SERIES: tuple[tuple[str, str, str, type[CounterMetricFamily] | type[GaugeMetricFamily]], ...] = (
    (
        "kf2v_attachment_bytes",
        "attachment_bytes",
        "Attachment body bytes downloaded (refused ones too).",
        CounterMetricFamily,
    ),
    ("kf2v_attachment_downloads", "attachment_downloads", "Attachments downloaded whole.", CounterMetricFamily),
    (
        "kf2v_attachments_refused",
        "attachments_refused",
        "Attachments over the byte cap (announced or streamed).",
        CounterMetricFamily,
    ),
    (
        "kf2v_attachment_bytes_held",
        "attachment_bytes_held",
        "Announced bytes of attachments held by requests being downloaded or checked.",
        GaugeMetricFamily,
    ),
    (
        "kf2v_attachment_waits",
        "attachment_waits",
        "Requests that waited for others' attachments to be handed over before downloading theirs.",
        CounterMetricFamily,
    ),
    (
        "kf2v_image_decode_budget_bytes",
        "decode_budget_bytes",
        "Bytes of pixels all decodes may hold at once.",
        GaugeMetricFamily,
    ),
    ("kf2v_image_decode_bytes_held", "decode_bytes_held", "Bytes of the decode budget held now.", GaugeMetricFamily),
    (
        "kf2v_image_decode_bytes_peak",
        "decode_bytes_peak",
        "Most bytes of the decode budget ever held at once.",
        GaugeMetricFamily,
    ),
    ("kf2v_image_decode_waits", "decode_waits", "Decodes that waited for budget held by others.", CounterMetricFamily),
    (
        "kf2v_images_refused_over_memory",
        "refused_over_memory",
        "Pictures refused: decoding them alone needs more than the budget.",
        CounterMetricFamily,
    ),
)


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own.

    Job counts and spend come from the database, read by `refresh()` just before each scrape (`render()`
    does both); queue depth, slots in flight and the provider counters are read live at collection time;
    the wait and run time histograms are fed by `observe_job`, which the app passes as `Worker(on_event=...)`.
    """

    def __init__(
        self,
        store: StoreStats | None = None,
        scheduler: SchedulerStats | None = None,
        worker: WorkerStats | None = None,
        *,
        registry: CollectorRegistry | None = None,
        refresh_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.worker = worker
        self.images: Callable[[], Mapping[str, float]] | None = None
        self.tasks: Callable[[], Iterable[TaskStats]] | None = None  # the supervised tasks, read at scrape time
        self.registry = registry if registry is not None else CollectorRegistry()
        self.refresh_timeout = refresh_timeout
        self._jobs_by_state: dict[JobState, int] = {}
        self._spend_by_guild: dict[int, int] = {}
        self._store_ok = store is not None
        self._lock = asyncio.Lock()
        self.wait_seconds = Histogram(
            "kf2v_job_wait_seconds",
            "From accepted (queued) to submitted to the provider.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "kf2v_job_run_seconds",
            "From submitted to the provider to succeeded (provider queue + generation).",
            ["model"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.job_events = Counter(
            "kf2v_job_events", "Job lifecycle events seen by the worker.", ["event"], registry=self.registry
        )
        for event in JOB_EVENTS:
            self.job_events.labels(event)  # every series exists from the first scrape
        # No guild label on purpose: guild ids are unbounded; per-guild refusals are in /kf2v-quota.
        self.content_rule_refusals = Counter(
            "kf2v_content_rule_refusals",
            "Prompts refused by a content rule, by whose rule (guild/default) and the field that matched.",
            ["scope", "field"],
            registry=self.registry,
        )
        for scope in ("guild", "default"):
            for field in ("prompt", "negative_prompt"):
                self.content_rule_refusals.labels(scope, field)
        self.registry.register(_Collector(self))

    def observe_rule_refusal(self, rule: ContentRule, field: str) -> None:
        """JobService's `on_rule_refusal`: one prompt (or negative prompt) refused by a content rule."""
        self.content_rule_refusals.labels("default" if rule.is_default else "guild", field).inc()

    def attach(
        self,
        *,
        store: StoreStats | None = None,
        scheduler: SchedulerStats | None = None,
        worker: WorkerStats | None = None,
        images: Callable[[], Mapping[str, float]] | None = None,
        tasks: Callable[[], Iterable[TaskStats]] | None = None,
    ) -> None:
        """Late binding, for an app that builds the metrics before the objects they read."""
        if images is not None:
            self.images = images
        if tasks is not None:
            self.tasks = tasks
        if store is not None:
            self.store = store
        if scheduler is not None:
            self.scheduler = scheduler
        if worker is not None:
            self.worker = worker

    def observe_job(self, event: str, job: Job) -> None:
        """The worker's `on_event` hook. Never raises: metrics must not break a job."""
        try:
            self.job_events.labels(event if event in JOB_EVENTS else "other").inc()
            if event == "submitted" and job.submitted_at is not None:
                waited = (job.submitted_at - job.created_at).total_seconds()
                self.wait_seconds.labels(job.request.model).observe(max(0.0, waited))
            elif event == "succeeded" and job.submitted_at is not None and job.finished_at is not None:
                ran = (job.finished_at - job.submitted_at).total_seconds()
                self.run_seconds.labels(job.request.model).observe(max(0.0, ran))
        except Exception:
            log.exception("metrics: could not record %s for job %s", event, getattr(job, "id", "?"))

    async def refresh(self) -> None:
        """Read job counts and spend from the database (bounded by `refresh_timeout`)."""
        if self.store is None:
            return
        try:
            async with asyncio.timeout(self.refresh_timeout):
                states = await self.store.count_by_state()
                spend = await self.store.spend_by_guild()
        except Exception as exc:  # a scrape must still answer; kf2v_store_up says what happened
            log.warning("metrics: database read failed: %s", type(exc).__name__)
            self._store_ok = False
            return
        self._jobs_by_state = dict(states)
        self._spend_by_guild = dict(spend)
        self._store_ok = True

    async def render(self) -> bytes:
        """Refresh, then the whole registry in the Prometheus text format."""
        async with self._lock:
            await self.refresh()
            return generate_latest(self.registry)


async def _run_check(name: str, check: HealthCheck, limit_s: float) -> tuple[bool, str | None]:
    if isinstance(check, bool):
        return check, None
    try:
        async with asyncio.timeout(limit_s):
            result = check()
            if inspect.isawaitable(result):
                result = await result
    except TimeoutError:
        log.warning("health check %s did not answer within %.1f s", name, limit_s)
        return False, f"no answer within {limit_s:g} s"
    except Exception as exc:
        log.warning("health check %s failed: %s", name, type(exc).__name__)
        return False, type(exc).__name__
    if isinstance(result, tuple):
        return bool(result[0]), result[1]
    return bool(result), None


class HealthServer:
    """`GET /healthz` (200 or 503, JSON) and `GET /metrics` (Prometheus text) on one aiohttp site."""

    def __init__(
        self,
        metrics: Metrics,
        checks: Mapping[str, HealthCheck],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        check_timeout: float = 3.0,
        info: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.checks = dict(checks)
        self.info = info  # extra fields for the body (the supervised tasks), never a verdict
        self.host = host
        self.port = port
        self.check_timeout = check_timeout
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Metrics, checks: Mapping[str, HealthCheck]
    ) -> HealthServer | None:
        """The server KF2V_HTTP_HOST / KF2V_HTTP_PORT ask for, or None when the port is 0 (off)."""
        if settings.http_port <= 0:
            return None
        return cls(metrics, checks, settings.http_host, settings.http_port)

    async def health(self) -> tuple[bool, dict[str, bool]]:
        healthy, parts, _ = await self.health_details()
        return healthy, parts

    async def health_details(self) -> tuple[bool, dict[str, bool], dict[str, str]]:
        """(healthy, each check's verdict, the reasons the checks gave)."""
        names = list(self.checks)
        results = await asyncio.gather(*(_run_check(n, self.checks[n], self.check_timeout) for n in names))
        parts = {name: ok for name, (ok, _) in zip(names, results, strict=True)}
        details = {name: why for name, (_, why) in zip(names, results, strict=True) if why}
        return all(parts.values()), parts, details

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, parts, details = await self.health_details()
        body: dict[str, object] = {"status": "ok" if healthy else "unavailable", **parts}
        if not healthy:
            body["failing"] = [name for name, ok in parts.items() if not ok]
        if details:
            body["details"] = details
        if self.info is not None:
            try:
                body.update(self.info())
            except Exception:
                log.exception("health: reading the extra fields failed")
        return web.Response(
            status=200 if healthy else 503,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        payload = await self.metrics.render()
        return web.Response(body=payload, headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"})

    async def start(self) -> str:
        """Listen; returns the base URL (with the real port when 0 was asked for)."""
        if self._runner is not None:
            raise RuntimeError("HealthServer already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        self.url = f"http://{shown}:{port}"
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.url = None
