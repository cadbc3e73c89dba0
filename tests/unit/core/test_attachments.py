"""Attachment downloads are streamed with the byte cap and counted (issue 17, item 3).

A real aiohttp server plays Discord's CDN (the network edge); the reader is the bot's. Before, the bot
called discord.py's `Attachment.read()`, which reads the whole body whatever its length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import discord
import pytest
import pytest_asyncio
from aiohttp import web

from bot.discord_ui.attachments import CHUNK_BYTES, AttachmentReader, DownloadBudget
from bot.errors import InvalidImage
from bot.jobs.images import size_refusal
from tests.support.waiting import wait_until

MIB = 1024 * 1024
BODY = bytes(range(256)) * (12 * MIB // 256)  # 12 MiB: more than the 10 MiB cap


@dataclass(frozen=True)
class Announced:
    """An attachment as the interaction describes it: its CDN URL and the size Discord announces."""

    url: str
    size: int


@pytest_asyncio.fixture
async def cdn() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """`/exact`: the body with its length; `/chunked`: the same body without one; `/gone`: 404."""
    sent = {"bytes": 0}

    async def exact(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/png")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(BODY), CHUNK_BYTES):
                await response.write(BODY[start : start + CHUNK_BYTES])
                sent["bytes"] += CHUNK_BYTES
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the reader hung up: what we want
        return response

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/exact", exact)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", sent
    await runner.cleanup()


def refusal(size: int) -> InvalidImage:
    return size_refusal(size, 10 * MIB)


async def test_an_attachment_within_the_cap_is_read_whole_and_counted(cdn: tuple[str, dict[str, int]]) -> None:
    base, _ = cdn
    async with aiohttp.ClientSession() as session:
        reader = AttachmentReader(session)
        data = await reader.read(Announced(f"{base}/exact", len(BODY)), 16 * MIB, refusal)
    assert data == BODY
    assert (reader.bytes_read, reader.downloads, reader.refused) == (len(BODY), 1, 0)


async def test_an_announced_size_over_the_cap_is_refused_without_a_request(cdn: tuple[str, dict[str, int]]) -> None:
    base, sent = cdn
    async with aiohttp.ClientSession() as session:
        reader = AttachmentReader(session)
        with pytest.raises(InvalidImage) as refused:
            await reader.read(Announced(f"{base}/chunked", 11 * MIB), 10 * MIB, refusal)
    assert refused.value.params == {"size_mb": 11.0, "limit_mb": 10.0}
    assert (reader.bytes_read, reader.refused, sent["bytes"]) == (0, 1, 0)


async def test_a_body_longer_than_announced_is_cut_at_the_cap(cdn: tuple[str, dict[str, int]]) -> None:
    # Discord said 1 KB; the CDN (or whatever answers at that URL) sends 12 MiB without a length.
    base, _ = cdn
    async with aiohttp.ClientSession() as session:
        reader = AttachmentReader(session)
        with pytest.raises(InvalidImage) as refused:
            await reader.read(Announced(f"{base}/chunked", 1024), 10 * MIB, refusal)
    assert refused.value.key == "image.too_large"
    assert 10 * MIB < reader.bytes_read <= 10 * MIB + CHUNK_BYTES  # never more than the cap and one chunk
    assert (reader.downloads, reader.refused) == (0, 1)


async def test_a_content_length_over_the_cap_is_refused_before_the_body(cdn: tuple[str, dict[str, int]]) -> None:
    base, _ = cdn
    async with aiohttp.ClientSession() as session:
        reader = AttachmentReader(session)
        with pytest.raises(InvalidImage):
            await reader.read(Announced(f"{base}/exact", 1024), 10 * MIB, refusal)
    assert (reader.bytes_read, reader.refused) == (0, 1)


async def test_a_missing_attachment_raises_what_discord_py_raised(cdn: tuple[str, dict[str, int]]) -> None:
    base, _ = cdn
    async with aiohttp.ClientSession() as session:
        with pytest.raises(discord.NotFound):
            await AttachmentReader(session).read(Announced(f"{base}/gone", 10), 10 * MIB, refusal)


async def test_requests_hold_their_attachments_within_one_budget() -> None:
    budget = DownloadBudget(10 * MIB)
    order: list[str] = []

    async def request(name: str, size: int, release: asyncio.Event) -> None:
        async with budget.hold(size):
            order.append(f"{name} in")
            await release.wait()
        order.append(f"{name} out")

    first_done, second_done = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(request("first", 8 * MIB, first_done))
    await wait_until(lambda: budget.held == 8 * MIB)
    second = asyncio.create_task(request("second", 4 * MIB, second_done))
    await wait_until(lambda: budget.waited == 1)  # 8 + 4 MiB do not fit 10: it waits, nothing downloaded
    assert order == ["first in"]
    first_done.set()
    await wait_until(lambda: "second in" in order)
    second_done.set()
    await asyncio.gather(first, second)
    assert order == ["first in", "first out", "second in", "second out"]
    assert budget.peak == 8 * MIB and budget.held == 0
    async with budget.hold(50 * MIB):  # one request bigger than the whole budget still gets its turn
        assert budget.held == 10 * MIB
