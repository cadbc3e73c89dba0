"""Adding an API family is one module plus catalog data: a toy family, registered by its name, is validated in a
catalog override, built into a request, sent to its own endpoint and billed, with no other code changed.

The toy is what a new family module would hold (see bot/dashscope/families/kf2v.py): its own endpoint, an input
shape no built-in family has (`input.image` + `input.text`), data URIs only, fixed 3-second videos, its bill in
`usage.duration`. The provider at the network edge is a tiny aiohttp handler that records what it receives.
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from bot.catalog import DEFAULT_CATALOG, CatalogError, load_catalog, parse_catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.families import FAMILIES, family_named, kf2v, media
from bot.dashscope.families.base import (
    MEDIA_TYPES,
    ApiFamily,
    BilledUsage,
    FamilyInput,
    MediaType,
    ModelShape,
    OutgoingMedia,
    RequestValidationError,
    Transport,
    upload_name,
)
from bot.dashscope.models import CreateTaskRequest, TaskStatus

TOY_PATH = "/services/aigc/toy/video-synthesis"


class ToyInput(FamilyInput):
    """The toy family's input: one picture and a text, under names no built-in family uses."""

    image: str
    text: str | None = None

    def media_urls(self) -> list[str]:
        return [self.image]

    def describe(self) -> list[str]:
        return [f"image=<{len(self.image)} chars>"]


class ToyFamily:
    name = "toy"
    create_path = TOY_PATH
    sendable_transports: frozenset[str] = frozenset({"inline"})
    default_transport: Transport = "inline"
    default_combinations: tuple[tuple[MediaType, ...], ...] = (("first_frame",),)
    default_prompt_max_chars = 100

    def catalog_problem(self, model: ModelShape) -> str | None:
        if model.duration_range != (3, 3):
            return "the toy family makes 3-second videos only"
        return None

    def refused_combination(
        self, given: frozenset[str], template_combinations: Sequence[frozenset[str]]
    ) -> RequestValidationError | None:
        return RequestValidationError("first_frame_uri", "The toy takes one picture.") if given else None

    def check_prompt(self, prompt: str | None) -> None:
        if prompt is None:
            raise RequestValidationError("prompt", "The toy needs a text.")

    def check_media(self, argument: str, kind: MediaType, value: str) -> None:
        if not value.startswith("data:"):
            raise RequestValidationError(argument, "The toy reads data URIs only.")

    def build_input(
        self, given: Mapping[MediaType, str], prompt: str | None, negative_prompt: str | None, template: str | None
    ) -> ToyInput:
        return ToyInput(image=given["first_frame"], text=prompt)

    def media_to_send(
        self, refs: Mapping[MediaType, str], transport: str, *, name_prefix: str
    ) -> tuple[OutgoingMedia, ...]:
        return tuple(OutgoingMedia(k, refs[k], "inline", upload_name(name_prefix, refs[k])) for k in refs)

    def billed_seconds(self, usage: BilledUsage | None) -> float | None:
        return None if usage is None else usage.duration


def _as_family(family: ApiFamily) -> ApiFamily:  # mypy checks the toy against the Protocol here
    return family


TOY = _as_family(ToyFamily())


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 200, 20)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


GREEN = _png()


def toy_catalog_data(**changes: Any) -> dict[str, Any]:
    """The built-in catalog with one toy-family model added, as an override file would."""
    data = copy.deepcopy(DEFAULT_CATALOG)
    data["models"]["toy-1"] = {
        "family": "toy",
        "provider_names": {"beijing": "toy-v1"},
        "resolutions": ["720P"],
        "default_resolution": "720P",
        "price_per_second": {"720P": "0.30"},
        "duration": {"min": 3, "max": 3, "default": 3},
        "limits": {"beijing": {"submit_rps": 1, "max_in_flight": 1}},
        **changes,
    }
    return data


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
    assert spec.media_combinations == (frozenset({"first_frame"}),)
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
        "last_frame_uri": None,
    }
    request = CreateTaskRequest.build(catalog, "beijing", **args)
    assert request.family == "toy" and request.create_path == TOY_PATH
    assert request.to_payload() == {
        "model": "toy-v1",
        "input": {"image": GREEN, "text": "a green card waves"},
        "parameters": {"resolution": "720P", "duration": 3, "prompt_extend": True, "watermark": False},
    }
    assert request.media_urls() == [GREEN] and not request.uses_oss and not request.template_mode
    assert GREEN not in repr(request) and f"image=<{len(GREEN)} chars>" in repr(request)
    # The generic checks still apply (the catalog's duration), then the family's own.
    refusals: list[tuple[dict[str, Any], str, str]] = [
        ({"duration": 5}, "duration", "makes videos of 3 s"),
        ({"prompt": None}, "prompt", "The toy needs a text."),
        ({"first_frame_uri": "https://example.com/a.png"}, "first_frame_uri", "data URIs only"),
        ({"last_frame_uri": GREEN}, "first_frame_uri", "The toy takes one picture."),
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
                "usage": {"duration": 3, "video_duration": 0, "video_count": 1},
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
        first_frame_uri=GREEN, last_frame_uri=None,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        client = DashScopeClient(session, base_url=base_url, api_key=SecretStr("sk-toy-0000"), timeout=10)
        created = await client.create_task(request)
        result = await client.get_task(created.task_id)
    assert created.task_id == "toy-task-1"
    assert handler.received == [("/api/v1" + TOY_PATH, request.to_payload())]
    assert handler.received[0][1]["input"] == {"image": GREEN, "text": "wave"}
    assert result.status is TaskStatus.SUCCEEDED
    # The family reads its own field: 3 s from `duration` (the kf2v family would read `video_duration`: 0).
    assert family_named(catalog.model("toy-1").family).billed_seconds(result.usage) == 3
    assert family_named("kf2v").billed_seconds(result.usage) == 0
