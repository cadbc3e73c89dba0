"""Which result-video URLs the client fetches, over real HTTP on 127.0.0.1.

A refused URL must never be requested: every refusal is checked against a trap server that counts the
requests it receives (it must stay at 0), and nothing may be left on disk.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.dashscope.client import MAX_VIDEO_REDIRECTS, DashScopeClient, _PublicOnlyResolver
from bot.dashscope.errors import (
    DashScopeError,
    ForeignVideoUrlError,
    NotAVideoError,
    VideoTooLargeError,
    VideoUnavailableError,
)

KEY = "sk-video-policy-test-0123"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(4000)
SIGNED = "?Expires=1999999999&OSSAccessKeyId=LTAI5tTest&Signature=c2lnbmF0dXJl"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    """A tiny aiohttp server on 127.0.0.1 that counts every request it receives."""

    routes: dict[str, Handler] = field(default_factory=dict)
    hits: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(body=MP4, content_type="video/mp4")  # what a trap would happily serve
        return await handler(request)

    def url(self, path: str, *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
async def trap() -> AsyncIterator[Server]:
    server = Server()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def origin() -> AsyncIterator[Server]:
    """Plays the provider at base_url's origin (as the sandbox does)."""
    server = Server()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(session: aiohttp.ClientSession, origin: Server, *, hosts: tuple[str, ...] = ()) -> DashScopeClient:
    return DashScopeClient(
        session, base_url=origin.url("/api/v1"), api_key=SecretStr(KEY), timeout=5, video_url_hosts=hosts
    )


def redirect(to: str, status: int = 302) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": to})

    return handler


def body(data: bytes, *, chunked: bool = False) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=data, content_type="video/mp4")
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 1024):
            await response.write(data[start : start + 1024])
        await response.write_eof()
        return response

    return handler


def nothing_left(folder: Path) -> bool:
    return not any(folder.iterdir()) if folder.exists() else True


# --- what check_video_url allows and refuses (nothing is requested by a check) --------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://kf2v-results.oss-cn-beijing.aliyuncs.com/1/v.mp4" + SIGNED,
        "https://DASHSCOPE-RESULT-SH.OSS-CN-SHANGHAI.ALIYUNCS.COM/v.mp4",  # hosts are case-insensitive
        "https://bucket.oss-ap-southeast-1.aliyuncs.com:443/v.mp4",
        "https://cdn.example.net/v.mp4",  # KF2V_VIDEO_URL_HOSTS: exact host
        "https://eu.videos.example.org/v.mp4",  # KF2V_VIDEO_URL_HOSTS: "*.videos.example.org"
    ],
)
async def test_provider_storage_and_configured_hosts_are_allowed(
    url: str, session: aiohttp.ClientSession, origin: Server
) -> None:
    client = make_client(session, origin, hosts=("cdn.example.net", "*.videos.example.org"))
    client.check_video_url(url)  # no exception
    assert origin.hits == 0


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://bucket.oss-cn-beijing.aliyuncs.com/v.mp4", "plain http"),
        ("https://bucket.oss-cn-beijing.aliyuncs.com:8443/v.mp4", "another port"),
        ("https://aliyuncs.com/v.mp4", "the bare domain, not a storage host"),
        ("https://aliyuncs.com.attacker.example/v.mp4", "suffix trick"),
        ("https://evilaliyuncs.com/v.mp4", "no dot before the suffix"),
        ("https://user:pw@bucket.oss-cn-beijing.aliyuncs.com/v.mp4", "credentials"),
        ("https://videos.example.org/v.mp4", "the wildcard allows subdomains only"),
        ("https://cdn.example.net.attacker.example/v.mp4", "exact host only"),
        ("https://127.0.0.1/v.mp4", "loopback literal"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://10.1.2.3/v.mp4", "private literal"),
        ("https://100.64.0.1/v.mp4", "shared address space"),
        ("https://[::1]/v.mp4", "IPv6 loopback"),
        ("https://[::ffff:127.0.0.1]/v.mp4", "IPv4-mapped loopback"),
        ("https://[64:ff9b::a9fe:a9fe]/v.mp4", "NAT64 of the metadata address"),
        ("https://224.0.0.251/v.mp4", "multicast"),
        ("https://localhost/v.mp4", "a local name"),
        ("ftp://bucket.oss-cn-beijing.aliyuncs.com/v.mp4", "another scheme"),
        ("file:///etc/passwd", "a file"),
        ("/_sandbox/videos/t.mp4", "relative"),
        ("https://", "no host"),
    ],
)
async def test_everything_else_is_refused(url: str, why: str, session: aiohttp.ClientSession, origin: Server) -> None:
    client = make_client(session, origin, hosts=("cdn.example.net", "*.videos.example.org", "127.0.0.1"))
    with pytest.raises(ForeignVideoUrlError) as info:
        client.check_video_url(url)
    error = info.value
    assert error.code == "ForeignVideoUrl" and not error.retryable, why
    assert "Signature" not in str(error) and "pw" not in str(error)


async def test_only_the_exact_origin_of_base_url_escapes_the_address_rules(
    session: aiohttp.ClientSession, origin: Server, trap: Server
) -> None:
    client = make_client(session, origin)
    client.check_video_url(origin.url("/_sandbox/videos/t.mp4") + SIGNED)  # the sandbox: same scheme, host, port
    for other in (
        trap.url("/v.mp4"),  # same host, another port
        origin.url("/v.mp4", scheme="https"),  # same host and port, another scheme
        origin.url("/v.mp4", host="localhost"),  # the same machine by another name
    ):
        with pytest.raises(ForeignVideoUrlError):
            client.check_video_url(other)


# --- refused URLs are never requested -------------------------------------------------------------------


async def test_refused_urls_never_reach_the_trap(
    session: aiohttp.ClientSession, origin: Server, trap: Server, tmp_path: Path
) -> None:
    client = make_client(session, origin)
    dest = tmp_path / "videos" / "job.mp4"
    for url in (
        trap.url("/metrics"),
        trap.url("/v.mp4", host="localhost"),
        trap.url("/v.mp4", host="[::ffff:127.0.0.1]"),
        trap.url("/v.mp4", scheme="https"),
        f"http://user:secret@127.0.0.1:{trap.port}/v.mp4",
    ):
        with pytest.raises(ForeignVideoUrlError):
            await client.download_video(url, dest, max_bytes=1_000_000)
    assert trap.hits == 0 and origin.hits == 0
    assert nothing_left(dest.parent)


async def test_each_redirect_is_checked_before_it_is_followed(
    session: aiohttp.ClientSession, origin: Server, trap: Server, tmp_path: Path
) -> None:
    origin.routes["/to-trap.mp4"] = redirect(trap.url("/internal") + SIGNED)
    origin.routes["/to-metadata.mp4"] = redirect("http://169.254.169.254/latest/meta-data/", status=307)
    origin.routes["/to-localhost.mp4"] = redirect(trap.url("/v.mp4", host="localhost"), status=301)
    client = make_client(session, origin)
    dest = tmp_path / "job.mp4"
    for path in ("/to-trap.mp4", "/to-metadata.mp4", "/to-localhost.mp4"):
        with pytest.raises(ForeignVideoUrlError):
            await client.download_video(origin.url(path), dest, max_bytes=1_000_000)
    assert origin.hits == 3  # the allowed first hops were fetched...
    assert trap.hits == 0  # ...their targets never
    assert nothing_left(tmp_path)


async def test_redirects_within_the_allowed_origin_are_followed_up_to_the_limit(
    session: aiohttp.ClientSession, origin: Server, tmp_path: Path
) -> None:
    hops = [f"/hop{n}.mp4" for n in range(MAX_VIDEO_REDIRECTS + 2)]
    for here, there in itertools.pairwise(hops):
        origin.routes[here] = redirect(there)  # relative Location headers
    origin.routes[hops[-1]] = body(MP4)
    client = make_client(session, origin)

    size = await client.download_video(origin.url(hops[1]), tmp_path / "ok.mp4", max_bytes=1_000_000)
    assert size == len(MP4) and (tmp_path / "ok.mp4").read_bytes() == MP4  # exactly 3 redirects

    origin.hits = 0
    with pytest.raises(VideoUnavailableError) as info:
        await client.download_video(origin.url(hops[0]), tmp_path / "far.mp4", max_bytes=1_000_000)
    assert info.value.code == "TooManyRedirects" and not info.value.retryable
    assert origin.hits == MAX_VIDEO_REDIRECTS + 1  # the 4th redirect is not followed
    assert not (tmp_path / "far.mp4").exists()


# --- resolved names (the address actually connected to) -------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time(
    session: aiohttp.ClientSession, origin: Server, tmp_path: Path
) -> None:
    # "localhost" passes the host allow-list here, so only the connector's resolver can stop it.
    client = make_client(session, origin, hosts=("localhost",))
    client.check_video_url("https://localhost/v.mp4")
    with pytest.raises(ForeignVideoUrlError) as info:
        await client.download_video("https://localhost/v.mp4", tmp_path / "v.mp4", max_bytes=1_000_000)
    assert "non-public address" in str(info.value)
    assert nothing_left(tmp_path)


async def test_resolver_refuses_private_names_and_exempts_only_the_base_origin() -> None:
    resolver = _PublicOnlyResolver(("http", "localhost", 8080))
    assert await resolver.resolve("localhost", 8080)  # the base origin itself (the sandbox by name)
    for host, port in (("localhost", 8081), ("LOCALHOST", 80)):
        with pytest.raises(ForeignVideoUrlError):
            await resolver.resolve(host, port)
    await resolver.close()


async def test_the_base_origin_by_name_downloads(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    origin = Server(routes={"/v.mp4": body(MP4)})
    await origin.start()
    try:
        client = DashScopeClient(
            session, base_url=origin.url("/api/v1", host="localhost"), api_key=SecretStr(KEY), timeout=5
        )
        size = await client.download_video(origin.url("/v.mp4", host="localhost"), tmp_path / "v.mp4", max_bytes=10**6)
    finally:
        await origin.stop()
    assert size == len(MP4) and origin.hits == 1


# --- what comes back ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
async def test_over_the_cap_is_too_large_and_leaves_nothing(
    chunked: bool, session: aiohttp.ClientSession, origin: Server, tmp_path: Path
) -> None:
    origin.routes["/big.mp4"] = body(MP4 + bytes(50_000), chunked=chunked)
    client = make_client(session, origin)
    with pytest.raises(VideoTooLargeError) as info:
        await client.download_video(origin.url("/big.mp4"), tmp_path / "big.mp4", max_bytes=20_000)
    assert info.value.code == "VideoTooLarge" and not info.value.retryable
    assert origin.hits == 1 and nothing_left(tmp_path)


@pytest.mark.parametrize(
    "payload",
    [b"<html><body>metrics: kf2v_jobs_total 3</body></html>", b'{"video": "nope"}' * 100, b"\x00\x00", b""],
    ids=["html", "json", "tiny", "empty"],
)
async def test_a_body_that_is_not_an_mp4_is_refused_before_anything_is_written(
    payload: bytes, session: aiohttp.ClientSession, origin: Server, tmp_path: Path
) -> None:
    origin.routes["/v.mp4"] = body(payload)
    client = make_client(session, origin)
    with pytest.raises(NotAVideoError) as info:
        await client.download_video(origin.url("/v.mp4"), tmp_path / "v.mp4", max_bytes=1_000_000)
    assert isinstance(info.value, VideoUnavailableError) and info.value.code == "NotAVideo"
    assert not info.value.retryable and nothing_left(tmp_path)


async def test_logs_and_errors_never_show_the_signed_query(
    session: aiohttp.ClientSession, origin: Server, trap: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.dashscope")
    origin.routes["/a.mp4"] = redirect("/b.mp4" + SIGNED)
    origin.routes["/b.mp4"] = body(MP4)
    origin.routes["/c.mp4"] = redirect(trap.url("/x") + SIGNED)
    client = make_client(session, origin)
    await client.download_video(origin.url("/a.mp4") + SIGNED, tmp_path / "a.mp4", max_bytes=10**6)
    errors: list[DashScopeError] = []
    with pytest.raises(ForeignVideoUrlError) as info:
        await client.download_video(origin.url("/c.mp4") + SIGNED, tmp_path / "c.mp4", max_bytes=10**6)
    errors.append(info.value)
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(str(e) for e in errors)
    assert "/b.mp4" in text  # the redirect is logged...
    assert "Signature" not in text and "Expires" not in text and KEY not in text  # ...without its query
