from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web

from bot.__main__ import main
from bot.catalog import load_catalog
from bot.jobs.models import GuildPolicy, GuildUsage, JobRequest, NewJob
from bot.jobs.store import JobStore
from bot.ops import INVITE_PERMISSIONS, latest_migration, run_backup, run_check
from bot.settings import Settings, load_settings

GOOD_TOKEN = "MTIzNDU2Nzg5.good-discord-token.XYZgdtk"
BAD_TOKEN = "MTIzNDU2Nzg5.revoked-discord-token.QRSbdtk"
GOOD_KEY = "sk-0123456789abcdef-good-key-gk42"
BAD_KEY = "sk-0123456789abcdef-other-region-bk77"
BOT_ID = "112233445566778899"
APP_ID = "998877665544332211"
TABLES = ("jobs", "job_events", "ledger")
FAST = aiohttp.ClientTimeout(total=3, connect=2)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("KF2V_", "DISCORD_", "DASHSCOPE_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


@dataclass
class Stub:
    """Discord and DashScope on one loopback aiohttp server, recording what they were asked."""

    url: str = ""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    bot_public: bool | None = None  # the application's Public Bot switch; None: not in the answer

    @property
    def discord(self) -> str:
        return f"{self.url}/discord/api/v10"

    @property
    def dashscope(self) -> str:
        return f"{self.url}/dashscope/api/v1"


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    state = Stub()
    json_type = {"Content-Type": "application/json"}

    async def users_me(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        state.seen.append(("discord", auth, dict(request.query)))
        if auth != f"Bot {GOOD_TOKEN}":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        user = {"id": BOT_ID, "username": "kf2v", "discriminator": "0", "bot": True}
        return web.Response(text=json.dumps(user), headers=json_type)

    async def application(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {GOOD_TOKEN}":
            return web.json_response({"message": "401: Unauthorized"}, status=401)
        app: dict[str, Any] = {"id": APP_ID, "name": "kf2v"}
        if state.bot_public is not None:
            app["bot_public"] = state.bot_public
        return web.Response(text=json.dumps(app), headers=json_type)

    async def tasks(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        state.seen.append(("dashscope", auth, dict(request.query)))
        if auth != f"Bearer {GOOD_KEY}":
            return web.json_response(
                {"request_id": "r-1", "code": "InvalidApiKey", "message": "Invalid API-key provided."}, status=401
            )
        return web.json_response({"request_id": "r-2", "total": 0, "total_page": 0, "page_no": 1, "data": []})

    app = web.Application()
    app.router.add_get("/discord/api/v10/users/@me", users_me)
    app.router.add_get("/discord/api/v10/oauth2/applications/@me", application)
    app.router.add_get("/dashscope/api/v1/tasks", tasks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", **overrides)


async def _check(settings: Settings) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_check(settings, out=out, client_timeout=FAST)
    return code, out.getvalue()


def _line(output: str, item: str) -> str:
    for line in output.splitlines():
        if re.match(rf"^(OK|WARN|FAIL|SKIP)\s+{re.escape(item)}\s", line):
            return line
    raise AssertionError(f"no {item!r} line in:\n{output}")


def _assert_no_secrets(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output
        assert secret[:-4] not in output  # at most the last four characters show


# --- check -------------------------------------------------------------------------------------------------
async def test_check_without_credentials_skips_and_passes(tmp_path: Path) -> None:
    code, output = await _check(_settings(tmp_path))
    assert code == 0, output
    assert _line(output, "discord").startswith("SKIP")
    assert "DISCORD_TOKEN not set" in _line(output, "discord")
    assert _line(output, "dashscope").startswith("SKIP")
    assert _line(output, "settings").startswith("OK")
    assert "wan2.2-kf2v-flash" in _line(output, "models")
    assert _line(output, "region").startswith("OK") and "beijing" in _line(output, "region")
    assert _line(output, "data dir").startswith("OK")
    assert f"migrations at version {latest_migration()}" in _line(output, "database")
    data = tmp_path / "data"
    assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700
    assert (data / "kf2v.sqlite3").is_file()
    assert not [p for p in data.iterdir() if p.name.startswith(".kf2v-check")]  # the write probe is gone


def test_check_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KF2V_DATA_DIR", str(tmp_path / "cli-data"))
    assert main(["check"]) == 0
    output = capsys.readouterr().out
    assert "SKIP  discord" in output and "SKIP  dashscope" in output
    assert "check passed" in output


async def test_check_with_working_credentials(tmp_path: Path, stub: Stub) -> None:
    settings = _settings(
        tmp_path,
        discord_token=GOOD_TOKEN,
        dashscope_api_key=GOOD_KEY,
        discord_api_base=stub.discord,
        dashscope_base_url=stub.dashscope,
    )
    code, output = await _check(settings)
    assert code == 0, output
    discord = _line(output, "discord")
    assert discord.startswith("OK") and "kf2v" in discord and BOT_ID in discord
    assert "…gdtk" in discord
    invite = next(line for line in output.splitlines() if "invite:" in line)
    assert f"client_id={APP_ID}" in invite and f"permissions={INVITE_PERMISSIONS}" in invite
    assert "scope=bot+applications.commands" in invite
    assert _line(output, "dashscope").startswith("OK")
    _assert_no_secrets(output, GOOD_TOKEN, GOOD_KEY)

    (_, discord_auth, _), (_, dashscope_auth, query) = stub.seen
    assert discord_auth == f"Bot {GOOD_TOKEN}"
    assert dashscope_auth == f"Bearer {GOOD_KEY}"
    assert query["page_size"] == "1"
    assert re.fullmatch(r"\d{14}", query["start_time"]) and re.fullmatch(r"\d{14}", query["end_time"])
    assert query["start_time"] < query["end_time"]


@pytest.mark.parametrize(
    ("token", "key"),
    [(BAD_TOKEN, GOOD_KEY), (GOOD_TOKEN, BAD_KEY), (BAD_TOKEN, BAD_KEY)],
    ids=["token-rejected", "key-rejected", "both-rejected"],
)
async def test_check_with_rejected_credentials_fails(tmp_path: Path, stub: Stub, token: str, key: str) -> None:
    settings = _settings(
        tmp_path,
        discord_token=token,
        dashscope_api_key=key,
        discord_api_base=stub.discord,
        dashscope_base_url=stub.dashscope,
    )
    code, output = await _check(settings)
    assert code == 1, output
    discord, dashscope = _line(output, "discord"), _line(output, "dashscope")
    if token == BAD_TOKEN:
        assert discord.startswith("FAIL") and "rejected" in discord
        assert "invite:" not in output
    else:
        assert discord.startswith("OK")
    if key == BAD_KEY:
        assert dashscope.startswith("FAIL")
        assert "rejected" in dashscope and "InvalidApiKey" in dashscope and "other region" in dashscope
    else:
        assert dashscope.startswith("OK")
    assert "check FAILED" in output
    _assert_no_secrets(output, token, key)


@pytest.mark.parametrize(
    ("bot_public", "allowed", "status", "fragment"),
    [
        (True, "", "WARN", "the application is public"),
        (True, "123456789012345678,223456789012345678", "OK", "serves only KF2V_ALLOWED_GUILDS (2 server(s))"),
        (False, "", "OK", "the application is private"),
        (None, "", "WARN", "could not tell whether the application is public"),
    ],
    ids=["public-no-allow-list", "public-allow-list", "private", "unknown"],
)
async def test_check_warns_when_anyone_can_add_the_bot(
    tmp_path: Path, stub: Stub, bot_public: bool | None, allowed: str, status: str, fragment: str
) -> None:
    stub.bot_public = bot_public
    settings = _settings(tmp_path, discord_token=GOOD_TOKEN, discord_api_base=stub.discord, KF2V_ALLOWED_GUILDS=allowed)
    code, output = await _check(settings)
    assert code == 0, output  # a warning, not a failure: the bot still runs
    line = _line(output, "guilds")
    assert line.startswith(status) and fragment in line, line
    if status == "WARN" and bot_public:
        assert "KF2V_ALLOWED_GUILDS is empty" in line and "Public Bot" in line


async def test_check_reads_public_bot_from_the_discord_emulator(tmp_path: Path) -> None:
    from sandbox.discord_emu import DiscordEmulator

    discord = DiscordEmulator(bot_token=GOOD_TOKEN)  # its application is public, as Discord's default is
    await discord.start()
    try:
        settings = _settings(tmp_path, discord_token=GOOD_TOKEN, discord_api_base=discord.api_base)
        code, output = await _check(settings)
    finally:
        await discord.stop()
    assert code == 0, output
    assert _line(output, "discord").startswith("OK")
    assert _line(output, "guilds").startswith("WARN") and "the application is public" in output
    _assert_no_secrets(output, GOOD_TOKEN)


async def test_check_every_extra_key(tmp_path: Path, stub: Stub) -> None:
    settings = _settings(
        tmp_path,
        dashscope_api_key=GOOD_KEY,
        dashscope_extra_api_keys=BAD_KEY,
        dashscope_base_url=stub.dashscope,
    )
    code, output = await _check(settings)
    assert code == 1
    assert _line(output, "dashscope").startswith("OK")
    assert _line(output, "dashscope #2").startswith("FAIL")
    assert "…bk77" in output
    _assert_no_secrets(output, GOOD_KEY, BAD_KEY)


async def test_check_unreachable_services_fail_fast(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = _settings(
        tmp_path,
        discord_token=GOOD_TOKEN,
        dashscope_api_key=GOOD_KEY,
        discord_api_base=f"http://127.0.0.1:{port}/api/v10",
        dashscope_base_url=f"http://127.0.0.1:{port}/api/v1",
    )
    code, output = await asyncio.wait_for(_check(settings), 10)
    assert code == 1
    assert "cannot reach" in _line(output, "discord") and "cannot reach" in _line(output, "dashscope")
    _assert_no_secrets(output, GOOD_TOKEN, GOOD_KEY)


async def test_check_reports_unusable_data_dir_and_region_mismatch(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    settings = _settings(tmp_path, dashscope_region="singapore")  # base URL is the Beijing endpoint
    code, output = await _check(settings)
    assert code == 1
    assert _line(output, "data dir").startswith("FAIL")
    assert _line(output, "database").startswith("SKIP")
    assert _line(output, "region").startswith("FAIL") and "per region" in _line(output, "region")


@pytest.mark.parametrize("region", ["beijing", "singapore"])
async def test_check_lists_the_catalogs_unconfirmed_values_of_its_region(tmp_path: Path, region: str) -> None:
    catalog = load_catalog()
    settings = _settings(tmp_path, dashscope_region=region, dashscope_base_url=catalog.region_base_urls[region])
    code, output = await _check(settings)
    assert code == 0, output  # a warning: the bot runs on them
    unconfirmed = catalog.unconfirmed(region)
    assert unconfirmed, "the shipped catalog has unconfirmed values; this test needs one"
    assert _line(output, "unconfirmed").startswith("WARN")
    assert f"{len(unconfirmed)} catalog value(s) used in {region}" in output
    for value in unconfirmed:
        assert value in output
    other = "singapore" if region == "beijing" else "beijing"
    assert not [v for v in catalog.unconfirmed() if f".{other}" in v.split(":")[0] and v in output]


async def test_check_says_which_model_is_documented_but_not_offered_and_why(tmp_path: Path) -> None:
    urls = load_catalog().region_base_urls
    code, output = await _check(_settings(tmp_path, dashscope_region="singapore", dashscope_base_url=urls["singapore"]))
    assert code == 0, output
    models = [line for line in output.splitlines() if re.match(r"^(OK|WARN)\s+models\s", line)]
    assert any(
        line.startswith("WARN")
        and "wan2.7-i2v is documented in singapore but not offered" in line
        and "public http(s) URLs" in line
        for line in models
    ), output
    offered = next(line for line in models if line.startswith("OK"))
    assert "wan2.2-kf2v-flash" in offered and "wan2.1-kf2v-plus" in offered and "wan2.7-i2v" not in offered
    assert "also answering as wanx2.1-kf2v-plus" in offered
    code, output = await _check(_settings(tmp_path, dashscope_region="beijing", dashscope_base_url=urls["beijing"]))
    assert "not offered" not in output and "wan2.7-i2v" in _line(output, "models")


async def test_check_on_postgresql_names_the_engine_never_the_password(tmp_path: Path, postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    password = "pg-Secret-Passw0rd-in-url"  # trust authentication ignores it; check must never show it
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    code, output = await _check(_settings(tmp_path, database_url=url))
    assert code == 0, output
    line = _line(output, "database")
    assert line.startswith("OK") and "PostgreSQL postgresql://" in line and ":***@" in line, line
    assert f"migrations at version {latest_migration()}" in line
    assert password not in output
    assert not (tmp_path / "data" / "kf2v.sqlite3").exists()  # PostgreSQL chosen: no SQLite file made


async def test_check_on_an_unreachable_postgresql_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://kf2v:Another-Secret-9@127.0.0.1:{port}/kf2v"
    code, output = await _check(_settings(tmp_path, database_url=url))
    assert code == 1
    line = _line(output, "database")
    assert line.startswith("FAIL") and "does not open" in line and f"127.0.0.1:{port}" in line
    assert "Another-Secret-9" not in output


async def test_backup_with_a_database_url_points_at_pg_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path, database_url="postgresql://kf2v:pw-never-shown@db.example/kf2v")
    assert await run_backup(settings, str(tmp_path / "copy.sqlite3")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pg_dump" in err and "pw-never-shown" not in err
    assert not (tmp_path / "copy.sqlite3").exists()


# --- backup ------------------------------------------------------------------------------------------------
def _admit(usage: GuildUsage, policy: GuildPolicy) -> None:
    return None


def _request(n: int) -> NewJob:
    return NewJob(
        guild_id=1 + n % 3,
        channel_id=10,
        user_id=100 + n % 7,
        locale="en-US",
        request=JobRequest(model="wan2.2-kf2v-flash", resolution="720P", prompt=f"prompt {n}", seed=n),
        first_frame="a" * 64 + ".png",
        last_frame="b" * 64 + ".png",
    )


async def _add_jobs(store: JobStore, start: int, count: int) -> None:
    for n in range(start, start + count):
        await store.create_job(_request(n), cost=1000, period_day="2025-01-01", period_month="2025-01", admit=_admit)


def _counts(path: Path) -> dict[str, int]:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {
            "version": con.execute("PRAGMA user_version").fetchone()[0],
            **{t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES},  # noqa: S608
        }
    finally:
        con.close()


async def test_backup_while_another_connection_keeps_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path)
    writer = await JobStore.open(settings.database_path)
    await _add_jobs(writer, 0, 150)
    written = 150
    stop = asyncio.Event()

    async def keep_writing() -> None:
        nonlocal written
        while not stop.is_set():
            await _add_jobs(writer, written, 1)
            written += 1

    task = asyncio.create_task(keep_writing())
    try:
        await asyncio.sleep(0.02)
        before = written
        target = tmp_path / "backups" / "kf2v-copy.sqlite3"
        code = await run_backup(settings, str(target))
        after = written
        await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        await writer.close()

    out = capsys.readouterr()
    assert code == 0, out.err
    assert str(target) in out.out and "integrity ok" in out.out
    assert after > before, "the writer should have been writing while the backup ran"
    counts = _counts(target)
    assert counts["version"] == latest_migration()
    assert before <= counts["jobs"] <= after + 1
    # One consistent moment: every job has its event and its reservation, none half-written.
    assert counts["job_events"] == counts["jobs"] == counts["ledger"]
    assert (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["kf2v-copy.sqlite3"]  # no -wal, no partial
    # The copy is a normal database the bot can open again (a restore is a file copy).
    restored = await JobStore.open(target)
    try:
        assert len(await restored.all_jobs()) == counts["jobs"]
    finally:
        await restored.close()


async def test_backup_into_a_directory_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path)
    store = await JobStore.open(settings.database_path)
    await _add_jobs(store, 0, 3)
    await store.close()
    assert await run_backup(settings, str(tmp_path / "dated") + "/") == 0
    (copy,) = (tmp_path / "dated").iterdir()
    assert re.fullmatch(r"kf2v-\d{8}-\d{6}\.sqlite3", copy.name)
    assert _counts(copy)["jobs"] == 3
    assert await run_backup(settings, str(copy)) == 0  # an existing backup is replaced atomically
    assert _counts(copy)["jobs"] == 3
    capsys.readouterr()


async def test_backup_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path)
    assert await run_backup(settings, str(tmp_path / "x.sqlite3")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no database" in err
    assert not settings.database_path.exists()  # backup never creates a database

    store = await JobStore.open(settings.database_path)
    await store.close()
    assert await run_backup(settings, str(settings.database_path)) == 1
    assert "live database" in capsys.readouterr().err
    assert await run_backup(settings, str(settings.database_path) + "-wal") == 1
    assert capsys.readouterr().err.count("\n") == 1


async def test_backup_of_an_older_schema_does_not_migrate_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.data_dir.mkdir()
    con = sqlite3.connect(settings.database_path)
    con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    con.execute("INSERT INTO jobs DEFAULT VALUES")
    con.commit()
    con.close()  # user_version 0: older than this code
    target = tmp_path / "old.sqlite3"
    assert await run_backup(settings, str(target)) == 0
    assert _schema(settings.database_path) == 0
    assert _schema(target) == 0


def _schema(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()
