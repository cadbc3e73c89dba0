"""Adding an API family is one module plus catalog data: a toy family (tests/support/toy_family.py), registered by
its name, is validated in a catalog override, built into a request, refused where its own rules say, sent to its
own endpoint and billed, with no other code changed. The provider at the network edge is a tiny aiohttp handler
that records what it receives. (tests/unit/jobs/test_new_family_job.py runs a toy job through the worker.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.catalog import CatalogError, load_catalog, parse_catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.families import FAMILIES, family_named, kf2v, media
from bot.dashscope.families.base import MEDIA_TYPES, MediaType, OutgoingMedia, RequestValidationError
from bot.dashscope.models import CreateTaskRequest, TaskStatus
from tests.support.toy_family import GREEN, RED, TOY, TOY_PATH, toy_catalog_data


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering a family is one entry in the registry (a new module adds itself to `FAMILIES`' line)."""
    monkeypatch.setitem(FAMILIES, TOY.name, TOY)


def test_the_built_in_families_are_registered_by_their_catalog_names() -> None:
    assert FAMILIES == {"kf2v": kf2v.FAMILY, "media": media.FAMILY}
    assert family_named("kf2v").create_path == "/services/aigc/image2video/video-synthesis"
    assert family_named("media").create_path == "/services/aigc/video-generation/video-synthesis"
    with pytest.raises(KeyError, match="unknown API family 'toy'"):
        family_named("toy")
    # Every built-in model names a registered family, whose defaults its entry may rely on.
    catalog = load_catalog()
    assert {spec.family for spec in catalog.models.values()} <= set(FAMILIES)


def test_an_unregistered_family_is_refused_by_the_catalog() -> None:
    with pytest.raises(CatalogError, match=r"models\.toy-1\.family: .*unknown API family 'toy'"):
        parse_catalog(toy_catalog_data())


@pytest.mark.usefixtures("toy_registered")
def test_a_registered_family_judges_its_catalog_entries() -> None:
    catalog = parse_catalog(toy_catalog_data())
    spec = catalog.model("toy-1")
    # The family's defaults fill what the entry leaves out, and the model is offered where it can be sent.
    assert spec.family == "toy" and spec.prompt_max_chars == 100
    assert spec.media_transport == {"beijing": "inline"}
    assert spec.media_combinations == (frozenset({"first_frame", "last_frame"}),)
    assert catalog.offers("toy-1", "beijing") and not catalog.offers("toy-1", "singapore")
    # Its own rule, named with the model.
    with pytest.raises(CatalogError, match="model 'toy-1': the toy family makes 3-second videos only"):
        parse_catalog(toy_catalog_data(duration={"min": 2, "max": 5, "default": 3}))
    # A transport the family cannot send: documented, not offered, and `check` says why.
    other = parse_catalog(toy_catalog_data(media_transport={"beijing": "temporary_upload"}))
    assert other.why_not_offered("toy-1", "beijing") == (
        "beijing's API takes its media as temporary_upload, which this bot does not send (toy family)"
    )


@pytest.mark.usefixtures("toy_registered")
def test_a_registered_family_builds_and_checks_its_own_request() -> None:
    catalog = parse_catalog(toy_catalog_data())
    args: dict[str, Any] = {
        "model_key": "toy-1",
        "resolution": None,
        "prompt": "a green card waves",
        "negative_prompt": None,
        "first_frame_uri": GREEN,
        "last_frame_uri": RED,
    }
    request = CreateTaskRequest.build(catalog, "beijing", **args)
    assert request.family == "toy" and request.create_path == TOY_PATH
    assert request.to_payload() == {
        "model": "toy-v1",
        "input": {"images": [GREEN, RED], "text": "a green card waves"},
        "parameters": {"resolution": "720P", "duration": 3, "prompt_extend": True, "watermark": False},
    }
    assert request.media_urls() == [GREEN, RED] and not request.uses_oss and not request.template_mode
    assert GREEN not in repr(request) and "images=<2 pictures>" in repr(request)
    # The generic checks still apply (the catalog's duration), then the family's own.
    refusals: list[tuple[dict[str, Any], str, str]] = [
        ({"duration": 5}, "duration", "makes videos of 3 s"),
        ({"prompt": None}, "prompt", "The toy needs a text."),
        ({"first_frame_uri": "https://example.com/a.png"}, "first_frame_uri", "data URIs only"),
        ({"last_frame_uri": None}, "last_frame_uri", "The toy takes two pictures."),
        ({"driving_audio_url": "https://example.com/a.mp3"}, "driving_audio_url", "accepts first_frame+last_frame"),
    ]
    for change, field, reason in refusals:
        with pytest.raises(RequestValidationError) as refused:
            CreateTaskRequest.build(catalog, "beijing", **{**args, **change})
        assert (refused.value.field, reason in refused.value.reason) == (field, True), refused.value


@pytest.mark.usefixtures("toy_registered")
def test_the_media_plan_and_the_bill_come_from_the_registered_family() -> None:
    toy = family_named("toy")
    assert toy.media_to_send({"first_frame": "media/7/abcdef0123456789xyz.png"}, "inline", name_prefix="job-7") == (
        OutgoingMedia("first_frame", "media/7/abcdef0123456789xyz.png", "inline", "job-7-abcdef0123456789.png"),
    )
    # The built-in families' plans, for comparison: kf2v inline, media through the temporary upload with a
    # continued clip instead of the first frame.
    refs: dict[MediaType, str] = {"first_frame": "f/a.png", "driving_audio": "f/b.mp3", "first_clip": "f/c.mp4"}
    assert [
        (o.kind, o.transport) for o in family_named("media").media_to_send(refs, "temporary_upload", name_prefix="j")
    ] == [
        ("first_clip", "temporary_upload"),
        ("driving_audio", "temporary_upload"),
    ]
    assert {
        o.transport for o in family_named("kf2v").media_to_send({"first_frame": "f/a.png"}, "inline", name_prefix="j")
    } == {"inline"}
    assert set(MEDIA_TYPES) >= set(refs)


class _Edge:
    """The provider at the network edge: the toy's endpoint and the task endpoint, recording every request."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []

    async def create(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.json()))
        return web.json_response({"output": {"task_id": "toy-task-1", "task_status": "PENDING"}, "request_id": "r1"})

    async def task(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "output": {
                    "task_id": request.match_info["task_id"],
                    "task_status": "SUCCEEDED",
                    "video_url": "https://x/v.mp4",
                },
                "usage": {"duration": 3, "video_duration": 2, "video_count": 1},
                "request_id": "r2",
            }
        )


@pytest.fixture
async def edge() -> AsyncIterator[tuple[_Edge, str]]:
    handler = _Edge()
    app = web.Application()
    app.router.add_post("/api/v1" + TOY_PATH, handler.create)
    app.router.add_get("/api/v1/tasks/{task_id}", handler.task)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield handler, f"http://127.0.0.1:{port}/api/v1"
    finally:
        await runner.cleanup()


@pytest.mark.usefixtures("toy_registered")
async def test_the_client_sends_a_toy_request_to_its_endpoint_and_the_family_reads_the_bill(
    edge: tuple[_Edge, str],
) -> None:
    handler, base_url = edge
    catalog = parse_catalog(toy_catalog_data())
    request = CreateTaskRequest.build(
        catalog, "beijing", model_key="toy-1", resolution="720P", prompt="wave", negative_prompt=None,
        first_frame_uri=GREEN, last_frame_uri=RED,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        client = DashScopeClient(session, base_url=base_url, api_key=SecretStr("sk-toy-0000"), timeout=10)
        created = await client.create_task(request)
        result = await client.get_task(created.task_id)
    assert created.task_id == "toy-task-1"
    assert handler.received == [("/api/v1" + TOY_PATH, request.to_payload())]
    assert handler.received[0][1]["input"] == {"images": [GREEN, RED], "text": "wave"}
    assert result.status is TaskStatus.SUCCEEDED
    # The family reads its own field: 2 s from `video_duration`, where the media family reads `duration` (3 s),
    # as does the family-blind `billed_seconds`.
    assert family_named(catalog.model("toy-1").family).billed_seconds(result.usage) == 2
    assert family_named("media").billed_seconds(result.usage) == result.billed_seconds == 3
