"""Regions (issue 18): each model offered in a region builds a request that region documents and its sandbox
accepts; Singapore has no temporary upload, so wan2.7-i2v (whose media need URLs) is not offered there; names
move, and both spellings of a model are served and recognised. Our client and Alibaba's official SDK alike.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dashscope
import pytest
from dashscope import VideoSynthesis
from dashscope.common.error import UploadFileException
from PIL import Image
from pydantic import SecretStr

from bot.catalog import load_catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import InvalidRequestError
from bot.dashscope.models import CreateTaskRequest, RequestValidationError
from sandbox.dashscope_emulator import (
    CATALOG_REGIONS,
    MEDIA_CREATE_PATH,
    DashScopeEmulator,
    EmulatorConfig,
)

KEY = "sk-region-test-key"
REGION_OF = {catalog: provider for provider, catalog in CATALOG_REGIONS.items()}


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(buf, "PNG")
    return buf.getvalue()


def data_uri(color: tuple[int, int, int]) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png(color)).decode()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield


async def sandbox(region: str) -> DashScopeEmulator:
    config = EmulatorConfig(
        pending_s=(0.05, 0.05), running_s=(0.1, 0.1), submit_rps=50, max_in_flight=5, region=REGION_OF[region]
    )
    emu = DashScopeEmulator(config)
    await emu.start()
    return emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("region", ["beijing", "singapore"])
async def test_each_model_offered_in_a_region_builds_a_request_the_region_accepts(
    region: str, session: aiohttp.ClientSession
) -> None:
    """The region's sandbox knows only the names documented there and takes media the way the region documents
    (temporary uploads in Beijing only): every model the catalog offers there is accepted as the bot builds it."""
    catalog = load_catalog()
    emulator = await sandbox(region)
    try:
        client = DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(KEY), timeout=20)
        offered = catalog.models_in(region)
        assert offered
        for spec in offered:
            name = catalog.provider_name(spec.key, region)
            if spec.media_transport[region] == "temporary_upload":
                first = (await client.upload_file(name, "first.png", png((200, 40, 40)), "image/png")).url
                last = (await client.upload_file(name, "last.png", png((40, 40, 200)), "image/png")).url
            else:
                assert spec.media_transport[region] == "inline"
                first, last = data_uri((200, 40, 40)), data_uri((40, 40, 200))
            request = CreateTaskRequest.build(
                catalog, region, model_key=spec.key, resolution=None, prompt="a card turns", negative_prompt=None,
                first_frame_uri=first, last_frame_uri=last,
            )  # fmt: skip
            assert request.model == name
            created = await client.create_task(request)
            assert created.task_id
        stats = emulator.stats()
        assert stats["submissions_accepted"] == len(offered)
        # Uploads only where the region has them (the wan2.7 frames in Beijing).
        assert stats["calls"]["upload_policy"] == (2 if region == "beijing" else 0)
        for key, why in catalog.not_offered(region):
            with pytest.raises(RequestValidationError, match="not offered") as refused:
                CreateTaskRequest.build(
                    catalog, region, model_key=key, resolution=None, prompt="x", negative_prompt=None,
                    first_frame_uri="https://example.com/a.png", last_frame_uri=None,
                )  # fmt: skip
            assert refused.value.field == "model_key" and why in refused.value.reason
    finally:
        await emulator.stop()


async def test_singapore_has_no_temporary_upload(session: aiohttp.ClientSession) -> None:
    """ "This feature is available only in the China (Beijing) region": the Singapore sandbox refuses the upload
    policy and any oss:// URL, while the same wan2.7 request with public URLs is accepted there."""
    emulator = await sandbox("singapore")
    try:
        client = DashScopeClient(session, base_url=emulator.base_url, api_key=SecretStr(KEY), timeout=20)
        with pytest.raises(InvalidRequestError) as refused:
            await client.upload_file("wan2.7-i2v", "a.png", png((1, 2, 3)), "image/png")
        assert refused.value.code == "InvalidParameter"
        headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
        body: dict[str, Any] = {
            "model": "wan2.7-i2v",
            "input": {"prompt": "a wave", "media": [{"type": "first_frame", "url": "oss://dashscope-instant/x/a.png"}]},
            "parameters": {"resolution": "720P", "duration": 5},
        }
        url = emulator.base_url.removesuffix("/api/v1") + MEDIA_CREATE_PATH
        async with session.post(url, json=body, headers={**headers, "X-DashScope-OssResourceResolve": "enable"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "InvalidURL"
        body["input"]["media"] = [{"type": "first_frame", "url": "https://example.com/a.png"}]
        async with session.post(url, json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
        # Both spellings of the plus model are documented names there; Beijing's kf2v flash is too.
        for model in ("wan2.1-kf2v-plus", "wanx2.1-kf2v-plus", "wan2.2-kf2v-flash"):
            kf2v = {
                "model": model,
                "input": {
                    "first_frame_url": data_uri((9, 9, 9)),
                    "last_frame_url": data_uri((90, 9, 9)),
                    "prompt": "x",
                },
                "parameters": {"resolution": "720P"},
            }
            async with session.post(emulator.base_url + "/services/aigc/image2video/video-synthesis", json=kf2v,
                                    headers=headers) as r:  # fmt: skip
                assert r.status == 200, (model, await r.text())
        assert emulator.stats()["submissions_accepted"] == 4
    finally:
        await emulator.stop()


@pytest.mark.parametrize("region", ["beijing", "singapore"])
async def test_the_official_sdk_uploads_a_local_file_only_in_beijing(
    region: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alibaba's SDK turns a file:// media URL into a temporary upload: the Beijing sandbox takes it to the end,
    the Singapore one refuses the upload policy, so the SDK raises before any task is created."""
    frame = tmp_path / "first.png"
    frame.write_bytes(png((200, 40, 40)))
    emulator = await sandbox(region)
    try:
        monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_url)

        def submit() -> Any:
            return VideoSynthesis.async_call(
                api_key=KEY, model="wan2.7-i2v", prompt="a card turns", resolution="720P", duration=5,
                media=[{"type": "first_frame", "url": f"file://{frame}"}],
            )  # fmt: skip

        if region == "beijing":
            created = await asyncio.to_thread(submit)
            assert created.status_code == 200, created
            assert emulator.stats()["submissions_accepted"] == 1
        else:
            with pytest.raises(UploadFileException, match="InvalidParameter"):
                await asyncio.to_thread(submit)
            assert emulator.stats()["submissions_accepted"] == 0
        assert emulator.stats()["calls"]["upload_policy"] == 1
    finally:
        await emulator.stop()
