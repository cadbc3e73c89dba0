"""The LICENSE file is the MIT licence pyproject.toml declares; PRIVACY.md accounts for every table the
migrations create and every setting it cites exists (a new table fails here until PRIVACY.md says what it holds)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_the_mit_licence_pyproject_declares() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]["text"]
    assert declared == "MIT" and text.startswith("MIT License")
    assert "Copyright (c) 2026 kf2v-bot contributors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_privacy_policy_names_every_table_and_only_real_settings() -> None:
    policy = (ROOT / "PRIVACY.md").read_text(encoding="utf-8")
    migrations = ROOT / "bot" / "jobs" / "migrations"
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(migrations.glob("*.sql")))
    tables = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql))
    assert {"jobs", "ledger", "stories"} <= tables
    assert sorted(t for t in tables if f"`{t}`" not in policy) == []
    aliases = {field.alias for field in Settings.model_fields.values()}
    cited = set(re.findall(r"`(KF2V_[A-Z_]+)`", policy))
    assert {"KF2V_RETENTION_DAYS", "KF2V_VIDEO_RETENTION_DAYS"} <= cited <= aliases
