"""The DashScope emulator at the HTTP level: protocol checks, exact limits, lifecycle, stats, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image

from sandbox.cli import add_sandbox_arguments, config_from_args
from sandbox.dashscope_emulator import CREATE_PATH, DashScopeEmulator, EmulatorConfig, FaultConfig, fingerprint
from tests.support.waiting import wait_until

KEY = "sk-emulator-test-key-1"
OTHER_KEY = "sk-emulator-test-key-2"
FLASH = "wan2.2-kf2v-flash"
PLUS = "wanx2.1-kf2v-plus"
ROOT = Path(__file__).resolve().parents[2]


def image_bytes(color: tuple[int, int, int], size: tuple[int, int] = (320, 240), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


FIRST = data_uri(image_bytes((200, 40, 40)))
LAST = data_uri(image_bytes((40, 40, 200)))


def body(model: str = FLASH, prompt: str | None = "a card flips", **changes: Any) -> dict[str, Any]:
    """A create body; `changes` keys go into input, or parameters when prefixed `p_`."""
    payload: dict[str, Any] = {
        "model": model,
        "input": {"first_frame_url": FIRST, "last_frame_url": LAST, "prompt": prompt},
        "parameters": {"resolution": "480P" if model == FLASH else "720P", "prompt_extend": True},
    }
    for name, value in changes.items():
        target = payload["parameters"] if name.startswith("p_") else payload["input"]
        key = name.removeprefix("p_")
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return payload


class Api:
    """A thin raw-HTTP caller, so the tests see exactly what the emulator answers."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base = base_url

    async def create(
        self, payload: dict[str, Any], *, key: str | None = KEY, asynchronous: bool = True
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if asynchronous:
            headers["X-DashScope-Async"] = "enable"
        data = io.BytesIO(json.dumps(payload).encode())
        async with self.session.post(
            self.base + "/services/aigc/image2video/video-synthesis", data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def get(self, task_id: str, *, key: str = KEY) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
            result: dict[str, Any] = await r.json()
            return result

    async def cancel(self, task_id: str) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            f"{self.base}/tasks/{task_id}/cancel", headers={"Authorization": f"Bearer {KEY}"}
        ) as resp:
            return resp.status, await resp.json()

    async def list(self, **query: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(
            f"{self.base}/tasks", params=query, headers={"Authorization": f"Bearer {KEY}"}
        ) as resp:
            return resp.status, await resp.json()

    async def wait(self, task_id: str, *, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                answer = await self.get(task_id)
                if answer["output"]["task_status"] not in ("PENDING", "RUNNING"):
                    return answer
                await asyncio.sleep(0.05)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def quick(**overrides: Any) -> EmulatorConfig:
    values: dict[str, Any] = {"pending_s": (0.2, 0.2), "running_s": (0.2, 0.2), "seed": 3}
    values.update(overrides)
    return EmulatorConfig(**values)


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    async with DashScopeEmulator(quick()) as emu:
        yield emu


@pytest.fixture
def api(emulator: DashScopeEmulator, session: aiohttp.ClientSession) -> Api:
    return Api(session, emulator.base_url)


# --- protocol ------------------------------------------------------------------------------------------


async def test_base_url_and_the_create_answer_shape(emulator: DashScopeEmulator, api: Api) -> None:
    assert emulator.base_url.startswith("http://127.0.0.1:") and emulator.base_url.endswith("/api/v1")
    status, answer = await api.create(body())
    assert status == 200
    assert set(answer) == {"request_id", "output"}
    assert answer["output"]["task_status"] == "PENDING" and answer["output"]["task_id"]


async def test_a_held_route_answers_only_once_released(emulator: DashScopeEmulator, api: Api) -> None:
    status, _ = await api.create(body())  # the one that passes
    assert status == 200
    hold = emulator.hold("create", skip=0, count=1)
    held = asyncio.create_task(api.create(body(prompt="held")))
    await wait_until(lambda: hold.held == 1, within=10)
    assert emulator.stats()["submissions_accepted"] == 1  # nothing done for it while held
    hold.release()
    status, answer = await held
    assert status == 200 and answer["output"]["task_status"] == "PENDING"
    status, _ = await api.create(body(PLUS, prompt="after"))  # count=1: later ones are not held (another lane)
    assert (status, hold.held, emulator.stats()["submissions_accepted"]) == (200, 0, 3)
    with pytest.raises(ValueError, match="unknown route"):
        emulator.hold("nowhere")


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        ({"key": None}, 401, "InvalidApiKey"),
        ({"key": ""}, 401, "InvalidApiKey"),
        ({"asynchronous": False}, 403, "AccessDenied"),
    ],
)
async def test_headers_are_checked(api: Api, call: dict[str, Any], status: int, code: str) -> None:
    got_status, answer = await api.create(body(), **call)
    assert (got_status, answer["code"]) == (status, code)
    assert set(answer) == {"request_id", "code", "message"}
    if code == "AccessDenied":
        assert answer["message"] == "current user api does not support synchronous calls"


async def test_a_fixed_key_refuses_every_other_key(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(api_key=KEY)) as emu:
        api = Api(session, emu.base_url)
        assert (await api.create(body(), key=OTHER_KEY))[0] == 401
        assert (await api.create(body(), key=KEY))[0] == 200
        assert KEY not in json.dumps(emu.stats()) and KEY not in json.dumps(emu.config.public())
        assert emu.config.public()["fixed_api_key"] == fingerprint(KEY)


async def test_body_and_model_checks(emulator: DashScopeEmulator, api: Api, session: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable", "Content-Type": "application/json"}
    async with session.post(emulator.base_url + "/services/aigc/image2video/video-synthesis",
                            data=b"{not json", headers=headers) as resp:  # fmt: skip
        assert resp.status == 400 and (await resp.json())["code"] == "InvalidParameter"
    status, answer = await api.create(body(model="wan9-kf2v-ultra"))
    assert (status, answer["code"], answer["message"]) == (400, "InvalidParameter", "Model not exist.")
    # Both regions' names of the plus model are known (Singapore drops the "x").
    assert (await api.create(body(model="wan2.1-kf2v-plus")))[0] == 200
    assert emulator.stats()["rejected"] == {"InvalidParameter": 2}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"p_resolution": "4K"}, "InvalidParameter"),
        ({"p_duration": 10}, "InvalidParameter"),
        ({"p_seed": -5}, "InvalidParameter"),
        ({"p_seed": 2_147_483_648}, "InvalidParameter"),
        ({"p_prompt_extend": "yes"}, "InvalidParameter"),
        ({"first_frame_url": None}, "InvalidParameter"),
        ({"template": "hanfu-1"}, "InvalidParameter"),  # flash has no templates
        ({"first_frame_url": "file:///tmp/a.png"}, "InvalidURL"),
        ({"first_frame_url": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}, "InvalidImageFormat"),
        ({"last_frame_url": data_uri(image_bytes((1, 1, 1), fmt="GIF"))}, "InvalidImageFormat"),
        ({"last_frame_url": "data:image/png;base64,@@@"}, "InvalidParameter.DataUri"),
        ({"last_frame_url": data_uri(b"\x89PNG\r\n\x1a\n-truncated-")}, "InvalidFile.Content"),
        ({"first_frame_url": data_uri(image_bytes((1, 1, 1), (239, 400)))}, "InvalidFile.Resolution"),
        ({"first_frame_url": data_uri(image_bytes((1, 1, 1), (8001, 240), fmt="BMP"), "image/bmp")},
         "InvalidFile.Resolution"),
    ],
)  # fmt: skip
async def test_provider_input_checks(api: Api, emulator: DashScopeEmulator, changes: dict[str, Any], code: str) -> None:
    status, answer = await api.create(body(**changes))
    assert (status, answer["code"]) == (400, code), answer
    assert emulator.stats()["submissions_accepted"] == 0


async def test_image_byte_limit_and_accepted_formats(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(image_max_bytes=60_000, max_in_flight=10, submit_rps=50)) as emu:
        api = Api(session, emu.base_url)
        big = data_uri(image_bytes((5, 5, 5), (300, 300), fmt="BMP"), "image/bmp")  # 270 KB
        status, answer = await api.create(body(first_frame_url=big))
        assert (status, answer["code"]) == (400, "InvalidFile.Size")
        for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("PNG", "image/png")):
            status, answer = await api.create(body(first_frame_url=data_uri(image_bytes((9, 9, 9), fmt=fmt), mime)))
            assert status == 200, (fmt, answer)


async def test_urls_are_accepted_unfetched_and_recorded(api: Api, emulator: DashScopeEmulator) -> None:
    status, _ = await api.create(body(first_frame_url="https://cdn.example/a.png?X-Amz-Signature=secret"))
    assert status == 200
    assert emulator.stats()["image_urls"] == ["https://cdn.example/a.png"]


async def test_long_prompts_are_truncated_like_the_provider_and_counted(api: Api, emulator: DashScopeEmulator) -> None:
    status, answer = await api.create(body(prompt="p" * 900, negative_prompt="n" * 600))
    assert status == 200
    assert emulator.stats()["truncated_prompts"] == 2
    done = await api.wait(answer["output"]["task_id"])
    assert done["output"]["orig_prompt"] == "p" * 800


async def test_reject_word_is_refused_at_once(api: Api, emulator: DashScopeEmulator) -> None:
    status, answer = await api.create(body(prompt="show REJECT_CONTENT"))
    assert (status, answer["code"]) == (400, "DataInspectionFailed")
    assert emulator.stats()["submissions_accepted"] == 0


# --- limits --------------------------------------------------------------------------------------------


async def test_a_third_task_in_flight_is_throttled_and_recorded(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(submit_rps=100)) as emu:
        api = Api(session, emu.base_url)
        assert (await api.create(body()))[0] == 200
        assert (await api.create(body()))[0] == 200
        status, answer = await api.create(body())
        assert (status, answer["code"]) == (429, "Throttling.RateQuota")
        # Another key is another account; another model has its own slots.
        assert (await api.create(body(), key=OTHER_KEY))[0] == 200
        assert (await api.create(body(model=PLUS)))[0] == 200
        stats = emu.stats()
        assert stats["throttled"] == 1
        [violation] = stats["violations"]
        assert violation["kind"] == "in_flight" and violation["model"] == FLASH
        assert violation["key"] == fingerprint(KEY) and violation["t"] >= 0
        assert stats["max_in_flight"][fingerprint(KEY)] == {FLASH: 2, PLUS: 1}
        assert stats["submissions_by_key_model"] == {
            fingerprint(KEY): {FLASH: 2, PLUS: 1},
            fingerprint(OTHER_KEY): {FLASH: 1},
        }
        await asyncio.sleep(0.45)  # both finished: the slots are free again
        assert (await api.create(body()))[0] == 200
        assert emu.stats()["throttled"] == 1


async def test_a_burst_over_two_per_second_is_throttled_and_nothing_else(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(max_in_flight=10)) as emu:
        api = Api(session, emu.base_url)
        statuses = [(await api.create(body()))[0] for _ in range(2)]
        status, answer = await api.create(body())
        assert statuses == [200, 200] and (status, answer["code"]) == (429, "Throttling.BurstRate")
        await asyncio.sleep(1.05)
        statuses = [(await api.create(body()))[0] for _ in range(2)]
        assert statuses == [200, 200]
        stats = emu.stats()
        assert stats["throttled"] == 1 and stats["violations"][0]["kind"] == "burst"
        assert stats["submissions_accepted"] == 4


async def test_refused_attempts_count_in_the_window(api: Api, emulator: DashScopeEmulator) -> None:
    # An invalid create still reached validation: it uses up the second's budget.
    assert (await api.create(body(p_resolution="8K")))[0] == 400
    assert (await api.create(body()))[0] == 200
    status, answer = await api.create(body())
    assert (status, answer["code"]) == (429, "Throttling.BurstRate")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_burst_window_semantics_on_a_controlled_clock(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with DashScopeEmulator(quick(max_in_flight=100), clock=clock) as emu:
        api = Api(session, emu.base_url)
        outcomes = []
        for at in (0.0, 0.5, 0.9, 1.5, 1.6, 2.6, 2.6):
            clock.now = 1000.0 + at
            outcomes.append((at, (await api.create(body()))[0]))
        # Any window [s, s+1) holds at most 2 attempts, refused attempts included: 0.9 was refused, yet it
        # still makes 1.6 the third attempt of [0.9, 1.9).
        assert outcomes == [(0.0, 200), (0.5, 200), (0.9, 429), (1.5, 200), (1.6, 429), (2.6, 200), (2.6, 200)]
        assert [v["t"] for v in emu.stats()["violations"]] == [0.9, 1.6]


async def test_paced_submissions_within_limits_are_never_throttled(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(pending_s=(0.1, 0.1), running_s=(0.1, 0.1))) as emu:
        api = Api(session, emu.base_url)
        for _ in range(2):
            assert [(await api.create(body()))[0] for _ in range(2)] == [200, 200]
            await asyncio.sleep(1.01)
        assert emu.stats()["throttled"] == 0 and emu.stats()["submissions_accepted"] == 4


async def test_someone_else_holding_slots_causes_throttling(api: Api, emulator: DashScopeEmulator) -> None:
    emulator.occupy_slots(KEY, FLASH, 1)
    assert (await api.create(body()))[0] == 200
    status, answer = await api.create(body())
    assert (status, answer["code"]) == (429, "Throttling.RateQuota")
    emulator.occupy_slots(KEY, FLASH, 0)
    await asyncio.sleep(1.0)  # the first task is done and the burst window has passed
    assert (await api.create(body()))[0] == 200


# --- lifecycle -----------------------------------------------------------------------------------------


async def test_lifecycle_and_success_shape(api: Api, emulator: DashScopeEmulator) -> None:
    task_id = (await api.create(body(model=FLASH, p_resolution="1080P")))[1]["output"]["task_id"]
    pending = await api.get(task_id)
    assert pending["output"]["task_status"] == "PENDING" and "scheduled_time" not in pending["output"]
    await asyncio.sleep(0.25)
    running = await api.get(task_id)
    assert running["output"]["task_status"] == "RUNNING" and "end_time" not in running["output"]
    done = await api.wait(task_id)
    out = done["output"]
    assert out["task_status"] == "SUCCEEDED"
    for name in ("submit_time", "scheduled_time", "end_time"):
        assert len(out[name]) == 23 and out[name][10] == " " and out[name][19] == "."  # YYYY-MM-DD HH:mm:ss.SSS
    assert out["submit_time"] < out["scheduled_time"] < out["end_time"]
    assert out["video_url"].startswith(emulator.base_url.removesuffix("/api/v1") + "/_sandbox/videos/")
    assert "Expires=" in out["video_url"] and "OSSAccessKeyId=" in out["video_url"]
    assert out["orig_prompt"] == "a card flips" and out["actual_prompt"].startswith("a card flips ")
    assert done["usage"] == {"video_duration": 5, "video_count": 1, "SR": 1080}

    await api.get(task_id)
    [timeline] = emulator.stats()["tasks"]
    assert timeline["polls"] >= 4 and timeline["polls_after_finished"] == 2
    assert timeline["created"] < timeline["started"] < timeline["finished"]
    assert timeline["finished"] - timeline["created"] == pytest.approx(0.4, abs=0.01)
    assert timeline["key"] == fingerprint(KEY) and timeline["status"] == "SUCCEEDED"


async def test_plus_usage_and_effect_template(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(submit_rps=50)) as emu:
        await _plus_usage_and_effect_template(Api(session, emu.base_url))


async def _plus_usage_and_effect_template(api: Api) -> None:
    plain = (await api.create(body(model=PLUS, p_prompt_extend=False)))[1]["output"]["task_id"]
    effect_status, effect = await api.create(body(model=PLUS, template="mech1", last_frame_url=None, prompt=None))
    assert effect_status == 200
    done = await api.wait(plain)
    assert done["usage"] == {"video_duration": 5, "video_count": 1, "video_ratio": "standard"}
    assert "actual_prompt" not in done["output"]  # prompt_extend off
    effect_done = await api.wait(effect["output"]["task_id"])
    assert effect_done["output"]["task_status"] == "SUCCEEDED" and "orig_prompt" not in effect_done["output"]
    status, answer = await api.create(body(model=PLUS, template="no-such", last_frame_url=None))
    assert (status, answer["code"]) == (400, "InvalidParameter")


async def test_fail_word_ends_failed_after_running(api: Api) -> None:
    task_id = (await api.create(body(prompt="FAIL_CONTENT here")))[1]["output"]["task_id"]
    assert (await api.get(task_id))["output"]["task_status"] == "PENDING"
    done = await api.wait(task_id)
    assert done["output"]["task_status"] == "FAILED"
    assert done["output"]["code"] == "DataInspectionFailed" and done["output"]["message"]
    assert done["usage"] is None and "video_url" not in done["output"]


async def test_unknown_other_account_and_expired_ids_are_unknown(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(task_ttl_s=0.6)) as emu:
        api = Api(session, emu.base_url)
        task_id = (await api.create(body()))[1]["output"]["task_id"]
        assert (await api.get("nope"))["output"] == {"task_id": "nope", "task_status": "UNKNOWN"}
        assert (await api.get(task_id, key=OTHER_KEY))["output"]["task_status"] == "UNKNOWN"
        done = await api.wait(task_id)
        assert done["output"]["task_status"] == "SUCCEEDED"
        await asyncio.sleep(0.25)
        assert (await api.get(task_id))["output"]["task_status"] == "UNKNOWN"
        async with session.get(done["output"]["video_url"]) as resp:
            assert resp.status == 404 and "<Code>NoSuchKey</Code>" in await resp.text()


async def test_cancel_only_while_pending(api: Api, emulator: DashScopeEmulator) -> None:
    task_id = (await api.create(body()))[1]["output"]["task_id"]
    status, answer = await api.cancel(task_id)
    assert status == 200 and set(answer) == {"request_id"}
    assert (await api.get(task_id))["output"]["task_status"] == "CANCELED"
    status, answer = await api.cancel(task_id)
    assert (status, answer["code"]) == (400, "UnsupportedOperation")
    assert (await api.create(body()))[0] == 200  # a canceled task frees its slot at once
    assert emulator.stats()["cancels"] == 1


async def test_list_shape_filters_and_paging(api: Api) -> None:
    first = (await api.create(body()))[1]["output"]["task_id"]
    second = (await api.create(body(model=PLUS)))[1]["output"]["task_id"]
    await api.cancel(second)
    status, page = await api.list(page_size="1")
    assert status == 200
    assert set(page) == {"request_id", "total", "total_page", "page_no", "page_size", "data"}
    assert (page["total"], page["total_page"], page["page_no"], page["page_size"]) == (2, 2, 1, 1)
    [row] = page["data"]
    assert row["task_id"] == second and row["status"] == "CANCELED" and row["model_name"] == PLUS
    assert isinstance(row["gmt_create"], int) and row["gmt_create"] > 1_600_000_000_000
    assert row["start_time"] is None and isinstance(row["end_time"], int)
    _, page2 = await api.list(page_size="1", page_no="2")
    assert [r["task_id"] for r in page2["data"]] == [first]
    _, only_flash = await api.list(model_name=FLASH, status="PENDING")
    assert [r["task_id"] for r in only_flash["data"]] == [first]
    _, old = await api.list(start_time="20000101000000", end_time="20000102000000")
    assert old["total"] == 0 and old["data"] == []
    status, answer = await api.list(start_time="2024-13-99")
    assert (status, answer["code"]) == (400, "InvalidParameter")
    status, answer = await api.list(page_size="500")
    assert (status, answer["code"]) == (400, "InvalidParameter")


# --- faults, stats and control --------------------------------------------------------------------------


async def test_dropped_create_still_creates_the_task(api: Api, emulator: DashScopeEmulator) -> None:
    emulator.update(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.create(body())
    emulator.update(drop_rate=0.0)
    stats = emulator.stats()
    assert stats["faults"]["drop"] == 1 and stats["submissions_accepted"] == 1
    _, page = await api.list()
    assert page["total"] == 1


async def test_faults_can_be_limited_to_routes(api: Api, emulator: DashScopeEmulator) -> None:
    emulator.update(faults={"error_rate": 1.0, "routes": ["get"]})
    assert (await api.create(body()))[0] == 200
    async with api.session.get(f"{api.base}/tasks/x", headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status in (500, 503)
        assert (await resp.json())["code"] in ("InternalError", "ModelServingError")
    assert emulator.stats()["faults"]["error"] == 1


async def test_stats_and_config_over_http(
    api: Api, emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    root = emulator.base_url.removesuffix("/api/v1")
    await api.create(body())
    await api.get("nope")
    async with session.get(root + "/_sandbox/stats") as resp:
        stats = await resp.json()
    assert stats["calls"] == {
        "create": 1,
        "get": 1,
        "cancel": 0,
        "list": 0,
        "video": 0,
        "upload_policy": 0,
        "upload": 0,
    }
    assert stats["submissions_accepted"] == 1 and len(stats["tasks"]) == 1
    async with session.post(root + "/_sandbox/config", json={"throttle_rate": 1, "pending_s": [0, 0]}) as resp:
        assert resp.status == 200
        config = await resp.json()
    assert config["faults"]["throttle_rate"] == 1 and config["pending_s"] == [0, 0]
    assert emulator.config.pending_s == (0.0, 0.0)
    status, answer = await api.create(body())
    assert (status, answer["code"]) == (429, "Throttling")
    async with session.post(root + "/_sandbox/config", json={"no_such_knob": 1}) as resp:
        assert resp.status == 400
    async with session.post(root + "/_sandbox/config", json={"error_rate": 2}) as resp:
        assert resp.status == 400
    assert emulator.config.faults.error_rate == 0  # a refused update changes nothing
    async with session.post(root + "/_sandbox/occupy", json={"api_key": KEY, "model": FLASH, "n": 2}) as resp:
        assert resp.status == 200
    emulator.update(throttle_rate=0)
    status, answer = await api.create(body())
    assert (status, answer["code"]) == (429, "Throttling.RateQuota")


async def test_video_is_served_padded_to_the_requested_size_and_still_plays(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    target = 2_000_000
    async with DashScopeEmulator(quick(video_min_bytes=target)) as emu:
        api = Api(session, emu.base_url)
        done = await api.wait((await api.create(body()))[1]["output"]["task_id"])
        url = done["output"]["video_url"]
        async with session.get(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
            assert resp.content_length == target
            data = await resp.read()
        async with session.get(url) as resp:  # cached: not rendered twice
            assert len(await resp.read()) == target
        stats = emu.stats()
        assert stats["videos_rendered"] == 1 and stats["videos_served"] == 2
        assert stats["video_bytes_served"] == 2 * target
    assert len(data) == target and data[-(target - data.find(b"free") + 4) :][4:8] == b"free"
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    with av.open(str(path), mode="r") as container:
        frames = sum(1 for _ in container.decode(video=0))
        assert container.streams.video[0].codec_context.name == "h264"
    assert frames == 150


def test_config_presets_and_validation() -> None:
    real = EmulatorConfig.realistic(time_scale=60)
    assert real.pending_s == (0.0, 150.0) and real.running_s == (240.0, 360.0) and real.time_scale == 60
    with pytest.raises(ValueError, match="time_scale"):
        DashScopeEmulator(EmulatorConfig(time_scale=0))
    emu = DashScopeEmulator(quick())
    with pytest.raises(ValueError, match="unknown"):
        emu.update(speed=3)
    emu.update(latency_s=0.1, faults=FaultConfig(error_rate=0.5))
    assert emu.config.faults.error_rate == 0.5 and emu.config.faults.latency_s == 0.0
    assert "sk-" not in repr(EmulatorConfig(api_key="sk-secret-value"))


# --- the command ---------------------------------------------------------------------------------------


def loopback_json(url: str, payload: dict[str, Any] | None) -> dict[str, Any]:
    assert url.startswith("http://127.0.0.1:")
    headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - checked: loopback http
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - checked: loopback http
        result: dict[str, Any] = json.load(resp)
    return result


def test_sandbox_command_prints_a_working_url_first_answers_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE_", "KF2V_"))}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", "sandbox", "--port", "0", "--api-key", KEY],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # The URL is the first thing printed, once the port is bound and before any slow work (PyAV loads
        # only when a video is rendered): it answers at once, with no retry (how long it took is bench's business).
        first_line = proc.stdout.readline()
        assert first_line.startswith("DashScope sandbox listening on http://127.0.0.1:"), first_line
        base_url = first_line.rsplit(" ", 1)[1].strip()
        assert base_url.endswith("/api/v1") and not base_url.endswith(":0/api/v1")
        assert f"DASHSCOPE_BASE_URL={base_url}" in proc.stdout.readline()

        unknown = loopback_json(f"{base_url}/tasks/abc", None)
        assert unknown["output"]["task_status"] == "UNKNOWN"
        created = loopback_json(base_url + CREATE_PATH.removeprefix("/api/v1"), body())
        assert created["output"]["task_status"] == "PENDING"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- issue 10: the provider's truths ---------------------------------------------------------------------

THIRD_KEY = "sk-emulator-test-key-3"
TEAM = {KEY: "team", OTHER_KEY: "team"}


async def get_as(api: Api, task_id: str, key: str) -> dict[str, Any]:
    return await api.get(task_id, key=key)


async def list_as(api: Api, key: str, **query: str) -> tuple[int, dict[str, Any]]:
    async with api.session.get(f"{api.base}/tasks", params=query, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


async def test_keys_of_one_main_account_share_its_slots_and_see_its_tasks(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(accounts=TEAM, submit_rps=100, pending_s=(5, 5))) as emu:
        api = Api(session, emu.base_url)
        mine = (await api.create(body()))[1]["output"]["task_id"]
        assert (await api.create(body(), key=OTHER_KEY))[0] == 200
        status, answer = await api.create(body(), key=OTHER_KEY)
        assert (status, answer["code"]) == (429, "Throttling.RateQuota")
        # A key of another account has its own slots and sees none of the team's tasks.
        assert (await api.create(body(), key=THIRD_KEY))[0] == 200
        assert (await get_as(api, mine, THIRD_KEY))["output"]["task_status"] == "UNKNOWN"
        assert (await get_as(api, mine, OTHER_KEY))["output"]["task_status"] == "PENDING"
        stats = emu.stats()
        [violation] = stats["violations"]
        assert (violation["key"], violation["caller"], violation["kind"]) == (
            "team",
            fingerprint(OTHER_KEY),
            "in_flight",
        )
        assert stats["max_in_flight"] == {"team": {FLASH: 2}, fingerprint(THIRD_KEY): {FLASH: 1}}
        assert stats["submissions_by_key_model"] == {
            fingerprint(KEY): {FLASH: 1},
            fingerprint(OTHER_KEY): {FLASH: 1},
            fingerprint(THIRD_KEY): {FLASH: 1},
        }
        assert KEY not in json.dumps(emu.config.public()) and emu.config.public()["accounts"] == {
            fingerprint(KEY): "team",
            fingerprint(OTHER_KEY): "team",
        }


async def test_the_burst_budget_is_the_accounts_not_the_keys(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(accounts=TEAM, max_in_flight=10)) as emu:
        api = Api(session, emu.base_url)
        assert (await api.create(body()))[0] == 200
        assert (await api.create(body(), key=OTHER_KEY))[0] == 200
        status, answer = await api.create(body(), key=OTHER_KEY)
        assert (status, answer["code"]) == (429, "Throttling.BurstRate")
        assert [v["kind"] for v in emu.stats()["violations"]] == ["burst"]


async def test_a_fixed_key_still_accepts_the_keys_named_in_accounts(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(api_key=KEY, accounts={OTHER_KEY: "team"})) as emu:
        api = Api(session, emu.base_url)
        assert (await api.create(body(), key=OTHER_KEY))[0] == 200
        assert (await api.create(body(), key=THIRD_KEY))[0] == 401


async def test_list_rows_show_the_whole_account_with_key_ids_never_keys(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(accounts=TEAM, submit_rps=100)) as emu:
        api = Api(session, emu.base_url)
        created = {
            key: (await api.create(body(), key=key))[1] for key in (KEY, OTHER_KEY)
        }  # fmt: skip
        status, page = await list_as(api, OTHER_KEY)
        assert status == 200 and page["total"] == 2
        rows = {row["task_id"]: row for row in page["data"]}
        for key, answer in created.items():
            row = rows[answer["output"]["task_id"]]
            assert row["api_key_id"] == emu.api_key_id(key) and row["request_id"] == answer["request_id"]
            assert row["region"] == "cn-beijing" and row["model_name"] == FLASH
            assert isinstance(row["gmt_create"], int) and isinstance(row["caller_uid"], str)
        assert emu.api_key_id(KEY) != emu.api_key_id(OTHER_KEY)
        assert emu.api_key_id(KEY) == emu.api_key_id(KEY) and KEY not in json.dumps(page)
        assert len({row["caller_uid"] for row in rows.values()}) == 1  # one main account, one uid
        _, only_key = await list_as(api, KEY, api_key_id=emu.api_key_id(KEY))
        assert [r["task_id"] for r in only_key["data"]] == [created[KEY]["output"]["task_id"]]
        _, elsewhere = await list_as(api, KEY, region="ap-southeast-1")
        assert elsewhere["total"] == 0


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        ("20250301000000", "20250302000000", True),  # exactly 24 h
        ("20250301000000", "20250302000001", False),
        ("20250302000000", "20250301000000", False),  # backwards
        ("20000101000000", None, True),  # a start alone means the 24 h after it
        (None, "20250302000000", True),  # an end alone means the 24 h before it
        ("2025-03-01 00:00:00", "2025-03-02 00:00:01", False),
    ],
)
async def test_list_refuses_ranges_over_24_hours(api: Api, start: str | None, end: str | None, ok: bool) -> None:
    query = {name: value for name, value in (("start_time", start), ("end_time", end)) if value is not None}
    status, answer = await api.list(**query)
    if ok:
        assert status == 200 and answer["total"] == 0
    else:
        assert (status, answer["code"]) == (400, "InvalidParameter")


class WallClock:
    def __init__(self, epoch: float) -> None:
        self.now = epoch

    def __call__(self) -> float:
        return self.now


async def test_list_bounds_are_read_in_utc_plus_8_on_both_sides_of_midnight(session: aiohttp.ClientSession) -> None:
    # Midnight of 2 March 2025 in UTC+8 is 16:00 UTC on 1 March.
    midnight_utc8 = 1740844800.0
    wall = WallClock(midnight_utc8 - 0.5)
    async with DashScopeEmulator(quick(submit_rps=100), wall_clock=wall) as emu:
        api = Api(session, emu.base_url)
        before = (await api.create(body()))[1]["output"]["task_id"]
        wall.now = midnight_utc8 + 0.5
        after = (await api.create(body()))[1]["output"]["task_id"]

        async def listed(start: str, end: str) -> list[str]:
            status, page = await api.list(start_time=start, end_time=end)
            assert status == 200
            return [row["task_id"] for row in page["data"]]

        assert await listed("20250301000000", "20250301235959") == [before]
        assert await listed("20250302000000", "20250302235959") == [after]
        assert await listed("20250301120000", "20250302120000") == [after, before]  # newest first
        # Read as UTC, the same bounds would hold neither task.
        assert await listed("20250301160000", "20250301170000") == []


async def test_pending_and_running_answers_carry_their_times(api: Api) -> None:
    task_id = (await api.create(body()))[1]["output"]["task_id"]
    pending = (await api.get(task_id))["output"]
    assert pending["task_status"] == "PENDING" and len(pending["submit_time"]) == 23
    assert "scheduled_time" not in pending
    await asyncio.sleep(0.25)
    running = (await api.get(task_id))["output"]
    assert running["task_status"] == "RUNNING"
    assert running["submit_time"] == pending["submit_time"] < running["scheduled_time"]
    assert len(running["scheduled_time"]) == 23 and "end_time" not in running


async def test_the_neighbour_creates_tasks_of_the_same_models_in_the_accounts_slots(
    session: aiohttp.ClientSession,
) -> None:
    async with DashScopeEmulator(quick(submit_rps=100, pending_s=(5, 5))) as emu:
        api = Api(session, emu.base_url)
        mine = (await api.create(body()))[1]["output"]["task_id"]
        emu.update(neighbour_rate=50)
        await wait_until(lambda: emu.stats()["neighbour"]["created"] == 1, within=5)
        emu.update(neighbour_rate=0)
        # The account's two slots are taken, one by the neighbour: a 429 that is not the caller's fault.
        status, answer = await api.create(body())
        assert (status, answer["code"]) == (429, "Throttling.RateQuota")
        stats = emu.stats()
        assert stats["violations"] == [] and stats["refused_for_others"] == 1
        [theirs] = [t for t in stats["tasks"] if t["neighbour"]]
        assert theirs["model"] == FLASH and theirs["account"] == fingerprint(KEY)
        _, page = await api.list()
        rows = {row["task_id"]: row for row in page["data"]}
        assert set(rows) == {mine, theirs["task_id"]}
        assert rows[theirs["task_id"]]["api_key_id"] == emu.neighbour_api_key_id(fingerprint(KEY))
        assert rows[theirs["task_id"]]["api_key_id"] != rows[mine]["api_key_id"]
        # Any key of the account can read the neighbour's task, prompt included.
        await asyncio.sleep(0)
        assert (await api.get(theirs["task_id"]))["output"]["task_status"] == "PENDING"


async def test_the_neighbour_works_only_with_models_the_account_used(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(neighbour_rate=100, submit_rps=100, max_in_flight=100)) as emu:
        api = Api(session, emu.base_url)
        assert (await api.get("nope"))["output"]["task_status"] == "UNKNOWN"  # known account, no model yet
        await asyncio.sleep(0.1)
        assert emu.stats()["neighbour"]["created"] == 0
        assert (await api.create(body(model=PLUS)))[0] == 200
        await wait_until(lambda: emu.stats()["neighbour"]["created"] >= 3, within=5)
        assert {t["model"] for t in emu.stats()["tasks"]} == {PLUS}


async def test_over_limit_hold_accepts_and_holds_pending_until_a_slot_frees(session: aiohttp.ClientSession) -> None:
    config = quick(over_limit="hold", submit_rps=100, pending_s=(0.05, 0.05), running_s=(0.3, 0.3))
    async with DashScopeEmulator(config) as emu:
        api = Api(session, emu.base_url)
        ids = [(await api.create(body()))[1]["output"]["task_id"] for _ in range(3)]
        await asyncio.sleep(0.15)
        statuses = [(await api.get(task_id))["output"]["task_status"] for task_id in ids]
        assert statuses == ["RUNNING", "RUNNING", "PENDING"]
        done = await api.wait(ids[2])
        assert done["output"]["task_status"] == "SUCCEEDED"
        stats = emu.stats()
        timeline = {t["task_id"]: t for t in stats["tasks"]}
        first_free = min(timeline[i]["finished"] for i in ids[:2])
        assert timeline[ids[2]]["started"] >= first_free
        assert stats["held"] == 1 and stats["max_running"] == {fingerprint(KEY): {FLASH: 2}}
        [violation] = stats["violations"]  # held, yet the caller did go past the limit
        assert violation["kind"] == "in_flight"


async def test_a_held_task_can_be_canceled_and_frees_its_place(session: aiohttp.ClientSession) -> None:
    config = quick(over_limit="hold", submit_rps=100, pending_s=(0.05, 0.05), running_s=(0.3, 0.3))
    async with DashScopeEmulator(config) as emu:
        api = Api(session, emu.base_url)
        ids = [(await api.create(body()))[1]["output"]["task_id"] for _ in range(4)]
        assert (await api.cancel(ids[2]))[0] == 200
        done = await api.wait(ids[3])
        assert done["output"]["task_status"] == "SUCCEEDED"
        timeline = {t["task_id"]: t for t in emu.stats()["tasks"]}
        assert timeline[ids[2]]["status"] == "CANCELED" and timeline[ids[2]]["started"] is None
        assert emu.stats()["max_running"] == {fingerprint(KEY): {FLASH: 2}}


async def test_a_lost_create_answer_still_creates_the_task(api: Api, emulator: DashScopeEmulator) -> None:
    emulator.update(lose_create_answer_rate=1.0)
    assert (await api.create(body(p_resolution="8K")))[0] == 400  # a refusal is not lost: nothing was done
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.create(body(prompt="lost answer"))
    stats = emulator.stats()
    assert stats["faults"]["lost_create_answer"] == 1 and stats["faults"]["drop"] == 0
    assert stats["submissions_accepted"] == 1
    emulator.update(lose_create_answer_rate=0.0)
    _, page = await api.list()
    [row] = page["data"]
    assert (await api.wait(row["task_id"]))["output"]["orig_prompt"] == "lost answer"


@pytest.mark.parametrize("kind", ["no_output", "null_output", "no_status", "unknown_status", "wrong_types"])
async def test_malformed_poll_answers(session: aiohttp.ClientSession, kind: str) -> None:
    async with DashScopeEmulator(quick(malformed_poll_kinds=(kind,))) as emu:
        api = Api(session, emu.base_url)
        task_id = (await api.create(body()))[1]["output"]["task_id"]
        emu.update(malformed_poll_rate=1.0)
        answer = await api.get(task_id)  # still HTTP 200
        output = answer.get("output", "absent")
        if kind == "no_output":
            assert output == "absent", answer
        elif kind == "null_output":
            assert output is None, answer
        elif kind == "no_status":
            assert output["task_id"] == task_id and "task_status" not in output, answer
        elif kind == "unknown_status":
            assert output["task_status"] == "PROCESSING", answer
        else:
            assert not isinstance(output["task_status"], str) and not isinstance(output["task_id"], str), answer
        emu.update(malformed_poll_rate=0.0)
        assert (await api.get(task_id))["output"]["task_status"] in ("PENDING", "RUNNING")
        stats = emu.stats()
        assert stats["malformed_polls"][kind] == 1 and stats["faults"]["malformed_poll"] == 1
        assert stats["tasks"][0]["polls"] == 2


@pytest.mark.parametrize(("bill", "token", "value"), [("huge", "1000000", 1e6), ("infinity", "Infinity", math.inf)])
async def test_absurd_bills(session: aiohttp.ClientSession, bill: str, token: str, value: float) -> None:
    async with DashScopeEmulator(quick(absurd_billing=bill)) as emu:
        api = Api(session, emu.base_url)
        task_id = (await api.create(body()))[1]["output"]["task_id"]
        done = await api.wait(task_id)
        assert done["usage"]["video_duration"] == value
        async with session.get(f"{api.base}/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"}) as resp:
            raw = await resp.text()
        assert f'"video_duration": {token}' in raw  # the bare JSON token, as a lax provider would send
        assert emu.stats()["faults"]["absurd_bill"] >= 2


async def test_a_foreign_video_url_points_at_the_trap_which_counts_requests(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(foreign_video_url="{trap}/latest/meta-data/video.mp4")) as emu:
        api = Api(session, emu.base_url)
        done = await api.wait((await api.create(body()))[1]["output"]["task_id"])
        url = done["output"]["video_url"]
        assert url == emu.trap_origin + "/latest/meta-data/video.mp4"
        assert emu.trap_origin != emu.base_url.removesuffix("/api/v1")
        assert emu.stats()["foreign_requests"] == 0
        async with session.get(url) as resp:  # what a careless client would do
            assert resp.status == 200 and (await resp.read())[4:8] == b"ftyp"
        stats = emu.stats()
        assert stats["foreign_requests"] == 1 and stats["foreign_request_paths"] == ["GET /latest/meta-data/video.mp4"]


async def test_a_foreign_redirect_keeps_the_url_on_the_emulator(session: aiohttp.ClientSession) -> None:
    config = quick(foreign_video_url="http://169.254.169.254/latest/meta-data/", foreign_video_redirect=True)
    async with DashScopeEmulator(config) as emu:
        api = Api(session, emu.base_url)
        done = await api.wait((await api.create(body()))[1]["output"]["task_id"])
        url = done["output"]["video_url"]
        assert url.startswith(emu.base_url.removesuffix("/api/v1") + "/_sandbox/videos/")
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "http://169.254.169.254/latest/meta-data/"
        assert emu.stats()["foreign_requests"] == 0 and emu.stats()["videos_served"] == 0


def padded_body(size: int) -> io.BytesIO:
    payload = body()
    payload["input"]["x_padding"] = "p" * size  # an unknown input field: ignored, but uploaded
    return io.BytesIO(json.dumps(payload).encode())


async def test_a_slow_upload_outlasts_the_callers_timeout_and_creates_nothing(session: aiohttp.ClientSession) -> None:
    async with DashScopeEmulator(quick(upload_bytes_per_s=100_000)) as emu:
        headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable", "Content-Type": "application/json"}
        url = emu.base_url + "/services/aigc/image2video/video-synthesis"
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(
                url, data=padded_body(200_000), headers=headers, timeout=aiohttp.ClientTimeout(total=0.3)
            ) as resp:
                await resp.read()
        # aiohttp resets the connection of a request that timed out: the upload is cut, no task is created.
        await wait_until(lambda: emu.stats()["uploads_cut"] == 1, within=5)
        assert emu.stats()["submissions_accepted"] == 0
        # A small body still goes through at that rate.
        async with session.post(url, data=padded_body(20_000), headers=headers) as resp:
            assert resp.status == 200
        assert emu.stats()["submissions_accepted"] == 1


async def test_new_options_over_http_and_their_validation(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    root = emulator.base_url.removesuffix("/api/v1")
    changes = {
        "accounts": {KEY: "team"},
        "neighbour_rate": 0.5,
        "over_limit": "hold",
        "lose_create_answer_rate": 0.1,
        "malformed_poll_rate": 0.3,
        "malformed_poll_kinds": ["no_output", "null_output"],
        "absurd_billing": "infinity",
        "foreign_video_url": "{trap}/x.mp4",
        "upload_bytes_per_s": 1_000_000,
    }
    async with session.post(root + "/_sandbox/config", json=changes) as resp:
        assert resp.status == 200
        public = await resp.json()
    assert public["accounts"] == {fingerprint(KEY): "team"} and KEY not in json.dumps(public)
    assert public["malformed_poll_kinds"] == ["no_output", "null_output"] and public["over_limit"] == "hold"
    assert emulator.config.malformed_poll_kinds == ("no_output", "null_output")
    assert emulator.config.account_of(KEY) == "team" and emulator.config.account_of(OTHER_KEY) == fingerprint(OTHER_KEY)
    for bad in (
        {"over_limit": "queue"},
        {"absurd_billing": "lots"},
        {"malformed_poll_kinds": ["gibberish"]},
        {"malformed_poll_rate": 1.5},
        {"neighbour_rate": -1},
        {"upload_bytes_per_s": 0},
        {"foreign_video_url": "file:///etc/passwd"},
    ):
        async with session.post(root + "/_sandbox/config", json=bad) as resp:
            assert resp.status == 400, bad
    assert emulator.config.over_limit == "hold"  # a refused update changes nothing


def test_sandbox_flags_set_the_new_options() -> None:
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    args = parser.parse_args(
        [
            "--shared-account", "team", "--over-limit", "hold", "--neighbour-rate", "0.2",
            "--lose-create-answer-rate", "0.1", "--malformed-poll-rate", "0.3", "--absurd-billing", "huge",
            "--foreign-video-url", "{trap}/v.mp4", "--foreign-video-redirect", "--upload-bytes-per-s", "500000",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.default_account, config.over_limit, config.neighbour_rate) == ("team", "hold", 0.2)
    assert (config.lose_create_answer_rate, config.malformed_poll_rate, config.absurd_billing) == (0.1, 0.3, "huge")
    assert (config.foreign_video_url, config.foreign_video_redirect) == ("{trap}/v.mp4", True)
    assert config.upload_bytes_per_s == 500_000 and config.account_of(KEY) == "team"
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.over_limit, defaults.neighbour_rate, defaults.default_account) == ("reject", 0.0, None)
