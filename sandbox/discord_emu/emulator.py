"""`DiscordEmulator`: the state of a small Discord (guilds, channels, messages, interactions) and the test API.

The REST API lives in `rest.py` and the gateway in `gateway.py`; both read and change the state kept here,
through the `Host` protocol of `host.py` (so neither imports this module).
Everything runs on one event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from .gateway import Gateway
from .host import EmulatorError as EmulatorError
from .host import InteractionRecord as InteractionRecord
from .model import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    AttachmentRecord,
    CallbackType,
    ChannelRecord,
    ChannelType,
    CommandType,
    ComponentType,
    EventRecord,
    GuildRecord,
    Intent,
    InteractionType,
    Json,
    MemberRecord,
    MessageFlag,
    MessageRecord,
    MessageType,
    OptionType,
    Overwrite,
    Perm,
    RequestRecord,
    ResponseRecord,
    RoleRecord,
    SnowflakeFactory,
    SyncRecord,
    UploadedFile,
    UserRecord,
    compute_channel_permissions,
    iso,
    utcnow,
)
from .rest import RestApi, RestFault, interaction_token
from .rules import image_size

T = TypeVar("T")

DEFAULT_APPLICATION_ID = 1_300_000_000_000_000_001
DEFAULT_OWNER_ID = 1_300_000_000_000_000_100
DEFAULT_TOKEN = "emulator.bot.token"  # noqa: S105 - not a secret: any token works unless one is configured
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_USER_MENTION = re.compile(r"<@!?(\d+)>")


@dataclass
class _Waiter:
    predicate: Callable[[], Any]
    future: asyncio.Future[Any]
    poll: bool


class CommandNotSyncedError(LookupError):
    """`run_command` named a command the bot never synced: on Discord the user could not even type it."""


class CommandUnavailableError(PermissionError):
    """The command exists but Discord would not offer it to this user here (default permissions, contexts)."""


class DiscordEmulator:
    """A local Discord (REST + gateway + attachment CDN) for the real discord.py; see the package docstring.

    Identity: `application_id`; `bot_user_id` (defaults to the application id, as for modern applications);
    `owner_id`, or a team (`owner_id` + `team_member_ids`) as `GET /oauth2/applications/@me` reports it.
    `bot_token`: when set, any other token gets 401 (REST) / close 4004 (gateway); unset, any non-empty token
    is accepted and recorded in `tokens_seen`. `bot_name`: the bot user's name.

    Discord's rules: `interaction_token_ttl` (15 min) after which followups and edits through the token get
    401 / 50027; `interaction_response_deadline` (3 s, None to disable) after which the first callback gets
    404 / 10062; `attachment_url_ttl` for signed CDN URLs (whole seconds); `heartbeat_interval_ms` sent in
    HELLO; `allowed_privileged_intents` (an IDENTIFY asking for others is closed with 4014);
    `gateway_compression` (zlib-stream when the client asks for it); `rate_limit` = (requests, seconds) per
    route bucket and major parameter, reported in X-RateLimit-* headers and enforced with real 429s
    (generous by default; (5, 5.0) is Discord's message bucket). `cdn_concurrency`: attachment bodies
    streamed at once (the rest queue; much faster than hundreds at once on one event loop).
    """

    def __init__(
        self,
        *,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int | None = None,
        owner_id: int = DEFAULT_OWNER_ID,
        team_member_ids: list[int] | None = None,
        interaction_token_ttl: float = 900.0,
        interaction_response_deadline: float | None = 3.0,
        bot_token: str | None = None,
        bot_name: str = "kf2v",
        attachment_url_ttl: float = 86400.0,
        heartbeat_interval_ms: int = 41250,
        allowed_privileged_intents: int = 0,
        gateway_compression: bool = True,
        rate_limit: tuple[int, float] = (1000, 1.0),
        cdn_concurrency: int = 8,
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id if bot_user_id is not None else application_id
        self.owner_id = owner_id
        self.team_member_ids = list(team_member_ids) if team_member_ids is not None else None
        self.team_id = application_id + 7 if team_member_ids is not None else None
        self.interaction_token_ttl = interaction_token_ttl
        self.interaction_response_deadline = interaction_response_deadline
        self.attachment_url_ttl = attachment_url_ttl
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.allowed_privileged_intents = allowed_privileged_intents
        self.gateway_compression = gateway_compression
        self.rate_limit = rate_limit
        self.cdn_concurrency = cdn_concurrency
        self._configured_token = bot_token
        self.tokens_seen: set[str] = set()

        self.next_id = SnowflakeFactory()
        self.users: dict[int, UserRecord] = {}
        self.guilds: dict[int, GuildRecord] = {}
        self.channels: dict[int, ChannelRecord] = {}
        self._messages: dict[int, MessageRecord] = {}
        self._channel_messages: dict[int, list[MessageRecord]] = {}
        self.attachments: dict[int, AttachmentRecord] = {}
        self.interactions: list[InteractionRecord] = []
        self._interactions_by_id: dict[int, InteractionRecord] = {}
        self._interactions_by_token: dict[str, InteractionRecord] = {}
        self.commands: dict[int | None, dict[tuple[int, str], Json]] = {}
        self.syncs: list[SyncRecord] = []
        self.requests: list[RequestRecord] = []
        self.events: list[EventRecord] = []
        self._secret = secrets.token_bytes(16)
        self._waiters: list[_Waiter] = []
        self._ticker: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"

        self.users[self.bot_user_id] = UserRecord(self.bot_user_id, bot_name, None, bot=True, discriminator="4242")
        self._ensure_user(owner_id, "app-owner")
        for member_id in self.team_member_ids or []:
            self._ensure_user(member_id, f"dev-{member_id % 10000}")

        self.gateway = Gateway(self)
        self.rest = RestApi(self)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve REST, gateway and CDN on one loopback port (0 picks a free one)."""
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the emulator only listens on loopback, not {host!r}")
        if self._runner is not None:
            raise EmulatorError("already started")
        app = web.Application(client_max_size=1 << 30, middlewares=[self.rest.middleware])
        self.rest.add_routes(app)
        self.gateway.add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._host = "127.0.0.1" if host == "localhost" else host
        self._port = int(address[1])

    async def stop(self) -> None:
        """Close every gateway connection and the server."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.gateway.close_all()
        self.rest.clear_faults()  # held requests end, so the server's cleanup doesn't wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmulatorError("the emulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for `discord.http.Route.BASE`."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` (as a `yarl.URL`)."""
        return f"ws://{self.base_url.removeprefix('http://')}/gateway"

    @property
    def bot_token(self) -> str:
        """A token the emulator accepts."""
        return self._configured_token or DEFAULT_TOKEN

    @contextlib.contextmanager
    def discord_py_overrides(self) -> Iterator[None]:
        """Point discord.py's REST base and gateway at this emulator for the duration of the block."""
        import discord.gateway  # discord.py only when asked: the emulator does not need it
        import discord.http
        import yarl

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    def token_ok(self, token: str | None) -> bool:
        if not token:
            return False
        token = token.removeprefix("Bot ").strip()
        if not token:
            return False
        self.tokens_seen.add(token)
        return self._configured_token is None or token == self._configured_token

    # ------------------------------------------------------------------ recording and waiting

    def notify(self) -> None:
        """Re-check the waiting predicates (called on every recorded change); settle those that hold."""
        if not self._waiters:
            return
        pending: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            try:
                result = waiter.predicate()
            except Exception as error:  # the test's predicate failed: report it to the waiting test
                waiter.future.set_exception(error)
                continue
            if result:
                waiter.future.set_result(result)
            else:
                pending.append(waiter)
        self._waiters = pending

    def record(self, kind: str, data: Json) -> None:
        self.events.append(EventRecord(kind, data))
        self.notify()

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        poll: bool = True,
    ) -> T:
        """Return the first truthy value of `predicate()`. It is re-checked on every recorded change; with
        `poll` also every 10 ms, for predicates about the bot's side, whose changes the emulator cannot see."""
        result = predicate()
        if result:
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, future, poll)
        self._waiters.append(waiter)
        if poll and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.create_task(self._tick())
        try:
            value: T = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return value

    async def _tick(self) -> None:
        while any(w.poll for w in self._waiters):
            await asyncio.sleep(0.01)
            self.notify()

    async def wait_ready(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until a bot identified on the gateway and was sent READY and its GUILD_CREATEs."""
        await self.wait_for(self.gateway.has_live_session, timeout, poll=False)

    def events_of(self, kind: str) -> list[EventRecord]:
        return [event for event in self.events if event.kind == kind]

    def count_requests(
        self, method: str | None = None, route_contains: str | None = None, status: int | None = None
    ) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (route_contains is None or route_contains in r.route or route_contains in r.path)
            and (status is None or r.status == status)
        )

    @property
    def sync_count(self) -> int:
        """How many times the bot bulk-overwrote its commands (global and guild scopes together)."""
        return len(self.syncs)

    # ------------------------------------------------------------------ world building

    def _ensure_user(self, user_id: int, name: str) -> UserRecord:
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = UserRecord(user_id, name, name)
        return user

    def add_guild(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        locale: str = "en-US",
        premium_tier: int = 0,
        owner_id: int | None = None,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
    ) -> int:
        """Add a guild the bot is in (dispatches GUILD_CREATE when connected); returns its id.
        Without `owner_id` a new user owns it. The bot member gets a managed role with `bot_permissions`."""
        if premium_tier not in (0, 1, 2, 3):
            raise ValueError("premium_tier is 0 to 3")
        gid = guild_id if guild_id is not None else self.next_id()
        if gid in self.guilds and not self.guilds[gid].removed:
            raise ValueError(f"guild {gid} exists")
        owner = owner_id if owner_id is not None else self.next_id()
        self._ensure_user(owner, f"owner-{name}"[:32])
        guild = GuildRecord(
            id=gid,
            name=name,
            owner_id=owner,
            locale=locale,
            premium_tier=premium_tier,
            everyone_permissions=everyone_permissions,
            bot_role_id=self.next_id(),
            manager_role_id=self.next_id(),
            admin_role_id=self.next_id(),
        )
        guild.roles[gid] = RoleRecord(gid, "@everyone", everyone_permissions, position=0)
        guild.roles[guild.manager_role_id] = RoleRecord(guild.manager_role_id, "Managers", Perm.MANAGE_GUILD, 1)
        guild.roles[guild.admin_role_id] = RoleRecord(guild.admin_role_id, "Admins", Perm.ADMINISTRATOR, 2)
        bot_name = self.users[self.bot_user_id].username
        guild.roles[guild.bot_role_id] = RoleRecord(
            guild.bot_role_id, bot_name, bot_permissions, 3, managed=True, bot_id=self.bot_user_id
        )
        guild.members[self.bot_user_id] = MemberRecord(self.bot_user_id, [guild.bot_role_id])
        guild.members[owner] = MemberRecord(owner, [])
        self.guilds[gid] = guild
        self.record("guild.create", {"guild_id": gid})
        self.gateway.dispatch("GUILD_CREATE", self.guild_create_payload(guild), guild_id=gid, intent=Intent.GUILDS)
        return gid

    def remove_guild(self, guild_id: int) -> None:
        """The bot was removed from the guild: GUILD_DELETE."""
        guild = self.guild(guild_id)
        guild.removed = True
        self.record("guild.delete", {"guild_id": guild_id})
        self.gateway.dispatch("GUILD_DELETE", {"id": str(guild_id)}, guild_id=guild_id, intent=Intent.GUILDS)

    def set_premium_tier(self, guild_id: int, tier: int) -> None:
        guild = self.guild(guild_id)
        if tier not in (0, 1, 2, 3):
            raise ValueError("premium_tier is 0 to 3")
        guild.premium_tier = tier
        self.gateway.dispatch("GUILD_UPDATE", self.guild_payload(guild), guild_id=guild_id, intent=Intent.GUILDS)

    def upload_limit(self, guild_id: int) -> int:
        return self.guild(guild_id).upload_limit

    def add_text_channel(
        self,
        guild_id: int,
        name: str,
        *,
        bot_can_create_threads: bool = True,
        bot_can_send: bool = True,
        bot_can_attach: bool = True,
    ) -> int:
        """Add a text channel (CHANNEL_CREATE when connected). The flags become a member overwrite for the bot."""
        guild = self.guild(guild_id)
        channel = ChannelRecord(
            id=self.next_id(),
            guild_id=guild_id,
            name=name,
            type=ChannelType.GUILD_TEXT,
            position=len(guild.channel_ids),
        )
        self.channels[channel.id] = channel
        self._channel_messages[channel.id] = []
        guild.channel_ids.append(channel.id)
        self._apply_bot_overwrite(channel, bot_can_create_threads, bot_can_send, bot_can_attach)
        self.record("channel.create", {"channel_id": channel.id})
        self.gateway.dispatch("CHANNEL_CREATE", self.channel_payload(channel), guild_id=guild_id, intent=Intent.GUILDS)
        return channel.id

    def set_channel_permissions(
        self,
        channel_id: int,
        *,
        bot_can_create_threads: bool | None = None,
        bot_can_send: bool | None = None,
        bot_can_attach: bool | None = None,
    ) -> None:
        """Change what the bot may do in a channel (CHANNEL_UPDATE)."""
        channel = self.channel(channel_id)
        current = channel.overwrites.get(self.bot_user_id, Overwrite(self.bot_user_id, 1))
        self._apply_bot_overwrite(
            channel,
            bot_can_create_threads
            if bot_can_create_threads is not None
            else not current.deny & Perm.CREATE_PUBLIC_THREADS,
            bot_can_send if bot_can_send is not None else not current.deny & Perm.SEND_MESSAGES,
            bot_can_attach if bot_can_attach is not None else not current.deny & Perm.ATTACH_FILES,
        )
        self.gateway.dispatch(
            "CHANNEL_UPDATE", self.channel_payload(channel), guild_id=channel.guild_id, intent=Intent.GUILDS
        )

    def _apply_bot_overwrite(self, channel: ChannelRecord, threads: bool, send: bool, attach: bool) -> None:
        deny = 0
        if not threads:
            deny |= Perm.CREATE_PUBLIC_THREADS | Perm.CREATE_PRIVATE_THREADS
        if not send:
            deny |= Perm.SEND_MESSAGES | Perm.SEND_MESSAGES_IN_THREADS
        if not attach:
            deny |= Perm.ATTACH_FILES
        if deny:
            channel.overwrites[self.bot_user_id] = Overwrite(self.bot_user_id, 1, 0, deny)
        else:
            channel.overwrites.pop(self.bot_user_id, None)

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel or thread (CHANNEL_DELETE / THREAD_DELETE); its threads go with it."""
        channel = self.channel(channel_id)
        channel.deleted = True
        if channel.is_thread:
            payload: Json = {
                "id": str(channel.id),
                "guild_id": str(channel.guild_id),
                "parent_id": str(channel.parent_id),
                "type": channel.type,
            }
            self.gateway.dispatch("THREAD_DELETE", payload, guild_id=channel.guild_id, intent=Intent.GUILDS)
        else:
            guild = self.guilds[channel.guild_id] if channel.guild_id is not None else None
            if guild is not None and channel_id in guild.channel_ids:
                guild.channel_ids.remove(channel_id)
            for thread in self.channels.values():
                if thread.parent_id == channel_id:
                    thread.deleted = True
            self.gateway.dispatch(
                "CHANNEL_DELETE", self.channel_payload(channel), guild_id=channel.guild_id, intent=Intent.GUILDS
            )
        self.record("channel.delete", {"channel_id": channel_id})

    def add_member(
        self, guild_id: int, user_id: int, name: str, *, manage_guild: bool = False, administrator: bool = False
    ) -> None:
        """Add a user to a guild (GUILD_MEMBER_ADD only for bots with the members intent)."""
        guild = self.guild(guild_id)
        user = self._ensure_user(user_id, name)
        user.username = name
        user.global_name = name
        guild.members[user_id] = MemberRecord(user_id, [])
        self._set_roles(guild, user_id, manage_guild, administrator)
        payload = self.member_payload(guild, user_id) | {"guild_id": str(guild_id)}
        self.gateway.dispatch("GUILD_MEMBER_ADD", payload, guild_id=guild_id, intent=Intent.GUILD_MEMBERS)

    def set_member_permissions(
        self, guild_id: int, user_id: int, *, manage_guild: bool | None = None, administrator: bool | None = None
    ) -> None:
        guild = self.guild(guild_id)
        member = guild.members.get(user_id)
        if member is None:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        self._set_roles(
            guild,
            user_id,
            manage_guild if manage_guild is not None else guild.manager_role_id in member.role_ids,
            administrator if administrator is not None else guild.admin_role_id in member.role_ids,
        )
        payload = self.member_payload(guild, user_id) | {"guild_id": str(guild_id)}
        self.gateway.dispatch("GUILD_MEMBER_UPDATE", payload, guild_id=guild_id, intent=Intent.GUILD_MEMBERS)

    def _set_roles(self, guild: GuildRecord, user_id: int, manage_guild: bool, administrator: bool) -> None:
        member = guild.members[user_id]
        roles = [r for r in member.role_ids if r not in (guild.manager_role_id, guild.admin_role_id)]
        if manage_guild:
            roles.append(guild.manager_role_id)
        if administrator:
            roles.append(guild.admin_role_id)
        member.role_ids = roles

    # ------------------------------------------------------------------ lookups

    def guild(self, guild_id: int) -> GuildRecord:
        guild = self.guilds.get(guild_id)
        if guild is None or guild.removed:
            raise KeyError(f"unknown guild {guild_id}")
        return guild

    def channel(self, channel_id: int) -> ChannelRecord:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        return channel

    def message(self, message_id: int) -> MessageRecord | None:
        return self._messages.get(message_id)

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[MessageRecord]:
        """Messages of a channel or thread, oldest first (ephemeral ones included; see `MessageRecord.flags`)."""
        return [m for m in self._channel_messages.get(channel_id, []) if include_deleted or not m.deleted]

    def open_dm(self, user_id: int) -> ChannelRecord:
        """The bot's DM channel with `user_id` (one per user, made on first use)."""
        for channel in self.channels.values():
            if channel.type == ChannelType.DM and channel.recipient_id == user_id:
                return channel
        channel = ChannelRecord(id=self.next_id(), guild_id=None, name="", type=ChannelType.DM, recipient_id=user_id)
        self.channels[channel.id] = channel
        self._channel_messages[channel.id] = []
        return channel

    def shares_a_guild(self, user_id: int) -> bool:
        """Whether the bot and `user_id` are members of a common server (what lets a bot DM a user)."""
        return any(not g.removed and user_id in g.members for g in self.guilds.values())

    def dms(self, user_id: int) -> list[MessageRecord]:
        """What the bot sent `user_id` in direct messages, oldest first."""
        channel = next(
            (c for c in self.channels.values() if c.type == ChannelType.DM and c.recipient_id == user_id), None
        )
        return self.messages(channel.id) if channel is not None else []

    def all_messages(self, *, include_deleted: bool = False) -> list[MessageRecord]:
        return [m for m in self._messages.values() if include_deleted or not m.deleted]

    def thread_for(self, message_id: int) -> ChannelRecord | None:
        """The thread started from a message (it shares the message's id)."""
        channel = self.channels.get(message_id)
        return channel if channel is not None and channel.is_thread and not channel.deleted else None

    def threads(self, channel_id: int) -> list[ChannelRecord]:
        return [c for c in self.channels.values() if c.parent_id == channel_id and not c.deleted]

    def interaction(self, interaction_id: int) -> InteractionRecord:
        return self._interactions_by_id[interaction_id]

    def interaction_by_token(self, token: str) -> InteractionRecord | None:
        return self._interactions_by_token.get(token)

    def permissions_in(self, channel: ChannelRecord, user_id: int) -> int:
        guild = self.guilds.get(channel.guild_id) if channel.guild_id is not None else None
        if guild is None:
            return 0
        parent = self.channels.get(channel.parent_id) if channel.is_thread and channel.parent_id is not None else None
        return compute_channel_permissions(guild, parent or channel, user_id)

    # ------------------------------------------------------------------ faults

    def inject_rest_errors(
        self,
        status: int,
        count: int | None = 1,
        route_contains: str | None = None,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
        method: str | None = None,
        code: int = 0,
    ) -> RestFault:
        """The next `count` matching REST requests (None: every one until `fault.stop()`) fail with `status` and
        the JSON error `code` (429 carries Via, retry_after and X-RateLimit headers so discord.py sleeps and
        retries; 500/502/504 are retried by discord.py too, 503 is not). A 403 for a missing permission is code
        50013 "Missing Permissions" (https://discord.com/developers/docs/topics/opcodes-and-status-codes)."""
        return self.rest.add_fault(
            status, count, route_contains, retry_after=retry_after, is_global=is_global, method=method, code=code
        )

    def hold_rest(
        self, route_contains: str | None, *, method: str | None = None, count: int | None = 1, after: bool = False
    ) -> RestFault:
        """Hold matching REST requests until `fault.release()`: before handling them (nothing is done), or with
        `after`, once handled (a message is stored) but before answering: a post whose answer is in flight."""
        kind = "hold_after" if after else "hold"
        return self.rest.add_fault(0, count, route_contains, retry_after=0, is_global=False, method=method, kind=kind)

    def drop_rest(
        self, route_contains: str | None, *, method: str | None = None, count: int | None = 1, after: bool = False
    ) -> RestFault:
        """Close the connection of matching REST requests without answering: before handling them, or with
        `after`, once handled (Discord did it, the client never hears)."""
        kind = "drop_after" if after else "drop"
        return self.rest.add_fault(0, count, route_contains, retry_after=0, is_global=False, method=method, kind=kind)

    def clear_rest_faults(self) -> None:
        """Stop every injected REST fault and let held requests go on."""
        self.rest.clear_faults()

    async def disconnect_gateway(self, resume: bool = True) -> None:
        """Drop the bot's gateway connection. resume=True: close 4000, discord.py reconnects and RESUMEs and the
        events dispatched meanwhile are replayed; resume=False: INVALID_SESSION, discord.py identifies anew
        (after its own 5 s pause)."""
        await self.gateway.disconnect(resume)

    def expire_interaction_token(self, interaction: InteractionRecord | int) -> None:
        """Make the interaction's token invalid now (as after 15 minutes)."""
        record = interaction if isinstance(interaction, InteractionRecord) else self.interaction(interaction)
        record.token_expires_at = time.monotonic()

    # ------------------------------------------------------------------ interactions

    async def run_command(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        group: str | None = None,
        attachments: dict[str, tuple[str, bytes, str]] | None = None,
        locale: str = "en-US",
        ignore_default_permissions: bool = False,
    ) -> InteractionRecord:
        """A user runs a slash command: INTERACTION_CREATE (type 2) with options typed after the synced
        definition; `attachments` maps an attachment option to (filename, bytes, content_type), served by
        the CDN route. Raises CommandNotSyncedError, CommandUnavailableError or ValueError where the Discord
        client would not let the user send this."""
        guild = self.guild(guild_id)
        channel = self._usable_channel(guild, channel_id)
        if user_id not in guild.members:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        scope, command = self._find_command(guild_id, name)
        self._check_command_available(guild, channel, user_id, command, ignore_default_permissions)
        definitions: list[Json] = command.get("options") or []
        path: list[tuple[str, int]] = []
        if group is not None:
            definitions = self._option_children(definitions, group, OptionType.SUB_COMMAND_GROUP, name)
            path.append((group, OptionType.SUB_COMMAND_GROUP))
        if subcommand is not None:
            definitions = self._option_children(definitions, subcommand, OptionType.SUB_COMMAND, name)
            path.append((subcommand, OptionType.SUB_COMMAND))
        if any(d.get("type") in (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP) for d in definitions):
            raise ValueError(f"/{name} needs a subcommand (and group) to run")
        resolved: dict[str, Json] = {}
        leaf = self._build_options(guild, channel, definitions, options or {}, attachments or {}, resolved)
        for part_name, part_type in reversed(path):
            leaf = [{"name": part_name, "type": part_type, "options": leaf}]
        data: Json = {"id": command["id"], "name": name, "type": 1, "options": leaf}
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        full_name = " ".join([name, *(p for p, _ in path)])
        return self._dispatch_interaction(
            InteractionType.APPLICATION_COMMAND,
            guild,
            channel,
            user_id,
            full_name,
            data,
            locale,
            None,
            command_type=CommandType.CHAT_INPUT,
        )

    async def press_button(
        self, message_id: int, custom_id: str, user_id: int, *, locale: str = "en-US"
    ) -> InteractionRecord:
        """A user clicks a button of a message: INTERACTION_CREATE (type 3) carrying the message."""
        message, component = self._find_component(message_id, custom_id, (2,))
        data: Json = {"custom_id": custom_id, "component_type": 2}
        if "id" in component:
            data["id"] = component["id"]
        return self._component_interaction(message, user_id, custom_id, data, locale)

    async def select(
        self, message_id: int, custom_id: str, values: list[str], user_id: int, *, locale: str = "en-US"
    ) -> InteractionRecord:
        """A user picks options of a string select menu (component type 3)."""
        message, component = self._find_component(message_id, custom_id, (3,))
        allowed = {o.get("value") for o in component.get("options") or []}
        if any(v not in allowed for v in values):
            raise ValueError(f"values {values} are not options of {custom_id!r}")
        data: Json = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        return self._component_interaction(message, user_id, custom_id, data, locale)

    def post_message(
        self,
        channel_id: int,
        user_id: int,
        content: str = "",
        *,
        attachments: Sequence[tuple[str, bytes, str]] = (),
    ) -> MessageRecord:
        """A member posts a message (with files: (filename, bytes, content_type)) in a channel or thread, e.g. as
        the target of a message command. Raises ValueError where Discord would not let them."""
        channel = self.channel(channel_id)
        guild = self.guild(channel.guild_id) if channel.guild_id is not None else None
        if guild is None or channel.deleted or user_id not in guild.members:
            raise ValueError(f"user {user_id} cannot post in channel {channel_id}")
        perms = self.permissions_in(channel, user_id)
        needed = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        if attachments:
            needed |= Perm.ATTACH_FILES
        if perms & needed != needed:
            raise ValueError(f"user {user_id} lacks the permissions to post this in channel {channel_id}")
        if len(attachments) > 10:
            raise ValueError("a message holds at most 10 attachments")
        files = [UploadedFile(i, name, data, kind) for i, (name, data, kind) in enumerate(attachments)]
        if not content and not files:
            raise ValueError("an empty message cannot be sent")
        return self.create_message(channel, {"content": content}, files, type=MessageType.DEFAULT, author_id=user_id)

    async def run_message_command(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        message_id: int,
        *,
        locale: str = "en-US",
        ignore_default_permissions: bool = False,
    ) -> InteractionRecord:
        """A user picks Apps -> `name` on a message: INTERACTION_CREATE (type 2) whose data has type 3, the
        `target_id` and the message in `resolved.messages` (attachments included), as documented at
        https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-interaction-data
        and .../application-commands#message-commands. `name` may be the default name or a localised one (what
        the user saw); the interaction carries the default name, as Discord sends it."""
        guild = self.guild(guild_id)
        channel = self._usable_channel(guild, channel_id)
        if user_id not in guild.members:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        target = self._messages.get(message_id)
        if target is None or target.deleted or target.ephemeral or target.channel_id != channel_id:
            raise ValueError(f"message {message_id} is not a visible message of channel {channel_id}")
        scope, command = self._find_context_command(guild_id, name, CommandType.MESSAGE)
        self._check_command_available(guild, channel, user_id, command, ignore_default_permissions)
        data: Json = {
            "id": command["id"],
            "name": command["name"],
            "type": CommandType.MESSAGE,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): self.message_payload(target)}},
        }
        if scope is not None:
            data["guild_id"] = str(scope)
        return self._dispatch_interaction(
            InteractionType.APPLICATION_COMMAND,
            guild,
            channel,
            user_id,
            str(command["name"]),
            data,
            locale,
            None,
            command_type=CommandType.MESSAGE,
        )

    def _find_context_command(self, guild_id: int, name: str, kind: int) -> tuple[int | None, Json]:
        for scope in (guild_id, None):
            for (found_kind, default_name), command in self.commands.get(scope, {}).items():
                localised = command.get("name_localizations") or {}
                if found_kind == kind and name in (default_name, *localised.values()):
                    return scope, command
        synced = sorted({n for scope in (guild_id, None) for (k, n) in self.commands.get(scope, {}) if k == kind})
        raise CommandNotSyncedError(f"no command {name!r} of type {kind} was synced (synced: {synced or 'nothing'})")

    async def submit_modal(
        self,
        interaction: InteractionRecord | int,
        values: Mapping[str, str | Sequence[str] | Sequence[tuple[str, bytes, str]]] | None = None,
        *,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """The user fills in and submits the modal `interaction` answered with: INTERACTION_CREATE (type 5,
        MODAL_SUBMIT) whose components mirror the modal's, each input carrying its value. `values` maps a
        custom_id to text (text inputs), option values (selects) or (filename, bytes, content_type) files (file
        uploads); inputs left out keep what the modal pre-filled. Raises ValueError where the Discord client
        would not let the user submit (a required input empty, a length outside min/max, unknown options)."""
        parent = interaction if isinstance(interaction, InteractionRecord) else self.interaction(interaction)
        modal = parent.modal
        if modal is None:
            raise ValueError(f"interaction {parent.id} did not answer with a modal")
        if parent.modal_submitted:
            raise ValueError(f"the modal of interaction {parent.id} was already submitted (it closed)")
        guild = self.guild(parent.guild_id)
        channel = self._usable_channel(guild, parent.channel_id)
        wanted = dict(values or {})
        resolved: dict[str, Json] = {}
        components: list[Json] = []
        for item in modal.get("components") or []:
            kind = item.get("type")
            if kind == ComponentType.LABEL:
                child = self._submitted_input(channel, item["component"], wanted, resolved)
                components.append({"type": kind, "id": item.get("id"), "component": child})
            elif kind == ComponentType.ACTION_ROW:
                row = [self._submitted_input(channel, c, wanted, resolved) for c in item.get("components") or []]
                components.append({"type": kind, "id": item.get("id"), "components": row})
            elif kind == ComponentType.TEXT_DISPLAY:
                components.append({"type": kind, "id": item.get("id"), "content": item.get("content", "")})
        if wanted:
            raise ValueError(f"the modal has no inputs {sorted(wanted)}")
        data: Json = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        source = self._messages.get(parent.source_message_id) if parent.source_message_id is not None else None
        parent.modal_submitted = True
        return self._dispatch_interaction(
            InteractionType.MODAL_SUBMIT,
            guild,
            channel,
            parent.user_id,
            str(modal["custom_id"]),
            data,
            locale,
            source,
            parent_id=parent.id,
        )

    def _submitted_input(
        self, channel: ChannelRecord, item: Json, wanted: dict[str, Any], resolved: dict[str, Json]
    ) -> Json:
        kind = item.get("type")
        custom_id = str(item.get("custom_id"))
        required = item.get("required", True) is not False
        submitted: Json = {"type": kind, "id": item.get("id"), "custom_id": custom_id}
        if kind == ComponentType.TEXT_INPUT:
            value = wanted.pop(custom_id, item.get("value") or "")
            if not isinstance(value, str):
                raise ValueError(f"text input {custom_id!r} takes a string")
            low = int(item.get("min_length") or 0)
            high = int(item.get("max_length") or 4000)
            if (required or value) and not (max(low, 1 if required else 0) <= len(value) <= high):
                raise ValueError(f"text input {custom_id!r}: length {len(value)} outside [{low}, {high}]")
            submitted["value"] = value
        elif kind == ComponentType.STRING_SELECT:
            options = item.get("options") or []
            picked = wanted.pop(custom_id, [o.get("value") for o in options if o.get("default")])
            allowed = {o.get("value") for o in options}
            if isinstance(picked, str) or any(v not in allowed for v in picked):
                raise ValueError(f"select {custom_id!r} takes a list of its option values {sorted(allowed)}")
            self._check_count(custom_id, len(picked), item, required)
            submitted["values"] = list(picked)
        elif kind == ComponentType.FILE_UPLOAD:
            files = wanted.pop(custom_id, [])
            self._check_count(custom_id, len(files), item, required)
            ids: list[str] = []
            for filename, data, content_type in files:
                stored = self.store_attachment(channel.id, filename, data, content_type, ephemeral=True)
                resolved.setdefault("attachments", {})[str(stored.id)] = self.attachment_payload(stored)
                ids.append(str(stored.id))
            submitted["values"] = ids
        else:
            raise ValueError(f"modal input type {kind} ({custom_id!r}) is not emulated")
        return submitted

    @staticmethod
    def _check_count(custom_id: str, count: int, item: Json, required: bool) -> None:
        low = int(item.get("min_values", 1 if required else 0))
        high = int(item.get("max_values", 1))
        if not low <= count <= high:
            raise ValueError(f"{custom_id!r}: {count} values outside [{low}, {high}]")

    def _component_interaction(
        self, message: MessageRecord, user_id: int, custom_id: str, data: Json, locale: str
    ) -> InteractionRecord:
        if message.guild_id is None:
            raise ValueError("only guild messages are emulated")
        guild = self.guild(message.guild_id)
        channel = self._usable_channel(guild, message.channel_id)
        if user_id not in guild.members:
            raise ValueError(f"user {user_id} is not a member of guild {guild.id}")
        return self._dispatch_interaction(
            InteractionType.MESSAGE_COMPONENT, guild, channel, user_id, custom_id, data, locale, message
        )

    def _find_component(self, message_id: int, custom_id: str, kinds: tuple[int, ...]) -> tuple[MessageRecord, Json]:
        message = self._messages.get(message_id)
        if message is None or message.deleted:
            raise ValueError(f"no message {message_id}")
        found: list[Json] = []

        def walk(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, dict):
                    if item.get("custom_id") == custom_id and item.get("type") in kinds:
                        found.append(item)
                    children = item.get("components")
                    if isinstance(children, list):
                        walk(children)
                    if isinstance(item.get("accessory"), dict):
                        walk([item["accessory"]])

        walk(message.components)
        if not found:
            raise ValueError(f"message {message_id} has no component {custom_id!r} (has {message.custom_ids()})")
        if found[0].get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        return message, found[0]

    def _usable_channel(self, guild: GuildRecord, channel_id: int) -> ChannelRecord:
        channel = self.channels.get(channel_id)
        if channel is None or channel.deleted or channel.guild_id != guild.id:
            raise ValueError(f"channel {channel_id} is not a live channel of guild {guild.id}")
        return channel

    async def run_autocomplete(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        focused: str,
        typed: str,
        options: dict[str, Any] | None = None,
        *,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """A user types `typed` into option `focused` of /name, with `options` filled so far: INTERACTION_CREATE
        type 4 (APPLICATION_COMMAND_AUTOCOMPLETE). As documented, the options are sent as typed and unchecked
        and the focused one carries `"focused": true` and a string value, whatever its type; attachments are
        not sent (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-
        application-command-interaction-data-option-structure). The bot answers with callback type 8
        (`autocomplete_choices`)."""
        guild = self.guild(guild_id)
        channel = self._usable_channel(guild, channel_id)
        if user_id not in guild.members:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        scope, command = self._find_command(guild_id, name)
        self._check_command_available(guild, channel, user_id, command, False)
        definitions = {str(d.get("name")): d for d in command.get("options") or []}
        if focused not in definitions or not definitions[focused].get("autocomplete"):
            raise ValueError(f"option {focused!r} of /{name} is not an autocomplete option")
        sent: list[Json] = []
        for option, value in (options or {}).items():
            if option not in definitions or option == focused:
                raise ValueError(f"unknown or focused option {option!r} in the filled options")
            sent.append({"name": option, "type": definitions[option]["type"], "value": value})
        sent.append({"name": focused, "type": definitions[focused]["type"], "value": typed, "focused": True})
        data: Json = {"id": command["id"], "name": name, "type": 1, "options": sent}
        if scope is not None:
            data["guild_id"] = str(scope)
        return self._dispatch_interaction(
            InteractionType.AUTOCOMPLETE, guild, channel, user_id, name, data, locale, None,
            command_type=CommandType.CHAT_INPUT,
        )  # fmt: skip

    @staticmethod
    def autocomplete_choices(record: InteractionRecord) -> list[Json] | None:
        """The suggestions the bot answered an autocomplete with (None: no answer yet)."""
        answers = [r for r in record.responses if r.type == CallbackType.AUTOCOMPLETE_RESULT]
        return list((answers[0].data or {}).get("choices") or []) if answers else None

    def _find_command(self, guild_id: int, name: str) -> tuple[int | None, Json]:
        for scope in (guild_id, None):
            command = self.commands.get(scope, {}).get((1, name))
            if command is not None:
                return scope, command
        synced = sorted({n for scope in (guild_id, None) for (_, n) in self.commands.get(scope, {})})
        raise CommandNotSyncedError(
            f"/{name} was not synced for guild {guild_id} or globally (synced: {synced or 'nothing'})"
        )

    def _check_command_available(
        self, guild: GuildRecord, channel: ChannelRecord, user_id: int, command: Json, ignore_defaults: bool
    ) -> None:
        contexts = command.get("contexts")
        if isinstance(contexts, list) and 0 not in contexts:
            raise CommandUnavailableError(f"/{command['name']} is not offered in guilds (contexts={contexts})")
        required = command.get("default_member_permissions")
        if required is None or ignore_defaults:
            return
        perms = compute_channel_permissions(guild, channel, user_id)
        needed = int(required)
        if not perms & Perm.ADMINISTRATOR and (needed == 0 or perms & needed != needed):
            raise CommandUnavailableError(
                f"/{command['name']} needs permissions {needed} by default; user {user_id} lacks them"
            )

    @staticmethod
    def _option_children(definitions: list[Json], name: str, kind: int, command: str) -> list[Json]:
        for option in definitions:
            if option.get("name") == name and option.get("type") == kind:
                children: list[Json] = option.get("options") or []
                return children
        raise ValueError(f"/{command} has no {'group' if kind == 2 else 'subcommand'} {name!r}")

    def _build_options(
        self,
        guild: GuildRecord,
        channel: ChannelRecord,
        definitions: list[Json],
        options: dict[str, Any],
        attachments: dict[str, tuple[str, bytes, str]],
        resolved: dict[str, Json],
    ) -> list[Json]:
        known = {d.get("name") for d in definitions}
        unknown = [n for n in [*options, *attachments] if n not in known]
        if unknown:
            raise ValueError(f"unknown options {unknown}; the command has {sorted(str(k) for k in known)}")
        built: list[Json] = []
        for definition in definitions:
            name = str(definition.get("name"))
            kind = int(definition.get("type", 0))
            if name in attachments or (kind == OptionType.ATTACHMENT and isinstance(options.get(name), tuple)):
                if kind != OptionType.ATTACHMENT:
                    raise ValueError(f"option {name!r} is not an attachment option")
                filename, data, content_type = attachments[name] if name in attachments else options[name]
                attachment = self.store_attachment(channel.id, filename, data, content_type, ephemeral=True)
                resolved.setdefault("attachments", {})[str(attachment.id)] = self.attachment_payload(attachment)
                built.append({"name": name, "type": kind, "value": str(attachment.id)})
                continue
            if name not in options or options[name] is None:
                if definition.get("required"):
                    raise ValueError(f"required option {name!r} is missing")
                continue
            value = self._option_value(guild, definition, options[name], resolved)
            built.append({"name": name, "type": kind, "value": value})
        return built

    def _option_value(self, guild: GuildRecord, definition: Json, raw: Any, resolved: dict[str, Json]) -> Any:
        name = definition.get("name")
        kind = definition.get("type")
        value: Any
        if kind == OptionType.STRING:
            if not isinstance(raw, str):
                raise ValueError(f"option {name!r} takes a string")
            if not definition.get("min_length", 0) <= len(raw) <= definition.get("max_length", 6000):
                raise ValueError(f"option {name!r}: length {len(raw)} outside the allowed range")
            value = raw
        elif kind in (OptionType.INTEGER, OptionType.NUMBER):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"option {name!r} takes a number")
            if kind == OptionType.INTEGER and not isinstance(raw, int):
                raise ValueError(f"option {name!r} takes an integer")
            low, high = definition.get("min_value"), definition.get("max_value")
            if (low is not None and raw < low) or (high is not None and raw > high):
                raise ValueError(f"option {name!r}: {raw} outside [{low}, {high}]")
            value = raw
        elif kind == OptionType.BOOLEAN:
            if not isinstance(raw, bool):
                raise ValueError(f"option {name!r} takes a boolean")
            value = raw
        elif kind in (OptionType.USER, OptionType.MENTIONABLE) and int(raw) in self.users:
            user_id = int(raw)
            resolved.setdefault("users", {})[str(user_id)] = self.user_payload(self.users[user_id])
            if user_id in guild.members:
                member = self.member_payload(guild, user_id, with_user=False)
                resolved.setdefault("members", {})[str(user_id)] = member
            value = str(user_id)
        elif kind in (OptionType.ROLE, OptionType.MENTIONABLE) and int(raw) in guild.roles:
            resolved.setdefault("roles", {})[str(raw)] = self.role_payload(guild.roles[int(raw)])
            value = str(raw)
        elif kind == OptionType.CHANNEL and int(raw) in self.channels:
            target = self.channels[int(raw)]
            types = definition.get("channel_types")
            if types and target.type not in types:
                raise ValueError(f"option {name!r} does not accept channel type {target.type}")
            payload = self.channel_payload(target) | {"permissions": str(self.permissions_in(target, 0))}
            resolved.setdefault("channels", {})[str(raw)] = payload
            value = str(raw)
        else:
            raise ValueError(f"option {name!r} (type {kind}) cannot take {raw!r}")
        choices = definition.get("choices")
        if choices and value not in [c.get("value") for c in choices]:
            raise ValueError(f"option {name!r}: {value!r} is not one of the choices")
        return value

    def _dispatch_interaction(
        self,
        kind: int,
        guild: GuildRecord,
        channel: ChannelRecord,
        user_id: int,
        name: str,
        data: Json,
        locale: str,
        message: MessageRecord | None,
        *,
        command_type: int | None = None,
        parent_id: int | None = None,
    ) -> InteractionRecord:
        ident = self.next_id()
        token = interaction_token(ident, secrets.token_urlsafe(48))
        channel_payload = self.channel_payload(channel)
        channel_payload["permissions"] = str(self.permissions_in(channel, user_id))
        payload: Json = {
            "id": str(ident),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
            "guild_id": str(guild.id),
            "channel": channel_payload,
            "channel_id": str(channel.id),
            "member": self.member_payload(guild, user_id, permissions=self.permissions_in(channel, user_id)),
            "token": token,
            "version": 1,
            "app_permissions": str(self.permissions_in(channel, self.bot_user_id)),
            "locale": locale,
            "guild_locale": guild.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
        }
        if message is not None:
            payload["message"] = self.message_payload(message)
        record = InteractionRecord(
            self,
            id=ident,
            token=token,
            type=kind,
            guild_id=guild.id,
            channel_id=channel.id,
            user_id=user_id,
            name=name,
            payload=payload,
            source_message_id=message.id if message is not None else None,
            command_type=command_type,
            parent_id=parent_id,
        )
        delivered = self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild.id, single=True)
        if not delivered:
            raise EmulatorError("no bot session to deliver the interaction to (is the bot connected?)")
        self.interactions.append(record)
        self._interactions_by_id[ident] = record
        self._interactions_by_token[token] = record
        self.record("interaction.create", {"interaction_id": ident, "name": name, "type": kind})
        return record

    def respond_interaction(self, record: InteractionRecord, response: ResponseRecord) -> None:
        record.responses.append(response)
        self.record("interaction.callback", {"interaction_id": record.id, "type": response.type})

    # ------------------------------------------------------------------ messages and attachments

    def store_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None, *, ephemeral: bool = False
    ) -> AttachmentRecord:
        guessed = mimetypes.guess_type(filename)[0]
        if guessed is not None:
            kind: str | None = guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
        else:
            kind = content_type if content_type and content_type != "application/octet-stream" else None
        attachment = AttachmentRecord(self.next_id(), filename, data, kind, channel_id, ephemeral=ephemeral)
        if (kind or "").startswith("image/"):
            size = image_size(data)
            if size is not None:
                attachment.width, attachment.height = size
        self.attachments[attachment.id] = attachment
        return attachment

    def attachment_url(self, attachment: AttachmentRecord, *, proxy: bool = False) -> str:
        """A signed, expiring CDN URL (ex/is/hm like Discord's) for the attachment."""
        prefix = "ephemeral-attachments" if attachment.ephemeral else "attachments"
        path = f"/{prefix}/{attachment.channel_id}/{attachment.id}/{quote(attachment.filename)}"
        now = time.time()
        issued = int(now)
        expires = int(now + self.attachment_url_ttl)
        signature = self.sign_cdn(path, expires, issued)
        host = self.base_url + ("/media" if proxy else "")
        return f"{host}{path}?ex={expires:x}&is={issued:x}&hm={signature}&"

    def sign_cdn(self, path: str, expires: int, issued: int) -> str:
        return hmac.new(self._secret, f"{path}:{expires:x}:{issued:x}".encode(), hashlib.sha256).hexdigest()

    def build_attachments(
        self,
        channel_id: int,
        payload: Json,
        files: list[UploadedFile],
        existing: list[AttachmentRecord] | None = None,
    ) -> list[AttachmentRecord]:
        """Resolve `attachments` (kept ids and `files[n]` placeholders) into the message's attachment list."""
        by_index = {f.index: f for f in files}
        old = {a.id: a for a in existing or []}
        used: set[int] = set()
        result: list[AttachmentRecord] = []
        entries = payload.get("attachments")
        if isinstance(entries, list):
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                try:
                    ident = int(entry.get("id", -1))
                except (TypeError, ValueError):
                    continue
                if ident in old:
                    kept = old[ident]
                    if "description" in entry:
                        kept.description = entry["description"]
                    result.append(kept)
                elif ident in by_index and ident not in used:
                    upload = by_index[ident]
                    used.add(ident)
                    attachment = self.store_attachment(
                        channel_id, str(entry.get("filename") or upload.filename), upload.data, upload.content_type
                    )
                    attachment.description = entry.get("description")
                    result.append(attachment)
        elif existing:
            result.extend(existing)
        for upload in files:
            if upload.index not in used:
                result.append(self.store_attachment(channel_id, upload.filename, upload.data, upload.content_type))
        return result

    def _normalise_embeds(self, embeds: list[Any], attachments: list[AttachmentRecord]) -> list[Json]:
        by_name = {a.filename: a for a in attachments}
        result: list[Json] = []
        for raw in embeds:
            if not isinstance(raw, dict):
                continue
            embed = dict(raw)
            embed.setdefault("type", "rich")
            for key in ("image", "thumbnail"):
                part = embed.get(key)
                if isinstance(part, dict) and str(part.get("url", "")).startswith("attachment://"):
                    attachment = by_name.get(str(part["url"]).removeprefix("attachment://"))
                    if attachment is not None:
                        embed[key] = dict(part) | {
                            "url": self.attachment_url(attachment),
                            "proxy_url": self.attachment_url(attachment, proxy=True),
                            "width": attachment.width,
                            "height": attachment.height,
                        }
            result.append(embed)
        return result

    def _mentions(self, content: str, allowed: Json | None, may_mention_everyone: bool) -> tuple[list[int], bool]:
        parse: list[str]
        listed: set[int] = set()
        if allowed is None:
            parse = ["users", "roles", "everyone"]
        else:
            parse = list(allowed.get("parse") or [])
            listed = {int(u) for u in allowed.get("users") or []}
        users = [int(u) for u in _USER_MENTION.findall(content)]
        mentioned = [u for u in dict.fromkeys(users) if "users" in parse or u in listed]
        everyone = "everyone" in parse and may_mention_everyone and ("@everyone" in content or "@here" in content)
        return mentioned, everyone

    def create_message(
        self,
        channel: ChannelRecord,
        payload: Json,
        files: list[UploadedFile],
        *,
        type: int,
        flags: int = 0,
        interaction: InteractionRecord | None = None,
        reference: Json | None = None,
        author_id: int | None = None,
    ) -> MessageRecord:
        ident = self.next_id()
        attachments = self.build_attachments(channel.id, payload, files)
        embeds = payload.get("embeds") or []
        if not self.permissions_in(channel, self.bot_user_id) & Perm.EMBED_LINKS and interaction is None:
            embeds = []  # Discord silently drops embeds without Embed Links
        content = payload.get("content") or ""
        allowed = payload.get("allowed_mentions")
        may_ping = bool(self.permissions_in(channel, self.bot_user_id) & Perm.MENTION_EVERYONE)
        mentions, everyone = self._mentions(content, allowed, may_ping)
        message = MessageRecord(
            id=ident,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=self.bot_user_id if author_id is None else author_id,
            content=content,
            embeds=self._normalise_embeds(embeds, attachments),
            components=list(payload.get("components") or []),
            attachments=attachments,
            flags=flags,
            type=type,
            allowed_mentions=allowed,
            mentions=mentions,
            mention_everyone=everyone,
            tts=bool(payload.get("tts")),
            webhook_id=self.application_id if interaction is not None else None,
            application_id=self.application_id if interaction is not None else None,
            interaction_id=interaction.id if interaction is not None else None,
            message_reference=reference,
        )
        self._messages[ident] = message
        self._channel_messages.setdefault(channel.id, []).append(message)
        if not message.ephemeral:
            channel.last_message_id = ident
            if channel.is_thread:
                message.position = channel.total_message_sent
                channel.message_count += 1
                channel.total_message_sent += 1
        self.record("message.create", {"message_id": ident, "channel_id": channel.id})
        if not message.ephemeral:
            event = self.message_payload(message) | {"guild_id": str(channel.guild_id)}
            self.gateway.dispatch("MESSAGE_CREATE", event, guild_id=channel.guild_id, intent=Intent.GUILD_MESSAGES)
        return message

    def edit_message(self, message: MessageRecord, payload: Json, files: list[UploadedFile]) -> None:
        message.history.append(
            {
                "content": message.content,
                "embeds": message.embeds,
                "components": message.components,
                "attachments": [a.id for a in message.attachments],
                "flags": message.flags,
            }
        )
        completing = message.loading
        if "attachments" in payload or files:
            message.attachments = self.build_attachments(message.channel_id, payload, files, message.attachments)
        if "content" in payload:
            message.content = payload["content"] or ""
        if "embeds" in payload:
            message.embeds = self._normalise_embeds(payload["embeds"] or [], message.attachments)
        if "components" in payload:
            message.components = list(payload["components"] or [])
        if "allowed_mentions" in payload:
            message.allowed_mentions = payload["allowed_mentions"]
        flags = payload.get("flags")
        if isinstance(flags, int):
            keep = MessageFlag.EPHEMERAL | MessageFlag.HAS_THREAD
            editable = MessageFlag.SUPPRESS_EMBEDS | (MessageFlag.IS_COMPONENTS_V2 if completing else 0)
            message.flags = (message.flags & keep) | (flags & editable)
        message.flags &= ~MessageFlag.LOADING
        channel = self.channels.get(message.channel_id)
        may_ping = channel is not None and bool(self.permissions_in(channel, self.bot_user_id) & Perm.MENTION_EVERYONE)
        message.mentions, message.mention_everyone = self._mentions(message.content, message.allowed_mentions, may_ping)
        message.edits += 1
        if not completing:
            message.edited_at = utcnow()
        self.record("message.edit", {"message_id": message.id, "channel_id": message.channel_id})
        if not message.ephemeral:
            event = self.message_payload(message) | {"guild_id": str(message.guild_id)}
            self.gateway.dispatch("MESSAGE_UPDATE", event, guild_id=message.guild_id, intent=Intent.GUILD_MESSAGES)

    def delete_message(self, message: MessageRecord) -> None:
        message.deleted = True
        channel = self.channels.get(message.channel_id)
        if channel is not None and channel.is_thread and not message.ephemeral:
            channel.message_count = max(0, channel.message_count - 1)
        self.record("message.delete", {"message_id": message.id, "channel_id": message.channel_id})
        if not message.ephemeral:
            event = {"id": str(message.id), "channel_id": str(message.channel_id), "guild_id": str(message.guild_id)}
            self.gateway.dispatch("MESSAGE_DELETE", event, guild_id=message.guild_id, intent=Intent.GUILD_MESSAGES)

    def create_thread(
        self, parent: ChannelRecord, name: str, *, type: int, auto_archive_duration: int, message: MessageRecord | None
    ) -> ChannelRecord:
        thread = ChannelRecord(
            id=message.id if message is not None else self.next_id(),
            guild_id=parent.guild_id,
            name=name,
            type=type,
            parent_id=parent.id,
            owner_id=self.bot_user_id,
            auto_archive_duration=auto_archive_duration,
            starter_message_id=message.id if message is not None else None,
            member_ids={self.bot_user_id},
        )
        self.channels[thread.id] = thread
        self._channel_messages[thread.id] = []
        if message is not None:
            message.thread_id = thread.id
            message.flags |= MessageFlag.HAS_THREAD
        self.record("thread.create", {"thread_id": thread.id, "parent_id": parent.id, "name": name})
        event = self.channel_payload(thread) | {"newly_created": True}
        self.gateway.dispatch("THREAD_CREATE", event, guild_id=parent.guild_id, intent=Intent.GUILDS)
        return thread

    # ------------------------------------------------------------------ payloads (Discord's JSON shapes)

    def user_payload(self, user: UserRecord) -> Json:
        payload: Json = {
            "id": str(user.id),
            "username": user.username,
            "discriminator": user.discriminator,
            "global_name": user.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if user.bot:
            payload["bot"] = True
        return payload

    def bot_user_payload(self) -> Json:
        return self.user_payload(self.users[self.bot_user_id]) | {
            "verified": True,
            "mfa_enabled": False,
            "locale": "en-US",
            "email": None,
            "bio": "",
        }

    def role_payload(self, role: RoleRecord) -> Json:
        payload: Json = {
            "id": str(role.id),
            "name": role.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": role.managed,
            "mentionable": False,
            "flags": 0,
        }
        if role.bot_id is not None:
            payload["tags"] = {"bot_id": str(role.bot_id)}
        return payload

    def member_payload(
        self, guild: GuildRecord, user_id: int, *, with_user: bool = True, permissions: int | None = None
    ) -> Json:
        member = guild.members[user_id]
        payload: Json = {
            "roles": [str(r) for r in member.role_ids],
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(member.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }
        if with_user:
            payload["user"] = self.user_payload(self.users[user_id])
        if permissions is not None:
            payload["permissions"] = str(permissions)
        return payload

    def channel_payload(self, channel: ChannelRecord) -> Json:
        if channel.type == ChannelType.DM:
            recipient = self.users[channel.recipient_id or 0]
            last = str(channel.last_message_id) if channel.last_message_id else None
            recipients = [self.user_payload(recipient)]
            return {
                "id": str(channel.id),
                "type": ChannelType.DM,
                "flags": 0,
                "recipients": recipients,
                "last_message_id": last,
            }
        payload: Json = {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id) if channel.guild_id is not None else None,
            "name": channel.name,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "rate_limit_per_user": channel.rate_limit_per_user,
            "flags": 0,
        }
        if channel.is_thread:
            metadata: Json = {
                "archived": channel.archived,
                "auto_archive_duration": channel.auto_archive_duration,
                "archive_timestamp": iso(channel.archive_timestamp),
                "locked": channel.locked,
                "create_timestamp": iso(channel.created_at),
            }
            if channel.type == ChannelType.PRIVATE_THREAD:
                metadata["invitable"] = channel.invitable
            payload |= {
                "parent_id": str(channel.parent_id),
                "owner_id": str(channel.owner_id),
                "message_count": channel.message_count,
                "member_count": len(channel.member_ids),
                "total_message_sent": channel.total_message_sent,
                "thread_metadata": metadata,
            }
            if self.bot_user_id in channel.member_ids:
                payload["member"] = {
                    "id": str(channel.id),
                    "user_id": str(self.bot_user_id),
                    "join_timestamp": iso(channel.created_at),
                    "flags": 1,
                }
            return payload
        payload |= {
            "position": channel.position,
            "parent_id": str(channel.parent_id) if channel.parent_id else None,
            "topic": channel.topic,
            "nsfw": False,
            "permission_overwrites": [
                {"id": str(o.id), "type": o.type, "allow": str(o.allow), "deny": str(o.deny)}
                for o in channel.overwrites.values()
            ],
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
            "icon_emoji": None,
            "theme_color": None,
        }
        return payload

    def guild_payload(self, guild: GuildRecord) -> Json:
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "roles": [self.role_payload(r) for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(guild.channel_ids[0]) if guild.channel_ids else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "vanity_url_code": None,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": (0, 2, 7, 14)[guild.premium_tier],
            "premium_progress_bar_enabled": False,
            "preferred_locale": guild.locale,
            "nsfw_level": 0,
            "nsfw": False,
            "incidents_data": None,
        }

    def guild_create_payload(self, guild: GuildRecord) -> Json:
        channels = [self.channel_payload(self.channels[c]) for c in guild.channel_ids]
        threads = [
            self.channel_payload(t)
            for t in self.channels.values()
            if t.is_thread and t.guild_id == guild.id and not t.deleted and not t.archived
        ]
        return self.guild_payload(guild) | {
            "joined_at": iso(guild.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "voice_states": [],
            "members": [self.member_payload(guild, self.bot_user_id)],
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "lazy": True,
        }

    def attachment_payload(self, attachment: AttachmentRecord) -> Json:
        payload: Json = {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": attachment.size,
            "url": self.attachment_url(attachment),
            "proxy_url": self.attachment_url(attachment, proxy=True),
            "flags": 0,
        }
        if attachment.content_type is not None:
            payload["content_type"] = attachment.content_type
        if attachment.width is not None:
            payload["width"] = attachment.width
            payload["height"] = attachment.height
        if attachment.description is not None:
            payload["description"] = attachment.description
        if attachment.ephemeral:
            payload["ephemeral"] = True
        return payload

    def message_payload(self, message: MessageRecord) -> Json:
        payload: Json = {
            "id": str(message.id),
            "type": message.type,
            "channel_id": str(message.channel_id),
            "author": self.user_payload(self.users[message.author_id]),
            "content": message.content,
            "timestamp": iso(message.timestamp),
            "edited_timestamp": iso(message.edited_at),
            "tts": message.tts,
            "mention_everyone": message.mention_everyone,
            "mentions": [self.user_payload(self.users[u]) for u in message.mentions if u in self.users],
            "mention_roles": [],
            "attachments": [self.attachment_payload(a) for a in message.attachments],
            "embeds": message.embeds,
            "components": message.components,
            "pinned": False,
            "flags": message.flags,
        }
        if message.webhook_id is not None:
            payload["webhook_id"] = str(message.webhook_id)
        if message.application_id is not None:
            payload["application_id"] = str(message.application_id)
        if message.position is not None:
            payload["position"] = message.position
        if message.message_reference is not None:
            payload["message_reference"] = message.message_reference
        if message.interaction_id is not None:
            record = self._interactions_by_id.get(message.interaction_id)
            if record is not None:
                user = self.user_payload(self.users[record.user_id])
                metadata: Json = {
                    "id": str(record.id),
                    "type": record.type,
                    "user": user,
                    "authorizing_integration_owners": {"0": str(record.guild_id)},
                }
                if record.type == InteractionType.APPLICATION_COMMAND:
                    metadata |= {"name": record.name, "command_type": record.command_type or CommandType.CHAT_INPUT}
                    payload["interaction"] = {
                        "id": str(record.id),
                        "type": record.type,
                        "name": record.name,
                        "user": user,
                    }
                elif record.source_message_id is not None:
                    metadata["interacted_message_id"] = str(record.source_message_id)
                if record.original_message_id is not None and record.original_message_id != message.id:
                    metadata["original_response_message_id"] = str(record.original_message_id)
                payload["interaction_metadata"] = metadata
        if message.thread_id is not None:
            thread = self.channels.get(message.thread_id)
            if thread is not None and not thread.deleted:
                payload["thread"] = self.channel_payload(thread)
        return payload

    def application_payload(self) -> Json:
        bot = self.user_payload(self.users[self.bot_user_id])
        payload: Json = {
            "id": str(self.application_id),
            "name": bot["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": bot,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
            "flags": 0,
            "hook": True,
            "is_monetized": False,
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": sum(1 for g in self.guilds.values() if not g.removed),
            "integration_types_config": {"0": {}},
            "team": None,
        }
        if self.team_id is None:
            payload["owner"] = self.user_payload(self.users[self.owner_id])
        else:
            payload["owner"] = {
                "id": str(self.team_id),
                "username": f"team{self.team_id}",
                "discriminator": "0000",
                "global_name": None,
                "avatar": None,
                "flags": 1024,
                "public_flags": 1024,
            }
            members = [self.owner_id, *[m for m in self.team_member_ids or [] if m != self.owner_id]]
            payload["team"] = {
                "id": str(self.team_id),
                "name": "emulated team",
                "icon": None,
                "owner_user_id": str(self.owner_id),
                "members": [
                    {
                        "membership_state": 2,
                        "team_id": str(self.team_id),
                        "user": self.user_payload(self.users[m]),
                        "role": "admin" if m == self.owner_id else "developer",
                        "permissions": ["*"],
                    }
                    for m in members
                ],
            }
        return payload

    def ready_payload(self, session_id: str, shard: list[int] | None) -> Json:
        payload: Json = {
            "v": 10,
            "user": self.bot_user_payload(),
            "guilds": [
                {"id": str(g.id), "unavailable": True}
                for g in self.guilds.values()
                if not g.removed and self.gateway.shard_has_guild(shard, g.id)
            ],
            "session_id": session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ['["kf2v-emulator",{"micros":0}]'],
        }
        if shard is not None:
            payload["shard"] = shard
        return payload

    def callback_response(self, record: InteractionRecord, callback_type: int, message: MessageRecord | None) -> Json:
        """Body of `?with_response=true` (the documented interaction callback response)."""
        interaction: Json = {"id": str(record.id), "type": record.type}
        resource: Json = {"type": callback_type}
        if (
            callback_type
            in (
                CallbackType.CHANNEL_MESSAGE_WITH_SOURCE,
                CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
            )
            and message is not None
        ):
            interaction |= {
                "response_message_id": str(message.id),
                "response_message_loading": message.loading,
                "response_message_ephemeral": message.ephemeral,
            }
        if callback_type in (CallbackType.CHANNEL_MESSAGE_WITH_SOURCE, CallbackType.UPDATE_MESSAGE) and message:
            resource["message"] = self.message_payload(message)
        return {"interaction": interaction, "resource": resource}
