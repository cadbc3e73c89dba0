"""KF2V_SHARD_COUNT / KF2V_SHARD_IDS reach discord.py's AutoShardedBot (issue 14)."""

from __future__ import annotations

from typing import Any

from bot.discord_ui.client import VideoBot


class _Meta:
    async def get_meta(self, key: str) -> str | None:
        return None

    async def set_meta(self, key: str, value: str) -> None:
        return None


def _bot(**sharding: Any) -> VideoBot:
    return VideoBot(_Meta(), **sharding)


async def test_default_is_one_process_with_every_shard_discord_recommends() -> None:
    bot = _bot()
    assert bot.shard_count is None and bot.shard_ids is None  # asked from Discord at login


async def test_a_process_runs_its_share_of_the_shards() -> None:
    bot = _bot(shard_count=4, shard_ids=[1, 3])
    assert (bot.shard_count, bot.shard_ids) == (4, [1, 3])


async def test_a_count_without_ids_runs_them_all_here() -> None:
    bot = _bot(shard_count=2)
    assert (bot.shard_count, bot.shard_ids) == (2, [0, 1])
