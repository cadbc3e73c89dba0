"""The layer contracts in pyproject.toml hold, and they have teeth: each shortcut below breaks one of them.

Each case copies the packages (bot, cogs, sandbox) to a temporary folder, adds one forbidden import and runs
import-linter there, so the repository itself is never touched. A new layer rule gets a case here.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bot", "cogs", "sandbox"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    return src


def _lint(src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(  # noqa: S603
        [str(LINT_IMPORTS), "--config", str(src / "pyproject.toml"), "--no-cache"],
        cwd=src, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_contracts_hold_on_the_tree(tmp_path: Path) -> None:
    ran = _lint(_copy_tree(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "7 kept, 0 broken" in ran.stdout


@pytest.mark.parametrize(
    ("module", "shortcut", "broken"),
    [
        ("bot/jobs/models.py", "import discord", {"Only the Discord layer"}),
        # a chain counts: the domain reaching up to the Discord layer also brings discord.py into the domain
        ("bot/jobs/quota.py", "import bot.discord_ui.render", {"Layers", "Only the Discord layer"}),
        ("bot/dashscope/errors.py", "import bot.jobs.models", {"Layers"}),
        ("bot/discord_ui/render.py", "import cogs.jobs", {"Layers"}),
        ("bot/jobs/media.py", "import sandbox.video", {"Runtime code never imports the sandbox"}),
        # the story join is the one module allowed PyAV; its neighbour is not
        ("bot/jobs/story/frames.py", "import av", {"Runtime code never imports the sandbox"}),
        # the Discord emulator's parts import downwards only: the gateway never reaches back to the emulator
        ("sandbox/discord_emu/gateway.py", "import sandbox.discord_emu.emulator", {"Discord emulator"}),
        ("sandbox/discord_emu/rest.py", "import sandbox.discord_emu.gateway", {"Discord emulator"}),
        # an aggregate of the store reaching into another's SQL (JobStore above them composes them instead)
        ("bot/jobs/store/rules.py", "import bot.jobs.story.store", {"Store aggregates"}),
        # ...or through the facade, which imports them all: the money reaching the jobs' SQL via bot.jobs.store
        ("bot/jobs/store/money.py", "import bot.jobs.store", {"Store aggregates"}),
        # one API family borrowing from another
        ("bot/dashscope/families/media.py", "import bot.dashscope.families.kf2v", {"API families are independent"}),
        # a family reaching back to the catalog (which imports every family: a cycle, and a chain to the other)
        (
            "bot/dashscope/families/kf2v.py",
            "import bot.catalog",
            {"API families import neither", "API families are independent"},
        ),
    ],
    ids=[
        "discord-in-domain",
        "domain-up-to-discord-layer",
        "provider-up-to-domain",
        "layer-up-to-cogs",
        "sandbox",
        "pyav-outside-the-join",
        "emulator-circle",
        "rest-to-gateway",
        "store-aggregates",
        "store-aggregate-via-facade",
        "family-to-family",
        "family-to-catalog",
    ],
)
def test_a_shortcut_breaks_its_contract(tmp_path: Path, module: str, shortcut: str, broken: set[str]) -> None:
    src = _copy_tree(tmp_path)
    target = src / module
    target.write_text(target.read_text() + f"\n{shortcut}  # a deliberate shortcut\n")
    ran = _lint(src)
    assert ran.returncode != 0, ran.stdout
    # "BROKEN", or "BROKEN (1 ignored import)" for a contract with an exception
    broken_lines = [line for line in ran.stdout.splitlines() if " BROKEN" in line and not line.startswith(" ")]
    assert {next(name for name in broken if line.startswith(name)) for line in broken_lines} == broken, ran.stdout
    assert len(broken_lines) == len(broken), ran.stdout


def _function_level_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [
                f"{path.relative_to(ROOT)}:{sub.lineno}"
                for sub in ast.walk(node)
                if isinstance(sub, ast.Import | ast.ImportFrom)
            ]
    return found


def test_no_runtime_module_imports_inside_a_function() -> None:
    """A function-level import hides a cycle until the line runs; only the CLI defers its sub-commands' imports."""
    runtime = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("cogs/*.py")]
    allowed = {ROOT / "bot" / "__main__.py"}  # each sub-command loads only what it needs (fast --help, no PyAV)
    checked = [p for p in runtime if p not in allowed]
    assert len(checked) > 30
    found = [hit for path in checked for hit in _function_level_imports(path)]
    assert found == []
