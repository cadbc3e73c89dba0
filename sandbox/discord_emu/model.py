"""What the Discord emulator keeps: records, Discord's constants, snowflakes and permission arithmetic."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024

# Per-attachment upload limit for bots by guild boost tier (Discord's "Uploading Files" reference).
UPLOAD_LIMITS: dict[int, int] = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
# Documented maximum size of a whole create-message request; boosted guilds accept single files above it,
# so the emulator caps a request at max(this, the per-attachment limit).
REQUEST_SIZE_FLOOR = 25 * MIB


class Perm:
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    USE_EXTERNAL_STICKERS = 1 << 37
    SEND_MESSAGES_IN_THREADS = 1 << 38
    SEND_POLLS = 1 << 49
    USE_EXTERNAL_APPS = 1 << 50


ALL_PERMISSIONS = (1 << 51) - 1

# What @everyone may do in a freshly created guild (close to Discord's defaults).
DEFAULT_EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CONNECT
    | Perm.SPEAK
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.CREATE_PRIVATE_THREADS
    | Perm.USE_EXTERNAL_STICKERS
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.SEND_POLLS
    | Perm.USE_EXTERNAL_APPS
)

# The bot's managed role: what a typical invite link for a media bot grants.
DEFAULT_BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.MANAGE_THREADS
)


class ChannelType:
    GUILD_TEXT = 0
    DM = 1
    GUILD_CATEGORY = 4
    GUILD_ANNOUNCEMENT = 5
    ANNOUNCEMENT_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    GUILD_FORUM = 15


THREAD_TYPES = frozenset({ChannelType.ANNOUNCEMENT_THREAD, ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD})


class MessageFlag:
    SUPPRESS_EMBEDS = 1 << 2
    HAS_THREAD = 1 << 5
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    IS_COMPONENTS_V2 = 1 << 15


# Flags a client may set when creating a message; Discord ignores the others.
SETTABLE_MESSAGE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.EPHEMERAL
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_VOICE_MESSAGE
    | MessageFlag.IS_COMPONENTS_V2
)


class MessageType:
    DEFAULT = 0
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    CONTEXT_MENU_COMMAND = 23


class CommandType:
    """Application command types (https://discord.com/developers/docs/interactions/application-commands)."""

    CHAT_INPUT = 1
    USER = 2
    MESSAGE = 3


class ComponentType:
    """Component types (https://discord.com/developers/docs/components/reference#component-object)."""

    ACTION_ROW = 1
    BUTTON = 2
    STRING_SELECT = 3
    TEXT_INPUT = 4
    USER_SELECT = 5
    ROLE_SELECT = 6
    MENTIONABLE_SELECT = 7
    CHANNEL_SELECT = 8
    TEXT_DISPLAY = 10
    LABEL = 18
    FILE_UPLOAD = 19


class InteractionType:
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType:
    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9


class OptionType:
    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


class Intent:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class SnowflakeFactory:
    """Increasing, unique snowflakes whose timestamp part is the current time (as discord.py expects)."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        candidate = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (1 << 17)
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass
class UserRecord:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    discriminator: str = "0"


@dataclass
class RoleRecord:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None


@dataclass
class MemberRecord:
    user_id: int
    role_ids: list[int]
    joined_at: datetime = field(default_factory=utcnow)
    nick: str | None = None


@dataclass
class Overwrite:
    """A channel permission overwrite; `type` 0 is a role, 1 a member."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0


@dataclass
class ChannelRecord:
    """A guild channel or a thread (threads are channels with a parent)."""

    id: int
    guild_id: int | None
    name: str
    type: int
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    rate_limit_per_user: int = 0
    created_at: datetime = field(default_factory=utcnow)
    archive_timestamp: datetime = field(default_factory=utcnow)
    message_count: int = 0
    total_message_sent: int = 0
    last_message_id: int | None = None
    starter_message_id: int | None = None
    member_ids: set[int] = field(default_factory=set)
    deleted: bool = False
    recipient_id: int | None = None  # a DM channel's user

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@dataclass
class GuildRecord:
    id: int
    name: str
    owner_id: int
    locale: str
    premium_tier: int
    everyone_permissions: int
    bot_role_id: int
    manager_role_id: int
    admin_role_id: int
    roles: dict[int, RoleRecord] = field(default_factory=dict)
    members: dict[int, MemberRecord] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    joined_at: datetime = field(default_factory=utcnow)
    removed: bool = False

    @property
    def upload_limit(self) -> int:
        """Per-attachment upload limit in bytes (the interaction's `attachment_size_limit`)."""
        return UPLOAD_LIMITS[self.premium_tier]

    @property
    def request_limit(self) -> int:
        return max(REQUEST_SIZE_FLOOR, self.upload_limit)


@dataclass
class AttachmentRecord:
    """A stored file: what the bot uploaded, or what a user attached to a command."""

    id: int
    filename: str
    data: bytes
    content_type: str | None
    channel_id: int
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class MessageRecord:
    """A message as Discord stores it. `created_at` is `time.monotonic()`; `timestamp` the wall clock."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    attachments: list[AttachmentRecord] = field(default_factory=list)
    flags: int = 0
    type: int = MessageType.DEFAULT
    allowed_mentions: Json | None = None
    mentions: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    tts: bool = False
    created_at: float = field(default_factory=time.monotonic)
    timestamp: datetime = field(default_factory=utcnow)
    edited_at: datetime | None = None
    edits: int = 0
    history: list[Json] = field(default_factory=list)
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    message_reference: Json | None = None
    thread_id: int | None = None
    position: int | None = None
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & MessageFlag.LOADING)

    def custom_ids(self) -> list[str]:
        """Every custom_id among the message's components (nested containers included)."""
        found: list[str] = []

        def walk(items: list[Any]) -> None:
            for item in items:
                if not isinstance(item, dict):
                    continue
                if isinstance(item.get("custom_id"), str):
                    found.append(item["custom_id"])
                for key in ("components", "accessory"):
                    child = item.get(key)
                    if isinstance(child, list):
                        walk(child)
                    elif isinstance(child, dict):
                        walk([child])

        walk(self.components)
        return found


@dataclass
class ResponseRecord:
    """One interaction callback (`POST /interactions/{id}/{token}/callback`)."""

    type: int
    data: Json | None
    at: float
    message_id: int | None = None


@dataclass
class RequestRecord:
    method: str
    route: str
    path: str
    status: int
    at: float
    duration_ms: float


@dataclass
class EventRecord:
    kind: str
    data: Json
    at: float = field(default_factory=time.monotonic)


@dataclass
class SyncRecord:
    """One bulk overwrite of application commands (what `CommandTree.sync()` sends)."""

    guild_id: int | None
    commands: list[Json]
    at: float = field(default_factory=time.monotonic)


def compute_base_permissions(guild: GuildRecord, user_id: int) -> int:
    if user_id == guild.owner_id:
        return ALL_PERMISSIONS
    member = guild.members.get(user_id)
    perms = guild.everyone_permissions
    if member is not None:
        for role_id in member.role_ids:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
    if perms & Perm.ADMINISTRATOR:
        return ALL_PERMISSIONS
    return perms


def compute_channel_permissions(guild: GuildRecord, channel: ChannelRecord, user_id: int) -> int:
    """Discord's algorithm: base permissions, then @everyone, role and member overwrites of the channel."""
    base = compute_base_permissions(guild, user_id)
    if base & Perm.ADMINISTRATOR or user_id == guild.owner_id:
        return ALL_PERMISSIONS
    perms = base
    everyone = channel.overwrites.get(guild.id)
    if everyone is not None:
        perms = (perms & ~everyone.deny) | everyone.allow
    member = guild.members.get(user_id)
    role_ids = member.role_ids if member is not None else []
    allow = deny = 0
    for role_id in role_ids:
        overwrite = channel.overwrites.get(role_id)
        if overwrite is not None and overwrite.type == 0:
            allow |= overwrite.allow
            deny |= overwrite.deny
    perms = (perms & ~deny) | allow
    own = channel.overwrites.get(user_id)
    if own is not None and own.type == 1:
        perms = (perms & ~own.deny) | own.allow
    if not perms & Perm.VIEW_CHANNEL:
        return 0
    return perms


@dataclass
class UploadedFile:
    """One `files[n]` part of a multipart request."""

    index: int
    filename: str
    data: bytes
    content_type: str | None
