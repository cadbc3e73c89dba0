"""`kf2v-bot demo` (what `make demo` runs), in-process at a fast provider clock: it passes, its report says
what happened, and the videos it names are real, playable mp4s showing the frames that were sent."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageStat

from bot.__main__ import main
from sandbox.demo import run_demo
from sandbox.demo.report import analyse_story_video
from sandbox.demo.scenes import SCENES, SIZE, frame_pair, keyframes
from sandbox.demo.script import REQUESTS, STORY, Expect
from sandbox.demo.world import SANDBOX_API_KEY, demo_settings

FAST = 600.0  # ten minutes of provider time per second: the afternoon takes about ten seconds


def first_and_last_frames(path: Path) -> tuple[Image.Image, Image.Image]:
    with av.open(str(path)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]  # type: ignore[no-untyped-call]
    assert len(frames) > 30
    return frames[0], frames[-1]


def brightness(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).mean[0])


@pytest.mark.timeout(90)
async def test_the_demo_plays_the_afternoon_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    printed = io.StringIO()
    code = await run_demo(time_scale=FAST, output=out, stream=printed, tty=False)
    text = printed.getvalue()
    assert code == 0, text
    assert "PASS" in text and "Traceback" not in text
    assert "slots:" in text  # the compact live view for a non-terminal

    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert report["passed"] is True
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    assert not (out / "demo.log").read_text(encoding="utf-8").count(" ERROR ")
    assert not [p for p in out.iterdir() if p.name.startswith(".data-")]  # the throw-away data dir is gone

    jobs = report["jobs"]
    outcomes = [job["outcome"] for job in jobs]
    extended = sum(1 for r in REQUESTS if r.extend_seconds)
    remixed = sum(1 for r in REQUESTS if r.remix_prompt)
    expected_deliveries = (
        sum(1 for r in REQUESTS if r.expect is Expect.DELIVERED)
        + sum(r.regenerate for r in REQUESTS)
        + extended
        + remixed
    )
    # Every request, plus the regenerated, extended and remixed ones, plus the story's segment jobs.
    assert len(jobs) == len(REQUESTS) + 1 + extended + remixed + STORY.segments
    assert sum(o.startswith("delivered") for o in outcomes) == expected_deliveries + STORY.segments
    assert sum(o.startswith("delivered (segment ") for o in outcomes) == STORY.segments == 3
    assert sum("content check" in o for o in outcomes) == 1
    assert outcomes.count("cancelled while queued") == 1
    assert outcomes.count("refused: over the guild's budget") == 1
    assert sum("regenerated from #" in o for o in outcomes) == 1
    # Remix (issue 13): the same frames with the edited prompt, in a new thread.
    remix = next(job for job in jobs if "remixed from #" in job["outcome"])
    parent = next(job for job in jobs if job["job_id"] == remix["parent_job_id"])
    assert remix["video"] and parent["video"] and remix["video"].endswith("-remixed.mp4")
    assert "remixed with an edited prompt" in markdown
    # wan2.7-i2v (issue 12): 8 seconds with sound, then an Extend that posts the whole 11-second video.
    assert sum(o == "delivered (8 s with sound)" for o in outcomes) == 1
    assert sum("11 s with sound, extended from #" in o for o in outcomes) == extended == 1
    for job in jobs:
        assert job["guild"] and job["user"]
        if job["job_id"] is not None:
            assert f"| #{job['job_id']} | {job['guild']} | {job['user']} |" in markdown
        if job["outcome"].startswith("delivered"):
            assert job["wait_s"] is not None and job["run_s"] is not None and job["run_s"] > 0
    assert "over-budget request refused" in markdown and "daily video budget" in markdown
    assert {g["guild"] for g in report["spend"]} == {"Aurora Studio", "晨光工作室", "Pixel Pals"}
    assert report["slots"]["peak_in_flight"] <= report["slots"]["capacity"] == 2
    assert report["slots"]["violations"] == []

    videos = Path(report["videos_dir"])
    assert videos == out / "videos" and f"`{videos}`" in markdown
    files = sorted(videos.glob("*.mp4"))
    [story] = report["stories"]
    assert [f.name for f in files] == sorted([job["video"] for job in jobs if job["video"]] + [story["video"]])
    assert len(files) == expected_deliveries + 1  # each job's video, and the story's one joined video
    for path in files:
        data = path.read_bytes()
        assert data[4:8] == b"ftyp"
        with av.open(str(path)) as container:
            frame = next(iter(container.decode(video=0)))
            assert frame.width >= 480 and frame.height >= 270
    for name, seconds in (("lantern-with-sound.mp4", 8), ("lantern-with-sound-extended.mp4", 11)):
        with av.open(str(next(p for p in files if p.name.endswith(name)))) as container:
            assert {s.type for s in container.streams} >= {"audio", "video"}
            assert container.duration is not None and abs(container.duration / 1e6 - seconds) < 0.3
    # The story (issue 13): one joined mp4 of three five-second segments, its keyframes at the start, the two
    # seams and the end, as the frames sent were drawn.
    assert story["state"] == "delivered" and story["posts"] == 1 and len(story["segment_jobs"]) == 3
    assert f"## Story #{story['story_id']}" in markdown
    sent = keyframes(STORY.scene, STORY.frames)
    positions = [0, *story["seams"], story["expected_frames"] - 1]
    joined = analyse_story_video((videos / story["video"]).read_bytes(), positions, sent)
    assert joined.frames == story["expected_frames"] and joined.keyframes_match
    assert abs(joined.seconds - 3 * 5) < 0.3
    # The sunrise really rises: its video starts in the dark and ends in daylight, like the frames sent.
    sunrise = next(p for p in files if "sunrise-over-the-sea" in p.name and "regenerated" not in p.name)
    first, last = first_and_last_frames(sunrise)
    assert brightness(first) + 40 < brightness(last)
    check_transcript(out, report)


def check_transcript(out: Path, report: dict[str, Any]) -> None:
    """OUTPUT/transcript: an index linking a page per thread; each delivered job's page names the job and plays
    the very mp4 the report saved for it, with a still of it as the poster."""
    folder = out / "transcript"
    assert report["transcript"] == str(folder / "index.html")
    index = (folder / "index.html").read_text(encoding="utf-8")
    pages = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("thread-*.html")}
    assert pages and all(f'href="{name}"' in index for name in pages)
    jobs = [job for job in report["jobs"] if job["job_id"] is not None]
    # Each job has its own thread except the story's segments (one thread for the story) and an Extend (posted
    # in the thread of the video it continues).
    own_thread = [job for job in jobs if "segment " not in job["outcome"] and "extended from" not in job["outcome"]]
    assert len(pages) == len(own_thread) + 1
    final = {"delivered": ("Done", "已完成"), "failed": ("Failed", "失败"), "cancelled": ("Cancelled", "已取消")}
    for job in own_thread:  # its status message (视频 #N · … in the Chinese guild), in its final state
        status = re.compile(rf'<div class="title">(?:Video|视频) #{job["job_id"]} · ([^<]*)</div>')
        shown = [found.group(1) for page in pages.values() if (found := status.search(page))]
        assert len(shown) == 1 and shown[0] in final[job["outcome"].split()[0].rstrip(":")], (job, shown)
    [story] = report["stories"]
    posted = [(job["video"], f"#{job['job_id']}") for job in jobs if job["video"]]
    for name, number in [*posted, (story["video"], f"#{story['story_id']}")]:
        holders = [page for page in pages.values() if f'src="../videos/{name}"' in page]
        assert len(holders) == 1, name
        assert number in holders[0]
        poster = re.search(rf'poster="(files/poster-\d+\.png)" src="../videos/{re.escape(name)}"', holders[0])
        assert poster is not None, name
        with Image.open(folder / poster.group(1)) as still:
            assert still.width <= 640 and still.height >= 180
        assert (out / "videos" / name).is_file()
    # Buttons as labels; user text escaped (the tree's apostrophe is an entity).
    assert any('class="button danger">Delete<' in page for page in pages.values())
    assert "The tree&#x27;s leaves" in index and "The tree's leaves" not in index


def test_bad_time_scale_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--time-scale", "0", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--time-scale" in err and "Traceback" not in err


def test_demo_settings_ignore_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real token and key (in the environment or .env) never reach the demo."""
    monkeypatch.setenv("DISCORD_TOKEN", "real-discord-token")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-real-key-1234")
    monkeypatch.setenv("KF2V_DASHSCOPE_EXTRA_API_KEYS", "sk-real-extra-5678")
    monkeypatch.setenv("KF2V_DASHSCOPE_REGION", "singapore")
    monkeypatch.setenv("KF2V_HTTP_PORT", "9100")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DASHSCOPE_API_KEY=sk-from-dotenv\n", encoding="utf-8")
    settings = demo_settings(
        tmp_path / "data",
        discord_token="emulator-token",
        discord_api="http://127.0.0.1:1/api/v10",
        discord_gateway="ws://127.0.0.1:1/",
        dashscope_url="http://127.0.0.1:2/api/v1",
        time_scale=60,
    )
    assert [k.get_secret_value() for k in settings.api_keys()] == [SANDBOX_API_KEY]
    assert settings.discord_token is not None and settings.discord_token.get_secret_value() == "emulator-token"
    assert settings.dashscope_region is None and settings.http_port == 0
    assert settings.poll_min_interval == pytest.approx(1 / 60) and settings.poll_max_interval == pytest.approx(0.5)


def test_every_scene_draws_two_different_frames_big_enough() -> None:
    for name in SCENES:
        first, last = frame_pair(name)
        with Image.open(io.BytesIO(first)) as a, Image.open(io.BytesIO(last)) as b:
            assert a.size == b.size == SIZE and min(SIZE) >= 240
            assert a.tobytes() != b.tobytes(), name
    assert {r.scene for r in REQUESTS} | {STORY.scene} <= set(SCENES)
    story = [Image.open(io.BytesIO(data)) for data in keyframes(STORY.scene, STORY.frames)]
    assert len(story) == STORY.frames == 4 and len({image.tobytes() for image in story}) == 4
