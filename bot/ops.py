"""Operator commands: `kf2v-bot check` and `kf2v-bot backup PATH`.

`check` prints one line per item, each OK, WARN, FAIL or SKIP, and exits 1 when anything failed (0
otherwise, also when credentials are simply not set). It never prints a secret: credentials are shown
by their last four characters at most, and every line is scrubbed of the configured secrets before it
is printed.

`backup` writes an online, consistent copy of the job database (SQLite's backup API, safe while the bot
runs in WAL mode), turns the copy into a single self-contained file, verifies it and only then moves it
into place, so PATH is either the old file or a complete verified copy, never half of one. With
KF2V_DATABASE_URL (PostgreSQL) it refuses and names the tool for that engine, pg_dump.

Every SQL statement lives in the store (bot.jobs.store); these commands only ask it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import os
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from bot.catalog import Catalog
from bot.jobs.db import latest_version, redact_url
from bot.jobs.models import FINAL_STATES
from bot.jobs.store import BACKUP_ON_POSTGRESQL, STORE_UNAVAILABLE, JobStore
from bot.jobs.story import stories_available
from bot.settings import Settings, SettingsError, load_catalog_for

# What the bot needs in a guild, and nothing more (see README, Add it to your server): View Channels, Send Messages,
# Send Messages in Threads, Create Public Threads, Embed Links, Attach Files, Read Message History.
INVITE_PERMISSIONS = 309237763072
INVITE_SCOPES = "bot+applications.commands"

CHECK_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)
# The task list is read in the provider's clock (UTC+8), as "YYYYMMDDhhmmss".
_PROVIDER_TZ = timezone(timedelta(hours=8))
_BILLING_CODES = frozenset(
    {"Arrearage", "PrepaidBillOverdue", "PostpaidBillOverdue", "CommodityNotPurchased", "AllocationQuota.FreeTierOnly"}
)

Status = Literal["OK", "WARN", "FAIL", "SKIP"]


def invite_url(client_id: int | str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={client_id}"
        f"&scope={INVITE_SCOPES}&permissions={INVITE_PERMISSIONS}"
    )


def mask(secret: SecretStr | str | None) -> str:
    """`…abcd` for a long secret, `****` for a short one: enough to tell keys apart, never enough to use."""
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else (secret or "")
    return f"…{value[-4:]}" if len(value) >= 16 else "****"


def latest_migration() -> int:
    """The newest SQLite migration this code ships (the PostgreSQL twins carry the same numbers)."""
    return latest_version("sqlite")


# --- check -----------------------------------------------------------------------------------------------
@dataclass
class Report:
    """Prints check lines as they come and remembers the worst outcome."""

    out: TextIO
    secrets: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"OK": 0, "WARN": 0, "FAIL": 0, "SKIP": 0})

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= 8:  # shorter "secrets" (a sandbox's `x`) would only garble the report
                text = text.replace(secret, "****")
        return text

    def line(self, status: Status, item: str, detail: str) -> None:
        self.counts[status] += 1
        print(self.scrub(f"{status:<5} {item:<13} {detail}"), file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(self.scrub(f"{'':<5} {'':<13} {text}"), file=self.out, flush=True)

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["FAIL"] else 0


def _secrets_of(settings: Settings) -> list[str]:
    values = [k.get_secret_value() for k in settings.api_keys()]
    if settings.discord_token is not None:
        values.append(settings.discord_token.get_secret_value())
    if settings.database_url:
        try:
            password = urlsplit(settings.database_url).password
        except ValueError:
            password = None
        if password:
            values.append(password)
    # Longest first, so a secret that contains another one is replaced whole.
    return sorted({v for v in values if v}, key=len, reverse=True)


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cleartext_warning(url: str) -> str | None:
    if urlsplit(url).scheme == "http" and not _is_local(url):
        return f"{url} is plain http: credentials would cross the network unencrypted (use https)"
    return None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    text = str(exc) or type(exc).__name__
    return text[:200]


def _check_settings(report: Report, settings: Settings) -> None:
    env_file = Path(".env")
    source = f".env read from {env_file.resolve()}" if env_file.is_file() else "no .env here: environment only"
    report.line("OK", "settings", f"valid ({source})")


def _check_catalog(report: Report, settings: Settings) -> Catalog | None:
    try:
        catalog = load_catalog_for(settings)
    except SettingsError as exc:
        report.line("FAIL", "catalog", str(exc))
        return None
    region = settings.region(catalog)
    url_region = catalog.region_for_base_url(settings.dashscope_base_url)
    models = catalog.models_in(region)
    if settings.dashscope_region and url_region and url_region != settings.dashscope_region:
        report.line(
            "FAIL",
            "region",
            f"KF2V_DASHSCOPE_REGION={settings.dashscope_region} but DASHSCOPE_BASE_URL is the {url_region} "
            "endpoint; keys and model names are per region: make them agree",
        )
        return catalog
    if url_region is None:
        where = "not an official endpoint (the sandbox or a proxy)"
        how = "as set by KF2V_DASHSCOPE_REGION" if settings.dashscope_region else "assumed; set KF2V_DASHSCOPE_REGION"
        report.line("OK", "region", f"{region} ({how}); {settings.dashscope_base_url} is {where}")
    else:
        report.line("OK", "region", f"{region}: {settings.dashscope_base_url}")
    if warning := _cleartext_warning(settings.dashscope_base_url):
        report.line("WARN", "region", warning)
    for key, why in catalog.not_offered(region):
        report.line("WARN", "models", f"{key} is documented in {region} but not offered: {why}")
    if not models:
        report.line("FAIL", "models", f"the catalog offers no model in region {region}")
        return catalog
    offered = ", ".join(
        f"{catalog.provider_name(m.key, region)} ({'/'.join(m.resolutions)})"
        + (f" also answering as {'/'.join(m.aliases[region])}" if m.aliases.get(region) else "")
        + (" default" if m.key == catalog.default_model else "")
        for m in models
    )
    report.line("OK", "models", offered)
    if not catalog.offers(catalog.default_model, region):
        report.line("FAIL", "models", f"the default model {catalog.default_model} is not offered in {region}")
    _check_unconfirmed(report, catalog, region)
    for spec in models:
        limits = catalog.limits(spec.key, region)
        if settings.max_concurrent_tasks > limits.max_in_flight or settings.submit_rps > limits.submit_rps:
            report.line(
                "WARN",
                "limits",
                f"{spec.key} in {region} allows {limits.max_in_flight} tasks in flight and "
                f"{limits.submit_rps:g} submissions/s per account; KF2V_MAX_CONCURRENT_TASKS="
                f"{settings.max_concurrent_tasks}, KF2V_SUBMIT_RPS={settings.submit_rps:g} will meet 429s",
            )
    return catalog


def _check_unconfirmed(report: Report, catalog: Catalog, region: str) -> None:
    """Catalog values of `region`'s models no official source confirmed: the bot uses them, the operator should
    know which (values about other regions are left out)."""
    unconfirmed = catalog.unconfirmed(region)
    if undated := catalog.undocumented_region_values(region):
        report.line("WARN", "unconfirmed", f"no dated source and not listed as unconfirmed: {', '.join(undated)}")
    if not unconfirmed:
        report.line("OK", "unconfirmed", f"every catalog value used in {region} is confirmed by an official source")
        return
    report.line(
        "WARN",
        "unconfirmed",
        f"{len(unconfirmed)} catalog value(s) used in {region} not confirmed by an official source (check them in "
        "the console or override them with KF2V_CATALOG_FILE):",
    )
    for value in unconfirmed:
        report.note(value)


def _prepare_data_dir(path: Path) -> tuple[bool, str]:
    """Create (0700) and probe the data dir. Returns (created, problem or "")."""
    created = False
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        created = True
    if not path.is_dir():
        return created, f"{path} exists and is not a directory"
    probe = path / f".kf2v-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return created, f"{path} is not writable by uid {os.getuid()}: {exc.strerror or exc}"
    return created, ""


async def _check_storage(report: Report, settings: Settings) -> None:
    data_dir = settings.data_dir
    try:
        created, problem = await asyncio.to_thread(_prepare_data_dir, data_dir)
    except OSError as exc:
        report.line("FAIL", "data dir", f"cannot create {data_dir}: {exc.strerror or exc}")
        report.line("SKIP", "database", "no usable data dir")
        return
    if problem:
        report.line("FAIL", "data dir", problem)
        report.line("SKIP", "database", "no usable data dir")
        return
    mode = data_dir.stat().st_mode & 0o777
    shown = f"{data_dir.resolve()} ({'created, ' if created else ''}writable, mode {mode:04o})"
    if mode & 0o077:
        report.line("WARN", "data dir", f"{shown}: other users can look inside; chmod 700 it")
    else:
        report.line("OK", "data dir", shown)

    await _check_database(report, settings)


async def _check_database(report: Report, settings: Settings) -> None:
    """Open the store the settings select (applying pending migrations, as `run` would) and read it."""
    db_path = settings.database_path
    fresh = not settings.database_url and not db_path.exists()
    where = f"PostgreSQL {redact_url(settings.database_url)}" if settings.database_url else f"SQLite {db_path}"
    try:
        store = await JobStore.from_settings(settings)
    except STORE_UNAVAILABLE as exc:
        report.line("FAIL", "database", f"{where} does not open: {_error_text(exc)}")
        return
    try:
        where = store.describe()
        version = await store.schema_version()
        latest = store.latest_schema_version()
        counts = await store.count_by_state()
    except STORE_UNAVAILABLE as exc:
        report.line("FAIL", "database", f"{where} opens but cannot be read: {_error_text(exc)}")
        return
    finally:
        await store.close()
    total = sum(counts.values())
    unfinished = sum(n for state, n in counts.items() if state not in FINAL_STATES)
    what = f"{where} {'created' if fresh else 'opens'}, migrations at version {version}"
    if version > latest:
        report.line("FAIL", "database", f"{what}, newer than this code knows ({latest}): upgrade kf2v-bot")
    elif version < latest:
        report.line("FAIL", "database", f"{what}, expected {latest}")
    else:
        report.line("OK", "database", f"{what}, {total} jobs ({unfinished} unfinished)")


async def _check_discord(report: Report, settings: Settings, session: aiohttp.ClientSession) -> None:
    token = settings.discord_token
    if token is None or not token.get_secret_value().strip():
        report.line("SKIP", "discord", "DISCORD_TOKEN not set")
        return
    base = settings.discord_api_base
    if warning := _cleartext_warning(base):
        report.line("WARN", "discord", warning)
    headers = {"Authorization": f"Bot {token.get_secret_value().strip()}", "User-Agent": "kf2v-bot check"}
    label = f"token {mask(token)}"
    try:
        async with session.get(f"{base}/users/@me", headers=headers) as resp:
            status = resp.status
            data: Any = await resp.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        report.line("FAIL", "discord", f"cannot reach {base}: {_error_text(exc)}")
        return
    if status == 401:
        report.line("FAIL", "discord", f"{label} rejected (401): reset it in the developer portal (Bot → Reset Token)")
        return
    if status == 429:
        report.line("WARN", "discord", f"{label}: rate limited (429); try again in a minute")
        return
    if status != 200 or not isinstance(data, dict) or "id" not in data:
        report.line("FAIL", "discord", f"{label}: unexpected answer from {base}/users/@me (HTTP {status})")
        return
    name = str(data.get("username", "?"))
    discriminator = str(data.get("discriminator") or "0")
    if discriminator != "0":
        name = f"{name}#{discriminator}"
    user_id = str(data["id"])
    if data.get("bot") is False:
        report.line("WARN", "discord", f"{label} belongs to {name} (id {user_id}), which is not a bot account")
        return
    report.line("OK", "discord", f"{label} accepted: logged in as {name} (id {user_id})")
    client_id = user_id
    app: Any = None
    try:
        async with session.get(f"{base}/oauth2/applications/@me", headers=headers) as resp:
            if resp.status == 200:
                app = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass  # the bot's user id is the application id for every current application
    if isinstance(app, dict) and app.get("id"):
        client_id = str(app["id"])
    _check_guild_reach(report, settings, app if isinstance(app, dict) else None)
    report.note(f"invite: {invite_url(client_id)}")


def _check_guild_reach(report: Report, settings: Settings, app: dict[str, Any] | None) -> None:
    """Who can put the bot in a server (and so spend its budget): the Public Bot switch and the allow-list."""
    allowed = settings.allowed_guilds
    if allowed:
        report.line("OK", "guilds", f"serves only KF2V_ALLOWED_GUILDS ({len(allowed)} server(s)); refused elsewhere")
        return
    public = app.get("bot_public") if app is not None else None
    if public is True:
        report.line(
            "WARN",
            "guilds",
            "the application is public (anyone can add the bot to a server and spend your DashScope budget) "
            "and KF2V_ALLOWED_GUILDS is empty: set it to your server ids, or turn off Public Bot in the "
            "developer portal (Bot page)",
        )
    elif public is False:
        report.line("OK", "guilds", "the application is private (only you can add it); KF2V_ALLOWED_GUILDS is empty")
    else:
        report.line("WARN", "guilds", "could not tell whether the application is public; consider KF2V_ALLOWED_GUILDS")


def _list_window(now: datetime) -> dict[str, str]:
    fmt = "%Y%m%d%H%M%S"
    local = now.astimezone(_PROVIDER_TZ)
    return {
        "start_time": (local - timedelta(hours=1)).strftime(fmt),
        "end_time": (local + timedelta(seconds=1)).strftime(fmt),
        "page_no": "1",
        "page_size": "1",
    }


async def _check_dashscope_key(
    report: Report,
    settings: Settings,
    session: aiohttp.ClientSession,
    key: SecretStr,
    item: str,
    region: str,
) -> None:
    base = settings.dashscope_base_url
    label = f"key {mask(key)}"
    headers = {"Authorization": f"Bearer {key.get_secret_value().strip()}", "User-Agent": "kf2v-bot check"}
    try:
        async with session.get(f"{base}/tasks", headers=headers, params=_list_window(datetime.now(UTC))) as resp:
            status = resp.status
            try:
                data: Any = await resp.json(content_type=None)
            except ValueError:
                data = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.line("FAIL", item, f"cannot reach {base}: {_error_text(exc)}")
        return
    code = str(data.get("code") or "") if isinstance(data, dict) else ""
    shown = f"HTTP {status}{f' {code}' if code else ''}"
    if status == 200 and not isinstance(data, dict):
        report.line("WARN", item, f"{label}: {base}/tasks answered 200 but not with JSON (a proxy in the way?)")
    elif status == 200:
        total = data.get("total")
        recent = f"; {total} task(s) in the last hour" if isinstance(total, int) else ""
        report.line("OK", item, f"{label} accepted by the {region} endpoint{recent}")
    elif status == 401:
        report.line(
            "FAIL",
            item,
            f"{label} rejected ({shown}) — also happens when the key belongs to the other region "
            f"(DASHSCOPE_BASE_URL is the {region} endpoint; Beijing and Singapore keys are separate)",
        )
    elif code in _BILLING_CODES:
        report.line("FAIL", item, f"{label} accepted, but the account cannot be billed ({shown}): see the console")
    elif status == 429:
        report.line("WARN", item, f"{label} accepted but throttled right now ({shown}); fine if the bot is busy")
    elif status == 403:
        report.line("WARN", item, f"{label} accepted but this call is denied ({shown}): check the key's permissions")
    elif status >= 500:
        report.line("WARN", item, f"{label}: the provider is having trouble ({shown}); try again later")
    else:
        report.line("WARN", item, f"{label}: unexpected answer from {base}/tasks ({shown})")


async def _check_dashscope(
    report: Report, settings: Settings, catalog: Catalog | None, session: aiohttp.ClientSession
) -> None:
    keys = settings.api_keys()
    if not keys:
        report.line("SKIP", "dashscope", "DASHSCOPE_API_KEY not set")
        return
    region = settings.region(catalog) if catalog is not None else (settings.dashscope_region or "beijing")
    for index, key in enumerate(keys):
        item = "dashscope" if index == 0 else f"dashscope #{index + 1}"
        await _check_dashscope_key(report, settings, session, key, item, region)


def _check_stories(report: Report) -> None:
    """/kf2v-story needs PyAV to join segments (the `video` extra); without it the command is not offered."""
    if stories_available():
        report.line("OK", "stories", f"/kf2v-story available (PyAV {importlib.metadata.version('av')} joins segments)")
    else:
        report.line(
            "SKIP", "stories", "/kf2v-story is off: PyAV is not installed (pip install 'kf2v-bot[video]'; "
            "the Docker image has it)"
        )  # fmt: skip


async def run_check(
    settings: Settings, *, out: TextIO | None = None, client_timeout: aiohttp.ClientTimeout | None = None
) -> int:
    """Validate the configuration and, where credentials are set, that both services accept them."""
    report = Report(out or sys.stdout, _secrets_of(settings))
    print("kf2v-bot check", file=report.out)
    _check_settings(report, settings)
    catalog = _check_catalog(report, settings)
    _check_stories(report)
    await _check_storage(report, settings)
    async with aiohttp.ClientSession(timeout=client_timeout or CHECK_TIMEOUT) as session:
        await _check_discord(report, settings, session)
        await _check_dashscope(report, settings, catalog, session)
    c = report.counts
    verdict = "FAILED" if report.exit_code else "passed"
    print(
        f"check {verdict}: {c['OK']} ok, {c['WARN']} warning(s), {c['FAIL']} failure(s), {c['SKIP']} skipped",
        file=report.out,
    )
    return report.exit_code


# --- backup ----------------------------------------------------------------------------------------------
class BackupError(Exception):
    """One line for the operator."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    bytes: int
    schema_version: int
    rows: dict[str, int]
    seconds: float


def _finish_and_verify(path: Path, expected_version: int) -> tuple[int, dict[str, int]]:
    """Make the copy one self-contained file (no -wal), then check it thoroughly."""
    found = JobStore.seal_sqlite_copy(path)
    if found.integrity != ["ok"]:
        raise BackupError(f"the copy failed its integrity check: {'; '.join(found.integrity[:3])}")
    if found.schema_version != expected_version:
        raise BackupError(f"the copy is at schema version {found.schema_version}, the database at {expected_version}")
    return found.schema_version, found.rows


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _resolve_target(source: Path, path: str) -> Path:
    target = Path(path).expanduser()
    if path.endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        target = target / f"kf2v-{datetime.now(UTC):%Y%m%d-%H%M%S}.sqlite3"
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError("the backup path is the live database itself; choose another path")
    if target.resolve().parent == source.resolve().parent and target.name.startswith(source.name):
        raise BackupError(f"{target.name} would collide with the database's own files; choose another name")
    return target


def _cleanup(paths: Iterable[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


async def backup(settings: Settings, path: str) -> BackupResult:
    """Write a verified copy of the database to `path` (a file, or a directory for a dated name)."""
    started = time.monotonic()
    if settings.database_url:
        raise BackupError(BACKUP_ON_POSTGRESQL)
    source = settings.database_path
    if not source.is_file():
        raise BackupError(f"no database at {source} (is KF2V_DATA_DIR right? the bot creates it on first run)")
    try:
        target = _resolve_target(source, path)
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot use {path}: {exc.strerror or exc}") from None
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    leftovers = [partial, partial.with_name(partial.name + "-wal"), partial.with_name(partial.name + "-shm")]
    _cleanup(leftovers)
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # private from the first byte
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
    try:
        try:
            version = await asyncio.to_thread(JobStore.sqlite_file_version, source)
        except sqlite3.Error as exc:
            raise BackupError(f"{source} is not a readable SQLite database: {exc}") from None
        if version < latest_migration():
            # This code would migrate the database on open; a backup must capture it as it is.
            await asyncio.to_thread(JobStore.copy_sqlite_file, source, partial)
        else:
            store = await JobStore.open(source)
            try:
                version = await store.schema_version()
                await store.backup_to(partial)
            finally:
                await store.close()
        version, rows = await asyncio.to_thread(_finish_and_verify, partial, version)
        os.chmod(partial, 0o600)
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"backup failed: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        _cleanup(leftovers)
    return BackupResult(target, target.stat().st_size, version, rows, time.monotonic() - started)


async def run_backup(settings: Settings, path: str) -> int:
    try:
        result = await backup(settings, path)
    except BackupError as exc:
        print(f"kf2v-bot backup: {exc}", file=sys.stderr)
        return 1
    counted = ", ".join(f"{n} {table}" for table, n in result.rows.items())
    print(
        f"wrote {result.path} ({result.bytes} bytes, schema version {result.schema_version}, {counted}; "
        f"integrity ok) in {result.seconds:.1f}s"
    )
    return 0
