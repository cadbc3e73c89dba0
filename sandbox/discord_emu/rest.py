"""The emulated REST API (`/api/v10/...`) and the attachment CDN, with Discord's statuses and error codes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import BodyPartReader, web

from .host import Host, InteractionRecord
from .model import (
    SETTABLE_MESSAGE_FLAGS,
    UPLOAD_LIMITS,
    CallbackType,
    ChannelRecord,
    ChannelType,
    CommandType,
    GuildRecord,
    InteractionType,
    Json,
    MessageFlag,
    MessageRecord,
    MessageType,
    Perm,
    RequestRecord,
    ResponseRecord,
    SyncRecord,
    UploadedFile,
    utcnow,
)
from .rules import (
    ApiError,
    FormErrors,
    already_acknowledged,
    archived_thread,
    check_command,
    check_message,
    check_modal,
    check_thread_name,
    invalid_webhook_token,
    missing_access,
    missing_permissions,
    not_author,
    thread_exists,
    too_large,
    unauthorized,
    unknown_channel,
    unknown_command,
    unknown_guild,
    unknown_interaction,
    unknown_member,
    unknown_message,
    unknown_user,
    unknown_webhook,
    wrong_channel_type,
)

API_PREFIX = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TRUE = frozenset({"1", "true", "True"})
_ARCHIVE_DURATIONS = frozenset({60, 1440, 4320, 10080})
_CDN_GONE = "This content is no longer available."
_CDN_CHUNK = 1 << 18


@dataclass(eq=False)
class RestFault:
    """One injected fault at the REST edge, matching requests by method and a piece of their path or route.

    kind "error": answer `status` (JSON body with `code`) instead of handling the request; "hold": wait until
    `release()` before handling it, "hold_after": handle it (a message is stored) and wait before answering;
    "drop": close the connection unanswered, "drop_after": handle it, then close the connection unanswered.
    `remaining` counts the requests it still takes (math.inf: until `stop()`)."""

    status: int
    remaining: float
    route_contains: str | None
    retry_after: float
    is_global: bool
    method: str | None
    kind: str = "error"
    code: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    taken: int = 0  # requests it has met so far
    held: int = 0  # requests waiting on it now

    def release(self) -> None:
        """Let the held requests go on (and any later ones it still takes)."""
        self.released.set()

    def stop(self) -> None:
        """Take no more requests and let the held ones go on."""
        self.remaining = 0
        self.released.set()


@dataclass(frozen=True)
class _Route:
    auth: str  # "bot": needs the bot token; "url": the token is in the path; "none"
    major: tuple[str, ...]


class _RateLimited(Exception):
    def __init__(self, headers: dict[str, str], retry_after: float) -> None:
        super().__init__("rate limited")
        self.headers = headers
        self.retry_after = retry_after


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Content-Type exactly `application/json`: discord.py parses nothing else as JSON."""
    merged = {"Content-Type": "application/json"}
    if headers:
        merged.update(headers)
    return web.Response(body=json.dumps(data).encode(), status=status, headers=merged)


def _bucket_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(404, 0, "404: Not Found") from None


class RestApi:
    def __init__(self, emulator: Host) -> None:
        self.emulator = emulator
        self._routes: dict[str, _Route] = {}
        self._faults: list[RestFault] = []
        self._windows: dict[str, list[float]] = {}
        # Bodies are streamed a few at a time: hundreds of concurrent multi-MB downloads on one loop are
        # several times faster in turn than all at once (discord.py's connector has no connection limit).
        self._cdn_slots = asyncio.Semaphore(emulator.cdn_concurrency)

    # -------------------------------------------------------------- setup

    def add_routes(self, app: web.Application) -> None:
        c = "/channels/{channel_id}"
        app_cmds = "/applications/{application_id}"
        g_cmds = "/applications/{application_id}/guilds/{guild_id}"
        hook = "/webhooks/{webhook_id}/{webhook_token}"
        table: list[tuple[str, str, str, tuple[str, ...], Handler]] = [
            ("GET", "/users/@me", "bot", (), self.get_me),
            ("GET", "/users/{user_id}", "bot", (), self.get_user),
            ("POST", "/users/@me/channels", "bot", (), self.create_dm),
            ("GET", "/oauth2/applications/@me", "bot", (), self.get_application),
            ("GET", "/applications/@me", "bot", (), self.get_application),
            ("GET", "/gateway", "none", (), self.get_gateway),
            ("GET", "/gateway/bot", "bot", (), self.get_gateway_bot),
            ("GET", f"{app_cmds}/commands", "bot", (), self.list_commands),
            ("PUT", f"{app_cmds}/commands", "bot", (), self.bulk_commands),
            ("POST", f"{app_cmds}/commands", "bot", (), self.upsert_command),
            ("GET", f"{app_cmds}/commands/{{command_id}}", "bot", (), self.get_command),
            ("PATCH", f"{app_cmds}/commands/{{command_id}}", "bot", (), self.edit_command),
            ("DELETE", f"{app_cmds}/commands/{{command_id}}", "bot", (), self.delete_command),
            ("GET", f"{g_cmds}/commands", "bot", ("guild_id",), self.list_commands),
            ("PUT", f"{g_cmds}/commands", "bot", ("guild_id",), self.bulk_commands),
            ("POST", f"{g_cmds}/commands", "bot", ("guild_id",), self.upsert_command),
            ("GET", f"{g_cmds}/commands/{{command_id}}", "bot", ("guild_id",), self.get_command),
            ("PATCH", f"{g_cmds}/commands/{{command_id}}", "bot", ("guild_id",), self.edit_command),
            ("DELETE", f"{g_cmds}/commands/{{command_id}}", "bot", ("guild_id",), self.delete_command),
            ("GET", "/guilds/{guild_id}", "bot", ("guild_id",), self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", "bot", ("guild_id",), self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", "bot", ("guild_id",), self.get_guild_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", "bot", ("guild_id",), self.get_member),
            ("GET", "/guilds/{guild_id}/threads/active", "bot", ("guild_id",), self.get_active_threads),
            ("GET", c, "bot", ("channel_id",), self.get_channel),
            ("PATCH", c, "bot", ("channel_id",), self.edit_channel),
            ("DELETE", c, "bot", ("channel_id",), self.delete_channel),
            ("GET", f"{c}/messages", "bot", ("channel_id",), self.list_messages),
            ("POST", f"{c}/messages", "bot", ("channel_id",), self.create_message),
            ("GET", f"{c}/messages/{{message_id}}", "bot", ("channel_id",), self.get_message),
            ("PATCH", f"{c}/messages/{{message_id}}", "bot", ("channel_id",), self.edit_message),
            ("DELETE", f"{c}/messages/{{message_id}}", "bot", ("channel_id",), self.delete_message),
            ("POST", f"{c}/messages/{{message_id}}/threads", "bot", ("channel_id",), self.thread_from_message),
            ("POST", f"{c}/threads", "bot", ("channel_id",), self.thread_without_message),
            ("POST", f"{c}/typing", "bot", ("channel_id",), self.typing),
            ("PUT", f"{c}/thread-members/@me", "bot", ("channel_id",), self.join_thread),
            ("DELETE", f"{c}/thread-members/@me", "bot", ("channel_id",), self.leave_thread),
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                "url",
                ("interaction_id", "interaction_token"),
                self.interaction_callback,
            ),
            ("POST", hook, "url", ("webhook_id", "webhook_token"), self.execute_webhook),
            ("GET", f"{hook}/messages/{{message_id}}", "url", ("webhook_id", "webhook_token"), self.get_hook_message),
            (
                "PATCH",
                f"{hook}/messages/{{message_id}}",
                "url",
                ("webhook_id", "webhook_token"),
                self.edit_hook_message,
            ),
            (
                "DELETE",
                f"{hook}/messages/{{message_id}}",
                "url",
                ("webhook_id", "webhook_token"),
                self.delete_hook_message,
            ),
        ]
        for method, path, auth, major, handler in table:
            app.router.add_route(method, API_PREFIX + path, handler)
            self._routes[f"{method} {path}"] = _Route(auth, major)
        for prefix in ("", "/media"):
            for kind in ("attachments", "ephemeral-attachments"):
                app.router.add_get(f"{prefix}/{kind}/{{channel_id}}/{{attachment_id}}/{{filename}}", self.cdn)

    def add_fault(
        self,
        status: int,
        count: int | None,
        route_contains: str | None,
        *,
        retry_after: float,
        is_global: bool,
        method: str | None,
        kind: str = "error",
        code: int = 0,
    ) -> RestFault:
        if kind == "error" and not 400 <= status <= 599:
            raise ValueError("inject an HTTP error status (4xx or 5xx)")
        if kind not in ("error", "hold", "hold_after", "drop", "drop_after"):
            raise ValueError(f"unknown fault kind {kind!r}")
        remaining = math.inf if count is None else count
        fault = RestFault(status, remaining, route_contains, retry_after, is_global, method, kind, code)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        for fault in self._faults:
            fault.stop()
        self._faults = []

    # -------------------------------------------------------------- middleware: faults, auth, limits, log

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else path
        template = canonical.removeprefix(API_PREFIX)
        key = f"{request.method} {template}"
        response: web.StreamResponse
        if not path.startswith(API_PREFIX + "/"):
            response = await handler(request)
        else:
            limit_headers: dict[str, str] = {}
            try:
                fault = self._take_fault(request.method, path, key)
                if fault is not None and fault.kind in ("hold", "drop"):
                    if fault.kind == "drop":
                        return await self._drop(request)
                    await self._hold(fault)
                if fault is not None and fault.kind == "error":
                    response = self._fault_response(fault)
                else:
                    route = self._routes.get(key)
                    if route is None:
                        if isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
                            raise ApiError(405, 0, "405: Method Not Allowed")
                        raise ApiError(404, 0, "404: Not Found")
                    if route.auth == "bot" and not self.emulator.token_ok(request.headers.get("Authorization")):
                        raise unauthorized()
                    limit_headers = self._rate_limit(key, request, route)
                    response = await handler(request)
                    if fault is not None and fault.kind == "hold_after":
                        await self._hold(fault)
                    elif fault is not None and fault.kind == "drop_after":
                        return await self._drop(request)
            except ApiError as error:
                response = json_response(error.body(), error.status)
            except _RateLimited as limited:
                body = {"message": "You are being rate limited.", "retry_after": limited.retry_after, "global": False}
                response = json_response(body, 429, limited.headers | {"Via": "1.1 google"})
            for name, value in limit_headers.items():
                response.headers.setdefault(name, value)
            if not request.content.at_eof():
                async for _ in request.content.iter_chunked(1 << 20):
                    pass
        duration = (time.monotonic() - started) * 1000.0
        self.emulator.requests.append(RequestRecord(request.method, key, path, response.status, started, duration))
        self.emulator.notify()
        return response

    def _take_fault(self, method: str, path: str, key: str) -> RestFault | None:
        for fault in self._faults:
            if fault.remaining <= 0:
                continue
            if fault.method is not None and fault.method != method:
                continue
            if (
                fault.route_contains is not None
                and fault.route_contains not in path
                and fault.route_contains not in key
            ):
                continue
            fault.remaining -= 1
            fault.taken += 1
            self._faults = [f for f in self._faults if f.remaining > 0]
            self.emulator.record("rest.fault", {"status": fault.status, "kind": fault.kind, "route": key, "path": path})
            return fault
        return None

    async def _hold(self, fault: RestFault) -> None:
        fault.held += 1
        self.emulator.notify()
        try:
            await fault.released.wait()
        finally:
            fault.held -= 1

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer (the client sees it reset mid-request)."""
        if request.transport is not None:
            request.transport.abort()
        self.emulator.requests.append(RequestRecord(request.method, request.path, request.path, 0, time.monotonic(), 0))
        self.emulator.notify()
        raise asyncio.CancelledError  # aiohttp ends the handler quietly: nothing is written

    def _fault_response(self, fault: RestFault) -> web.Response:
        if fault.status == 429:
            reset_after = fault.retry_after
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(reset_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
            }
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            body = {"message": "You are being rate limited.", "retry_after": reset_after, "global": fault.is_global}
            return json_response(body, 429, headers)
        try:
            reason = HTTPStatus(fault.status).phrase
        except ValueError:
            reason = "Error"
        return json_response({"message": f"{fault.status}: {reason}", "code": fault.code}, fault.status)

    def _rate_limit(self, key: str, request: web.Request, route: _Route) -> dict[str, str]:
        limit, window = self.emulator.rate_limit
        major = ":".join(request.match_info.get(name, "") for name in route.major)
        bucket = f"{key}|{major}"
        now = time.monotonic()
        state = self._windows.get(bucket)
        if state is None or now >= state[0] + window:
            if len(self._windows) > 20000:
                self._windows = {k: v for k, v in self._windows.items() if now < v[0] + window}
            state = self._windows[bucket] = [now, 0.0]
        state[1] += 1
        reset_after = max(0.001, state[0] + window - now)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - int(state[1]))),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": _bucket_hash(key),
        }
        if state[1] > limit:
            self.emulator.record("rest.rate_limited", {"route": key})
            raise _RateLimited(headers | {"X-RateLimit-Scope": "user"}, round(reset_after, 3))
        return headers

    # -------------------------------------------------------------- bodies

    async def read_body(self, request: web.Request, guild: GuildRecord | None) -> tuple[Json, list[UploadedFile]]:
        """JSON, or multipart with `payload_json` and `files[n]`; enforces the upload limits (413 / 40005)."""
        if request.content_type == "multipart/form-data":
            per_file = guild.upload_limit if guild is not None else UPLOAD_LIMITS[0]
            per_request = guild.request_limit if guild is not None else max(per_file, 25 * 1024 * 1024)
            payload: Json = {}
            files: list[UploadedFile] = []
            total = 0
            oversized = False
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = self._parse_json(await part.read())
                elif part.filename is not None or name.startswith("files["):
                    chunks: list[bytes] = []
                    size = 0
                    while chunk := await part.read_chunk(1 << 18):
                        size += len(chunk)
                        total += len(chunk)
                        if size > per_file or total > per_request:
                            oversized = True
                        if not oversized:
                            chunks.append(bytes(chunk))
                    index = len(files)
                    if name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
                        index = int(name[6:-1])
                    if not oversized:
                        filename = part.filename or f"file{index}"
                        files.append(UploadedFile(index, filename, b"".join(chunks), part.headers.get("Content-Type")))
                else:
                    payload[name] = (await part.read()).decode("utf-8", "replace")
            if oversized:
                raise too_large()
            return payload, files
        raw = await request.read()
        return (self._parse_json(raw) if raw else {}), []

    @staticmethod
    def _parse_json(raw: bytes | bytearray) -> Json:
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(data, dict):
            errors = FormErrors()
            errors.add((), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            raise errors.error()
        return data

    async def _read_list(self, request: web.Request) -> list[Any]:
        try:
            data = json.loads(await request.read())
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(data, list):
            errors = FormErrors()
            errors.add((), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            raise errors.error()
        return data

    # -------------------------------------------------------------- users, application, gateway

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.bot_user_payload())

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.emulator.users.get(_int(request.match_info["user_id"]))
        if user is None:
            raise unknown_user()
        return json_response(self.emulator.user_payload(user))

    async def create_dm(self, request: web.Request) -> web.Response:
        """Open (or find) the DM channel with a user (https://discord.com/developers/docs/resources/user#create-dm)."""
        body = self._parse_json(await request.read())
        try:
            recipient = int(str(body.get("recipient_id")))
        except (TypeError, ValueError):
            raise ApiError(400, 50035, "Invalid Form Body") from None
        if recipient not in self.emulator.users:
            raise unknown_user()
        return json_response(self.emulator.channel_payload(self.emulator.open_dm(recipient)))

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.application_payload())

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.emulator.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return json_response({"url": self.emulator.gateway_url, "shards": 1, "session_start_limit": limit})

    # -------------------------------------------------------------- application commands

    def _command_scope(self, request: web.Request) -> int | None:
        if _int(request.match_info["application_id"]) != self.emulator.application_id:
            raise missing_access()
        raw = request.match_info.get("guild_id")
        if raw is None:
            return None
        guild = self.emulator.guilds.get(_int(raw))
        if guild is None or guild.removed:
            raise missing_access()
        return guild.id

    def _command_payload(self, command: Json, ident: str, scope: int | None) -> Json:
        kind = command.get("type", 1)
        payload: Json = {
            "id": ident,
            "application_id": str(self.emulator.application_id),
            "version": str(self.emulator.next_id()),
            "type": kind,
            "name": command["name"],
            "name_localizations": command.get("name_localizations"),
            "description": command.get("description", ""),
            "description_localizations": command.get("description_localizations"),
            "default_member_permissions": command.get("default_member_permissions"),
            "nsfw": bool(command.get("nsfw", False)),
            "contexts": command.get("contexts"),
            "integration_types": command.get("integration_types") or [0],
        }
        if command.get("options"):
            payload["options"] = command["options"]
        if scope is None:
            payload["dm_permission"] = command.get("dm_permission", True)
        else:
            payload["guild_id"] = str(scope)
        return payload

    async def list_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return json_response(list(self.emulator.commands.get(scope, {}).values()))

    async def bulk_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = await self._read_list(request)
        errors = FormErrors()
        seen: set[tuple[int, str]] = set()
        for index, command in enumerate(body):
            check_command(errors, command, (index,))
            if isinstance(command, dict):
                key = (int(command.get("type", 1)), str(command.get("name")))
                if key in seen:
                    errors.add(
                        (index, "name"),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    )
                seen.add(key)
        # "up to 5 user commands and 5 message commands" per scope
        # (https://discord.com/developers/docs/interactions/application-commands#registering-a-command)
        for kind in (CommandType.USER, CommandType.MESSAGE):
            if sum(1 for c in body if isinstance(c, dict) and c.get("type") == kind) > 5:
                errors.add((), "APPLICATION_COMMANDS_TOO_MANY", f"At most 5 commands of type {kind}")
        errors.raise_if_any()
        old = self.emulator.commands.get(scope, {})
        new: dict[tuple[int, str], Json] = {}
        for command in body:
            key = (int(command.get("type", 1)), str(command["name"]))
            ident = old[key]["id"] if key in old else str(self.emulator.next_id())
            new[key] = self._command_payload(command, ident, scope)
        self.emulator.commands[scope] = new
        self.emulator.syncs.append(SyncRecord(scope, body))
        self.emulator.record("commands.sync", {"guild_id": scope, "names": [k[1] for k in new]})
        return json_response(list(new.values()))

    async def upsert_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        command = self._parse_json(await request.read())
        errors = FormErrors()
        check_command(errors, command, ())
        errors.raise_if_any()
        commands = self.emulator.commands.setdefault(scope, {})
        key = (int(command.get("type", 1)), str(command["name"]))
        created = key not in commands
        ident = str(self.emulator.next_id()) if created else commands[key]["id"]
        commands[key] = self._command_payload(command, ident, scope)
        self.emulator.record("commands.upsert", {"guild_id": scope, "name": key[1]})
        return json_response(commands[key], 201 if created else 200)

    def _find_command(self, request: web.Request) -> tuple[int | None, tuple[int, str], Json]:
        scope = self._command_scope(request)
        wanted = request.match_info["command_id"]
        for key, command in self.emulator.commands.get(scope, {}).items():
            if command["id"] == wanted:
                return scope, key, command
        raise unknown_command()

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._find_command(request)[2])

    async def edit_command(self, request: web.Request) -> web.Response:
        scope, key, command = self._find_command(request)
        changes = self._parse_json(await request.read())
        merged = command | changes
        errors = FormErrors()
        check_command(errors, merged, ())
        errors.raise_if_any()
        commands = self.emulator.commands[scope]
        del commands[key]
        new_key = (int(merged.get("type", 1)), str(merged["name"]))
        commands[new_key] = self._command_payload(merged, command["id"], scope)
        return json_response(commands[new_key])

    async def delete_command(self, request: web.Request) -> web.Response:
        scope, key, _ = self._find_command(request)
        del self.emulator.commands[scope][key]
        return web.Response(status=204)

    # -------------------------------------------------------------- guilds

    def _guild(self, request: web.Request) -> GuildRecord:
        guild = self.emulator.guilds.get(_int(request.match_info["guild_id"]))
        if guild is None or guild.removed:
            raise unknown_guild()
        return guild

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        payload = self.emulator.guild_payload(guild)
        if request.query.get("with_counts") in _TRUE:
            payload["approximate_member_count"] = len(guild.members)
            payload["approximate_presence_count"] = 0
        return json_response(payload)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([self.emulator.channel_payload(self.emulator.channels[c]) for c in guild.channel_ids])

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([self.emulator.role_payload(r) for r in guild.roles.values()])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        user_id = _int(request.match_info["user_id"])
        if user_id not in self.emulator.users:
            raise unknown_user()
        if user_id not in guild.members:
            raise unknown_member()
        return json_response(self.emulator.member_payload(guild, user_id))

    async def get_active_threads(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        emulator = self.emulator
        threads = [
            t
            for t in emulator.channels.values()
            if t.is_thread and t.guild_id == guild.id and not t.deleted and not t.archived
        ]
        members = [
            {
                "id": str(t.id),
                "user_id": str(emulator.bot_user_id),
                "join_timestamp": t.created_at.isoformat(),
                "flags": 1,
            }
            for t in threads
            if emulator.bot_user_id in t.member_ids
        ]
        return json_response({"threads": [emulator.channel_payload(t) for t in threads], "members": members})

    # -------------------------------------------------------------- channels

    def _channel(self, request: web.Request) -> ChannelRecord:
        """The channel as the bot may see it: 404 10003 when gone, 403 50001 when hidden."""
        emulator = self.emulator
        channel = emulator.channels.get(_int(request.match_info["channel_id"]))
        if channel is None or channel.deleted:
            raise unknown_channel()
        if channel.type == ChannelType.DM:
            return channel
        guild = emulator.guilds.get(channel.guild_id) if channel.guild_id is not None else None
        if guild is None or guild.removed:
            raise missing_access()
        perms = emulator.permissions_in(channel, emulator.bot_user_id)
        if not perms & Perm.VIEW_CHANNEL:
            raise missing_access()
        if (
            channel.type == ChannelType.PRIVATE_THREAD
            and emulator.bot_user_id not in channel.member_ids
            and not perms & Perm.MANAGE_THREADS
        ):
            raise missing_access()
        return channel

    def _perms(self, channel: ChannelRecord) -> int:
        return self.emulator.permissions_in(channel, self.emulator.bot_user_id)

    def _channel_message(self, request: web.Request, channel: ChannelRecord) -> MessageRecord:
        message = self.emulator.message(_int(request.match_info["message_id"]))
        if message is None or message.deleted or message.ephemeral or message.channel_id != channel.id:
            raise unknown_message()
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.channel_payload(self._channel(request)))

    async def edit_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        changes = self._parse_json(await request.read())
        perms = self._perms(channel)
        emulator = self.emulator
        if channel.is_thread:
            if channel.owner_id != emulator.bot_user_id and not perms & Perm.MANAGE_THREADS:
                raise missing_permissions()
            if "locked" in changes and not perms & Perm.MANAGE_THREADS:
                raise missing_permissions()
        elif not perms & Perm.MANAGE_CHANNELS:
            raise missing_permissions()
        if "name" in changes:
            check_thread_name(changes["name"])
            channel.name = changes["name"]
        if "topic" in changes and not channel.is_thread:
            channel.topic = changes["topic"]
        if channel.is_thread:
            if "archived" in changes:
                channel.archived = bool(changes["archived"])
                channel.archive_timestamp = utcnow()
            if "locked" in changes:
                channel.locked = bool(changes["locked"])
            if changes.get("auto_archive_duration") in _ARCHIVE_DURATIONS:
                channel.auto_archive_duration = int(changes["auto_archive_duration"])
        event = "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE"
        emulator.gateway.dispatch(event, emulator.channel_payload(channel), guild_id=channel.guild_id, intent=1)
        emulator.record("channel.edit", {"channel_id": channel.id, "changes": sorted(changes)})
        return json_response(emulator.channel_payload(channel))

    async def delete_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        perms = self._perms(channel)
        needed = Perm.MANAGE_THREADS if channel.is_thread else Perm.MANAGE_CHANNELS
        if not perms & needed:
            raise missing_permissions()
        payload = self.emulator.channel_payload(channel)
        self.emulator.delete_channel(channel.id)
        return json_response(payload)

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if not self._perms(channel) & Perm.READ_MESSAGE_HISTORY:
            return json_response([])
        try:
            limit = max(1, min(100, int(request.query.get("limit", "50"))))
        except ValueError:
            limit = 50
        visible = [m for m in self.emulator.messages(channel.id) if not m.ephemeral]
        before, after, around = (request.query.get(k) for k in ("before", "after", "around"))
        if around is not None:
            pivot = int(around)
            older = [m for m in visible if m.id <= pivot][-(limit // 2 + limit % 2) :]
            newer = [m for m in visible if m.id > pivot][: limit // 2]
            chosen = older + newer
        elif after is not None:
            chosen = [m for m in visible if m.id > int(after)][:limit]
        else:
            if before is not None:
                visible = [m for m in visible if m.id < int(before)]
            chosen = visible[-limit:]
        return json_response([self.emulator.message_payload(m) for m in reversed(chosen)])

    async def create_message(self, request: web.Request) -> web.Response:
        emulator = self.emulator
        channel = self._channel(request)
        if channel.type == ChannelType.DM:
            # A bot can DM only a user it shares a server with: 50007 "Cannot send messages to this user".
            if not self.emulator.shares_a_guild(channel.recipient_id or 0):
                raise ApiError(403, 50007, "Cannot send messages to this user")
            payload, files = await self.read_body(request, None)
            check_message(payload, len(files), creating=True)
            message = self.emulator.create_message(channel, payload, files, type=MessageType.DEFAULT, flags=0)
            return json_response(self.emulator.message_payload(message))
        perms = self._perms(channel)
        if channel.is_thread:
            if channel.locked and not perms & Perm.MANAGE_THREADS:
                raise archived_thread()
            if not perms & Perm.SEND_MESSAGES_IN_THREADS:
                raise missing_permissions()
        elif not perms & Perm.SEND_MESSAGES:
            raise missing_permissions()
        guild = emulator.guilds.get(channel.guild_id) if channel.guild_id is not None else None
        payload, files = await self.read_body(request, guild)
        check_message(payload, len(files), creating=True)
        if files and not perms & Perm.ATTACH_FILES:
            raise missing_permissions()
        reference = payload.get("message_reference")
        message_type = MessageType.DEFAULT
        if isinstance(reference, dict) and reference.get("message_id"):
            target = emulator.message(int(reference["message_id"]))
            if target is None or target.deleted or target.ephemeral:
                if reference.get("fail_if_not_exists", True):
                    errors = FormErrors()
                    errors.add(("message_reference",), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                    raise errors.error()
                reference = None
            else:
                reference = {
                    "type": 0,
                    "message_id": str(target.id),
                    "channel_id": str(target.channel_id),
                    "guild_id": str(target.guild_id),
                }
                message_type = MessageType.REPLY
        else:
            reference = None
        if channel.is_thread and channel.archived:
            channel.archived = False
            emulator.gateway.dispatch(
                "THREAD_UPDATE", emulator.channel_payload(channel), guild_id=channel.guild_id, intent=1
            )
        flags = int(payload.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS & ~MessageFlag.EPHEMERAL
        message = emulator.create_message(channel, payload, files, type=message_type, flags=flags, reference=reference)
        return json_response(emulator.message_payload(message))

    async def get_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if not self._perms(channel) & Perm.READ_MESSAGE_HISTORY:
            raise missing_access()
        return json_response(self.emulator.message_payload(self._channel_message(request, channel)))

    async def edit_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        if message.author_id != self.emulator.bot_user_id:
            raise not_author()
        guild = self.emulator.guilds.get(channel.guild_id) if channel.guild_id is not None else None
        payload, files = await self.read_body(request, guild)
        check_message(payload, len(files), creating=False)
        self.emulator.edit_message(message, payload, files)
        return json_response(self.emulator.message_payload(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        # Archived threads are immutable until unarchived: deleting (or editing) a message in one is refused with
        # 50083; only sending unarchives by itself (discord/discord-api-docs#2855, the API v9 threads review).
        if channel.is_thread and channel.archived:
            raise archived_thread()
        if message.author_id != self.emulator.bot_user_id and not self._perms(channel) & Perm.MANAGE_MESSAGES:
            raise missing_permissions()
        self.emulator.delete_message(message)
        return web.Response(status=204)

    async def thread_from_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.type not in (ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT):
            raise wrong_channel_type()
        message = self._channel_message(request, channel)
        body = self._parse_json(await request.read())
        check_thread_name(body.get("name"))
        if not self._perms(channel) & Perm.CREATE_PUBLIC_THREADS:
            raise missing_permissions()
        if self.emulator.thread_for(message.id) is not None:
            raise thread_exists()
        duration = body.get("auto_archive_duration") or 1440
        if duration not in _ARCHIVE_DURATIONS:
            errors = FormErrors()
            errors.add(("auto_archive_duration",), "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}.")
            raise errors.error()
        kind = (
            ChannelType.ANNOUNCEMENT_THREAD
            if channel.type == ChannelType.GUILD_ANNOUNCEMENT
            else ChannelType.PUBLIC_THREAD
        )
        thread = self.emulator.create_thread(
            channel, str(body["name"]), type=kind, auto_archive_duration=int(duration), message=message
        )
        return json_response(self.emulator.channel_payload(thread), 201)

    async def thread_without_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.type not in (ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT):
            raise wrong_channel_type()
        body = self._parse_json(await request.read())
        check_thread_name(body.get("name"))
        kind = body.get("type") or ChannelType.PRIVATE_THREAD
        if kind not in (ChannelType.ANNOUNCEMENT_THREAD, ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD):
            errors = FormErrors()
            errors.add(("type",), "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
            raise errors.error()
        if (kind == ChannelType.ANNOUNCEMENT_THREAD) != (channel.type == ChannelType.GUILD_ANNOUNCEMENT):
            raise wrong_channel_type()
        needed = Perm.CREATE_PRIVATE_THREADS if kind == ChannelType.PRIVATE_THREAD else Perm.CREATE_PUBLIC_THREADS
        if not self._perms(channel) & needed:
            raise missing_permissions()
        duration = body.get("auto_archive_duration") or 1440
        thread = self.emulator.create_thread(
            channel, str(body["name"]), type=int(kind), auto_archive_duration=int(duration), message=None
        )
        if kind == ChannelType.PRIVATE_THREAD:
            thread.invitable = bool(body.get("invitable", True))
        return json_response(self.emulator.channel_payload(thread), 201)

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self.emulator.record("channel.typing", {"channel_id": channel.id})
        return web.Response(status=204)

    async def join_thread(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if not channel.is_thread:
            raise wrong_channel_type()
        channel.member_ids.add(self.emulator.bot_user_id)
        return web.Response(status=204)

    async def leave_thread(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if not channel.is_thread:
            raise wrong_channel_type()
        channel.member_ids.discard(self.emulator.bot_user_id)
        return web.Response(status=204)

    # -------------------------------------------------------------- interactions and their webhook

    def _live_channel(self, record: InteractionRecord) -> ChannelRecord:
        channel = self.emulator.channels.get(record.channel_id)
        if channel is None or channel.deleted:
            raise unknown_channel()
        return channel

    def _reference_to_source(self, record: InteractionRecord) -> Json | None:
        if record.source_message_id is None:
            return None
        return {
            "type": 0,
            "message_id": str(record.source_message_id),
            "channel_id": str(record.channel_id),
            "guild_id": str(record.guild_id),
        }

    def _response_message_type(self, record: InteractionRecord) -> int:
        if record.type != InteractionType.APPLICATION_COMMAND:
            return MessageType.REPLY
        if record.command_type == CommandType.CHAT_INPUT:
            return MessageType.CHAT_INPUT_COMMAND
        return MessageType.CONTEXT_MENU_COMMAND

    async def interaction_callback(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        emulator = self.emulator
        record = emulator._interactions_by_id.get(_int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["interaction_token"]:
            raise unknown_interaction()
        body, files = await self.read_body(request, emulator.guilds.get(record.guild_id))
        if record.responses:
            raise already_acknowledged()
        if record.deadline_at is not None and arrived > record.deadline_at:
            raise unknown_interaction()
        callback_type = body.get("type")
        data = body.get("data") or {}
        if not isinstance(data, dict):
            data = {}
        message: MessageRecord | None = None
        # A modal submit launched from a component may update that component's message, like the component.
        is_component = record.type == InteractionType.MESSAGE_COMPONENT or (
            record.type == InteractionType.MODAL_SUBMIT and record.source_message_id is not None
        )
        if (record.type == InteractionType.AUTOCOMPLETE) != (callback_type == CallbackType.AUTOCOMPLETE_RESULT):
            # Documented: an autocomplete interaction is answered with type 8 only, and type 8 answers nothing else.
            errors = FormErrors()
            errors.add(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
            raise errors.error()
        if callback_type == CallbackType.AUTOCOMPLETE_RESULT:
            check_autocomplete_choices(data)
        elif callback_type == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE:
            channel = self._live_channel(record)
            check_message(data, len(files), creating=True, prefix=("data",))
            flags = int(data.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS
            message = emulator.create_message(
                channel,
                data,
                files,
                type=self._response_message_type(record),
                flags=flags,
                interaction=record,
                reference=self._reference_to_source(record),
            )
            record.original_message_id = message.id
        elif callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            channel = self._live_channel(record)
            flags = (int(data.get("flags") or 0) & MessageFlag.EPHEMERAL) | MessageFlag.LOADING
            message = emulator.create_message(
                channel,
                {},
                [],
                type=self._response_message_type(record),
                flags=flags,
                interaction=record,
                reference=self._reference_to_source(record),
            )
            record.original_message_id = message.id
        elif callback_type in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE) and is_component:
            source = emulator.message(record.source_message_id or 0)
            if source is None or source.deleted:
                raise unknown_message()
            if callback_type == CallbackType.UPDATE_MESSAGE:
                check_message(data, len(files), creating=False, prefix=("data",))
                emulator.edit_message(source, data, files)
            record.original_message_id = source.id
            message = source
        elif callback_type == CallbackType.MODAL and record.type in (
            InteractionType.APPLICATION_COMMAND,
            InteractionType.MESSAGE_COMPONENT,
        ):
            # Documented: MODAL is "not available for MODAL_SUBMIT and PING interactions"
            # (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-
            # interaction-callback-type); after a deferral it is simply a second response (40060 above).
            check_modal(data)
            record.modal = data
        else:
            errors = FormErrors()
            errors.add(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
            raise errors.error()
        response = ResponseRecord(int(callback_type), data, arrived, message.id if message is not None else None)
        emulator.respond_interaction(record, response)
        if request.query.get("with_response") in _TRUE:
            return json_response(emulator.callback_response(record, int(callback_type), message))
        return web.Response(status=204)

    def _hook_interaction(self, request: web.Request) -> InteractionRecord:
        emulator = self.emulator
        if _int(request.match_info["webhook_id"]) != emulator.application_id:
            raise unknown_webhook()
        record = emulator.interaction_by_token(request.match_info["webhook_token"])
        if record is None or record.token_expired:
            raise invalid_webhook_token()
        if not record.responses:
            raise unknown_webhook()
        return record

    def _hook_message(self, request: web.Request, record: InteractionRecord) -> MessageRecord:
        raw = request.match_info["message_id"]
        ident = record.original_message_id if raw == "@original" else _int(raw)
        if ident is None or (ident != record.original_message_id and ident not in record.followup_ids):
            raise unknown_message()
        message = self.emulator.message(ident)
        if message is None or message.deleted:
            raise unknown_message()
        return message

    async def execute_webhook(self, request: web.Request) -> web.Response:
        emulator = self.emulator
        record = self._hook_interaction(request)
        payload, files = await self.read_body(request, emulator.guilds.get(record.guild_id))
        check_message(payload, len(files), creating=True)
        original = record.original_message
        first = record.responses[0].type
        if (
            first == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
            and original is not None
            and original.loading
            and not record.followup_ids
        ):
            # Documented: right after a deferral the followup edits the loading message instead.
            emulator.edit_message(original, payload, files)
            message = original
        else:
            channel = self._live_channel(record)
            message = emulator.create_message(
                channel,
                payload,
                files,
                type=self._response_message_type(record),
                flags=int(payload.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS,
                interaction=record,
                reference=self._reference_to_source(record),
            )
        record.followup_ids.append(message.id)
        emulator.record("interaction.followup", {"interaction_id": record.id, "message_id": message.id})
        return json_response(emulator.message_payload(message))

    async def get_hook_message(self, request: web.Request) -> web.Response:
        record = self._hook_interaction(request)
        return json_response(self.emulator.message_payload(self._hook_message(request, record)))

    async def edit_hook_message(self, request: web.Request) -> web.Response:
        record = self._hook_interaction(request)
        message = self._hook_message(request, record)
        payload, files = await self.read_body(request, self.emulator.guilds.get(record.guild_id))
        check_message(payload, len(files), creating=False)
        self.emulator.edit_message(message, payload, files)
        return json_response(self.emulator.message_payload(message))

    async def delete_hook_message(self, request: web.Request) -> web.Response:
        record = self._hook_interaction(request)
        self.emulator.delete_message(self._hook_message(request, record))
        return web.Response(status=204)

    # -------------------------------------------------------------- CDN

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """Attachment bytes behind a signed URL; 404 once the signature or the expiry does not hold."""
        gone = web.Response(status=404, text=_CDN_GONE)
        try:
            attachment = self.emulator.attachments.get(int(request.match_info["attachment_id"]))
            expires = int(request.query.get("ex", ""), 16)
            issued = int(request.query.get("is", ""), 16)
        except ValueError:
            return gone
        if attachment is None or str(attachment.channel_id) != request.match_info["channel_id"]:
            return gone
        path = request.rel_url.raw_path.removeprefix("/media")
        expected = self.emulator.sign_cdn(path, expires, issued)
        if request.query.get("hm") != expected or time.time() >= expires:
            return gone
        response = web.StreamResponse(headers={"Content-Type": attachment.content_type or "application/octet-stream"})
        response.content_length = attachment.size
        async with self._cdn_slots:
            await response.prepare(request)
            view = memoryview(attachment.data)
            for start in range(0, len(view), _CDN_CHUNK):
                await response.write(view[start : start + _CDN_CHUNK])
            await response.write_eof()
        return response


def interaction_token(ident: int, secret: str) -> str:
    """Interaction tokens look like Discord's: base64url of `interaction:<id>:<random>`."""
    return base64.urlsafe_b64encode(f"interaction:{ident}:{secret}".encode()).decode().rstrip("=")


def check_autocomplete_choices(data: dict[str, Any]) -> None:
    """At most 25 choices, each a name of 1-100 characters and a string (at most 100) or number value
    (https://discord.com/developers/docs/interactions/application-commands#application-command-object-
    application-command-option-choice-structure)."""
    errors = FormErrors()
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) > 25:
        errors.add(("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be a list of 25 or fewer in length.")
        raise errors.error()
    for index, choice in enumerate(choices):
        name = choice.get("name") if isinstance(choice, dict) else None
        value = choice.get("value") if isinstance(choice, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            errors.add(
                ("data", "choices", str(index), "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or (isinstance(value, str) and len(value) > 100)
        ):
            errors.add(
                ("data", "choices", str(index), "value"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
    if errors:
        raise errors.error()
