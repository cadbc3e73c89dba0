"""The Discord layer: everything that imports discord.py, except the thin cogs.

`client` (VideoBot, command sync, the allowed-guild check on the tree), `errors` (the tree's one error
handler), `render` (embeds, status and job lines, clipping), `checks` (managers, owners, permissions),
`buttons` (Cancel/Regenerate), `conversation` (status message + thread), `notifier` (the domain's
`Notifier` port for Discord), `translator` (command localisation), `options` (choices from the catalog).
Imports run one way: client -> buttons -> conversation -> render -> checks/errors/translator; the domain
(`bot.jobs`) never imports this package.
"""
