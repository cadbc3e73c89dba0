"""Discord's app-command localisation fed from the message catalog.

Command and option descriptions are written as `locale_str(english, key=...)`; for Chinese locales the
translator looks the key up in `bot.i18n`. Names stay as in the contract (they are the fixed interface),
except a context menu's, which is display text.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.i18n import EN, MESSAGES, ZH, language


def _(key: str) -> app_commands.locale_str:
    """A command or option description: English from the catalog (Discord's default), translated per locale."""
    return app_commands.locale_str(MESSAGES[EN][key], key=key)


class CatalogTranslator(app_commands.Translator):
    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        key = string.extras.get("key")
        if not key:
            return None
        lang = language(locale.value)
        if lang == EN:
            return None  # the English text is the default
        text = MESSAGES[ZH].get(key)
        if text is None:
            return None
        if isinstance(context.data, app_commands.ContextMenu):
            # A context menu's name is free text the user reads in Apps (1-32 characters), so it is localised.
            return text[:32]
        if context.location in (
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
        ):
            return None  # names are part of the contract
        return text[:100]
