"""Attachment downloads: streamed, stopped at a byte cap, counted, and all together within a budget.

discord.py's `Attachment.read()` reads a whole body into memory whatever its length. Here the announced
size is checked first (Discord says it in the interaction), then the body is streamed through the bot's
own aiohttp session and abandoned as soon as more than the cap has arrived (a wrong announced size, a
CDN or proxy answering with something else): at most the cap plus one chunk is ever held for one file.
A request holds its attachments' announced sizes from `budget` from before the download until it has
been handed over (`holding`): a burst of requests waits its turn instead of holding every upload at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

import aiohttp
import discord

log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 64 * 1024
# A whole 10 MB frame takes seconds even on a slow link; a CDN that stops sending is given up on.
TIMEOUT: Final = aiohttp.ClientTimeout(total=120, sock_connect=15, sock_read=30)


class Downloadable(Protocol):
    """What a download needs of a `discord.Attachment`."""

    @property
    def url(self) -> str: ...

    @property
    def size(self) -> int: ...


class DownloadBudget:
    """Bytes of attachments the requests in progress may hold at once (`hold(n)` waits until `n` fit; `n` is
    capped at the whole budget, so a single request always gets its turn). Counts: `held`, `peak`, `waited`."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the download budget must be positive")
        self.total = total
        self.held = 0
        self.peak = 0
        self.waited = 0
        self._released = asyncio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """Hold `n` bytes (at most the whole budget) while the block runs."""
        n = min(max(n, 0), self.total)
        if self.held + n > self.total:
            self.waited += 1
            while self.held + n > self.total:
                self._released.clear()
                await self._released.wait()
        self.held += n
        self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            self.held -= n
            self._released.set()


class AttachmentReader:
    """Reads attachments with a cap, through `session`, within `budget` bytes for all requests at once.
    Counts for /metrics: `bytes_read` (body bytes received, those of refused files included), `downloads`
    (files read whole), `refused` (over the cap, announced or found while streaming)."""

    def __init__(self, session: aiohttp.ClientSession, budget: int = 64 * 1024 * 1024) -> None:
        self.session = session
        self.budget = DownloadBudget(budget)
        self.bytes_read = 0
        self.downloads = 0
        self.refused = 0

    def holding(self, *attachments: Downloadable | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the attachments' announced sizes for a request: enter before downloading them, leave once
        the bytes have been handed over (checked and stored, or refused)."""
        return self.budget.hold(sum(a.size for a in attachments if a is not None))

    async def read(self, attachment: Downloadable, max_bytes: int, too_large: Callable[[int], Exception]) -> bytes:
        """The attachment's bytes; `too_large(size)` is raised when it announces or turns out to be over
        `max_bytes`; discord.py's `NotFound`/`Forbidden`/`HTTPException` when the CDN refuses it."""
        if attachment.size > max_bytes:
            self.refused += 1
            raise too_large(attachment.size)
        async with self.session.get(attachment.url, timeout=TIMEOUT) as response:
            if response.status != 200:
                raise _cdn_error(response)
            if response.content_length is not None and response.content_length > max_bytes:
                self.refused += 1
                raise too_large(response.content_length)
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                self.bytes_read += len(chunk)
                body += chunk
                if len(body) > max_bytes:  # the announced size was wrong: stop reading here
                    self.refused += 1
                    log.info("attachment over its announced %d bytes: stopped at %d", attachment.size, len(body))
                    raise too_large(len(body))
        self.downloads += 1
        return bytes(body)


def _cdn_error(response: aiohttp.ClientResponse) -> discord.HTTPException:
    # What Attachment.read() raised, so the error handler treats a download failure as before.
    if response.status == 404:
        return discord.NotFound(response, "attachment not found")
    if response.status == 403:
        return discord.Forbidden(response, "attachment forbidden")
    return discord.HTTPException(response, "failed to get attachment")
