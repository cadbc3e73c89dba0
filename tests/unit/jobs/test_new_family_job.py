"""A job of a newly added API family goes through the real worker with no worker code changed: the toy family
(tests/support/toy_family.py) is registered by name and one model of it added by a catalog override file; the
dispatcher sends what the family plans, in the family's body, to the family's endpoint, and the settlement
charges what the family reads as the bill. The provider is a tiny aiohttp handler at the network edge.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.dashscope.families import FAMILIES
from bot.jobs.models import ChargeState, JobState
from tests.support.engine import all_final, draft, start_engine
from tests.support.toy_family import TOY, TOY_PATH, toy_catalog_data
from tests.support.waiting import wait_until


class _ToyProvider:
    """The toy's endpoint, the task endpoint and the video: creates are recorded; every task succeeds with a
    `usage` carrying both bill fields (2 s in the toy's `video_duration`, 3 s in the media family's `duration`)."""

    MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)

    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1" + TOY_PATH, self._create)
        app.router.add_get("/api/v1/tasks/{task_id}", self._get)
        app.router.add_get("/videos/{task_id}.mp4", self._video)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        self.created.append((request.path, await request.json()))
        task_id = f"toy-{len(self.created)}"
        return web.json_response({"request_id": "r", "output": {"task_id": task_id, "task_status": "PENDING"}})

    async def _get(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        origin = self.base_url.removesuffix("/api/v1")
        output = {
            "task_id": task_id,
            "task_status": "SUCCEEDED",
            "video_url": f"{origin}/videos/{task_id}.mp4",
            "submit_time": "2026-01-01 08:00:00.000",
        }
        usage = {"video_duration": 2, "duration": 3, "video_count": 1}
        return web.json_response({"request_id": "r", "output": output, "usage": usage})

    async def _video(self, request: web.Request) -> web.Response:
        return web.Response(body=self.MP4, content_type="video/mp4")


@pytest.fixture
async def provider() -> AsyncIterator[_ToyProvider]:
    toy = _ToyProvider()
    await toy.start()
    yield toy
    await toy.stop()


async def test_a_toy_family_job_is_sent_in_its_shape_and_charged_by_its_bill(
    tmp_path: Path, provider: _ToyProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FAMILIES, TOY.name, TOY)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(toy_catalog_data()), encoding="utf-8")
    services, recorder = await start_engine(tmp_path / "data", provider.base_url, KF2V_CATALOG_FILE=str(catalog_file))
    try:
        job = await services.jobs.submit(draft(model="toy-1", resolution="720P", prompt="a green card waves"))
        assert job.cost_reserved == 900  # 3 s at 0.30 CNY/s, in milli-CNY
        await wait_until(lambda: all_final(services, [job.id]), within=60)
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED, done
        assert [job_id for job_id, _ in recorder.delivered] == [job.id]
        # The family's endpoint and body: both frames inline as data URIs under `images`, the prompt as `text`.
        [(path, body)] = provider.created
        assert path == "/api/v1" + TOY_PATH
        assert body["model"] == "toy-v1" and set(body["input"]) == {"images", "text"}
        assert body["input"]["text"] == "a green card waves"
        first, last = body["input"]["images"]
        assert first.startswith("data:image/") and last.startswith("data:image/") and first != last
        assert body["parameters"]["duration"] == 3
        # Charged by the toy's reading (2 s of `video_duration`), not the 3 s of `duration` another family reads.
        assert done.charge_state is ChargeState.SETTLED and done.cost_settled == 600
    finally:
        await services.stop()
