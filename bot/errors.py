"""The one exception family whose instances carry a user-facing message.

Each error names a message key in `bot.i18n` plus the values it needs, so the single handler on the
command tree can render it in the user's language. Anything that is not a `BotError` is a bug: the
handler logs it with a reference id and shows only that id.
"""

from __future__ import annotations

from typing import Any


class BotError(Exception):
    """An expected refusal or failure with a message for the user."""

    key: str = "error.generic"

    def __init__(self, key: str | None = None, /, **params: Any) -> None:
        if key is not None:
            self.key = key
        self.params = params
        super().__init__(self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r}, {self.params!r})"


class InvalidInput(BotError):
    """Prompt, seed, model/resolution or template the provider would refuse."""

    key = "error.invalid_input"


class InvalidImage(BotError):
    """An attachment that is not a usable picture (format, size, dimensions, corrupt)."""

    key = "error.invalid_image"


class QuotaExceeded(BotError):
    """The guild's budget or the member's limits do not allow this job."""

    key = "error.quota"


class QueueFull(BotError):
    """The member already has as many jobs waiting as the guild allows."""

    key = "error.queue_full"


class NotAllowed(BotError):
    """Missing permission, wrong channel, or someone else's job."""

    key = "error.not_allowed"


class RateLimited(BotError):
    """The member sends commands faster than the per-user limit."""

    key = "error.rate_limited"


class JobNotFound(BotError):
    key = "error.job_not_found"


class ContentRefused(BotError):
    """A prompt or negative prompt contains a phrase the guild's managers or the bot's owners banned.

    The message names the field, the rule as it was typed, and whose rule it is.
    """

    key = "rules.refused_prompt_guild"

    def __init__(self, *, field: str, phrase: str, is_default: bool) -> None:
        scope = "default" if is_default else "guild"  # field: "prompt" or "negative_prompt"
        super().__init__(f"rules.refused_{field}_{scope}", rule=phrase)
        self.field = field
        self.phrase = phrase
