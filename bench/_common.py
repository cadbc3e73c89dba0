"""Plumbing shared by the benchmarks: settings, time scaling, a tracing DashScope emulator, a Discord world.

Nothing here is imported by the bot or the tests. Everything listens on loopback only.

Time scaling: the DashScope emulator divides provider durations by `time_scale`; the engine's own time
constants (poll gaps, detection target, poll rate gate, back-offs, duration priors) are divided by the same
factor (`retime_engine`), so the engine behaves as it would in real time, only faster. Figures that depend
on provider time are reported in real-time equivalents (measured seconds x time_scale); I/O that is not
scaled (uploads, downloads, Discord round trips) is reported in measured seconds, and the bench says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from bot.app import DiscordApp, Services, build_discord_app, build_services
from bot.discord_ui.client import point_discord_at
from bot.jobs.ports import Notifier
from bot.settings import Settings, load_settings
from sandbox.dashscope_emulator import CREATE_PATH, DashScopeEmulator, EmulatorConfig
from tests.support.recording import RecordingNotifier

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-bench-0123456789abcdef"
SIZES = ("tiny", "full")
SDK_SLEEPS = (1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0)  # then 5 s forever (dashscope SDK's wait())
SDK_STEADY = 5.0
POLLER_HEADER = "X-Bench-Poller"
FLASH = "wan2.2-kf2v-flash"
PLUS = "wanx2.1-kf2v-plus"

log = logging.getLogger("bench")


# --- output --------------------------------------------------------------------------------------------


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's figures: one JSON line, the last thing on stdout."""
    sys.stdout.flush()
    print(json.dumps(figures, separators=(", ", ": ")), flush=True)


def note(text: str) -> None:
    """Progress for humans, on stderr (stdout is kept for the JSON line)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def r3(value: float) -> float:
    return round(value, 3)


def rss_mb() -> float:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def peak_rss_of(pid: int) -> float:
    """Peak resident memory (VmHWM, MiB) of another process; NaN where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


# --- inputs --------------------------------------------------------------------------------------------


def flat_png(width: int = 320, height: int = 240, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png(target_bytes: int, seed: int) -> bytes:
    """A PNG of random pixels (incompressible) of about `target_bytes`: a heavy but valid upload."""
    side = max(240, int(math.sqrt(target_bytes / 3)))
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# --- the engine ----------------------------------------------------------------------------------------


def bench_settings(data_dir: Path, base_url: str, *, time_scale: float = 1.0, **overrides: Any) -> Settings:
    """Settings for one engine on loopback: generous member limits and budgets, poll gaps scaled."""
    values: dict[str, Any] = {
        "_env_file": None,
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": base_url,
        "KF2V_DATA_DIR": data_dir,
        "KF2V_POLL_MIN_INTERVAL": 1.0 / time_scale,
        "KF2V_POLL_MAX_INTERVAL": 30.0 / time_scale,
        "KF2V_USER_COMMANDS_PER_MINUTE": 100_000,
        "KF2V_DEFAULT_USER_QUEUE_LIMIT": 100_000,
        "KF2V_DEFAULT_MEMBER_DAILY_VIDEOS": 100_000,
        "KF2V_DEFAULT_DAILY_BUDGET": 10_000_000,
        "KF2V_DEFAULT_MONTHLY_BUDGET": 100_000_000,
        "KF2V_LOG_LEVEL": "WARNING",
    }
    values.update(overrides)
    return load_settings(**values)


def retime_engine(services: Services, time_scale: float) -> None:
    """Divide the worker's time constants by `time_scale` (settings already scaled the poll gaps).

    `WorkerConfig` is frozen: a new one is set, and the worker rebuilds its per-account poll gates with the
    scaled rate (the provider's 20 queries/s is a rate in provider time too).
    The run-time priors (bot/run_times.py, used until a tier has seen its own tasks) are scaled the same way.
    """
    worker = services.worker
    cfg = worker.config
    s = time_scale
    worker.config = replace(
        cfg,
        detection_target_s=cfg.detection_target_s / s,
        delivery_backoff_s=cfg.delivery_backoff_s / s,
        delivery_backoff_max_s=cfg.delivery_backoff_max_s / s,
        reconcile_grace_s=cfg.reconcile_grace_s / s,
        queue_refresh_s=cfg.queue_refresh_s / s,
        polls_per_second_per_account=cfg.polls_per_second_per_account * s,
    )
    scheduler = services.scheduler
    scheduler.priors = scheduler.priors.compressed(s)
    scheduler.durations.clear()  # tiers made before this start again from the compressed priors


async def start_engine(
    data_dir: Path,
    base_url: str,
    *,
    time_scale: float,
    notifier: Notifier | None = None,
    start: bool = True,
    **overrides: Any,
) -> tuple[Services, RecordingNotifier]:
    """build_services with a RecordingNotifier (no Discord), retimed; started unless `start` is False."""
    recorder = notifier if isinstance(notifier, RecordingNotifier) else RecordingNotifier()
    settings = bench_settings(data_dir, base_url, time_scale=time_scale, **overrides)
    services = await build_services(settings, notifier or recorder)
    retime_engine(services, time_scale)
    if start:
        await services.start()
    return services, recorder


async def wait_for(predicate: Callable[[], Any], within: float, interval: float = 0.02, what: str = "") -> None:
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark condition not met within {within:.0f} s: {what}")
        await asyncio.sleep(interval)


# --- DashScope emulator with a poll trace ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Poll:
    at: float  # time.monotonic() when the emulator answered
    status: str
    poller: str  # "bot", or the X-Bench-Poller header ("sdk")


@dataclass
class TaskTimes:
    """One provider task on the emulator's clock (absolute time.monotonic() seconds)."""

    task_id: str
    created: float
    started: float | None
    finished: float | None
    status: str

    @property
    def duration(self) -> float:
        """Slot time: created to finished (a PENDING task holds an in-flight slot too)."""
        assert self.finished is not None
        return self.finished - self.created


class _EpochClock:
    """time.monotonic() that remembers its first reading: the emulator's epoch (its stats are relative)."""

    def __init__(self) -> None:
        self.epoch: float | None = None

    def __call__(self) -> float:
        now = time.monotonic()
        if self.epoch is None:
            self.epoch = now
        return now


class TracingEmulator(DashScopeEmulator):
    """The DashScope emulator, plus a trace of every poll (when, what it answered, who asked) and a hook
    called with each created task id and the Authorization header that created it (the SDK baseline starts
    its own poller there)."""

    def __init__(
        self,
        config: EmulatorConfig,
        on_created: Callable[[str, str], None] | None = None,
        *,
        hide_start_times: bool = False,
    ) -> None:
        self._epoch_clock = _EpochClock()
        super().__init__(config, clock=self._epoch_clock)
        self.on_created = on_created
        # The official docs show submit/scheduled times only on SUCCEEDED: this hides them while RUNNING.
        self.hide_start_times = hide_start_times
        self.poll_trace: dict[str, list[Poll]] = defaultdict(list)
        self.create_arrivals: dict[str, float] = {}  # task id -> when its create request reached the emulator

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.middlewares.append(self._trace)
        return app

    @web.middleware
    async def _trace(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        response = await handler(request)
        if not isinstance(response, web.Response) or response.status != 200 or response.body is None:
            return response
        path = request.path
        if request.method == "GET" and path.startswith("/api/v1/tasks/"):
            body = json.loads(bytes(response.body))  # type: ignore[arg-type]
            output = body.get("output") or {}
            task_id = output.get("task_id")
            if task_id:
                poller = request.headers.get(POLLER_HEADER, "bot")
                self.poll_trace[task_id].append(Poll(time.monotonic(), str(output.get("task_status")), poller))
            if self.hide_start_times and output.get("task_status") == "RUNNING":
                output.pop("scheduled_time", None)
                output.pop("submit_time", None)
                return web.json_response(body)
        elif request.method == "POST" and path == CREATE_PATH:
            body = json.loads(bytes(response.body))  # type: ignore[arg-type]
            task_id = (body.get("output") or {}).get("task_id")
            if task_id:
                self.create_arrivals[task_id] = arrived
                if self.on_created is not None:
                    self.on_created(task_id, request.headers.get("Authorization", ""))
        return response

    def task_times(self) -> list[TaskTimes]:
        """Every task, oldest first, on the absolute monotonic clock (the stats are rounded to 1 ms)."""
        epoch = self._epoch_clock.epoch
        assert epoch is not None

        def absolute(value: float | None) -> float | None:
            return None if value is None else epoch + value

        rows = [
            TaskTimes(t["task_id"], epoch + t["created"], absolute(t["started"]), absolute(t["finished"]), t["status"])
            for t in self.stats()["tasks"]
        ]
        return sorted(rows, key=lambda row: row.created)

    def first_seen(self, task_id: str, poller: str, status: str = "SUCCEEDED") -> float | None:
        for poll in self.poll_trace.get(task_id, []):
            if poll.poller == poller and poll.status == status:
                return poll.at
        return None

    def handovers(self, poller: str = "bot") -> list[tuple[float, float]]:
        """For every task created after another one was seen finished: (seen SUCCEEDED -> next create request
        arrived, that arrival -> the task created), in measured seconds. The bot's part, then the emulator's
        (reading the body, checking both images)."""
        tasks = self.task_times()
        seen = sorted(t for task in tasks if (t := self.first_seen(task.task_id, poller)) is not None)
        out = []
        for task in tasks:
            arrived = self.create_arrivals.get(task.task_id)
            earlier = [t for t in seen if t <= task.created]
            if arrived is None or not earlier or arrived < earlier[-1]:
                continue
            out.append((arrived - earlier[-1], task.created - arrived))
        return out

    def polls_by(self, task_id: str, poller: str) -> int:
        return sum(1 for poll in self.poll_trace.get(task_id, []) if poll.poller == poller)


class SdkPoller:
    """The official SDK's wait(): poll at once, then sleep 1,1,2,2,2,4,4,4 s, then 5 s until a final status.

    Sleeps are divided by `time_scale`; it polls the same tasks as the bot, on the same emulator, marked with
    the X-Bench-Poller header so the trace can tell the two apart. Poll k is aimed at creation + the sum of
    the first k sleeps (an ideal SDK whose requests take no time): the real one sleeps after each answer, so
    it polls a little less often and notices a little later than this baseline.
    """

    FINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})

    def __init__(self, base_url: str, time_scale: float) -> None:
        self.base_url = base_url
        self.time_scale = time_scale
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, task_id: str, authorization: str) -> None:
        task = asyncio.get_running_loop().create_task(self._wait(task_id, authorization))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, task_id: str, authorization: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": authorization, POLLER_HEADER: "sdk"}
        step = 0
        due = time.monotonic()
        while True:
            async with self._session.get(f"{self.base_url}/tasks/{task_id}", headers=headers) as response:
                body = await response.json()
            if (body.get("output") or {}).get("task_status") in self.FINAL:
                return
            due += (SDK_SLEEPS[step] if step < len(SDK_SLEEPS) else SDK_STEADY) / self.time_scale
            step += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def drain(self, within: float) -> None:
        """Let every watched task's SDK loop reach its final status (the bot may have noticed first)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


# --- a Discord world: both emulators and the real bot -------------------------------------------------


@dataclass
class DiscordWorld:
    tmp: Path
    discord: Any  # DiscordEmulator (imported lazily: discord.py is heavy)
    dashscope: TracingEmulator
    guild: int
    channel: int
    services: Services
    bot: Any  # VideoBot
    runner: asyncio.Task[None]
    app: DiscordApp
    users: list[int] = field(default_factory=list)

    async def close(self) -> None:
        await self.app.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.runner, 10)
        await self.dashscope.stop()
        await self.discord.stop()


async def open_world(
    tmp: Path, emulator: EmulatorConfig, *, time_scale: float, users: int = 2, **overrides: Any
) -> DiscordWorld:
    """The Discord emulator, a DashScope emulator and the real VideoBot connected to both."""
    from sandbox.discord_emu import DiscordEmulator

    discord_emu = DiscordEmulator(owner_id=900_001)
    await discord_emu.start()
    guild = discord_emu.add_guild("Bench guild", locale="en-US")
    channel = discord_emu.add_text_channel(guild, "videos")
    members = [910_000 + i for i in range(users)]
    for user in members:
        discord_emu.add_member(guild, user, f"member{user % 10_000}")
    dashscope = TracingEmulator(emulator)
    await dashscope.start()
    settings = bench_settings(
        tmp / "data",
        dashscope.base_url,
        time_scale=time_scale,
        DISCORD_TOKEN=discord_emu.bot_token,
        KF2V_DISCORD_API_BASE=discord_emu.api_base,
        KF2V_DISCORD_GATEWAY=discord_emu.gateway_url,
        **overrides,
    )
    point_discord_at(settings.discord_api_base, settings.discord_gateway)
    app = await build_discord_app(settings)
    services, bot = app.services, app.bot
    retime_engine(services, time_scale)
    assert settings.discord_token is not None
    runner = asyncio.create_task(app.run(settings.discord_token.get_secret_value()))
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    return DiscordWorld(tmp, discord_emu, dashscope, guild, channel, services, bot, runner, app, members)


class LoopLag:
    """How late the event loop wakes a 10 ms sleeper: stalls that delay every poller alike."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.period
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.monotonic() - due))

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return {
            "loop_lag_p99_ms": r3(percentile(self.lags, 99) * 1000),
            "loop_lag_max_ms": r3(max(self.lags, default=0.0) * 1000),
        }


# --- a queue of jobs through the engine (throughput, polling) ------------------------------------------
# The provider's running seconds in EmulatorConfig.realistic() (what this project observed).
PROVIDER_RUNNING_S = (240.0, 360.0)


@dataclass
class QueueRun:
    emulator: TracingEmulator
    services: Services
    recorder: RecordingNotifier
    job_ids: list[int]
    wall_s: float  # engine start to the last delivery, measured seconds
    loop_lag: dict[str, float]


async def run_queue(
    tmp: Path,
    jobs: int,
    *,
    time_scale: float,
    seed: int,
    guilds: int = 20,
    accounts: int = 1,
    on_created: Callable[[str, str], None] | None = None,
    emulator_ready: Callable[[TracingEmulator], None] | None = None,
    hide_start_times: bool = False,
    running_s: tuple[float, float] | None = None,
) -> QueueRun:
    """Queue `jobs` jobs (through JobService, before the worker starts), start the engine, wait until every
    one is delivered to the RecordingNotifier. Provider timings: EmulatorConfig.realistic() / time_scale.
    `accounts` > 1 adds API keys (each its own account with its own 2 slots)."""
    from bot.jobs.models import JobRequest, JobState
    from bot.jobs.service import Draft

    emulator = TracingEmulator(
        EmulatorConfig.realistic(time_scale=time_scale, seed=seed, running_s=running_s or PROVIDER_RUNNING_S),
        on_created=on_created,
        hide_start_times=hide_start_times,
    )
    await emulator.start()
    if emulator_ready is not None:
        emulator_ready(emulator)
    extra_keys = ",".join(f"{API_KEY}-{i}" for i in range(1, accounts))
    services, recorder = await start_engine(
        tmp, emulator.base_url, time_scale=time_scale, start=False, KF2V_DASHSCOPE_EXTRA_API_KEYS=extra_keys
    )
    first, last = flat_png(colour=(200, 40, 40)), flat_png(colour=(40, 40, 200))
    ids = []
    for i in range(jobs):
        guild = 1_000 + i % guilds
        draft = Draft(
            guild_id=guild,
            channel_id=guild * 10,
            user_id=guild * 100 + i % 7,
            locale="en-US",
            first_image=first,
            last_image=last,
            request=JobRequest(prompt=f"benchmark job {i}: a red square turns blue", resolution="480P"),
        )
        ids.append((await services.jobs.submit(draft)).id)
    lag = LoopLag()
    lag.start()
    started = time.monotonic()
    await services.start()

    async def all_delivered() -> bool:
        return (await services.store.count_by_state()).get(JobState.DELIVERED, 0) >= jobs

    expected = jobs * (75.0 + 300.0) / (2 * accounts) / time_scale
    try:
        await wait_for(all_delivered, within=expected * 2 + 120, interval=0.05, what=f"{jobs} jobs delivered")
    finally:
        lag_figures = await lag.stop()
    return QueueRun(emulator, services, recorder, ids, time.monotonic() - started, lag_figures)


@dataclass
class BotProcess:
    """`python -m bot run` as its own process (the real deployment shape), aimed at emulators in this one."""

    process: asyncio.subprocess.Process
    stderr_path: Path

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def start_bot_process(tmp: Path, discord_emu: Any, dashscope_url: str, **env_overrides: str) -> BotProcess:
    """Start the bot against the emulators; returns once it is connected and its commands are synced."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": discord_emu.bot_token,
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": dashscope_url,
        "KF2V_DISCORD_API_BASE": discord_emu.api_base,
        "KF2V_DISCORD_GATEWAY": discord_emu.gateway_url,
        "KF2V_DATA_DIR": str(tmp / "data"),
        "KF2V_LOG_LEVEL": "WARNING",
        "KF2V_DEFAULT_DAILY_BUDGET": "100000",
        "KF2V_DEFAULT_MONTHLY_BUDGET": "1000000",
        **env_overrides,
    }
    stderr_path = tmp / "bot.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    bot = BotProcess(process, stderr_path)
    try:
        await discord_emu.wait_ready(60)
        await wait_for(lambda: discord_emu.sync_count >= 1, within=60, what="the bot synced its commands")
    except BaseException:
        await bot.stop()
        note("the bot did not come up:\n" + bot.stderr_tail())
        raise
    return bot


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # discord.py announces its connection at INFO; a benchmark wants only trouble on stderr.
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # "PyNaCl is not installed": no voice here


def run(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return asyncio.run(_as_coroutine(coro))


async def _as_coroutine(awaitable: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await awaitable
