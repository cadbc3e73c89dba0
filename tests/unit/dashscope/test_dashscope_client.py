"""The DashScope client against the emulator, over real HTTP on 127.0.0.1: every call, every error class."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from bot.catalog import Catalog, load_catalog
from bot.dashscope.client import LIST_TZ, LIST_WINDOW_MAX, DashScopeClient, account_fingerprint, format_list_time
from bot.dashscope.errors import (
    AccountProblemError,
    ContentRejectedError,
    DashScopeError,
    InvalidRequestError,
    MalformedAnswerError,
    ProviderUnavailableError,
    SubmissionOutcomeUnknownError,
    TaskListTooLongError,
    ThrottledError,
    VideoTooLargeError,
    VideoUnavailableError,
    classify,
)
from bot.dashscope.models import (
    CreateTaskRequest,
    RequestValidationError,
    TaskInput,
    TaskParameters,
    TaskResult,
    TaskStatus,
)
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig, FaultConfig

KEY = "sk-test-5f1c0ffee0ddba11"
PENDING_S = 0.3
RUNNING_S = 0.3


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


RED_URI = data_uri(png((230, 20, 20)))
BLUE_URI = data_uri(png((20, 20, 230)))


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(pending_s=(PENDING_S, PENDING_S), running_s=(RUNNING_S, RUNNING_S)))
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(emulator: DashScopeEmulator, session: aiohttp.ClientSession) -> DashScopeClient:
    return DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(KEY), timeout=5)


def flash_request(catalog: Catalog, prompt: str = "a red card turns blue", **overrides: Any) -> CreateTaskRequest:
    args: dict[str, Any] = {
        "model_key": "wan2.2-kf2v-flash",
        "resolution": "480P",
        "prompt": prompt,
        "negative_prompt": None,
        "first_frame_uri": RED_URI,
        "last_frame_uri": BLUE_URI,
    }
    args.update(overrides)
    return CreateTaskRequest.build(catalog, "beijing", **args)


async def wait_for(client: DashScopeClient, task_id: str, *, within: float = 5.0) -> TaskResult:
    async with asyncio.timeout(within):
        while True:
            result = await client.get_task(task_id)
            if result.status.is_final:
                return result
            await asyncio.sleep(0.05)


def no_temp_files(folder: Path) -> bool:
    return not any(p.name.endswith(".part") for p in folder.iterdir()) if folder.exists() else True


# --- the happy path ------------------------------------------------------------------------------------


async def test_account_id_is_a_fingerprint_never_the_key(client: DashScopeClient) -> None:
    assert client.account_id == account_fingerprint(KEY)
    assert client.account_id.startswith("acct-") and len(client.account_id) == 13
    assert KEY not in client.account_id and KEY not in repr(client)


async def test_lifecycle_pending_running_succeeded_then_download(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    created = await client.create_task(flash_request(catalog))
    assert created.status is TaskStatus.PENDING and created.task_id and created.request_id

    first = await client.get_task(created.task_id)
    assert first.status is TaskStatus.PENDING and first.submit_time and first.video_url is None
    assert first.scheduled_at is None  # not started: nothing scheduled yet
    # Every answer on the way is read in order, PENDING -> RUNNING -> SUCCEEDED, and a RUNNING one already
    # says when the task started (polled every 20 ms: the 0.3 s run shows as RUNNING at least once).
    seen = [first]
    while not seen[-1].status.is_final:
        await asyncio.sleep(0.02)
        seen.append(await client.get_task(created.task_id))
    order = [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
    statuses = [r.status for r in seen]
    assert statuses == sorted(statuses, key=order.index) and TaskStatus.RUNNING in statuses
    for running in (r for r in seen if r.status is TaskStatus.RUNNING):
        assert running.submitted_at == first.submitted_at and running.scheduled_at is not None
        assert running.ended_at is None

    done = seen[-1]
    assert done.status is TaskStatus.SUCCEEDED and done.status.is_final
    assert done.video_url is not None and "Expires=" in done.video_url and "Signature=" in done.video_url
    assert done.orig_prompt == "a red card turns blue"
    assert done.actual_prompt is not None and done.actual_prompt.startswith(done.orig_prompt)
    assert len(done.actual_prompt) > len(done.orig_prompt)  # prompt_extend added description
    assert done.usage is not None and done.usage.SR == 480 and done.usage.video_count == 1
    assert done.billed_seconds == 5
    assert done.submitted_at is not None and done.submitted_at.utcoffset() == timedelta(hours=8)
    # The provider's own times, as it reported them: ordered, and the durations read from them are those it
    # gave the task (its timeline), whatever our event loop's delays were.
    assert done.scheduled_at is not None and done.ended_at is not None
    assert done.submitted_at <= done.scheduled_at <= done.ended_at
    assert done.scheduled_at == next(r.scheduled_at for r in seen if r.status is TaskStatus.RUNNING)
    assert_durations_match_the_provider(done, emulator)
    assert "Signature" not in repr(done)  # the signed query stays out of logs

    dest = tmp_path / "videos" / "job-1.mp4"
    size = await client.download_video(done.video_url, dest, max_bytes=50_000_000)
    data = dest.read_bytes()
    assert size == len(data) > 10_000
    assert data[4:8] == b"ftyp"
    assert no_temp_files(dest.parent)
    stats = emulator.stats()
    assert stats["calls"]["create"] == 1 and stats["calls"]["video"] == 1
    assert stats["tasks"][0]["status"] == "SUCCEEDED"
    assert stats["tasks"][0]["key"] == client.account_id  # client logs and emulator stats name the same account


def assert_durations_match_the_provider(done: TaskResult, emulator: DashScopeEmulator) -> None:
    """queued/running seconds are differences of the provider's millisecond timestamps: equal, to that
    rounding, to the durations in the emulator's own record of the task."""
    [task] = [t for t in emulator.stats()["tasks"] if t["task_id"] == done.task_id]
    assert done.queued_seconds is not None and done.running_seconds is not None
    assert done.queued_seconds == pytest.approx(task["started"] - task["created"], abs=0.003)
    assert done.running_seconds == pytest.approx(task["finished"] - task["started"], abs=0.003)


async def test_time_scale_compresses_realistic_durations(catalog: Catalog, session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig.realistic(time_scale=1000, seed=7)
    async with DashScopeEmulator(config) as emu:
        client = DashScopeClient(session, base_url=emu.base_url, api_key=SecretStr(KEY))
        created = await client.create_task(flash_request(catalog))
        done = await wait_for(client, created.task_id, within=30)
        assert done.status is TaskStatus.SUCCEEDED
        assert_durations_match_the_provider(done, emu)
    # The provider's durations (minutes) divided by time_scale, to the millisecond its timestamps carry.
    assert done.queued_seconds is not None and done.running_seconds is not None
    (queued_lo, queued_hi), (run_lo, run_hi) = config.pending_s, config.running_s
    assert queued_lo / 1000 - 0.001 <= done.queued_seconds <= queued_hi / 1000 + 0.001
    assert run_lo / 1000 - 0.001 <= done.running_seconds <= run_hi / 1000 + 0.001


async def test_failed_task_is_a_result_with_code_and_no_usage(client: DashScopeClient, catalog: Catalog) -> None:
    created = await client.create_task(flash_request(catalog, prompt="this one has FAIL_CONTENT in it"))
    done = await wait_for(client, created.task_id)
    assert done.status is TaskStatus.FAILED
    assert done.code == "DataInspectionFailed" and done.message
    assert done.usage is None and done.billed_seconds is None and done.video_url is None
    error = done.error()
    assert isinstance(error, ContentRejectedError) and not error.retryable


async def test_unknown_task_id_is_unknown_and_final(client: DashScopeClient) -> None:
    result = await client.get_task("00000000-0000-0000-0000-000000000000")
    assert result.status is TaskStatus.UNKNOWN and result.status.is_final
    assert result.error() is None


async def test_cancel_works_while_pending_and_is_refused_once_running(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    pending = await client.create_task(flash_request(catalog))
    await client.cancel_task(pending.task_id)
    canceled = await client.get_task(pending.task_id)
    assert canceled.status is TaskStatus.CANCELED and canceled.status.is_final

    running = await client.create_task(flash_request(catalog))
    await asyncio.sleep(PENDING_S + 0.05)
    with pytest.raises(InvalidRequestError) as info:
        await client.cancel_task(running.task_id)
    assert info.value.http_status == 400 and info.value.code == "UnsupportedOperation"
    assert emulator.stats()["cancels"] == 1


async def test_list_tasks_pages_and_filters(client: DashScopeClient, catalog: Catalog) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    ids = []
    for index in range(3):
        if index:
            await asyncio.sleep(PENDING_S + RUNNING_S + 0.05)  # stay within 2 in flight and 2 submissions/s
        ids.append((await client.create_task(flash_request(catalog))).task_id)
    await client.cancel_task(ids[-1])  # still PENDING
    until = datetime.now(UTC)

    page = await client.list_tasks(start=since, end=until, page_size=2)
    assert page.total == 3 and page.total_page == 2 and page.page_no == 1 and page.page_size == 2
    assert [t.task_id for t in page.data] == [ids[2], ids[1]]  # newest first
    second = await client.list_tasks(start=since, end=until, page_no=2, page_size=2)
    assert [t.task_id for t in second.data] == [ids[0]]
    row = second.data[0]
    assert row.model_name == "wan2.2-kf2v-flash" and row.request_id
    assert row.created_at is not None and abs(row.created_at - since) < timedelta(minutes=2)

    canceled = await client.list_tasks(start=since, end=until, status=TaskStatus.CANCELED)
    assert [t.task_id for t in canceled.data] == [ids[2]]
    other_model = await client.list_tasks(start=since, end=until, model_name="wanx2.1-kf2v-plus")
    assert other_model.total == 0 and other_model.data == []
    before = await client.list_tasks(start=since - timedelta(hours=2), end=since)
    assert before.total == 0


def test_list_time_format_is_the_sdk_one_in_provider_time() -> None:
    moment = datetime(2025, 2, 12, 3, 3, 30, 500_000, tzinfo=UTC)
    assert format_list_time(moment) == "20250212110330"
    assert format_list_time(moment, round_up=True) == "20250212110331"
    with pytest.raises(ValueError, match="aware"):
        format_list_time(datetime(2025, 1, 1))  # naive: refused


# --- downloads -----------------------------------------------------------------------------------------


async def test_download_refuses_oversize_and_expired_links_leaving_nothing(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    done = await wait_for(client, (await client.create_task(flash_request(catalog))).task_id)
    assert done.video_url is not None
    dest = tmp_path / "v.mp4"

    with pytest.raises(VideoTooLargeError):
        await client.download_video(done.video_url, dest, max_bytes=1000)
    assert not dest.exists() and no_temp_files(tmp_path)

    tampered = done.video_url.replace("Signature=", "Signature=x")
    with pytest.raises(VideoUnavailableError) as info:
        await client.download_video(tampered, dest, max_bytes=50_000_000)
    assert info.value.http_status == 403 and info.value.code == "SignatureDoesNotMatch"
    assert "Signature=" not in str(info.value)

    emulator.update(faults=FaultConfig(drop_rate=1.0, routes=frozenset({"video"})))
    with pytest.raises(ProviderUnavailableError):
        await client.download_video(done.video_url, dest, max_bytes=50_000_000)
    assert not dest.exists() and no_temp_files(tmp_path)
    assert emulator.stats()["faults"]["drop"] == 1


# --- every error class ---------------------------------------------------------------------------------


async def test_wrong_key_is_an_account_problem_and_never_shows_the_key(
    catalog: Catalog, session: aiohttp.ClientSession
) -> None:
    async with DashScopeEmulator(EmulatorConfig(api_key="sk-the-right-one")) as emu:
        client = DashScopeClient(session, base_url=emu.base_url, api_key=SecretStr(KEY))
        with pytest.raises(AccountProblemError) as info:
            await client.create_task(flash_request(catalog))
        with pytest.raises(AccountProblemError):
            await client.get_task("x")
    error = info.value
    assert error.http_status == 401 and error.code == "InvalidApiKey" and not error.retryable
    assert KEY not in str(error) and KEY not in repr(error)
    assert str(error).startswith("AccountProblemError http=401 code=InvalidApiKey request_id=")


async def test_provider_side_validation_is_an_invalid_request(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    # Bypass `build` to see the provider refuse: the plus model has no 1080P.
    bad = CreateTaskRequest(
        model="wanx2.1-kf2v-plus",
        input=TaskInput(first_frame_url=RED_URI, last_frame_url=BLUE_URI, prompt="x"),
        parameters=TaskParameters(resolution="1080P"),
    )
    with pytest.raises(InvalidRequestError) as info:
        await client.create_task(bad)
    assert info.value.code == "InvalidParameter" and info.value.http_status == 400

    tiny = flash_request(catalog, first_frame_uri=data_uri(png((1, 2, 3), (200, 200))))
    with pytest.raises(InvalidRequestError) as info:
        await client.create_task(tiny)
    assert info.value.code == "InvalidFile.Resolution"
    assert emulator.stats()["submissions_accepted"] == 0


async def test_reject_word_is_content_rejected(client: DashScopeClient, catalog: Catalog) -> None:
    with pytest.raises(ContentRejectedError) as info:
        await client.create_task(flash_request(catalog, prompt="REJECT_CONTENT please"))
    assert info.value.code == "DataInspectionFailed" and info.value.http_status == 400


async def test_throttling_fault_is_retryable(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    emulator.update(throttle_rate=1.0)
    with pytest.raises(ThrottledError) as info:
        await client.create_task(flash_request(catalog))
    assert info.value.retryable and info.value.http_status == 429
    assert emulator.stats()["throttled"] == 0  # a fault, not a limit violation


async def test_server_errors_are_provider_unavailable(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    emulator.update(error_rate=1.0)
    seen = set()
    for _ in range(8):
        with pytest.raises(ProviderUnavailableError) as info:
            await client.get_task("any")
        seen.add((info.value.http_status, info.value.code))
        assert info.value.retryable
    assert seen <= {(500, "InternalError"), (503, "ModelServingError")} and seen
    with pytest.raises(ProviderUnavailableError):
        await client.create_task(flash_request(catalog))
    assert emulator.stats()["submissions_accepted"] == 0  # answered before anything was created


async def test_dropped_create_is_outcome_unknown_and_list_tasks_finds_it(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    since = datetime.now(UTC)
    emulator.update(faults=FaultConfig(drop_rate=1.0, routes=frozenset({"create"})))
    with pytest.raises(SubmissionOutcomeUnknownError) as info:
        await client.create_task(flash_request(catalog))
    assert not info.value.retryable
    emulator.update(drop_rate=0.0)
    page = await client.list_tasks(start=since - timedelta(seconds=5), end=datetime.now(UTC))
    assert page.total == 1  # the task exists: resubmitting would have paid twice
    assert page.data[0].task_id == emulator.stats()["tasks"][0]["task_id"]


async def test_malformed_answers(client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator) -> None:
    emulator.update(faults=FaultConfig(malformed_rate=1.0))
    with pytest.raises(SubmissionOutcomeUnknownError):
        await client.create_task(flash_request(catalog))
    with pytest.raises(MalformedAnswerError) as info:
        await client.get_task("any")
    assert info.value.code == "MalformedAnswer" and info.value.retryable  # temporary: never a final status
    assert isinstance(info.value, ProviderUnavailableError)
    with pytest.raises(MalformedAnswerError):
        await client.list_tasks(start=datetime.now(UTC) - timedelta(hours=1), end=datetime.now(UTC))
    assert emulator.stats()["faults"]["malformed"] == 3


async def test_timeouts_make_create_unknown_and_other_calls_unavailable(
    catalog: Catalog, emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    client = DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(KEY), timeout=0.2)
    emulator.update(latency_s=0.5)
    with pytest.raises(SubmissionOutcomeUnknownError):
        await client.create_task(flash_request(catalog))
    with pytest.raises(ProviderUnavailableError):
        await client.get_task("any")


async def test_refused_connection_is_safe_to_retry_even_for_create(
    catalog: Catalog, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DashScopeClient(session, base_url=f"http://127.0.0.1:{port}/api/v1", api_key=SecretStr(KEY))
    with pytest.raises(ProviderUnavailableError) as info:
        await client.create_task(flash_request(catalog))
    assert type(info.value) is ProviderUnavailableError  # not "outcome unknown": nothing was sent


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (401, "InvalidApiKey", "Invalid API-key provided.", AccountProblemError),
        (403, "AccessDenied.Unpurchased", "", AccountProblemError),
        (403, "Model.AccessDenied", "", AccountProblemError),
        (403, "AllocationQuota.FreeTierOnly", "", AccountProblemError),
        (400, "Arrearage", "Access denied, please make sure your account is in good standing.", AccountProblemError),
        (429, "PrepaidBillOverdue", "", AccountProblemError),
        (429, "PostpaidBillOverdue", "", AccountProblemError),
        (429, "CommodityNotPurchased", "", AccountProblemError),
        (429, "Throttling.AllocationQuota", "Free allocated quota exceeded.", AccountProblemError),
        (429, "Throttling", "Requests throttling triggered.", ThrottledError),
        (429, "Throttling.RateQuota", "", ThrottledError),
        (429, "Throttling.BurstRate", "", ThrottledError),
        (429, "Throttling.AllocationQuota", "Too many requests.", ThrottledError),
        (400, "DataInspectionFailed", "", ContentRejectedError),
        (400, "IPInfringementSuspect", "", ContentRejectedError),
        (None, "DataInspectionFailed", "Output data may contain inappropriate content.", ContentRejectedError),
        (400, "InvalidParameter", "", InvalidRequestError),
        (400, "InvalidURL", "", InvalidRequestError),
        (400, "InvalidImageFormat", "", InvalidRequestError),
        (400, "InvalidFile.Resolution", "", InvalidRequestError),
        (400, "BadRequest.EmptyInput", "", InvalidRequestError),
        (500, "InternalError", "", ProviderUnavailableError),
        (500, "InternalError.Algo", "", ProviderUnavailableError),
        (500, "SystemError", "", ProviderUnavailableError),
        (503, "ModelServingError", "", ProviderUnavailableError),
        (503, "ModelUnavailable", "", ProviderUnavailableError),
        (502, "", "", ProviderUnavailableError),
        (None, "InternalError.Timeout", "", ProviderUnavailableError),
    ],
)
def test_classify(status: int | None, code: str, message: str, expected: type[DashScopeError]) -> None:
    error = classify(status, code, message, "req-1")
    assert type(error) is expected
    assert error.retryable is (expected in (ThrottledError, ProviderUnavailableError))
    assert error.code == code and error.http_status == status and error.request_id == "req-1"


def test_error_text_is_redacted() -> None:
    key = "sk-abcdef0123456789"
    blob = base64.b64encode(bytes(3000)).decode()
    error = classify(
        400,
        "InvalidParameter",
        f"bad data:image/png;base64,{blob} for https://oss.example/v.mp4?Expires=1&Signature=abc key {key}",
        "r",
    )
    text = str(error)
    assert blob not in text and "Signature=abc" not in text and key not in text
    assert f"data:image/png;base64,<{len(blob)} chars>" in text and "https://oss.example/v.mp4?[REDACTED]" in text


# --- validation before anything is sent ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model_key": "wan9-kf2v-ultra"}, "model_key"),
        # Documented in Singapore, but its media would need public URLs there: not offered.
        ({"region": "singapore", "model_key": "wan2.7-i2v"}, "model_key"),
        ({"resolution": "1080P", "model_key": "wanx2.1-kf2v-plus"}, "resolution"),
        ({"resolution": "4K"}, "resolution"),
        ({"prompt": "x" * 801}, "prompt"),
        ({"negative_prompt": "n" * 501}, "negative_prompt"),
        ({"seed": -1}, "seed"),
        ({"seed": 2_147_483_648}, "seed"),
        ({"template": "hanfu-1", "last_frame_uri": None}, "template"),  # flash has no templates
        ({"template": "no-such-effect", "model_key": "wanx2.1-kf2v-plus", "last_frame_uri": None}, "template"),
        ({"template": "hanfu-1", "model_key": "wanx2.1-kf2v-plus"}, "last_frame_uri"),  # template: first only
        ({"last_frame_uri": None}, "last_frame_uri"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"first_frame_uri": "data:image/gif;base64,R0lGODlh"}, "first_frame_uri"),
        ({"first_frame_uri": "file:///etc/passwd"}, "first_frame_uri"),
        ({"last_frame_uri": "data:image/png;base64,@@not-base64@@"}, "last_frame_uri"),
        ({"last_frame_uri": "ftp://example.com/a.png"}, "last_frame_uri"),
        # No temporary upload in Singapore: an oss:// URL cannot be read there.
        ({"region": "singapore", "last_frame_uri": "oss://dashscope-instant/k/b.png"}, "last_frame_uri"),
        # The media family's `url` is http(s) or oss:// (its API reference): a data URI is not sent.
        ({"model_key": "wan2.7-i2v", "resolution": "720P", "last_frame_uri": None}, "first_frame_uri"),
    ],
)
async def test_invalid_requests_are_refused_before_sending(
    overrides: dict[str, Any], field: str, catalog: Catalog, client: DashScopeClient, emulator: DashScopeEmulator
) -> None:
    region = overrides.pop("region", "beijing")
    args: dict[str, Any] = {
        "model_key": "wan2.2-kf2v-flash",
        "resolution": None,
        "prompt": "the red card turns blue",
        "negative_prompt": None,
        "first_frame_uri": RED_URI,
        "last_frame_uri": BLUE_URI,
    }
    args.update(overrides)
    with pytest.raises(RequestValidationError) as info:
        await client.create_task(CreateTaskRequest.build(catalog, region, **args))
    assert info.value.field == field
    assert info.value.reason.endswith(".") and isinstance(info.value, ValueError)
    assert emulator.stats()["calls"]["create"] == 0


def test_build_defaults_template_mode_and_region_names(catalog: Catalog) -> None:
    req = flash_request(catalog, resolution=None, negative_prompt="blurry", seed=42)
    assert req.model == "wan2.2-kf2v-flash" and req.parameters.resolution == "720P"
    payload = req.to_payload()
    assert payload["parameters"] == {
        "resolution": "720P",
        "duration": 5,
        "prompt_extend": True,
        "watermark": False,
        "seed": 42,
    }
    assert "template" not in payload["input"] and payload["input"]["negative_prompt"] == "blurry"

    effect_args: dict[str, Any] = {
        "model_key": "wanx2.1-kf2v-plus",
        "resolution": None,
        "prompt": "ignored in template mode",
        "negative_prompt": None,
        "first_frame_uri": "https://example.com/a.png",
        "last_frame_uri": None,
        "template": "solaron",
    }
    # Effects apply to China (Beijing) only (https://www.alibabacloud.com/help/en/model-studio/wanx-video-effects).
    with pytest.raises(RequestValidationError, match="no effect templates in singapore") as refused:
        CreateTaskRequest.build(catalog, "singapore", **effect_args)
    assert refused.value.field == "template"
    plain = {**effect_args, "template": None, "last_frame_uri": "https://example.com/b.png"}
    assert CreateTaskRequest.build(catalog, "singapore", **plain).model == "wan2.1-kf2v-plus"  # Singapore's name
    effect = CreateTaskRequest.build(catalog, "beijing", **effect_args)
    assert effect.model == "wanx2.1-kf2v-plus"
    assert effect.to_payload()["input"] == {"first_frame_url": "https://example.com/a.png", "template": "solaron"}
    assert effect.template_mode


def test_request_repr_never_contains_image_data(catalog: Catalog) -> None:
    big = data_uri(png((9, 9, 9), (900, 900)) + bytes(180_000))
    req = flash_request(catalog, first_frame_uri=big)
    for text in (repr(req), str(req), f"{req}"):
        assert big[30:90] not in text
        assert "data:image/png;base64,<" in text and "chars>" in text


async def test_logs_carry_no_key_no_image_data_no_signed_query(
    client: DashScopeClient, catalog: Catalog, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.dashscope")
    done = await wait_for(client, (await client.create_task(flash_request(catalog))).task_id)
    assert done.video_url is not None
    await client.download_video(done.video_url, tmp_path / "v.mp4", max_bytes=50_000_000)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("bot.dashscope")]
    assert any("POST /services/aigc/image2video/video-synthesis -> 200" in line for line in lines)
    text = "\n".join(lines)
    assert KEY not in text and RED_URI[40:100] not in text
    assert "Signature" not in text and "Expires" not in text


async def test_megabyte_images_go_through(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
    buf = io.BytesIO()
    noise.save(buf, "PNG", compress_level=1)
    assert buf.tell() > 4_000_000  # random pixels do not compress
    created = await client.create_task(flash_request(catalog, first_frame_uri=data_uri(buf.getvalue())))
    assert created.status is TaskStatus.PENDING
    assert emulator.stats()["submissions_accepted"] == 1


# --- answers are data: shapes the emulator does not send, from a scripted server on 127.0.0.1 -----------


class ScriptedProvider:
    """Answers every request with the next scripted (status, raw body); records each request's query."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []
        self.queries: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> ScriptedProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/api/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def script(self, *bodies: str | bytes, status: int = 200) -> None:
        self.answers.extend((status, b if isinstance(b, bytes) else b.encode()) for b in bodies)

    async def _answer(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        status, raw = self.answers.pop(0)
        return web.Response(status=status, body=raw, content_type="application/json")


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider() as provider:
        yield provider


def scripted_client(session: aiohttp.ClientSession, provider: ScriptedProvider, **kwargs: Any) -> DashScopeClient:
    return DashScopeClient(session, base_url=provider.base_url, api_key=SecretStr(KEY), timeout=5, **kwargs)


RUNNING = '"task_id": "t-1", "task_status": "RUNNING"'


@pytest.mark.parametrize(
    "raw",
    [
        '{"request_id": "r"}',
        '{"request_id": "r", "output": null}',
        '{"request_id": "r", "output": "SUCCEEDED"}',
        '{"request_id": "r", "output": {"task_id": "t-1"}}',
        '{"request_id": "r", "output": {"task_id": "t-1", "task_status": null}}',
        '{"request_id": "r", "output": {"task_id": "t-1", "task_status": "DONE"}}',
        '{"request_id": "r", "output": {"task_id": "t-1", "task_status": "succeeded"}}',
        '{"request_id": "r", "output": {"task_id": "t-1", "task_status": 3}}',
        '{"request_id": "r", "output": {"task_id": "t-2", "task_status": "SUCCEEDED"}}',
        '{"request_id": "r", "output": {' + RUNNING + ', "video_url": {"href": "x"}}}',
        '{"request_id": "r", "output": {' + RUNNING + ', "submit_time": ["2025"]}}',
        '{"request_id": "r", "output": {' + RUNNING + '}, "usage": [5]}',
        '{"request_id": "r", "output": {' + RUNNING + '}, "usage": {"video_duration": "five"}}',
        '{"request_id": "r", "output": {' + RUNNING + '}, "usage": {"video_duration": true}}',
        '{"request_id": "r", "output": {' + RUNNING + ', "progress": Infinity}}',
        '{"request_id": NaN, "output": {' + RUNNING + "}}",
        '{"request_id": "r", "output": {' + RUNNING + ', "metrics": [1, [-1e999]]}}',
        "<html>502 Bad Gateway</html>",
        '[{"task_status": "SUCCEEDED"}]',
        "",
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "no-output",
        "output-null",
        "output-string",
        "no-status",
        "status-null",
        "status-unknown",
        "status-lowercase",
        "status-number",
        "another-task",
        "url-object",
        "time-list",
        "usage-list",
        "duration-text",
        "duration-bool",
        "infinity-in-output",
        "nan-request-id",
        "overflow-nested",
        "html",
        "array",
        "empty",
        "deep-nesting",
    ],
)
async def test_unreadable_poll_answers_are_malformed_never_a_status(
    raw: str, scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.script(raw)
    client = scripted_client(session, scripted)
    with pytest.raises(MalformedAnswerError) as info:
        await client.get_task("t-1")
    error = info.value
    assert error.retryable and error.code == "MalformedAnswer" and error.http_status == 200
    assert len(str(error)) <= 400  # bounded, whatever the answer held


async def test_answers_over_the_size_bound_are_not_read(
    scripted: ScriptedProvider, session: aiohttp.ClientSession, catalog: Catalog
) -> None:
    padding = "x" * 5000
    big = '{"request_id": "r", "output": {' + RUNNING + ', "pad": "' + padding + '"}}'
    scripted.script(big, big)
    scripted.script('{"code": "InternalError", "message": "' + padding + '"}', status=500)
    client = scripted_client(session, scripted, max_answer_bytes=4096)
    with pytest.raises(MalformedAnswerError, match="larger than 4096 bytes"):
        await client.get_task("t-1")
    with pytest.raises(SubmissionOutcomeUnknownError):  # a create's unreadable answer: the task may exist
        await client.create_task(flash_request(catalog))
    with pytest.raises(ProviderUnavailableError) as info:  # an error body too big to read: its status decides
        await client.get_task("t-1")
    assert info.value.http_status == 500 and not isinstance(info.value, MalformedAnswerError)

    scripted.script(big)  # the same answer under the default bound (1 MiB) is read
    assert (await scripted_client(session, scripted).get_task("t-1")).status is TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("usage", "billed"),
    [
        ('{"video_duration": 1000000, "video_count": 1}', 1_000_000.0),
        ('{"video_duration": Infinity}', math.inf),
        ('{"video_duration": -Infinity}', -math.inf),
        ('{"video_duration": -5}', -5.0),
        ('{"video_duration": 1e999}', math.inf),
        ('{"video_duration": ' + "9" * 400 + "}", math.inf),
        ('{"video_duration": "5"}', 5.0),
        ('{"video_duration": 5, "video_count": Infinity, "SR": "tall", "video_ratio": [1]}', 5.0),
        ('{"video_count": 1}', None),
    ],
    ids=["huge", "infinity", "minus-infinity", "negative", "overflow", "huge-integer", "text", "junk-extras", "none"],
)
async def test_absurd_bills_are_returned_as_sent_for_the_caller_to_clamp(
    usage: str, billed: float | None, scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.script(
        '{"request_id": "r", "output": {"task_id": "t-1", "task_status": "SUCCEEDED", '
        '"video_url": "https://b.oss-cn-beijing.aliyuncs.com/v.mp4"}, "usage": ' + usage + "}"
    )
    result = await scripted_client(session, scripted).get_task("t-1")
    assert result.status is TaskStatus.SUCCEEDED
    assert result.billed_seconds == billed
    assert result.usage is not None and result.usage.video_count in (None, 1)  # junk extras dropped, not fatal


async def test_nan_bill_is_returned_as_sent(scripted: ScriptedProvider, session: aiohttp.ClientSession) -> None:
    scripted.script('{"output": {"task_id": "t-1", "task_status": "SUCCEEDED"}, "usage": {"video_duration": NaN}}')
    result = await scripted_client(session, scripted).get_task("t-1")
    assert result.billed_seconds is not None and math.isnan(result.billed_seconds)


async def test_only_a_literal_unknown_is_unknown(scripted: ScriptedProvider, session: aiohttp.ClientSession) -> None:
    scripted.script('{"request_id": "r", "output": {"task_id": "t-1", "task_status": "UNKNOWN"}}')
    result = await scripted_client(session, scripted).get_task("t-1")
    assert result.status is TaskStatus.UNKNOWN and result.status.is_final


def test_task_status_parse_is_strict() -> None:
    for status in TaskStatus:
        assert TaskStatus.parse(status.value) is status
    for bad in ("", "unknown", "Succeeded", " RUNNING", "DONE", None, 3, ["PENDING"]):
        with pytest.raises(ValueError, match="not a task status"):
            TaskStatus.parse(bad)


async def test_non_finite_numbers_in_a_create_answer_leave_the_outcome_unknown(
    scripted: ScriptedProvider, session: aiohttp.ClientSession, catalog: Catalog
) -> None:
    scripted.script('{"request_id": "r", "output": {"task_id": "t-9", "task_status": "PENDING", "eta": NaN}}')
    with pytest.raises(SubmissionOutcomeUnknownError) as info:
        await scripted_client(session, scripted).create_task(flash_request(catalog))
    assert info.value.code == "MalformedAnswer" and not info.value.retryable


# --- the task list: whose rows, which window, how many pages ---------------------------------------------


def list_answer(rows: list[str], *, total_page: int = 1, page_no: int = 1) -> str:
    return (
        f'{{"request_id": "r", "total": {len(rows)}, "total_page": {total_page}, "page_no": {page_no}, '
        f'"page_size": 100, "data": [{", ".join(rows)}]}}'
    )


def row(task_id: str, **extra: Any) -> str:
    fields = {"task_id": task_id, "status": "RUNNING", "model_name": "wan2.2-kf2v-flash", "gmt_create": 1739329410701}
    fields.update(extra)
    return json.dumps(fields)


async def test_list_rows_say_whose_task_it_is(scripted: ScriptedProvider, session: aiohttp.ClientSession) -> None:
    scripted.script(
        list_answer(
            [
                row("t-1", api_key_id=123456, caller_uid="1987654321", region="cn-beijing", request_id="q-1"),
                row("t-2"),
            ]
        )
    )
    now = datetime.now(UTC)
    page = await scripted_client(session, scripted).list_tasks(start=now - timedelta(hours=1), end=now)
    mine, other = page.data
    assert (mine.api_key_id, mine.caller_uid, mine.region, mine.request_id) == (
        "123456",
        "1987654321",
        "cn-beijing",
        "q-1",
    )
    assert mine.created_at == datetime(2025, 2, 12, 3, 3, 30, 701_000, tzinfo=UTC)
    assert (other.api_key_id, other.caller_uid, other.region) == (None, None, None)


@pytest.mark.parametrize(
    "rows",
    [
        [row("t-1"), '{"status": "RUNNING"}'],
        [row("t-1"), row("t-2", status="DONE")],
        [row("t-1"), row("t-2", status=None)],
        [row("t-1"), '"t-2"'],
        [row("t-1", gmt_create=10**20)],
        [row("t-1", api_key_id={"id": 1})],
    ],
    ids=["no-task-id", "unknown-status", "null-status", "not-an-object", "absurd-time", "id-object"],
)
async def test_an_unreadable_row_makes_the_page_malformed_rather_than_hiding_a_task(
    rows: list[str], scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.script(list_answer(rows))
    now = datetime.now(UTC)
    with pytest.raises(MalformedAnswerError):
        await scripted_client(session, scripted).list_tasks(start=now - timedelta(hours=1), end=now)


def test_list_times_are_in_utc8_on_both_sides_of_its_midnight() -> None:
    assert LIST_TZ.utcoffset(None) == timedelta(hours=8)
    before = datetime(2025, 2, 11, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in UTC+8
    after = datetime(2025, 2, 11, 16, 0, 0, tzinfo=UTC)  # 00:00:00 next day in UTC+8
    assert format_list_time(before) == "20250211235959"
    assert format_list_time(after) == "20250212000000"
    assert format_list_time(before, round_up=True) == "20250211235959"  # already whole


async def test_list_window_across_utc8_midnight_is_sent_in_utc8(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.script(list_answer([]))
    sent = datetime(2025, 2, 11, 15, 58, 0, 250_000, tzinfo=UTC)
    await scripted_client(session, scripted).list_tasks(
        start=sent - timedelta(hours=12), end=sent + timedelta(hours=11, minutes=59, seconds=59)
    )
    query = scripted.queries[0]
    assert query["start_time"] == "20250211115800" and query["end_time"] == "20250212115800"


async def test_windows_over_24_hours_are_refused_before_sending(
    client: DashScopeClient, emulator: DashScopeEmulator
) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    await client.list_tasks(start=end - LIST_WINDOW_MAX, end=end)  # exactly 24 h: sent
    for start, stop in (
        (end - LIST_WINDOW_MAX - timedelta(seconds=1), end),
        (end - LIST_WINDOW_MAX, end + timedelta(microseconds=1)),  # the end rounds up a whole second
        (end - timedelta(days=1, hours=1), end),
        (end, end - timedelta(seconds=1)),  # backwards
    ):
        with pytest.raises(ValueError, match="window"):
            await client.list_tasks(start=start, end=stop)
    assert emulator.stats()["calls"]["list"] == 1


async def test_iter_tasks_walks_every_page_once_and_bounds_the_walk(
    client: DashScopeClient, catalog: Catalog, emulator: DashScopeEmulator
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    ids = set()
    for index in range(3):
        if index:
            await asyncio.sleep(PENDING_S + RUNNING_S + 0.05)  # stay within 2 in flight and 2 submissions/s
        ids.add((await client.create_task(flash_request(catalog))).task_id)
    until = datetime.now(UTC)

    seen = [t.task_id async for t in client.iter_tasks(start=since, end=until, page_size=2)]
    assert sorted(seen) == sorted(ids)
    assert emulator.stats()["calls"]["list"] == 2

    with pytest.raises(TaskListTooLongError) as info:
        async for _ in client.iter_tasks(start=since, end=until, page_size=1, max_pages=2):
            pytest.fail("a list longer than allowed yields nothing")
    assert info.value.code == "TaskListTooLong" and not info.value.retryable
    assert emulator.stats()["calls"]["list"] == 3  # stopped at the first page's count


async def test_iter_tasks_survives_shifting_pages_and_absurd_page_counts(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    # A new task arrived between the two pages: t-2 moved from page 1 to page 2.
    scripted.script(
        list_answer([row("t-3"), row("t-2")], total_page=2),
        list_answer([row("t-2"), row("t-1")], total_page=2, page_no=2),
    )
    client = scripted_client(session, scripted)
    now = datetime.now(UTC)
    rows = [t.task_id async for t in client.iter_tasks(start=now - timedelta(hours=1), end=now, page_size=2)]
    assert rows == ["t-3", "t-2", "t-1"]

    scripted.script(list_answer([row("t-1")], total_page=10**9))
    with pytest.raises(TaskListTooLongError):
        async for _ in client.iter_tasks(start=now - timedelta(hours=1), end=now):
            pytest.fail("nothing is yielded from a list that is too long")
    assert len(scripted.queries) == 3  # one request for the absurd count, not a billion
