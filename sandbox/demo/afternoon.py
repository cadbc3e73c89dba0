"""Playing the script against the running world, as the members would through their Discord clients.

Everything goes through the Discord emulator: slash commands with real image attachments, button
presses on the bot's status messages, and the replies read back from what Discord would show the user.
The bot is only looked at (its job store, scheduler and the provider emulator's statistics) to follow
and to report, never driven directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.jobs.models import Job, JobState
from bot.jobs.story.plan import FINAL_STORY_STATES, StoryState
from bot.jobs.story.store import Story, StoryStore
from sandbox.demo.live import Console, JobView, SlotView, Snapshot, fit
from sandbox.demo.scenes import frame_pair, keyframes
from sandbox.demo.script import (
    BURST_GAP_S,
    GUILDS,
    OWNER_ID,
    OWNER_NAME,
    REQUESTS,
    STORY,
    Expect,
    RequestSpec,
    StorySpec,
    guild_spec,
    member,
)
from sandbox.demo.world import DemoWorld
from sandbox.discord_emu import InteractionRecord, MessageRecord

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 20.0
POLL_S = 0.05
EVENT_TEXT_MAX = 150  # columns of a reply shown in the event stream (the report has it whole)
_MENTION = re.compile(r"<@!?(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_TIMESTAMP = re.compile(r"<t:(\d+)(?::[tTdDfFR])?>")


class ScriptProblem(Exception):
    """Something the script expected did not happen (reported, never a traceback)."""


@dataclass
class Outcome:
    """One scripted request and everything that came of it."""

    spec: RequestSpec
    guild_id: int
    channel_id: int
    user_id: int
    user_name: str
    guild_name: str
    locale: str
    sent_at: float | None = None  # seconds since the start
    interaction: InteractionRecord | None = None
    reply: str | None = None  # the ephemeral answer to /kf2v
    job_id: int | None = None
    cancel_pressed_in_state: str | None = None
    cancel_reply: str | None = None
    regen_reply: str | None = None
    regen_job_id: int | None = None
    extend_reply: str | None = None
    extend_job_id: int | None = None
    remix_reply: str | None = None
    remix_job_id: int | None = None
    refused: bool = False  # answered without a job being created
    problems: list[str] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class StoryOutcome:
    """The scripted `/kf2v-story` and what came of it: one story, its segment jobs, one joined video."""

    spec: StorySpec
    guild_id: int
    channel_id: int
    user_id: int
    user_name: str
    guild_name: str
    locale: str
    keyframes: list[bytes] = field(default_factory=list)  # as sent, in order
    interaction: InteractionRecord | None = None
    reply: str | None = None
    story_id: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class AdminAction:
    guild_name: str
    command: str
    reply: str | None = None


def interaction_text(record: InteractionRecord) -> str | None:
    """What the user sees privately once the "thinking…" placeholder is replaced (content or embed text)."""
    original = record.original_message
    if original is not None and original.loading:
        return None
    for message in reversed(record.messages):
        if message.ephemeral and not message.deleted and not message.loading:
            text = message.content or " ".join(
                " ".join(
                    part
                    for part in (
                        str(e.get("title") or ""),
                        str(e.get("description") or ""),
                        *(f"{f.get('name')}: {f.get('value')}" for f in e.get("fields", [])),
                    )
                    if part
                )
                for e in message.embeds
            )
            if text:
                return text
    return None


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:  # noqa: ASYNC109
    """Poll `predicate` (sync or async) until it returns something truthy; ScriptProblem after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ScriptProblem(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


class Afternoon:
    def __init__(self, world: DemoWorld, scale: float, console: Console) -> None:
        self.world = world
        self.scale = scale
        self.console = console
        self.started = time.monotonic()
        self.outcomes: list[Outcome] = []
        self.story: StoryOutcome | None = None
        self.admin: list[AdminAction] = []
        self.problems: list[str] = []
        self.finished_at: float | None = None
        self.timeout_s = 600.0  # set by play(); every wait is also bounded by it
        self._followers: list[asyncio.Task[None]] = []
        self._slots: dict[str, int] = {}  # provider task id -> slot number shown
        self._names: dict[int, str] = {OWNER_ID: OWNER_NAME}
        self._guild_names: dict[int, str] = {}
        for spec in GUILDS:
            self._guild_names[world.guilds[spec.key].guild_id] = spec.name
            for m in spec.members:
                self._names[m.user_id] = m.name
        self._prompts = {(world.guilds[r.guild].guild_id, r.prompt): r.key for r in REQUESTS}
        self._extended: dict[int, str] = {}  # an Extend's job id -> the request it continues
        self._remixed: dict[int, str] = {}  # a Remix's job id -> the request it remixes
        self.stories = StoryStore(world.services.store.database)

    # --- labels --------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def guild_name(self, guild_id: int) -> str:
        return self._guild_names.get(guild_id, str(guild_id))

    def user_name(self, user_id: int) -> str:
        return self._names.get(user_id, str(user_id))

    def what(self, job: Job) -> str:
        if job.story_id is not None and job.segment_index is not None:
            return f"{STORY.key} story {job.segment_index + 1}/{STORY.segments}"
        if job.id in self._remixed:
            return f"{self._remixed[job.id]} (remixed)"
        key = self._prompts.get((job.guild_id, job.request.prompt), job.request.prompt[:24])
        if job.request.first_clip is not None:
            return f"{self._extended.get(job.id, key)} (extended)"
        return f"{key} (regenerated)" if job.parent_job_id is not None else key

    def is_remix(self, job_id: int) -> bool:
        return job_id in self._remixed

    def humanise(self, text: str) -> str:
        """Discord markup as a reader sees it: @name, the thread's name, a readable time; one line."""
        channels = self.world.discord.channels

        def channel(match: re.Match[str]) -> str:
            found = channels.get(int(match.group(1)))
            return f"“{found.name}”" if found is not None else match.group(0)

        text = _MENTION.sub(lambda m: "@" + self.user_name(int(m.group(1))), text)
        text = _CHANNEL.sub(channel, text)
        text = _TIMESTAMP.sub(
            lambda m: datetime.fromtimestamp(int(m.group(1)), UTC).strftime("%Y-%m-%d %H:%M UTC"), text
        )
        return " ".join(text.split())

    def said(self, who: str, text: str) -> None:
        self.console.event(f"{who} sees (only them): {fit(self.humanise(text), EVENT_TEXT_MAX)}")

    # --- the script ----------------------------------------------------------------------------------
    async def play(self, timeout_s: float) -> None:
        """Run the whole afternoon; problems are collected, not raised."""
        self.started = time.monotonic()
        self.timeout_s = timeout_s
        deadline = self.started + timeout_s
        try:
            await asyncio.wait_for(self._play(deadline), timeout_s)
        except TimeoutError:
            self.problems.append(f"the afternoon did not finish within {timeout_s:.0f} s")
        except ScriptProblem as exc:
            self.problems.append(str(exc))
        except Exception as exc:  # the emulators refused a step: report it, the log has the details
            log.info("the script stopped: %r", exc, exc_info=exc)
            self.problems.append(f"the script stopped: {type(exc).__name__}: {exc}")
        finally:
            for follower in self._followers:
                follower.cancel()
            await asyncio.gather(*self._followers, return_exceptions=True)
        self.finished_at = self.elapsed()

    async def _play(self, deadline: float) -> None:
        self.console.event(
            f"{len(GUILDS)} guilds, {sum(len(g.members) for g in GUILDS)} members and the bot's owner are online; "
            "the bot connected and synced its commands"
        )
        await self._owner_sets_budgets()
        frames = await asyncio.to_thread(lambda: {r.key: frame_pair(r.scene, r.image_format) for r in REQUESTS})
        story_frames = await asyncio.to_thread(keyframes, STORY.scene, STORY.frames)
        self.console.event(f"a burst of {len(REQUESTS)} /kf2v requests (and a {STORY.segments}-segment story) begins")
        by_key: dict[str, Outcome] = {}
        for spec in REQUESTS:
            outcome = self._outcome(spec)
            by_key[spec.key] = outcome
            self.outcomes.append(outcome)
            if spec.after is not None:
                await wait_for(by_key[spec.after].answered.is_set, REPLY_TIMEOUT_S, f"the reply to {spec.after}")
            await self._send(outcome, frames[spec.key])
            self._followers.append(asyncio.create_task(self._follow(outcome), name=f"demo-follow-{spec.key}"))
            await asyncio.sleep(BURST_GAP_S)
            if spec.key == STORY.send_after:
                self.story = await self._send_story(STORY, story_frames)
                self._followers.append(asyncio.create_task(self._follow_story(self.story), name="demo-follow-story"))
                await asyncio.sleep(BURST_GAP_S)
        await asyncio.gather(*self._followers)
        await wait_for(self._all_final, max(1.0, deadline - time.monotonic()), "every job to finish")
        await self._settle()

    def _outcome(self, spec: RequestSpec) -> Outcome:
        guild = guild_spec(spec.guild)
        who = member(guild, spec.user)
        handle = self.world.guilds[spec.guild]
        return Outcome(spec, handle.guild_id, handle.channel_id, who.user_id, who.name, guild.name, who.locale)

    async def _owner_sets_budgets(self) -> None:
        for spec in GUILDS:
            if spec.daily_budget is None:
                continue
            handle = self.world.guilds[spec.key]
            action = AdminAction(spec.name, f"/kf2v-admin budget daily:{spec.daily_budget}")
            self.admin.append(action)
            record = await self.world.discord.run_command(
                handle.guild_id, handle.channel_id, OWNER_ID, "kf2v-admin", {"daily": spec.daily_budget},
                subcommand="budget",
            )  # fmt: skip
            action.reply = await self._reply(record, f"the answer to {action.command}")
            self.console.event(f"{OWNER_NAME} (bot owner) in {spec.name}: {action.command}")
            self.said(OWNER_NAME, action.reply)

    async def _send(self, outcome: Outcome, frames: tuple[bytes, bytes]) -> None:
        spec = outcome.spec
        ext = "jpg" if spec.image_format == "JPEG" else "png"
        mime = "image/jpeg" if spec.image_format == "JPEG" else "image/png"
        outcome.sent_at = self.elapsed()
        record = await self.world.discord.run_command(
            outcome.guild_id,
            outcome.channel_id,
            outcome.user_id,
            "kf2v",
            {
                "prompt": spec.prompt,
                "resolution": spec.resolution,
                **({"model": spec.model} if spec.model else {}),
                **({"duration": spec.duration} if spec.duration else {}),
            },
            attachments={
                "first_frame": (f"{spec.key}-first.{ext}", frames[0], mime),
                "last_frame": (f"{spec.key}-last.{ext}", frames[1], mime),
            },
            locale=outcome.locale,
        )
        outcome.interaction = record
        self.console.event(f"{outcome.user_name} in {outcome.guild_name}: /kf2v {spec.resolution} “{spec.prompt}”")

    async def _follow(self, outcome: Outcome) -> None:
        try:
            await self._follow_steps(outcome)
        except ScriptProblem as exc:
            outcome.problems.append(str(exc))
        except Exception as exc:  # e.g. the button was gone: report it, the log has the details
            log.info("following %s stopped: %r", outcome.spec.key, exc, exc_info=exc)
            outcome.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            outcome.answered.set()

    async def _follow_steps(self, outcome: Outcome) -> None:
        spec = outcome.spec
        assert outcome.interaction is not None
        outcome.reply = await self._reply(outcome.interaction, f"the answer to {outcome.user_name}'s /kf2v")
        outcome.answered.set()
        job = await self._job_for(outcome)
        self.said(outcome.user_name, outcome.reply)
        if job is None:
            outcome.refused = True
            return
        outcome.job_id = job.id
        if spec.expect is Expect.CANCELLED:
            await self._press_cancel(outcome, job)
        if spec.regenerate:
            await self._press_regenerate(outcome, job)
        if spec.extend_seconds:
            await self._press_extend(outcome, job, spec.extend_seconds)
        if spec.remix_prompt:
            await self._press_remix(outcome, job, spec.remix_prompt)

    async def _press_cancel(self, outcome: Outcome, job: Job) -> None:
        store = self.world.services.store

        async def status_posted() -> Job | None:
            current = await store.get(job.id)
            return current if current is not None and current.status_message_id else None

        current: Job = await wait_for(status_posted, REPLY_TIMEOUT_S, f"the status message of #{job.id}")
        outcome.cancel_pressed_in_state = current.state.value
        assert current.status_message_id is not None
        record = await self.world.discord.press_button(
            current.status_message_id, f"kf2v:cancel:{job.id}", outcome.user_id, locale=outcome.locale
        )
        self.console.event(f"{outcome.user_name} presses Cancel on #{job.id} (it is {current.state.value})")
        outcome.cancel_reply = await self._reply(record, f"the answer to the Cancel button of #{job.id}")
        self.said(outcome.user_name, outcome.cancel_reply)

    async def _press_once_delivered(self, outcome: Outcome, job: Job, action: str, label: str) -> InteractionRecord:
        """Wait until `job` is delivered and its status message shows the `action` button, then press it."""
        store = self.world.services.store

        async def delivered() -> Job | None:
            current = await store.get(job.id)
            if current is None or (current.is_final and current.state is not JobState.DELIVERED):
                raise ScriptProblem(f"#{job.id} ended {current.state.value if current else 'missing'}, not delivered")
            return current if current.state is JobState.DELIVERED else None

        current: Job = await wait_for(delivered, self.timeout_s, f"#{job.id} to be delivered")
        custom_id = f"kf2v:{action}:{job.id}"

        def has_button() -> MessageRecord | None:
            message = self.world.discord.message(current.status_message_id or 0)
            return message if message is not None and custom_id in message.custom_ids() else None

        await wait_for(has_button, REPLY_TIMEOUT_S, f"the {label} button of #{job.id}")
        return await self.world.discord.press_button(
            current.status_message_id or 0, custom_id, outcome.user_id, locale=outcome.locale
        )

    async def _press_regenerate(self, outcome: Outcome, job: Job) -> None:
        store = self.world.services.store
        record = await self._press_once_delivered(outcome, job, "regen", "Regenerate")
        self.console.event(f"{outcome.user_name} liked #{job.id} and presses Regenerate")
        outcome.regen_reply = await self._reply(record, f"the answer to the Regenerate button of #{job.id}")

        async def regenerated() -> Job | None:
            jobs = await store.all_jobs()
            return next((j for j in jobs if j.parent_job_id == job.id), None)

        new_job: Job | None = await wait_for(regenerated, 5.0, f"the job regenerated from #{job.id}")
        assert new_job is not None
        outcome.regen_job_id = new_job.id
        self.said(outcome.user_name, outcome.regen_reply)

    async def _press_extend(self, outcome: Outcome, job: Job, seconds: int) -> None:
        """Once delivered: Extend, fill the modal (a prompt for what follows, the seconds to add), submit."""
        store = self.world.services.store
        press = await self._press_once_delivered(outcome, job, "extend", "Extend")
        modal = await press.wait_modal(REPLY_TIMEOUT_S)
        prompt, added = (c["component"] for c in modal["components"])
        self.console.event(f"{outcome.user_name} presses Extend on #{job.id} and adds {seconds} s")
        submit = await self.world.discord.submit_modal(
            press,
            {
                prompt["custom_id"]: "The lantern drifts higher and the first stars appear",
                added["custom_id"]: str(seconds),
            },
            locale=outcome.locale,
        )
        outcome.extend_reply = await self._reply(submit, f"the answer to the Extend modal of #{job.id}")

        async def extended() -> Job | None:
            jobs = await store.all_jobs()
            return next((j for j in jobs if j.parent_job_id == job.id and j.request.first_clip), None)

        new_job: Job | None = await wait_for(extended, 5.0, f"the job extending #{job.id}")
        assert new_job is not None
        outcome.extend_job_id = new_job.id
        self._extended[new_job.id] = outcome.spec.key
        self.said(outcome.user_name, outcome.extend_reply)

    async def _press_remix(self, outcome: Outcome, job: Job, prompt: str) -> None:
        """Once delivered: Remix, change the pre-filled prompt in the modal (the rest as it was), submit."""
        store = self.world.services.store
        press = await self._press_once_delivered(outcome, job, "remix", "Remix")
        modal = await press.wait_modal(REPLY_TIMEOUT_S)
        prompt_input = modal["components"][0]["component"]  # pre-filled with the job's prompt
        if prompt_input.get("value") != job.request.prompt:
            raise ScriptProblem(f"the Remix modal of #{job.id} was not pre-filled with its prompt")
        self.console.event(f"{outcome.user_name} presses Remix on #{job.id} and edits the prompt: “{prompt}”")
        submit = await self.world.discord.submit_modal(
            press, {prompt_input["custom_id"]: prompt}, locale=outcome.locale
        )
        outcome.remix_reply = await self._reply(submit, f"the answer to the Remix modal of #{job.id}")

        async def remixed() -> Job | None:
            jobs = await store.all_jobs()
            return next((j for j in jobs if j.parent_job_id == job.id and j.request.prompt == prompt), None)

        new_job: Job | None = await wait_for(remixed, 5.0, f"the job remixed from #{job.id}")
        assert new_job is not None
        outcome.remix_job_id = new_job.id
        self._remixed[new_job.id] = outcome.spec.key
        self.said(outcome.user_name, outcome.remix_reply)

    # --- the story -----------------------------------------------------------------------------------
    async def _send_story(self, spec: StorySpec, frames: list[bytes]) -> StoryOutcome:
        guild = guild_spec(spec.guild)
        who = member(guild, spec.user)
        handle = self.world.guilds[spec.guild]
        story = StoryOutcome(spec, handle.guild_id, handle.channel_id, who.user_id, who.name, guild.name, who.locale,
                             keyframes=frames)  # fmt: skip
        story.interaction = await self.world.discord.run_command(
            story.guild_id,
            story.channel_id,
            story.user_id,
            "kf2v-story",
            {"prompt": " | ".join(spec.prompts), "resolution": spec.resolution},
            attachments={
                f"frame{k + 1}": (f"{spec.key}-{k + 1}.png", data, "image/png") for k, data in enumerate(frames)
            },
            locale=story.locale,
        )
        self.console.event(
            f"{story.user_name} in {story.guild_name}: /kf2v-story {spec.frames} keyframes, {spec.resolution}, "
            f"“{' | '.join(spec.prompts)}”"
        )
        return story

    async def _follow_story(self, story: StoryOutcome) -> None:
        try:
            await self._follow_story_steps(story)
        except ScriptProblem as exc:
            story.problems.append(str(exc))
        except Exception as exc:
            log.info("following the story stopped: %r", exc, exc_info=exc)
            story.problems.append(f"{type(exc).__name__}: {exc}")

    async def _follow_story_steps(self, story: StoryOutcome) -> None:
        assert story.interaction is not None
        story.reply = await self._reply(story.interaction, f"the answer to {story.user_name}'s /kf2v-story")
        self.said(story.user_name, story.reply)

        async def segment_job() -> Job | None:
            jobs = await self.world.services.store.all_jobs()
            return next((j for j in jobs if j.story_id is not None and j.user_id == story.user_id), None)

        first: Job = await wait_for(segment_job, 5.0, "the story's segment jobs")
        story.story_id = first.story_id

        async def finished() -> Story | None:
            found = await self.stories.get(first.story_id or 0)
            return found if found is not None and found.state in FINAL_STORY_STATES else None

        final: Story = await wait_for(finished, self.timeout_s, f"story #{story.story_id} to finish")
        if final.state is not StoryState.DELIVERED:
            raise ScriptProblem(f"story #{final.id} ended {final.state.value}, not delivered")
        self.console.event(
            f"story #{final.id}: {final.segments} segments joined into one video in its thread for {story.user_name}"
        )

    # --- reading what happened -----------------------------------------------------------------------
    async def _reply(self, record: InteractionRecord, what: str) -> str:
        text: str = await wait_for(lambda: interaction_text(record), REPLY_TIMEOUT_S, what)
        return text

    async def _job_for(self, outcome: Outcome) -> Job | None:
        for job in await self.world.services.store.all_jobs():
            if (
                job.guild_id == outcome.guild_id
                and job.user_id == outcome.user_id
                and job.request.prompt == outcome.spec.prompt
                and job.parent_job_id is None
            ):
                return job
        return None

    async def _all_final(self) -> bool:
        jobs = await self.world.services.store.all_jobs()
        return all(job.is_final for job in jobs)

    async def _settle(self) -> None:
        """Give the last thread messages (sent right after the final state is written) a moment to land."""

        async def landed() -> bool:
            for job in await self.world.services.store.all_jobs():
                if job.thread_id is None:
                    continue
                posted = [m for m in self.world.discord.messages(job.thread_id) if m.author_id != job.user_id]
                if job.state is JobState.DELIVERED and not any(
                    a.filename.endswith(".mp4") for m in posted for a in m.attachments
                ):
                    return False
                if job.state in (JobState.FAILED, JobState.CANCELED) and not posted:
                    return False
            return True

        with contextlib.suppress(ScriptProblem):  # the report's checks say precisely what is missing
            await wait_for(landed, 5.0, "the last thread messages")

    # --- the live view -------------------------------------------------------------------------------
    async def snapshot(self) -> Snapshot:
        services = self.world.services
        jobs = await services.store.all_jobs()
        by_id = {job.id: job for job in jobs}
        by_task = {job.task_id: job for job in jobs if job.task_id}
        positions = services.scheduler.queue.positions()
        queue = [
            (job_id, f"{self.guild_name(by_id[job_id].guild_id)}/{self.user_name(by_id[job_id].user_id)}")
            for job_id, _ in sorted(positions.items(), key=lambda item: item[1])
            if job_id in by_id
        ]
        stats = self.world.dashscope.stats()
        now = float(stats["uptime_s"])
        model = services.catalog.provider_name(services.catalog.default_model, services.region)
        capacity = services.scheduler.limits.capacity(services.catalog.default_model)
        active = [t for t in stats["tasks"] if t["status"] in ("PENDING", "RUNNING")]
        live_ids = {t["task_id"] for t in active}
        for task_id in list(self._slots):
            if task_id not in live_ids:
                del self._slots[task_id]
        for task in active:
            if task["task_id"] not in self._slots:
                taken = set(self._slots.values())
                self._slots[task["task_id"]] = next(i for i in range(1, len(active) + capacity + 1) if i not in taken)
        slots: list[SlotView] = []
        shown = {self._slots[t["task_id"]]: t for t in active}
        for index in range(1, max([capacity, *shown]) + 1):
            task = shown.get(index)
            if task is None:
                slots.append(SlotView(index, None, "", "free", 0.0))
                continue
            job = by_task.get(task["task_id"])
            since = task["started"] if task["status"] == "RUNNING" and task["started"] is not None else task["created"]
            label = f"{self.guild_name(job.guild_id)}/{self.user_name(job.user_id)}" if job else "?"
            slots.append(SlotView(index, job.id if job else None, label, task["status"], now - since))
        views = [self._job_view(job, positions) for job in jobs]
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        refused = sum(1 for o in self.outcomes if o.refused)
        if refused:
            counts["refused"] = refused
        return Snapshot(self.elapsed(), self.scale, model, capacity, queue, slots, views, counts)

    def _job_view(self, job: Job, positions: dict[int, int]) -> JobView:
        state = job.state
        if state is JobState.QUEUED:
            note = f"queued, {positions[job.id]} in line" if job.id in positions else "queued"
        elif state is JobState.SUBMITTING:
            note = "submitting"
        elif state is JobState.PENDING:
            note = "at the provider, waiting to start"
        elif state is JobState.RUNNING:
            note = "running at the provider"
        elif state is JobState.SUCCEEDED:
            note = "done, posting the video"
        elif state is JobState.DELIVERED:
            note = "delivered ✓"
        elif state is JobState.FAILED:
            note = "failed: " + (job.error_key or "?").removeprefix("job.failed.")
        else:
            note = "cancelled"
        return JobView(
            job.id,
            self.guild_name(job.guild_id),
            self.user_name(job.user_id),
            self.what(job),
            job.request.resolution,
            state.value,
            note,
        )
