"""Stories are optional: without PyAV (the `video` extra) the bot still imports and runs, `check` says stories
are off, and only the story modules need PyAV. Each case runs in a fresh interpreter where `import av` fails,
as on the plain install."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from bot.ops import run_check
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
WITHOUT_PYAV = "import sys; sys.modules['av'] = None  # `import av` raises, find_spec says absent\n"


def run_without_pyav(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", WITHOUT_PYAV + code],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "KF2V_DATA_DIR": str(tmp_path / "d")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_without_pyav_the_app_imports_and_stories_are_off(tmp_path: Path) -> None:
    ran = run_without_pyav(
        "import bot.app, bot.ops\n"
        "from bot.jobs.story import stories_available\n"
        "print('available', stories_available())\n"
        "try:\n"
        "    import cogs.story\n"
        "except ImportError:\n"
        "    print('cog needs pyav')\n",
        tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:2] == ["available False", "cog needs pyav"]


def test_check_says_stories_are_off_without_pyav(tmp_path: Path) -> None:
    ran = run_without_pyav("from bot.__main__ import main\nsys.exit(main(['check']))\n", tmp_path)
    line = next(line for line in ran.stdout.splitlines() if " stories " in f" {line} ")
    assert line.startswith("SKIP") and "kf2v-bot[video]" in line and "the Docker image has it" in line


async def test_check_says_stories_are_available_with_pyav(tmp_path: Path) -> None:
    out = io.StringIO()
    await run_check(load_settings(_env_file=None, KF2V_DATA_DIR=tmp_path / "data"), out=out)
    line = next(line for line in out.getvalue().splitlines() if line.split()[1:2] == ["stories"])
    assert line.startswith("OK") and "/kf2v-story available (PyAV " in line
