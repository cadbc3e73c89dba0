"""Unit tests of the DashScope client (bot.dashscope) against the local emulator."""
