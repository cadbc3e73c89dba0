"""What the REST API, the gateway and an interaction record need of the emulator that owns them.

`emulator.py` composes `rest.py` and `gateway.py` around its state; they reach that state through `Host`,
declared here below all three, so no module imports a module above it (the import-linter layers contract
"Discord emulator" keeps `emulator > rest | gateway > host | rules > model`). A method of `DiscordEmulator`
the REST API or the gateway starts using is added to `Host` too (mypy says so otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from .model import (
    AttachmentRecord,
    CallbackType,
    ChannelRecord,
    GuildRecord,
    InteractionType,
    Json,
    MessageRecord,
    RequestRecord,
    ResponseRecord,
    RoleRecord,
    SnowflakeFactory,
    SyncRecord,
    UploadedFile,
    UserRecord,
)

T = TypeVar("T")


class EmulatorError(RuntimeError):
    """The test asked for something the emulated Discord cannot do (e.g. no bot connected)."""


class Dispatcher(Protocol):
    """The gateway as the REST API sees it: events go to the connected sessions."""

    def dispatch(
        self, event: str, data: Json, *, guild_id: int | None = None, intent: int = 0, single: bool = False
    ) -> int: ...


class Host(Protocol):
    """The emulator's state and rules, as `RestApi`, `Gateway` and `InteractionRecord` use them."""

    application_id: int
    bot_user_id: int
    interaction_token_ttl: float
    interaction_response_deadline: float | None
    heartbeat_interval_ms: int
    allowed_privileged_intents: int
    gateway_compression: bool
    rate_limit: tuple[int, float]
    cdn_concurrency: int
    next_id: SnowflakeFactory
    users: dict[int, UserRecord]
    guilds: dict[int, GuildRecord]
    channels: dict[int, ChannelRecord]
    attachments: dict[int, AttachmentRecord]
    commands: dict[int | None, dict[tuple[int, str], Json]]
    syncs: list[SyncRecord]
    requests: list[RequestRecord]
    # The emulator's own indexes, read by the records and the REST API of this package only.
    _messages: dict[int, MessageRecord]
    _interactions_by_id: dict[int, InteractionRecord]

    @property
    def gateway(self) -> Dispatcher: ...

    @property
    def gateway_url(self) -> str: ...

    def token_ok(self, token: str | None) -> bool: ...

    def notify(self) -> None: ...

    def record(self, kind: str, data: Json) -> None: ...

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        poll: bool = True,
    ) -> T: ...

    def message(self, message_id: int) -> MessageRecord | None: ...

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[MessageRecord]: ...

    def thread_for(self, message_id: int) -> ChannelRecord | None: ...

    def interaction_by_token(self, token: str) -> InteractionRecord | None: ...

    def permissions_in(self, channel: ChannelRecord, user_id: int) -> int: ...

    def respond_interaction(self, record: InteractionRecord, response: ResponseRecord) -> None: ...

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
    ) -> MessageRecord: ...

    def edit_message(self, message: MessageRecord, payload: Json, files: list[UploadedFile]) -> None: ...

    def delete_message(self, message: MessageRecord) -> None: ...

    def create_thread(
        self, parent: ChannelRecord, name: str, *, type: int, auto_archive_duration: int, message: MessageRecord | None
    ) -> ChannelRecord: ...

    def delete_channel(self, channel_id: int) -> None: ...

    def open_dm(self, user_id: int) -> ChannelRecord: ...

    def shares_a_guild(self, user_id: int) -> bool: ...

    def sign_cdn(self, path: str, expires: int, issued: int) -> str: ...

    def user_payload(self, user: UserRecord) -> Json: ...

    def bot_user_payload(self) -> Json: ...

    def role_payload(self, role: RoleRecord) -> Json: ...

    def member_payload(
        self, guild: GuildRecord, user_id: int, *, with_user: bool = True, permissions: int | None = None
    ) -> Json: ...

    def channel_payload(self, channel: ChannelRecord) -> Json: ...

    def guild_payload(self, guild: GuildRecord) -> Json: ...

    def guild_create_payload(self, guild: GuildRecord) -> Json: ...

    def message_payload(self, message: MessageRecord) -> Json: ...

    def application_payload(self) -> Json: ...

    def ready_payload(self, session_id: str, shard: list[int] | None) -> Json: ...

    def callback_response(
        self, record: InteractionRecord, callback_type: int, message: MessageRecord | None
    ) -> Json: ...


class InteractionRecord:
    """One interaction the emulator dispatched, and everything the bot answered through its token."""

    def __init__(
        self,
        emulator: Host,
        *,
        id: int,
        token: str,
        type: int,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        payload: Json,
        source_message_id: int | None = None,
        command_type: int | None = None,
        parent_id: int | None = None,
    ) -> None:
        self._emulator = emulator
        self.id = id
        self.token = token
        self.type = type
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.name = name
        self.payload = payload
        self.source_message_id = source_message_id
        self.created_at = time.monotonic()
        self.token_expires_at = self.created_at + emulator.interaction_token_ttl
        deadline = emulator.interaction_response_deadline
        self.deadline_at: float | None = None if deadline is None else self.created_at + deadline
        self.responses: list[ResponseRecord] = []
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        # The MODAL this interaction answered with, and whether the user has submitted it (a modal closes on
        # submit: one submission per modal).
        self.modal: Json | None = None
        self.modal_submitted = False
        # Application commands: 1 slash, 2 user, 3 message (context menu); None for other interactions.
        self.command_type = command_type
        # A modal submit: the interaction whose modal this submits.
        self.parent_id = parent_id

    def __repr__(self) -> str:
        return f"<InteractionRecord id={self.id} name={self.name!r} responses={[r.type for r in self.responses]}>"

    @property
    def custom_id(self) -> str | None:
        data = self.payload.get("data") or {}
        value = data.get("custom_id")
        return value if isinstance(value, str) else None

    @property
    def acknowledged(self) -> bool:
        return bool(self.responses)

    @property
    def first_response_at(self) -> float | None:
        return self.responses[0].at if self.responses else None

    @property
    def latency_ms(self) -> float | None:
        """Milliseconds from dispatch to the first callback (what Discord's 3-second rule measures)."""
        first = self.first_response_at
        return None if first is None else (first - self.created_at) * 1000.0

    @property
    def token_expired(self) -> bool:
        return time.monotonic() >= self.token_expires_at

    @property
    def original_message(self) -> MessageRecord | None:
        if self.original_message_id is None:
            return None
        return self._emulator.message(self.original_message_id)

    @property
    def followups(self) -> list[MessageRecord]:
        return [self._emulator._messages[i] for i in self.followup_ids]

    @property
    def messages(self) -> list[MessageRecord]:
        """The original response (when it is a message) and the followups, oldest first, without repeats."""
        ids: list[int] = []
        if self.original_message_id is not None and self.type == InteractionType.APPLICATION_COMMAND:
            ids.append(self.original_message_id)
        for ident in self.followup_ids:
            if ident not in ids:
                ids.append(ident)
        original = self.original_message_id
        if self.type != InteractionType.APPLICATION_COMMAND and original is not None and original not in ids:
            ids.append(original)
        return [self._emulator._messages[i] for i in ids]

    @property
    def ephemeral_text(self) -> str | None:
        """Content of the newest ephemeral message this interaction produced."""
        for message in reversed(self.messages):
            if message.ephemeral and not message.deleted:
                return message.content
        return None

    @property
    def last_text(self) -> str | None:
        """Content of the newest message this interaction produced (after edits)."""
        live = [m for m in self.messages if not m.deleted]
        return live[-1].content if live else None

    async def wait_modal(self, timeout: float = 5.0) -> Json:  # noqa: ASYNC109
        """The modal this interaction answered with (raises EmulatorError if it answered otherwise)."""
        response = await self.wait_response(timeout)
        if response.type != CallbackType.MODAL or self.modal is None:
            raise EmulatorError(f"interaction {self.id} answered with callback type {response.type}, not a modal")
        return self.modal

    async def wait_response(self, timeout: float = 5.0) -> ResponseRecord:  # noqa: ASYNC109
        """The first callback (defer, message, update, modal)."""
        return await self._emulator.wait_for(lambda: self.responses[0] if self.responses else None, timeout, poll=False)

    async def wait_followup(self, timeout: float = 5.0, *, count: int = 1) -> MessageRecord:  # noqa: ASYNC109
        """The `count`-th message sent through the webhook (followup) route; after a deferral the first one
        is the original response itself, as on Discord."""
        return await self._emulator.wait_for(
            lambda: self._emulator._messages[self.followup_ids[count - 1]] if len(self.followup_ids) >= count else None,
            timeout,
            poll=False,
        )

    async def wait_done(self, timeout: float = 5.0) -> MessageRecord:  # noqa: ASYNC109
        """The original response once it is no longer a "thinking…" placeholder."""

        def done() -> MessageRecord | None:
            message = self.original_message
            return message if message is not None and not message.loading else None

        return await self._emulator.wait_for(done, timeout, poll=False)
