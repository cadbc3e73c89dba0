"""The thin slash-command cogs: parse the interaction, call `JobService`, render the answer via `bot.discord_ui`."""
