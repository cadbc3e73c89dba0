"""wan2.7-i2v end to end at the provider edge: the request builder per family, temporary uploads, the
emulator's checks, and a create -> poll -> download round trip whose mp4 has sound and the asked length.

Real aiohttp against the emulator on 127.0.0.1; the only stand-in is a local fake provider that hands out a
foreign upload host (the trap), to show it is never contacted.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from bot.catalog import Catalog, load_catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import ForeignUploadHostError, InvalidRequestError
from bot.dashscope.models import CreateTaskRequest, RequestValidationError, TaskResult
from sandbox.dashscope_emulator import MEDIA_CREATE_PATH, DashScopeEmulator, EmulatorConfig
from sandbox.video import render_video

KEY = "sk-wan27-test"
OTHER_KEY = "sk-wan27-other-account"
MODEL = "wan2.7-i2v"


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(5000 * math.sin(i / 3))) for i in range(int(seconds * rate))))
    return buf.getvalue()


def streams_of(video: bytes) -> tuple[set[str], float]:
    with av.open(io.BytesIO(video), mode="r") as container:
        assert container.duration is not None
        return {s.type for s in container.streams}, container.duration / 1_000_000


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    config = EmulatorConfig(pending_s=(0.05, 0.05), running_s=(0.1, 0.1), submit_rps=50, max_in_flight=5)
    async with DashScopeEmulator(config) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(emulator: DashScopeEmulator, session: aiohttp.ClientSession) -> DashScopeClient:
    return DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(KEY), timeout=20)


def wan27(catalog: Catalog, **args: Any) -> CreateTaskRequest:
    values: dict[str, Any] = {
        "model_key": MODEL,
        "resolution": "720P",
        "prompt": "the card turns",
        "negative_prompt": None,
        "first_frame_uri": "https://example.com/a.png",
        "last_frame_uri": None,
    }
    values.update(args)
    return CreateTaskRequest.build(catalog, "beijing", **values)


async def finished(client: DashScopeClient, task_id: str) -> TaskResult:
    async with asyncio.timeout(60):
        while True:
            result = await client.get_task(task_id)
            if result.status.is_final:
                return result
            await asyncio.sleep(0.05)


# --- the request builder -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media",
    [
        {"first_frame_uri": "https://e.com/a.png"},
        {"first_frame_uri": "https://e.com/a.png", "driving_audio_url": "https://e.com/s.mp3"},
        {"first_frame_uri": "https://e.com/a.png", "last_frame_uri": "oss://b/k/z.png"},
        {
            "first_frame_uri": "https://e.com/a.png",
            "last_frame_uri": "https://e.com/z.png",
            "driving_audio_url": "oss://b/k/s.wav",
        },
        {"first_frame_uri": None, "first_clip_url": "oss://b/k/c.mp4"},
        {"first_frame_uri": None, "first_clip_url": "https://e.com/c.mov", "last_frame_uri": "https://e.com/z.png"},
    ],
)
def test_every_documented_combination_builds_the_media_body(catalog: Catalog, media: dict[str, Any]) -> None:
    req = wan27(catalog, duration=8, seed=3, **media)
    body = req.to_payload()
    assert req.create_path == "/services/aigc/video-generation/video-synthesis"
    sent = {item["type"]: item["url"] for item in body["input"]["media"]}
    expected = {k.removesuffix("_uri").removesuffix("_url"): v for k, v in media.items() if v is not None}
    assert sent == expected
    assert body["parameters"] == {
        "resolution": "720P",
        "duration": 8,
        "prompt_extend": True,
        "watermark": False,
        "seed": 3,
    }
    assert req.uses_oss == any(v.startswith("oss://") for v in expected.values())
    assert "family" not in body


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        ({"first_frame_uri": None, "last_frame_uri": "https://e.com/z.png"}, "first_frame_uri", "accepts"),
        ({"first_frame_uri": None, "driving_audio_url": "https://e.com/s.wav"}, "first_frame_uri", "accepts"),
        (
            {
                "first_frame_uri": None,
                "first_clip_url": "https://e.com/c.mp4",
                "driving_audio_url": "https://e.com/s.wav",
            },
            "driving_audio_url",
            "first_clip+last_frame",
        ),
        ({"duration": 16}, "duration", "2-15 s"),
        ({"duration": 1}, "duration", "2-15 s"),
        ({"prompt": "x" * 5001}, "prompt", "at most 5000"),
        ({"sound": False}, "sound", "cannot be switched off"),
        ({"driving_audio_url": "https://e.com/s.ogg"}, "driving_audio_url", "wav, mp3"),
        ({"driving_audio_url": "data:audio/wav;base64,AAAA"}, "driving_audio_url", "oss://"),
        ({"first_frame_uri": None, "first_clip_url": "https://e.com/c.avi"}, "first_clip_url", "mp4, mov"),
        ({"template": "hanfu-1"}, "template", "no effect templates"),
    ],
)
def test_wan27_refusals_name_the_argument(catalog: Catalog, args: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(RequestValidationError) as refused:
        wan27(catalog, **args)
    assert refused.value.field == field and words in refused.value.reason


def test_kf2v_models_refuse_a_duration_naming_their_range(catalog: Catalog) -> None:
    args: dict[str, Any] = {
        "model_key": "wan2.2-kf2v-flash", "resolution": "720P", "prompt": "p", "negative_prompt": None,
        "first_frame_uri": "https://e.com/a.png", "last_frame_uri": "https://e.com/b.png",
    }  # fmt: skip
    with pytest.raises(RequestValidationError) as refused:
        CreateTaskRequest.build(catalog, "beijing", duration=8, **args)
    assert refused.value.field == "duration" and "5 s" in refused.value.reason
    with pytest.raises(RequestValidationError, match="silent videos only"):
        CreateTaskRequest.build(catalog, "beijing", sound=True, **args)
    with pytest.raises(RequestValidationError, match="accepts first_frame\\+last_frame"):
        CreateTaskRequest.build(catalog, "beijing", driving_audio_url="https://e.com/s.wav", **args)
    req = CreateTaskRequest.build(catalog, "beijing", duration=5, prompt_extend=False, **args)
    assert req.create_path == "/services/aigc/image2video/video-synthesis"
    assert req.to_payload()["input"] == {
        "first_frame_url": "https://e.com/a.png",
        "last_frame_url": "https://e.com/b.png",
        "prompt": "p",
    }
    # 801 characters: fine for wan2.7 (5000), refused for a kf2v model (800).
    assert wan27(catalog, prompt="x" * 801).input.prompt == "x" * 801
    with pytest.raises(RequestValidationError, match="at most 800"):
        CreateTaskRequest.build(catalog, "beijing", **{**args, "prompt": "x" * 801})


# --- uploads -------------------------------------------------------------------------------------------


async def test_an_upload_is_usable_by_its_account_and_model_with_the_oss_header(
    client: DashScopeClient, emulator: DashScopeEmulator, session: aiohttp.ClientSession, catalog: Catalog
) -> None:
    uploaded = await client.upload_file(MODEL, "../frames/first frame.png", png((200, 30, 30)), "image/png")
    assert uploaded.url.startswith("oss://dashscope-instant/") and uploaded.url.endswith("/first_frame.png")
    assert uploaded.size > 0 and len(uploaded.sha256) == 64
    assert emulator.stats()["uploads_stored"] == 1
    created = await client.create_task(wan27(catalog, first_frame_uri=uploaded.url, duration=2))
    assert created.task_id

    body = wan27(catalog, first_frame_uri=uploaded.url, duration=2).to_payload()
    headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
    async with session.post(
        emulator.base_url + "/services/aigc/video-generation/video-synthesis", json=body, headers=headers
    ) as resp:
        assert resp.status == 400 and "X-DashScope-OssResourceResolve" in (await resp.json())["message"]
    other = DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(OTHER_KEY), timeout=20)
    with pytest.raises(InvalidRequestError, match="no such file for this account and model"):
        await other.create_task(wan27(catalog, first_frame_uri=uploaded.url, duration=2))
    assert emulator.stats()["oss_header_missing"] == 1


async def test_a_file_over_the_policys_limit_is_not_sent(client: DashScopeClient, emulator: DashScopeEmulator) -> None:
    with pytest.raises(InvalidRequestError, match="at most 104857600"):
        await client.upload_file(MODEL, "big.wav", bytes(100 * 1024 * 1024 + 1), "audio/wav")
    assert emulator.stats()["calls"]["upload"] == 0


@pytest.mark.parametrize("host_kind", ["trap", "https_foreign"])
async def test_a_foreign_upload_host_is_never_contacted(
    emulator: DashScopeEmulator, session: aiohttp.ClientSession, host_kind: str
) -> None:
    upload_host = emulator.trap_origin + "/upload" if host_kind == "trap" else "https://uploads.example.com"

    async def policy(request: web.Request) -> web.Response:
        data = {
            "policy": "cG9saWN5", "signature": "c2ln", "upload_dir": "dashscope-instant/x", "upload_host": upload_host,
            "expire_in_seconds": "300", "max_file_size_mb": "100", "oss_access_key_id": "LTAI",
        }  # fmt: skip
        return web.json_response({"request_id": "r", "data": data})

    app = web.Application()
    app.router.add_get("/api/v1/uploads", policy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        fake = DashScopeClient(session, base_url=base, api_key=SecretStr(KEY), timeout=5)
        with pytest.raises(ForeignUploadHostError):
            await fake.upload_file(MODEL, "a.png", png((1, 2, 3)), "image/png")
    finally:
        await runner.cleanup()
    assert emulator.stats()["foreign_requests"] == 0


# --- the emulator's checks -------------------------------------------------------------------------------


async def test_the_emulator_refuses_what_the_documentation_refuses(
    client: DashScopeClient, emulator: DashScopeEmulator, session: aiohttp.ClientSession
) -> None:
    long_audio = await client.upload_file(MODEL, "long.wav", wav(31), "audio/wav")
    url = emulator.base_url + "/services/aigc/video-generation/video-synthesis"
    headers = {
        "Authorization": f"Bearer {KEY}",
        "X-DashScope-Async": "enable",
        "X-DashScope-OssResourceResolve": "enable",
    }
    first = {"type": "first_frame", "url": "https://e.com/a.png"}
    cases = [
        ({"media": [first, {"type": "driving_audio", "url": long_audio.url}]}, {"duration": 5}, "InvalidFile.Duration"),
        ({"media": [first]}, {"duration": 16}, "InvalidParameter"),
        ({"media": [first, first]}, {}, "InvalidParameter"),
        ({"media": [{"type": "last_frame", "url": "https://e.com/z.png"}]}, {}, "InvalidParameter"),
        ({"media": [first, {"type": "driving_audio", "url": "https://e.com/a.ogg"}]}, {}, "InvalidFile.Format"),
        ({"media": [{"type": "reference_audio", "url": "https://e.com/a.wav"}]}, {}, "InvalidParameter"),
        ({"media": [first]}, {"resolution": "480P"}, "InvalidParameter"),
    ]
    for inp, params, code in cases:
        body = {"model": MODEL, "input": inp, "parameters": params}
        async with session.post(url, json=body, headers=headers) as resp:
            answer = await resp.json()
            assert (resp.status, answer["code"]) == (400, code), (inp, params, answer)
    body = {"model": "wan2.2-kf2v-flash", "input": {"media": [first]}, "parameters": {}}
    async with session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 400  # a kf2v model on the video-generation path
    body = {"model": MODEL, "input": {"prompt": "x" * 5001, "media": [first]}, "parameters": {"duration": 2}}
    async with session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200 and emulator.stats()["truncated_prompts"] == 1  # truncated, as documented
    assert emulator.stats()["submissions_accepted"] == 1
    assert MEDIA_CREATE_PATH.endswith("/video-generation/video-synthesis")


# --- round trips -------------------------------------------------------------------------------------------


async def test_first_last_and_audio_round_trip_has_sound_and_the_asked_duration(
    client: DashScopeClient, catalog: Catalog, tmp_path: Any
) -> None:
    first = await client.upload_file(MODEL, "first.png", png((220, 40, 40)), "image/png")
    last = await client.upload_file(MODEL, "last.png", png((40, 40, 220)), "image/png")
    audio = await client.upload_file(MODEL, "voice.wav", wav(2.5), "audio/wav")
    req = wan27(catalog, first_frame_uri=first.url, last_frame_uri=last.url, driving_audio_url=audio.url, duration=3)
    created = await client.create_task(req)
    result = await finished(client, created.task_id)
    assert result.status.value == "SUCCEEDED" and result.billed_seconds == 3
    assert result.usage is not None and result.usage.SR == 720
    dest = tmp_path / "out.mp4"
    await client.download_video(result.video_url or "", dest, max_bytes=50_000_000)
    kinds, seconds = streams_of(dest.read_bytes())
    assert kinds == {"video", "audio"} and abs(seconds - 3) < 0.2


async def test_a_continued_clip_comes_back_whole_and_is_billed_whole(
    client: DashScopeClient, catalog: Catalog, tmp_path: Any
) -> None:
    clip = await asyncio.to_thread(render_video, png((10, 120, 10)), None, resolution="720P", seconds=2)
    uploaded = await client.upload_file(MODEL, "clip.mp4", clip, "video/mp4")
    req = wan27(catalog, first_frame_uri=None, first_clip_url=uploaded.url, duration=4)
    result = await finished(client, (await client.create_task(req)).task_id)
    assert result.billed_seconds == 4 and result.usage is not None
    assert result.usage.input_video_duration is not None and abs(result.usage.input_video_duration - 2) < 0.2
    dest = tmp_path / "extended.mp4"
    await client.download_video(result.video_url or "", dest, max_bytes=50_000_000)
    kinds, seconds = streams_of(dest.read_bytes())
    assert kinds == {"video", "audio"} and abs(seconds - 4) < 0.2  # the clip's 2 s + 2 new seconds
