"""The emulator driven by Alibaba's official `dashscope` SDK: a second client, not ours, that must work too.

The SDK is synchronous (requests): each call runs in a thread while the emulator serves on this event loop,
over 127.0.0.1 only. `dashscope.base_http_api_url` is where the SDK sends every call.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import dashscope
import pytest
from dashscope import VideoSynthesis
from PIL import Image

from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig

KEY = "sk-sdk-test-key"
MODEL = "wan2.2-kf2v-flash"
UTC8 = timezone(timedelta(hours=8))
T = TypeVar("T")
# VideoSynthesis.list exists at run time (it is BaseAsyncApi's task list); the SDK's type stub leaves it out.
list_tasks: Callable[..., Any] = VideoSynthesis.list  # type: ignore[attr-defined]


def data_uri(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


FIRST, LAST = data_uri((200, 40, 40)), data_uri((40, 40, 200))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DashScopeEmulator]:
    config = EmulatorConfig(pending_s=(0.3, 0.3), running_s=(0.3, 0.3), submit_rps=100, seed=11)
    async with DashScopeEmulator(config) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url)
        yield emu


async def sdk(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, api_key=KEY, **kwargs)


async def submit(prompt: str = "a card flips") -> Any:
    return await sdk(
        VideoSynthesis.async_call,
        model=MODEL,
        prompt=prompt,
        first_frame_url=FIRST,
        last_frame_url=LAST,
        resolution="480P",
        prompt_extend=True,
    )


async def test_async_call_fetch_and_wait_for_a_kf2v_task(emulator: DashScopeEmulator) -> None:
    created = await submit()
    assert created.status_code == 200, created
    task_id = created.output.task_id
    assert created.output.task_status == "PENDING" and task_id
    assert emulator.stats()["calls"]["create"] == 1  # the SDK routes kf2v models to image2video

    fetched = await sdk(VideoSynthesis.fetch, task_id)
    assert fetched.status_code == 200 and fetched.output.task_status in ("PENDING", "RUNNING")

    done = await sdk(VideoSynthesis.wait, task_id)
    assert done.status_code == 200 and done.output.task_status == "SUCCEEDED"
    assert done.output.video_url.startswith(emulator.base_url.removesuffix("/api/v1") + "/_sandbox/videos/")
    assert done.output.orig_prompt == "a card flips"
    assert done.usage.video_count == 1 and done.usage.video_duration == 5
    [task] = emulator.stats()["tasks"]
    assert task["task_id"] == task_id and task["status"] == "SUCCEEDED" and task["polls"] >= 2


async def test_cancel_while_pending_then_too_late(emulator: DashScopeEmulator) -> None:
    task_id = (await submit()).output.task_id
    canceled = await sdk(VideoSynthesis.cancel, task_id)
    assert canceled.status_code == 200
    assert (await sdk(VideoSynthesis.fetch, task_id)).output.task_status == "CANCELED"
    again = await sdk(VideoSynthesis.cancel, task_id)
    assert (again.status_code, again.code) == (400, "UnsupportedOperation")
    assert emulator.stats()["cancels"] == 1


async def test_list_in_the_sdks_time_format_and_its_24_hour_limit(emulator: DashScopeEmulator) -> None:
    task_id = (await submit()).output.task_id
    now = datetime.now(UTC8)  # the SDK's example "20230420000000" is Beijing time
    fmt = "%Y%m%d%H%M%S"
    start, end = (now - timedelta(hours=1)).strftime(fmt), (now + timedelta(hours=1)).strftime(fmt)
    page = await sdk(list_tasks, start_time=start, end_time=end, model_name=MODEL)
    assert page.status_code == 200
    [row] = page.output["data"]
    assert row["task_id"] == task_id and row["api_key_id"] == emulator.api_key_id(KEY)
    assert row["region"] == "cn-beijing" and row["caller_uid"]
    mine = await sdk(list_tasks, api_key_id=emulator.api_key_id(KEY), region="cn-beijing")
    assert [r["task_id"] for r in mine.output["data"]] == [task_id]

    too_long = await sdk(list_tasks, start_time=start, end_time=(now + timedelta(hours=24)).strftime(fmt))
    assert (too_long.status_code, too_long.code) == (400, "InvalidParameter")
    assert emulator.stats()["list_ranges_refused"] == 1


async def test_the_sdk_sees_429_past_the_limit_and_200_when_held(emulator: DashScopeEmulator) -> None:
    emulator.update(pending_s=(5.0, 5.0))
    assert [(await submit()).status_code for _ in range(2)] == [200, 200]
    refused = await submit()
    assert (refused.status_code, refused.code) == (429, "Throttling.RateQuota")
    emulator.update(over_limit="hold")
    held = await submit()
    assert held.status_code == 200 and held.output.task_status == "PENDING"
    assert emulator.stats()["held"] == 1


async def test_a_neighbours_task_is_fetchable_with_the_sdk(emulator: DashScopeEmulator) -> None:
    await submit()
    emulator.update(neighbour_rate=50)
    async with asyncio.timeout(5):
        while True:
            if emulator.stats()["neighbour"]["created"] >= 1:
                break
            await asyncio.sleep(0.02)
    emulator.update(neighbour_rate=0)
    [theirs] = [t for t in emulator.stats()["tasks"] if t["neighbour"]]
    done = await sdk(VideoSynthesis.wait, theirs["task_id"])
    assert done.output.task_status == "SUCCEEDED" and done.output.orig_prompt.startswith("the neighbour's own")


async def test_the_sdk_uploads_a_local_frame_and_makes_a_wan27_video(
    emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    """SDK >= 1.25.16 speaks wan2.7: a file:// medium goes through getPolicy + the upload host, then the create
    with X-DashScope-OssResourceResolve (the emulator refuses oss:// without it)."""
    frame = tmp_path / "first.png"
    Image.new("RGB", (320, 240), (30, 160, 30)).save(frame)
    answer = await sdk(
        VideoSynthesis.call,
        model="wan2.7-i2v",
        media=[{"type": "first_frame", "url": frame.as_uri()}],
        resolution="720P",
        duration=2,
    )
    assert answer.status_code == 200 and answer.output.task_status == "SUCCEEDED"
    assert answer.usage["duration"] == 2 and answer.usage["SR"] == 720
    stats = emulator.stats()
    assert stats["calls"]["upload_policy"] == 1 and stats["uploads_stored"] == 1
    assert stats["oss_header_missing"] == 0 and stats["submissions_accepted"] == 1
