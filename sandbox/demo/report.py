"""The end of the afternoon: what happened to every request, how the two slots were used, what each guild
spent, what users were told; the checks that decide the exit code; report.md, report.json and the videos.

Sources are independent where they can be: job rows and the ledger from the bot's database, the slot
timeline and limit violations from the provider emulator, the videos and messages from what the Discord
emulator recorded (what users would see in their threads).
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import av
from PIL import Image, ImageChops, ImageStat

from bot.catalog import format_cny
from bot.i18n import MESSAGES, language, t
from bot.jobs.models import ChargeState, Job, JobState, LedgerEntry
from bot.jobs.story.join import expected_frames, seam_indices
from bot.jobs.story.plan import StoryState
from sandbox.demo.afternoon import Afternoon, Outcome, StoryOutcome
from sandbox.demo.live import provider_time
from sandbox.demo.script import GUILDS, Expect, guild_spec, member
from sandbox.discord_emu import MessageRecord

TIMELINE_WIDTH = 64


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class JobRow:
    job_id: int | None
    guild: str
    user: str
    what: str
    resolution: str
    outcome: str
    wait_s: float | None  # accepted -> submitted to the provider
    run_s: float | None  # submitted -> finished at the provider
    cost: str
    video: str | None = None
    parent_job_id: int | None = None


@dataclass
class StoryRow:
    """The story: its segment jobs, what it cost, and the joined video as posted (checked against its keyframes)."""

    story_id: int | None
    guild: str
    user: str
    prompts: list[str]
    segments: int
    segment_jobs: list[int]
    state: str
    cost: str
    video: str | None = None
    video_s: float | None = None
    frames: int | None = None  # in the joined video
    expected_frames: int | None = None  # the segments' frames, each seam's shared keyframe counted once
    seams: list[int] = field(default_factory=list)  # frame indices of the seams in the joined video
    keyframes_at_seams: bool = False  # first, seam and last frames each look most like their own keyframe
    posts: int = 0  # joined videos posted for this story (exactly one expected)


@dataclass
class StoryVideo:
    frames: int
    seconds: float
    keyframes_match: bool


THUMB = (64, 36)  # small enough to keep every decoded frame of a 15-second video, big enough to tell scenes apart


def _thumb(image: Image.Image) -> Image.Image:
    return image.convert("RGB").resize(THUMB)


def _nearest(image: Image.Image, candidates: list[Image.Image]) -> int:
    """Index of the candidate that looks most like `image` (mean absolute difference)."""
    scores = [sum(ImageStat.Stat(ImageChops.difference(image, c)).mean) for c in candidates]
    return scores.index(min(scores))


def analyse_story_video(data: bytes, positions: list[int], keyframes: list[bytes]) -> StoryVideo:
    """Decode the joined video: its frame count and length, and whether the frame at each of `positions`
    (first, seams, last) looks most like the keyframe of the same rank among all the keyframes sent."""
    with av.open(io.BytesIO(data), mode="r") as container:
        thumbs = [_thumb(f.to_image()) for f in container.decode(video=0)]  # type: ignore[no-untyped-call]
        seconds = container.duration / 1e6 if container.duration is not None else 0.0
    sent = [_thumb(Image.open(io.BytesIO(k))) for k in keyframes]
    match = len(positions) == len(sent) and all(
        0 <= at < len(thumbs) and _nearest(thumbs[at], sent) == rank for rank, at in enumerate(positions)
    )
    return StoryVideo(len(thumbs), seconds, match)


def member_handle(outcome: StoryOutcome) -> str:
    """The ASCII handle of the story's author, for the file name."""
    return member(guild_spec(outcome.spec.guild), outcome.spec.user).handle


def count_frames(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


@dataclass
class Seen:
    who: str
    where: str
    kind: str  # ephemeral reply / thread message
    text: str


@dataclass
class Report:
    started_at: str
    time_scale: float
    wall_s: float
    passed: bool
    output_dir: str
    videos_dir: str
    jobs: list[JobRow]
    slots: dict[str, Any]
    spend: list[dict[str, Any]]
    seen: list[Seen]
    admin: list[dict[str, Any]]
    checks: list[Check]
    problems: list[str] = field(default_factory=list)
    stories: list[StoryRow] = field(default_factory=list)
    transcript: str | None = None  # OUTPUT/transcript/index.html: every thread as members saw it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def posted_videos(report: Report) -> dict[str, Path]:
    """Each posted mp4's attachment name (kf2v-N.mp4, story-N.mp4) -> the file the report saved it as."""
    videos = Path(report.videos_dir)
    found = {f"kf2v-{row.job_id}.mp4": videos / row.video for row in report.jobs if row.video}
    found |= {f"story-{row.story_id}.mp4": videos / row.video for row in report.stories if row.video}
    return found


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class ReportBuilder:
    def __init__(self, afternoon: Afternoon, output: Path, wall_s: float, started_at: datetime) -> None:
        self.afternoon = afternoon
        self.world = afternoon.world
        self.scale = afternoon.scale
        self.output = output
        self.videos_dir = output / "videos"
        self.wall_s = wall_s
        self.started_at = started_at
        self.checks: list[Check] = []

    # --- helpers -------------------------------------------------------------------------------------
    def humanise(self, text: str) -> str:
        return self.afternoon.humanise(text)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def bot_messages(self, channel_id: int | None) -> list[MessageRecord]:
        if channel_id is None:
            return []
        bot_id = self.world.discord.bot_user_id
        return [m for m in self.world.discord.messages(channel_id) if m.author_id == bot_id]

    def video_in_thread(self, job: Job) -> bytes | None:
        """This job's mp4 in its thread (an Extend is delivered in the thread of the video it continues)."""
        videos = [a for m in self.bot_messages(job.thread_id) for a in m.attachments if a.filename.endswith(".mp4")]
        own = [a for a in videos if a.filename == f"kf2v-{job.id}.mp4"]
        found = own or videos
        return found[0].data if found else None

    # --- the report ----------------------------------------------------------------------------------
    async def build(self) -> Report:
        services = self.world.services
        jobs = await services.store.all_jobs()
        by_id = {job.id: job for job in jobs}
        ledger = await services.store.ledger()
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        for old in self.videos_dir.glob("*.mp4"):
            old.unlink()
        rows = [self._row(job) for job in jobs]
        rows += [self._refused_row(o) for o in self.afternoon.outcomes if o.job_id is None]
        stories = [await self._story_row(self.afternoon.story, jobs)] if self.afternoon.story is not None else []
        slots = self._slots(jobs)
        spend = await self._spend(jobs, ledger)
        seen = self._seen(by_id)
        self._checks(jobs, by_id, ledger, slots, rows, spend)
        await self._check_story(stories, by_id, ledger)
        problems = list(self.afternoon.problems)
        for outcome in self.afternoon.outcomes:
            problems += [f"{outcome.spec.key}: {p}" for p in outcome.problems]
        if self.afternoon.story is not None:
            problems += [f"{self.afternoon.story.spec.key}: {p}" for p in self.afternoon.story.problems]
        self.check(
            "the script ran to the end",
            not problems,
            "no timeouts or surprises" if not problems else "; ".join(problems),
        )
        return Report(
            started_at=self.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            time_scale=self.scale,
            wall_s=round(self.wall_s, 1),
            passed=all(c.ok for c in self.checks),
            output_dir=str(self.output),
            videos_dir=str(self.videos_dir),
            jobs=rows,
            slots=slots,
            spend=spend,
            seen=seen,
            admin=[
                {"guild": a.guild_name, "command": a.command, "reply": self.humanise(a.reply or "")}
                for a in self.afternoon.admin
            ],
            checks=self.checks,
            problems=problems,
            stories=stories,
        )

    def _row(self, job: Job) -> JobRow:
        a = self.afternoon
        wait = _seconds(job.created_at, job.submitted_at)
        run = _seconds(job.submitted_at, job.finished_at)
        if job.state is JobState.CANCELED and job.submitted_at is None:
            outcome = "cancelled while queued"
            wait = _seconds(job.created_at, job.finished_at)
        elif job.state is JobState.DELIVERED and job.story_id is not None:
            segment = (job.segment_index or 0) + 1
            outcome = f"delivered (segment {segment} of story #{job.story_id}, joined)"
        elif job.state is JobState.DELIVERED:
            outcome = "delivered" if job.parent_job_id is None else f"delivered (regenerated from #{job.parent_job_id})"
            if self.afternoon.is_remix(job.id):
                outcome = f"delivered (remixed from #{job.parent_job_id}, edited prompt)"
            if job.request.first_clip is not None:
                seconds = job.request.duration
                outcome = f"delivered ({seconds} s with sound, extended from #{job.parent_job_id})"
            elif job.request.duration not in (None, 5) or job.request.sound:
                outcome += f" ({job.request.duration} s{' with sound' if job.request.sound else ''})"
        elif job.state is JobState.FAILED:
            outcome = "failed: " + t("en", job.error_key or "job.failed.provider").split(".")[0].lower()
            if job.error_key == "job.failed.content":
                outcome = "failed: the provider's content check rejected it"
        else:
            outcome = job.state.value
        if job.charge_state is ChargeState.SETTLED:
            cost = f"¥{format_cny(job.cost_settled)}"
        elif job.charge_state is ChargeState.RELEASED:
            cost = "not charged"
        else:
            cost = f"¥{format_cny(job.cost_reserved)} reserved"
        row = JobRow(job.id, a.guild_name(job.guild_id), a.user_name(job.user_id), a.what(job), job.request.resolution,
                     outcome, wait, run, cost, parent_job_id=job.parent_job_id)  # fmt: skip
        # A story's segments are posted joined, as the story's video (its own row), never one by one.
        data = self.video_in_thread(job) if job.state is JobState.DELIVERED and job.story_id is None else None
        if data is not None:
            row.video = self._save_video(job, data)
        return row

    def _save_video(self, job: Job, data: bytes) -> str:
        guild = next((g for g in GUILDS if self.world.guilds[g.key].guild_id == job.guild_id), None)
        handle = next((m.handle for g in GUILDS for m in g.members if m.user_id == job.user_id), str(job.user_id))
        what = self.afternoon.what(job)
        for label in ("regenerated", "extended", "remixed"):
            what = what.replace(f" ({label})", f"-{label}")
        name = f"{job.id:02d}-{guild.key if guild else job.guild_id}-{handle}-{what}.mp4"
        (self.videos_dir / name).write_bytes(data)
        return name

    def _refused_row(self, outcome: Outcome) -> JobRow:
        spec = outcome.spec
        reason = "refused: over the guild's budget" if spec.expect is Expect.OVER_BUDGET else "refused"
        return JobRow(None, outcome.guild_name, outcome.user_name, spec.key, spec.resolution, reason, None, None,
                      "not charged")  # fmt: skip

    # --- the story ---------------------------------------------------------------------------------------
    async def _story_row(self, outcome: StoryOutcome, jobs: list[Job]) -> StoryRow:
        spec = outcome.spec
        story = await self.afternoon.stories.get(outcome.story_id) if outcome.story_id is not None else None
        segment_jobs = [j for j in jobs if story is not None and j.story_id == story.id]
        row = StoryRow(
            story.id if story else None,
            outcome.guild_name,
            outcome.user_name,
            list(spec.prompts),
            spec.segments,
            [j.id for j in segment_jobs],
            story.state.value if story else "not accepted",
            self._story_cost(segment_jobs),
        )
        if story is None:
            return row
        posted = [
            (m, a)
            for m in self.world.discord.all_messages()
            for a in m.attachments
            if a.filename == f"story-{story.id}.mp4"
        ]
        row.posts = len(posted)
        in_thread = [a.data for m, a in posted if m.channel_id == story.thread_id]
        if not in_thread:
            return row
        handle = member_handle(outcome)
        name = f"story-{story.id:02d}-{spec.guild}-{handle}-{spec.key}.mp4"
        (self.videos_dir / name).write_bytes(in_thread[0])
        row.video = name
        videos = await self.afternoon.stories.current_videos(story.id)
        if sorted(videos) != list(range(spec.segments)):
            return row
        counts = await asyncio.to_thread(lambda: [count_frames(videos[k]) for k in range(spec.segments)])
        row.expected_frames = expected_frames(counts)
        row.seams = seam_indices(counts)
        positions = [0, *row.seams, row.expected_frames - 1]
        found = await asyncio.to_thread(analyse_story_video, in_thread[0], positions, outcome.keyframes)
        row.frames, row.video_s, row.keyframes_at_seams = found.frames, round(found.seconds, 2), found.keyframes_match
        return row

    @staticmethod
    def _story_cost(segment_jobs: list[Job]) -> str:
        settled = [j for j in segment_jobs if j.charge_state is ChargeState.SETTLED]
        if not segment_jobs:
            return "not charged"
        return f"¥{format_cny(sum(j.cost_settled for j in settled))} for {len(settled)} segment(s)"

    # --- slots ---------------------------------------------------------------------------------------
    def _slots(self, jobs: list[Job]) -> dict[str, Any]:
        stats = self.world.dashscope.stats()
        services = self.world.services
        model_key = services.catalog.default_model
        model = services.catalog.provider_name(model_key, services.region)
        capacity = services.scheduler.limits.capacity(model_key)
        by_task = {job.task_id: job.id for job in jobs if job.task_id}
        now = float(stats["uptime_s"])
        tasks = sorted(stats["tasks"], key=lambda task: task["created"])
        spans = []
        for task in tasks:
            end = task["finished"] if task["finished"] is not None else now
            started = task["started"]
            spans.append((task["created"], started, end, by_task.get(task["task_id"]), task["status"]))
        first = min((s[0] for s in spans), default=0.0)
        last = max((s[2] for s in spans), default=0.0)
        span = max(1e-9, last - first)
        occupied = sum(end - created for created, _, end, _, _ in spans)
        running = sum(end - started for _, started, end, _, _ in spans if started is not None)
        lanes: list[list[tuple[float, float | None, float, int | None, str]]] = []
        for item in spans:
            for lane in lanes:
                if lane[-1][2] <= item[0] + 1e-6:
                    lane.append(item)
                    break
            else:
                lanes.append([item])
        peak = stats["max_in_flight"].get(self.world.account, {}).get(model, 0)
        return {
            "model": model,
            "account": self.world.account,
            "capacity": capacity,
            "tasks": len(tasks),
            "submissions_accepted": stats["submissions_accepted"],
            "busy_s": round(span, 2),
            "busy_provider_time": provider_time(span, self.scale),
            "utilisation": round(occupied / (capacity * span), 3) if tasks else 0.0,
            "running_share": round(running / (capacity * span), 3) if tasks else 0.0,
            "peak_in_flight": peak,
            "violations": stats["violations"],
            "throttled": stats["throttled"],
            "truncated_prompts": stats["truncated_prompts"],
            "cancels_at_provider": stats["cancels"],
            "timeline": self._timeline(lanes, first, span),
        }

    def _timeline(self, lanes: list[list[tuple[float, float | None, float, int | None, str]]], first: float,
                  span: float) -> list[str]:  # fmt: skip
        """One text row per slot: ░ waiting at the provider, █ running, · free; job numbers underneath."""
        width = TIMELINE_WIDTH
        rows = []

        def column(moment: float) -> int:
            return min(width - 1, max(0, int((moment - first) / span * width)))

        for index, lane in enumerate(lanes, start=1):
            cells = ["·"] * width
            labels = [" "] * width
            for created, started, end, job_id, _ in lane:
                for col in range(column(created), max(column(created) + 1, column(end))):
                    moment = first + (col + 0.5) / width * span
                    cells[col] = "█" if started is not None and moment >= started else "░"
                tag = f"#{job_id}" if job_id is not None else "#?"
                at = column(created)
                if all(c == " " for c in labels[at : at + len(tag) + 1]) and at + len(tag) <= width:
                    labels[at : at + len(tag)] = list(tag)
            rows.append(f"slot {index} |{''.join(cells)}|")
            rows.append(f"        {''.join(labels).rstrip()}")
        return rows

    # --- money ---------------------------------------------------------------------------------------
    async def _spend(self, jobs: list[Job], ledger: list[LedgerEntry]) -> list[dict[str, Any]]:
        out = []
        for spec in GUILDS:
            guild_id = self.world.guilds[spec.key].guild_id
            report = await self.world.services.budget.report(guild_id)
            entries = [e for e in ledger if e.guild_id == guild_id]
            total = {
                kind: sum(e.amount for e in entries if e.kind == kind) for kind in ("reserve", "settle", "release")
            }
            charged = [j for j in jobs if j.guild_id == guild_id and j.charge_state is ChargeState.SETTLED]
            out.append(
                {
                    "guild": spec.name,
                    "daily_budget": format_cny(report.policy.daily_budget),
                    "budget_set_by_owner": spec.daily_budget is not None,
                    "spent_today": format_cny(report.usage.spent_day),
                    "still_reserved": format_cny(report.usage.reserved_day),
                    "left_today": format_cny(report.left_day),
                    "videos_charged": len(charged),
                    "ledger_reserved": format_cny(total["reserve"]),
                    "ledger_settled": format_cny(total["settle"]),
                    "ledger_released": format_cny(total["release"]),
                    "within_budget": report.usage.used_day <= report.policy.daily_budget,
                }
            )
        return out

    # --- what users were told ------------------------------------------------------------------------
    def _seen(self, by_id: dict[int, Job]) -> list[Seen]:
        seen = []
        for outcome in self.afternoon.outcomes:
            place = f"{outcome.guild_name} #{guild_spec(outcome.spec.guild).channel}"
            if outcome.job_id is None and outcome.reply:
                seen.append(Seen(outcome.user_name, place, "refusal (ephemeral, /kf2v)", self.humanise(outcome.reply)))
            if outcome.cancel_reply:
                seen.append(
                    Seen(outcome.user_name, place, "Cancel button (ephemeral)", self.humanise(outcome.cancel_reply))
                )
            if outcome.regen_reply:
                seen.append(
                    Seen(outcome.user_name, place, "Regenerate button (ephemeral)", self.humanise(outcome.regen_reply))
                )
            if outcome.remix_reply:
                seen.append(
                    Seen(outcome.user_name, place, "Remix modal (ephemeral)", self.humanise(outcome.remix_reply))
                )
        story = self.afternoon.story
        if story is not None and story.reply:
            place = f"{story.guild_name} #{guild_spec(story.spec.guild).channel}"
            seen.append(Seen(story.user_name, place, "/kf2v-story (ephemeral)", self.humanise(story.reply)))
        for job in by_id.values():
            if job.state in (JobState.FAILED, JobState.CANCELED):
                for message in self.bot_messages(job.thread_id):
                    if message.content:
                        thread = self.world.discord.channels.get(job.thread_id or 0)
                        where = f"{self.afternoon.guild_name(job.guild_id)}, thread “{thread.name if thread else '?'}”"
                        seen.append(Seen(self.afternoon.user_name(job.user_id), where, "thread message",
                                         self.humanise(message.content)))  # fmt: skip
        return seen

    # --- the checks ----------------------------------------------------------------------------------
    def _checks(self, jobs: list[Job], by_id: dict[int, Job], ledger: list[LedgerEntry], slots: dict[str, Any],
                rows: list[JobRow], spend: list[dict[str, Any]]) -> None:  # fmt: skip
        outcomes = self.afternoon.outcomes
        late = [i for i in self.world.discord.interactions if i.latency_ms is None or i.latency_ms >= 3000]
        self.check(
            "every command and button answered within Discord's 3 s",
            not late and bool(self.world.discord.interactions),
            f"{len(self.world.discord.interactions)} interactions"
            + (f"; late or unanswered: {', '.join(i.name for i in late)}" if late else ""),
        )
        self._check_deliveries(outcomes, by_id, rows)
        self._check_content(outcomes, by_id)
        self._check_budget(outcomes)
        self._check_cancel(outcomes, by_id)
        self._check_regenerate(outcomes, by_id)
        self._check_remix(outcomes, by_id)
        self._check_limits(slots)
        self._check_ledger(jobs, ledger, spend)
        unfinished = [f"#{j.id} {j.state.value}" for j in jobs if not j.is_final]
        self.check("every job finished", not unfinished, ", ".join(unfinished) or f"{len(jobs)} jobs, all final")

    def _check_deliveries(self, outcomes: list[Outcome], by_id: dict[int, Job], rows: list[JobRow]) -> None:
        expected = [o.job_id for o in outcomes if o.spec.expect is Expect.DELIVERED]
        expected += [o.regen_job_id for o in outcomes if o.spec.regenerate]
        expected += [o.extend_job_id for o in outcomes if o.spec.extend_seconds]
        expected += [o.remix_job_id for o in outcomes if o.spec.remix_prompt]
        missing = []
        for outcome in outcomes:
            if outcome.spec.expect is Expect.DELIVERED and outcome.job_id is None:
                missing.append(f"{outcome.spec.key}: no job")
            if outcome.spec.regenerate and outcome.regen_job_id is None:
                missing.append(f"{outcome.spec.key}: not regenerated")
            if outcome.spec.extend_seconds and outcome.extend_job_id is None:
                missing.append(f"{outcome.spec.key}: not extended")
            if outcome.spec.remix_prompt and outcome.remix_job_id is None:
                missing.append(f"{outcome.spec.key}: not remixed")
        videos = {row.job_id: row.video for row in rows if row.job_id is not None}
        for job_id in expected:
            if job_id is None:
                continue
            job = by_id.get(job_id)
            if job is None or job.state is not JobState.DELIVERED:
                missing.append(f"#{job_id} is {job.state.value if job else 'missing'}")
                continue
            name = videos.get(job_id)
            data = (self.videos_dir / name).read_bytes() if name else b""
            if data[4:8] != b"ftyp":
                missing.append(f"#{job_id}: no playable mp4 in its thread")
        delivered = [j for j in expected if j is not None and videos.get(j)]
        self.check(
            "every expected video delivered as an mp4 in its thread",
            not missing and len(delivered) == len(expected),
            f"{len(delivered)} of {len(expected)} delivered" + (f"; missing: {', '.join(missing)}" if missing else ""),
        )

    def _check_content(self, outcomes: list[Outcome], by_id: dict[int, Job]) -> None:
        for outcome in outcomes:
            if outcome.spec.expect is not Expect.CONTENT_REJECTED:
                continue
            job = by_id.get(outcome.job_id or 0)
            if job is None:
                self.check("content rejection explained in its thread", False, f"{outcome.spec.key}: no job")
                continue
            locale = guild_spec(outcome.spec.guild).locale
            reason = t(locale, "job.failed.content")
            explained = any(reason in m.content for m in self.bot_messages(job.thread_id))
            ok = (
                job.state is JobState.FAILED
                and job.error_key == "job.failed.content"
                and job.charge_state is ChargeState.RELEASED
                and explained
            )
            detail = f"#{job.id} {job.state.value} ({job.error_code}), {job.charge_state.value}"
            detail += ", explained in its thread" if explained else ", NOT explained in its thread"
            self.check("content rejection explained in its thread, not charged", ok, detail)

    def _check_budget(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.spec.expect is not Expect.OVER_BUDGET:
                continue
            prefix = MESSAGES[language(outcome.locale)]["quota.daily"].split("{", 1)[0]
            ok = outcome.job_id is None and outcome.reply is not None and outcome.reply.startswith(prefix)
            detail = f"{outcome.user_name} in {outcome.guild_name}: " + (
                "no job created; told privately" if ok else f"job {outcome.job_id}, reply {outcome.reply!r}"
            )
            self.check("over-budget request refused with an ephemeral message", ok, detail)

    def _check_cancel(self, outcomes: list[Outcome], by_id: dict[int, Job]) -> None:
        for outcome in outcomes:
            if outcome.spec.expect is not Expect.CANCELLED:
                continue
            job = by_id.get(outcome.job_id or 0)
            if job is None:
                self.check("queued job cancelled by its requester", False, f"{outcome.spec.key}: no job")
                continue
            expected = t(outcome.locale, "button.cancelled", job_id=job.id)
            ok = (
                outcome.cancel_pressed_in_state == JobState.QUEUED.value
                and job.state is JobState.CANCELED
                and job.task_id is None
                and job.charge_state is ChargeState.RELEASED
                and outcome.cancel_reply == expected
            )
            detail = (
                f"#{job.id} pressed while {outcome.cancel_pressed_in_state}; now {job.state.value}, "
                f"{'never sent to the provider' if job.task_id is None else 'was sent to the provider'}, "
                f"{job.charge_state.value}"
            )
            self.check("queued job cancelled by its requester, not charged", ok, detail)

    def _check_regenerate(self, outcomes: list[Outcome], by_id: dict[int, Job]) -> None:
        for outcome in outcomes:
            if not outcome.spec.regenerate:
                continue
            parent = by_id.get(outcome.job_id or 0)
            child = by_id.get(outcome.regen_job_id or 0)
            ok = (
                parent is not None
                and child is not None
                and child.parent_job_id == parent.id
                and child.request.prompt == parent.request.prompt
                and child.first_frame == parent.first_frame
                and child.state is JobState.DELIVERED
                and child.thread_id is not None
                and child.thread_id != parent.thread_id
            )
            detail = (
                f"#{parent.id if parent else '?'} -> #{child.id} {child.state.value}, "
                f"seed {child.request.seed}, own thread"
                if child is not None
                else "no regenerated job"
            )
            self.check("delivered video regenerated with its button", ok, detail)

    def _check_remix(self, outcomes: list[Outcome], by_id: dict[int, Job]) -> None:
        for outcome in outcomes:
            if not outcome.spec.remix_prompt:
                continue
            parent = by_id.get(outcome.job_id or 0)
            child = by_id.get(outcome.remix_job_id or 0)
            if parent is None or child is None:
                self.check("delivered video remixed with an edited prompt", False, f"{outcome.spec.key}: no remix")
                continue
            link = f"<#{child.thread_id}>"
            linked = any(f"#{child.id}" in m.content and link in m.content for m in self.bot_messages(parent.thread_id))
            ok = (
                child.parent_job_id == parent.id
                and child.request.prompt == outcome.spec.remix_prompt != parent.request.prompt
                and (child.first_frame, child.last_frame) == (parent.first_frame, parent.last_frame)
                and child.state is JobState.DELIVERED
                and child.thread_id not in (None, parent.thread_id)
                and linked
            )
            detail = (
                f"#{parent.id} -> #{child.id} {child.state.value} with the prompt “{child.request.prompt}”, same "
                f"frames, own thread"
                + (", linked from the old thread" if linked else ", NOT linked from the old thread")
            )
            self.check("delivered video remixed with an edited prompt (Remix button, modal, new thread)", ok, detail)

    async def _check_story(self, stories: list[StoryRow], by_id: dict[int, Job], ledger: list[LedgerEntry]) -> None:
        for row in stories:
            name = f"{row.segments}-segment story delivered as one joined mp4 in its thread"
            story = await self.afternoon.stories.get(row.story_id) if row.story_id is not None else None
            if story is None:
                self.check(name, False, f"no story ({row.state})")
                continue
            segments = [by_id[j] for j in row.segment_jobs]
            solo = {f"kf2v-{j.id}.mp4" for j in segments}
            posted_alone = [a.filename for m in self.world.discord.all_messages() for a in m.attachments
                            if a.filename in solo]  # fmt: skip
            ok = (
                story.state is StoryState.DELIVERED
                and len(segments) == row.segments
                and all(j.state is JobState.DELIVERED for j in segments)
                and row.posts == 1
                and row.video is not None
                and not posted_alone
                and row.frames is not None
                and row.frames == row.expected_frames
                and row.keyframes_at_seams
            )
            detail = (
                f"story #{story.id} {story.state.value}: segments {', '.join(f'#{j.id}' for j in segments)}; "
                f"{row.posts} joined video(s) posted, {row.frames} frames (expected {row.expected_frames}), "
                f"{row.video_s} s; seams at frames {row.seams}: "
                + ("each keyframe where it belongs" if row.keyframes_at_seams else "keyframes NOT at the seams")
                + (f"; posted on their own: {', '.join(posted_alone)}" if posted_alone else "")
            )
            self.check(name, ok, detail)
            ids = {j.id for j in segments}
            reserved = sum(e.amount for e in ledger if e.job_id in ids and e.kind == "reserve")
            closed = sum(e.amount for e in ledger if e.job_id in ids and e.kind in ("settle", "release"))
            settled = all(j.charge_state is ChargeState.SETTLED for j in segments)
            self.check(
                "story reserved whole up front, each segment settled on delivery",
                reserved == story.cost_reserved == closed and settled,
                f"reserved ¥{format_cny(story.cost_reserved)} for the story; segment entries reserve "
                f"¥{format_cny(reserved)}, settle/release ¥{format_cny(closed)}; "
                + ("all settled" if settled else "NOT all settled"),
            )

    def _check_limits(self, slots: dict[str, Any]) -> None:
        violations = slots["violations"]
        ok = (
            not violations
            and slots["peak_in_flight"] <= slots["capacity"]
            and slots["throttled"] == 0
            and slots["truncated_prompts"] == 0
        )
        self.check(
            "provider limits never exceeded",
            ok,
            f"peak {slots['peak_in_flight']} in flight (limit {slots['capacity']}), "
            f"{len(violations)} violation(s), {slots['throttled']} throttled, "
            f"{slots['truncated_prompts']} truncated prompt(s)",
        )

    def _check_ledger(self, jobs: list[Job], ledger: list[LedgerEntry], spend: list[dict[str, Any]]) -> None:
        problems = []
        for job in jobs:
            entries = [e for e in ledger if e.job_id == job.id]
            kinds = sorted(e.kind for e in entries)
            amount = {e.kind: e.amount for e in entries}
            if amount.get("reserve") != job.cost_reserved:
                problems.append(f"#{job.id} reserve")
            if job.charge_state is ChargeState.SETTLED:
                if kinds != ["reserve", "settle"] or amount["settle"] != job.cost_settled:
                    problems.append(f"#{job.id} settle {kinds}")
            elif job.charge_state is ChargeState.RELEASED:
                if kinds != ["release", "reserve"] or amount["release"] != job.cost_reserved:
                    problems.append(f"#{job.id} release {kinds}")
            else:
                problems.append(f"#{job.id} still reserved")
        stats = self.world.dashscope.stats()
        succeeded = {task["task_id"] for task in stats["tasks"] if task["status"] == "SUCCEEDED"}
        settled = {job.task_id for job in jobs if job.charge_state is ChargeState.SETTLED}
        if succeeded != settled:
            problems.append(f"provider made {len(succeeded)} videos, the ledger charged {len(settled)}")
        problems += [f"{g['guild']} over its budget" for g in spend if not g["within_budget"]]
        charged = sum(job.cost_settled for job in jobs if job.charge_state is ChargeState.SETTLED)
        self.check(
            "ledger balanced: one reserve per job, then one settle or release; charges match the provider",
            not problems,
            f"{len(ledger)} entries, ¥{format_cny(charged)} charged for {len(settled)} videos"
            + (f"; problems: {', '.join(problems)}" if problems else ""),
        )


# --- output ------------------------------------------------------------------------------------------
def _dur(seconds: float | None, scale: float) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s ({provider_time(seconds, scale)})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    scale = report.time_scale
    lines = [
        "# kf2v-bot demo report",
        "",
        f"- Run: {report.started_at}, {report.wall_s:.1f} s of wall time; result: "
        f"**{'PASS' if report.passed else 'FAIL'}**",
        f"- Provider clock: x{scale:g} (1 s here ≈ {provider_time(1, scale)} at the provider). Durations in brackets "
        "are what they correspond to at real provider speed.",
        f"- Videos: `{report.videos_dir}` ({sum(1 for j in report.jobs if j.video)} job videos and "
        f"{sum(1 for s in report.stories if s.video)} joined story video(s), as posted in the threads)",
        *([f"- What the members saw, thread by thread: `{report.transcript}`"] if report.transcript else []),
        "",
        "## Jobs",
        "",
        "wait = accepted → submitted to the provider; run = submitted → finished at the provider.",
        "",
        "| job | guild | user | what | tier | wait | run | outcome | cost | video |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report.jobs:
        lines.append(
            "| "
            + " | ".join(
                _cell(c)
                for c in (
                    f"#{row.job_id}" if row.job_id is not None else "—",
                    row.guild,
                    row.user,
                    row.what,
                    row.resolution,
                    _dur(row.wait_s, scale),
                    _dur(row.run_s, scale),
                    row.outcome,
                    row.cost,
                    f"`{row.video}`" if row.video else "",
                )
            )
            + " |"
        )
    s = report.slots
    lines += [
        "",
        f"## Provider slots ({s['model']}, account {s['account']}, {s['capacity']} at a time)",
        "",
        f"- {s['tasks']} tasks; busy for {s['busy_s']:.1f} s ({s['busy_provider_time']} at provider speed); "
        f"slot utilisation {s['utilisation'] * 100:.0f}% (running {s['running_share'] * 100:.0f}%, the rest waiting "
        "in the provider's queue)",
        f"- peak {s['peak_in_flight']} in flight (limit {s['capacity']}); {len(s['violations'])} limit violation(s); "
        f"{s['throttled']} throttled; {s['cancels_at_provider']} cancelled at the provider",
        "",
        "```",
        *s["timeline"],
        "```",
        "(░ waiting at the provider, █ running, · free)",
        "",
        "## Spend per guild (today)",
        "",
        "| guild | daily budget | spent | left | videos charged | ledger: reserved / settled / released "
        "| within budget |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for g in report.spend:
        budget = f"¥{g['daily_budget']}" + (" (set by the owner)" if g["budget_set_by_owner"] else " (default)")
        lines.append(
            f"| {_cell(g['guild'])} | {budget} | ¥{g['spent_today']} | ¥{g['left_today']} | {g['videos_charged']} | "
            f"¥{g['ledger_reserved']} / ¥{g['ledger_settled']} / ¥{g['ledger_released']} | "
            f"{'yes' if g['within_budget'] else 'NO'} |"
        )
    for story in report.stories:
        lines += [
            "",
            f"## Story #{story.story_id} ({story.guild}, {story.user}, /kf2v-story)",
            "",
            f"- {story.segments} segments ({', '.join(f'#{j}' for j in story.segment_jobs)}), one prompt each: "
            + " | ".join(_cell(p) for p in story.prompts),
            f"- {story.state}; {story.cost}; joined video `{story.video}`: {story.frames} frames "
            f"(expected {story.expected_frames}), {story.video_s} s; seams at frames {story.seams}, "
            + ("the keyframes where they belong" if story.keyframes_at_seams else "keyframes NOT at the seams"),
        ]
    lines += ["", "## What users were told", ""]
    for action in report.admin:
        lines.append(f"- owner in {action['guild']}, `{action['command']}` (ephemeral): {action['reply']}")
    for item in report.seen:
        lines.append(f"- {item.who} in {item.where}, {item.kind}: {item.text}")
    lines += ["", "## Checks", ""]
    for c in report.checks:
        lines.append(f"- [{'x' if c.ok else ' '}] {c.name}: {c.detail}")
    lines.append("")
    return "\n".join(lines)


def write_report(report: Report, output: Path) -> tuple[Path, Path]:
    md = output / "report.md"
    js = output / "report.json"
    md.write_text(render_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return md, js
