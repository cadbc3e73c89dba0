"""Persistent buttons: `DynamicItem`s whose custom id `<prefix>:<id>` carries what they act on.

Discord sends the custom id back with every press, so a press after a restart still names its job or story;
the client registers each class once at start-up (`bot.add_dynamic_items`). One factory serves every button
of the bot, so a new one is a prefix and a handler, not another class written out.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.discord_ui.checks import outside_allowed_guilds
from bot.discord_ui.errors import reply_error

ButtonItem = discord.ui.DynamicItem[discord.ui.Button[Any]]
Press = Callable[[discord.Interaction[Any], int], Awaitable[None]]
Check = Callable[[discord.Interaction[Any]], Awaitable[bool]]


def id_button(prefix: str, press: Press, allowed: Check) -> type[ButtonItem]:
    """The persistent button class for custom ids `<prefix>:<id>`: `allowed` vets the presser, `press` acts."""

    class IdButton(ButtonItem, template=re.escape(prefix) + r":(?P<item_id>[0-9]{1,18})"):
        def __init__(self, item_id: int) -> None:
            super().__init__(discord.ui.Button(custom_id=f"{prefix}:{item_id}"))
            self.item_id = item_id

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
        ) -> IdButton:
            return cls(int(match["item_id"]))

        async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
            return await allowed(interaction)

        async def callback(self, interaction: discord.Interaction[Any]) -> None:
            await press(interaction, self.item_id)

    IdButton.__name__ = IdButton.__qualname__ = f"IdButton[{prefix}]"
    return IdButton


async def in_allowed_guild(interaction: discord.Interaction[Any], allowed_guilds: frozenset[int]) -> bool:
    """A press's `allowed` check: outside KF2V_ALLOWED_GUILDS it is answered with the refusal, and not run."""
    refusal = outside_allowed_guilds(interaction, allowed_guilds)
    if refusal is None:
        return True
    await reply_error(interaction, refusal)
    return False
