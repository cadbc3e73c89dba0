"""Discord's app-command localisation fed from the message catalog.

Command and option descriptions are written as `locale_str(english, key=...)`; for Chinese locales the
translator looks the key up in `bot.i18n`. Names stay as in the contract (they are the fixed interface),
except a context menu's, which is display text.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.i18n import EN, MESSAGES, ZH, language


def _(key: str, **params: object) -> app_commands.locale_str:
    """A command or option description: English from the catalog (Discord's default), translated per locale.

    `params` fill the text's placeholders in every language: descriptions that name models, lengths or
    resolutions are declared without them and filled from the running catalog when the cog is built
    (`bot.discord_ui.options.describe`). Discord takes at most 100 characters.
    """
    text = MESSAGES[EN][key]
    declared = app_commands.locale_str(text.format(**params)[:100] if params else text, key=key, params=params)
    _DECLARED[declared.message] = declared
    return declared


# Every text `_` made, by its English: discord.py keeps a command's declared locale_str to itself, so /kf2v-help
# finds a command's text (to show it in the member's language) from its public English description or name.
_DECLARED: dict[str, app_commands.locale_str] = {}


def declared_text(english: str) -> app_commands.locale_str | None:
    """The catalog text a command or menu was declared with, found by its English (None: not ours)."""
    return _DECLARED.get(english)


def described_with(
    string: app_commands.locale_str, context: app_commands.TranslationContextTypes
) -> app_commands.locale_str:
    """A command's description as filled from the running catalog (`options.describe` keeps it in the command's
    `extras`), else the one it was declared with."""
    if context.location is not app_commands.TranslationContextLocation.command_description:
        return string
    data = context.data
    filled = data.extras.get("description") if isinstance(data, app_commands.Command | app_commands.Group) else None
    if isinstance(filled, app_commands.locale_str) and filled.extras.get("key") == string.extras.get("key"):
        return filled
    return string


class CatalogTranslator(app_commands.Translator):
    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        string = described_with(string, context)
        key = string.extras.get("key")
        if not key:
            return None
        lang = language(locale.value)
        if lang == EN:
            return None  # the English text is the default
        text = MESSAGES[ZH].get(key)
        if text is None:
            return None
        params = string.extras.get("params")
        if params:
            text = text.format(**params)
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
