"""A local Discord for tests, benchmarks and the offline demo: REST + gateway + attachment CDN on loopback.

The real discord.py talks to it unchanged once `discord.http.Route.BASE` is `emulator.api_base` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` is `yarl.URL(emulator.gateway_url)` (or inside
`with emulator.discord_py_overrides():`). Tests build the world (`add_guild`, `add_text_channel`,
`add_member`), act as users (`run_command`, `press_button`, `select`, `post_message`, `run_message_command`,
`submit_modal`), read what the bot did
(`messages`, `thread_for`, `interactions`, `requests`, `events`, `syncs`) and inject faults
(`inject_rest_errors`, `disconnect_gateway`, `expire_interaction_token`, channel permissions, boost tiers; `hold_rest`,
`drop_rest` and errors that last until stopped).
Nothing here is imported by the bot at run time.
"""

from .emulator import (
    CommandNotSyncedError,
    CommandUnavailableError,
    DiscordEmulator,
    EmulatorError,
    InteractionRecord,
)
from .model import (
    MIB,
    UPLOAD_LIMITS,
    AttachmentRecord,
    ChannelRecord,
    CommandType,
    ComponentType,
    EventRecord,
    GuildRecord,
    MessageFlag,
    MessageRecord,
    Perm,
    RequestRecord,
    ResponseRecord,
    SyncRecord,
    UserRecord,
)
from .rest import RestFault

__all__ = [
    "MIB",
    "UPLOAD_LIMITS",
    "AttachmentRecord",
    "ChannelRecord",
    "CommandNotSyncedError",
    "CommandType",
    "CommandUnavailableError",
    "ComponentType",
    "DiscordEmulator",
    "EmulatorError",
    "EventRecord",
    "GuildRecord",
    "InteractionRecord",
    "MessageFlag",
    "MessageRecord",
    "Perm",
    "RequestRecord",
    "ResponseRecord",
    "RestFault",
    "SyncRecord",
    "UserRecord",
]
