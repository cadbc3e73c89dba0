from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.catalog import load_catalog
from bot.settings import SettingsError, load_settings

ENV_NAMES = [
    "DISCORD_TOKEN",
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_BASE_URL",
    "KF2V_DATA_DIR",
    "KF2V_OWNER_IDS",
    "KF2V_DISCORD_API_BASE",
    "KF2V_DISCORD_GATEWAY",
    "KF2V_MAX_CONCURRENT_TASKS",
    "KF2V_SUBMIT_RPS",
    "KF2V_POLL_MIN_INTERVAL",
    "KF2V_POLL_MAX_INTERVAL",
    "KF2V_DEFAULT_DAILY_BUDGET",
    "KF2V_DEFAULT_MONTHLY_BUDGET",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.dashscope_base_url == "https://dashscope.aliyuncs.com/api/v1"
    assert s.data_dir == Path("./data")
    assert s.owner_ids == []
    assert s.max_concurrent_tasks == 2
    assert s.submit_rps == 2
    assert (s.poll_min_interval, s.poll_max_interval) == (1, 30)
    assert s.default_daily_budget_milli == 10_000
    assert s.default_monthly_budget_milli == 100_000
    assert s.discord_api_base == "https://discord.com/api/v10"


def test_owner_ids_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF2V_OWNER_IDS", "123, 456,789")
    assert load_settings().owner_ids == [123, 456, 789]


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DASHSCOPE_API_KEY=sk-from-file\nKF2V_SUBMIT_RPS=1\n")
    s = load_settings()
    assert s.dashscope_api_key is not None
    assert s.dashscope_api_key.get_secret_value() == "sk-from-file"
    assert s.submit_rps == 1
    assert "sk-from-file" not in repr(s)


def test_env_example_copied_as_it_is_loads_with_every_default(tmp_path: Path) -> None:
    """An operator's first step is `cp .env.example .env`: its empty lines mean "unset", never an error."""
    example = Path(__file__).resolve().parents[3] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    s = load_settings()
    assert s.dev_guild_id is None and s.dashscope_region is None and s.catalog_file is None
    assert s.discord_token is None and s.dashscope_api_key is None and s.database_url is None
    assert s.max_concurrent_tasks == 2 and s.poll_target_delay == 2.25 and s.allowed_guilds == []
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        s.require_run_credentials()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("KF2V_SUBMIT_RPS", "0", "KF2V_SUBMIT_RPS"),
        ("KF2V_MAX_CONCURRENT_TASKS", "two", "KF2V_MAX_CONCURRENT_TASKS"),
        ("KF2V_OWNER_IDS", "12,abc", "KF2V_OWNER_IDS"),
        ("DASHSCOPE_BASE_URL", "dashscope.aliyuncs.com", "DASHSCOPE_BASE_URL"),
        ("KF2V_POLL_MIN_INTERVAL", "60", "KF2V_POLL_MIN_INTERVAL"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert fragment in str(info.value)
    assert ".env" in str(info.value)


def test_missing_token_is_one_clear_sentence() -> None:
    with pytest.raises(SettingsError, match="DISCORD_TOKEN is not set"):
        load_settings().require_run_credentials()


def test_run_without_token_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DISCORD_TOKEN" in lines[0]
    assert "Traceback" not in proc.stderr


def test_region_follows_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = load_catalog()
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://dashscope-intl.aliyuncs.com/api/v1")
    s = load_settings()
    assert s.region(catalog) == "singapore"
    assert catalog.provider_name("wanx2.1-kf2v-plus", "singapore") == "wan2.1-kf2v-plus"
    assert catalog.limits("wanx2.1-kf2v-plus", "singapore").submit_rps == 1


def test_catalog_prices_in_milli_yuan() -> None:
    catalog = load_catalog()
    flash = catalog.model("wan2.2-kf2v-flash")
    assert flash.cost_milli("480P") == 500
    assert flash.cost_milli("1080P") == 2400
    assert catalog.model("wanx2.1-kf2v-plus").cost_milli("720P") == 3500
