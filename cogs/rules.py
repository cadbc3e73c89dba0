"""/kf2v-rules add|remove|list: the banned words and phrases prompts are checked against.

`scope: this server` (the default) is the guild's own list, kept by its managers (Manage Server) and the
bot's owners; `scope: all servers` is the owners' default list, which applies in every guild. Like
/kf2v-admin, default_permissions only hides the command from members: every subcommand checks in code.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.discord_ui.checks import Owners, is_manager
from bot.discord_ui.render import NO_PINGS, clip
from bot.discord_ui.translator import _
from bot.errors import NotAllowed
from bot.i18n import t
from bot.jobs.rules import DEFAULT_SCOPE, MAX_PHRASE_CHARS, ContentRule, RuleChange
from bot.jobs.service import JobService

SCOPE_GUILD = "guild"
SCOPE_ALL = "all"
SCOPES = [
    app_commands.Choice(name=_("rules.scope_guild"), value=SCOPE_GUILD),
    app_commands.Choice(name=_("rules.scope_all"), value=SCOPE_ALL),
]
AUTOCOMPLETE_CHOICES = 25  # Discord's limit


def shown_phrase(phrase: str) -> str:
    """A rule as text in a message: markdown and mentions made inert."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(phrase))


def scope_name(locale: str, guild_id: int) -> str:
    return t(locale, "rules.scope_all_name" if guild_id == DEFAULT_SCOPE else "rules.scope_guild_name")


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class RulesGroup(app_commands.Group, name="kf2v-rules", description=_("cmd.kf2v_rules")):
    def __init__(self, jobs: JobService, owners: Owners) -> None:
        super().__init__()
        self.jobs = jobs
        self.owners = owners

    async def _may_manage(self, interaction: discord.Interaction[Any], scope: str | None) -> int | None:
        """The list (guild id, or DEFAULT_SCOPE) the caller may change, or None when they may not."""
        if scope == SCOPE_ALL:
            return DEFAULT_SCOPE if await self.owners.is_owner(interaction.user.id) else None
        assert interaction.guild_id is not None
        if is_manager(interaction) or await self.owners.is_owner(interaction.user.id):
            return interaction.guild_id
        return None

    async def _target(self, interaction: discord.Interaction[Any], scope: str | None) -> int:
        target = await self._may_manage(interaction, scope)
        if target is None:
            raise NotAllowed("rules.owners_only" if scope == SCOPE_ALL else "rules.managers_only")
        return target

    @app_commands.command(name="add", description=_("cmd.rules_add"))
    @app_commands.describe(phrase=_("opt.rule_phrase"), scope=_("opt.rule_scope"))
    @app_commands.choices(scope=SCOPES)
    async def add(
        self,
        interaction: discord.Interaction[Any],
        phrase: app_commands.Range[str, 1, MAX_PHRASE_CHARS],
        scope: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = await self._target(interaction, scope)
        change, rule, count, limit = await self.jobs.add_content_rule(target, phrase, interaction.user.id)
        locale = str(interaction.locale)
        key = {RuleChange.DONE: "rules.added", RuleChange.EXISTS: "rules.exists", RuleChange.FULL: "rules.full"}[change]
        text = t(
            locale, key, rule=shown_phrase(rule.phrase), scope=scope_name(locale, target), count=count, limit=limit
        )  # fmt: skip
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="remove", description=_("cmd.rules_remove"))
    @app_commands.describe(phrase=_("opt.rule_phrase_remove"), scope=_("opt.rule_scope"))
    @app_commands.choices(scope=SCOPES)
    async def remove(
        self,
        interaction: discord.Interaction[Any],
        phrase: app_commands.Range[str, 1, MAX_PHRASE_CHARS],
        scope: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = await self._target(interaction, scope)
        removed = await self.jobs.remove_content_rule(target, phrase)
        locale = str(interaction.locale)
        if removed is None:
            text = t(locale, "rules.not_found", rule=shown_phrase(phrase), scope=scope_name(locale, target))
        else:
            text = t(locale, "rules.removed", rule=shown_phrase(removed.phrase), scope=scope_name(locale, target))
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @remove.autocomplete("phrase")
    async def _remove_phrases(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        target = await self._may_manage(interaction, getattr(interaction.namespace, "scope", None))
        if target is None:
            return []  # a member who can see the command still learns nothing from it
        wanted = current.casefold()
        return [
            app_commands.Choice(name=clip(rule.phrase, 100), value=rule.phrase)
            for rule in await self.jobs.content_rules(target)
            if wanted in rule.phrase.casefold()
        ][:AUTOCOMPLETE_CHOICES]

    @app_commands.command(name="list", description=_("cmd.rules_list"))
    @app_commands.describe(scope=_("opt.rule_scope"))
    @app_commands.choices(scope=SCOPES)
    async def list_rules(self, interaction: discord.Interaction[Any], scope: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = await self._may_manage(interaction, SCOPE_GUILD)  # managers may read the defaults too
        if target is None:
            raise NotAllowed("rules.managers_only")
        listed = DEFAULT_SCOPE if scope == SCOPE_ALL else target
        rules = await self.jobs.content_rules(listed)
        locale = str(interaction.locale)
        await interaction.followup.send(
            embed=rules_embed(rules, listed, locale), ephemeral=True, allowed_mentions=NO_PINGS
        )


def rules_embed(rules: list[ContentRule], guild_id: int, locale: str) -> discord.Embed:
    title = t(locale, "rules.list_title", scope=scope_name(locale, guild_id), count=len(rules))
    lines = "\n".join(f"• {shown_phrase(rule.phrase)}" for rule in rules) or t(locale, "rules.list_empty")
    return discord.Embed(title=title, description=clip(lines, 4000))
