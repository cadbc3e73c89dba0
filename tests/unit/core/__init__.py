"""Unit tests of bot.core-level modules: settings, logs, background tasks, i18n, catalog, health, ops."""
