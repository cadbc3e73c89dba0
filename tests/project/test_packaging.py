"""The runtime installs and starts without PyAV (the `sandbox` and `video` extras); `sandbox`/`demo` name the extra."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _without_pyav(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import av` fails, as after a plain `pip install kf2v-bot`."""
    hide = tmp_path / "hide-av"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['av'] = None\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KF2V_", "DASHSCOPE_", "DISCORD_"))}
    return {**clean, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}", "KF2V_DATA_DIR": str(tmp_path / "data")}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


# Joining story segments needs PyAV at run time: the `video` extra. Only these modules may need it; the app
# loads the story cog by name when PyAV is there and says /kf2v-story is off when it isn't.
VIDEO_EXTRA_MODULES = {"bot.jobs.story.join", "cogs.story"}


def test_every_runtime_module_imports_without_pyav(tmp_path: Path) -> None:
    walk = (
        "import importlib, pkgutil, sys, bot, cogs\n"
        "names = [m.name for p in (bot, cogs) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "runtime = [n for n in names if not n.startswith('bot.sandbox')]\n"
        "assert len(runtime) > 20, runtime\n"
        "needs_av = []\n"
        "for name in runtime:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        assert exc.name == 'av', (name, exc)\n"
        "        needs_av.append(name)\n"
        "assert sys.modules.get('av') is None\n"
        "print(len(runtime), ','.join(sorted(needs_av)))\n"
    )
    ran = _run([PYTHON, "-c", walk], tmp_path, _without_pyav(tmp_path))
    assert ran.returncode == 0, ran.stderr
    count, needs_av = ran.stdout.split()
    assert int(count) > 20
    assert set(needs_av.split(",")) == VIDEO_EXTRA_MODULES


def test_check_runs_without_pyav(tmp_path: Path) -> None:
    ran = _run([PYTHON, "-m", "bot", "check"], tmp_path, _without_pyav(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "check passed" in ran.stdout
    assert "Traceback" not in ran.stderr


def test_sandbox_and_demo_without_pyav_name_the_install_line(tmp_path: Path) -> None:
    for command in ("sandbox", "demo"):
        ran = _run([PYTHON, "-m", "bot", command], tmp_path, _without_pyav(tmp_path))
        assert ran.returncode == 2
        assert ran.stderr.strip().splitlines() == [
            f"kf2v-bot: kf2v-bot {command} needs the sandbox extra (PyAV): pip install 'kf2v-bot[sandbox]'"
            "  (make demo installs it)"
        ]


def test_the_wheel_requires_pyav_only_with_the_sandbox_extra(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bot", "cogs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = _run(
        [PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "dist"), "."],
        src, dict(os.environ),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("kf2v_bot-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(meta_name))
    requires = metadata.get_all("Requires-Dist") or []
    pyav = [r for r in requires if r.split(">")[0].split("=")[0].split(";")[0].strip().lower() == "av"]
    assert pyav, requires
    extras = {r.split("extra ==")[-1].strip().strip('"') for r in pyav if "extra ==" in r}
    assert len(pyav) == 2 and extras == {"sandbox", "video"}, pyav
    assert "discord.py" in " ".join(requires)
