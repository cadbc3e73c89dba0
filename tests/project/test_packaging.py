"""The runtime installs and starts without PyAV (the `sandbox` and `video` extras); `sandbox`/`demo` name the extra."""

from __future__ import annotations

import ast
import email
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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
        "runtime = names\n"
        "assert len(runtime) > 20, runtime\n"
        "needs_av = []\n"
        "for name in runtime:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        assert exc.name == 'av', (name, exc)\n"
        "        needs_av.append(name)\n"
        "assert sys.modules.get('av') is None\n"
        "assert not [n for n in sys.modules if n.split('.')[0] == 'sandbox']\n"
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


def test_sandbox_and_demo_without_the_sandbox_package_name_the_install_line(tmp_path: Path) -> None:
    """PyAV there (the `video` extra) but no `sandbox` package: the same install line, no traceback."""
    env = _without_pyav(tmp_path)
    (tmp_path / "hide-av" / "sitecustomize.py").write_text("import sys\nsys.modules['sandbox'] = None\n")
    for command in ("sandbox", "demo"):
        ran = _run([PYTHON, "-m", "bot", command], tmp_path, env)
        assert ran.returncode == 2
        assert ran.stderr.strip().splitlines() == [
            f"kf2v-bot: kf2v-bot {command} needs the sandbox extra (PyAV): pip install 'kf2v-bot[sandbox]'"
            "  (make demo installs it)"
        ]


def test_the_wheel_requires_pyav_only_with_the_sandbox_extra(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bot", "cogs", "sandbox"):
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
        # the emulators and the demo ship too: `pip install 'kf2v-bot[sandbox]'` gives `kf2v-bot demo`
        assert {"sandbox/cli.py", "sandbox/demo/__init__.py"} <= set(archive.namelist())
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(meta_name))
    requires = metadata.get_all("Requires-Dist") or []
    pyav = [r for r in requires if r.split(">")[0].split("=")[0].split(";")[0].strip().lower() == "av"]
    assert pyav, requires
    extras = {r.split("extra ==")[-1].strip().strip('"') for r in pyav if "extra ==" in r}
    assert len(pyav) == 2 and extras == {"sandbox", "video"}, pyav
    assert "discord.py" in " ".join(requires)


# --- The locks (requirements/*.lock, written by `make lock`) agree with pyproject.toml ------------------------
LOCKS = ROOT / "requirements"
# The environments the locks must serve: CI, the machine and the Docker image (CPython 3.11 on Linux x86_64),
# and a developer's newer Python or Mac (the locks are resolved --universal).
ENVIRONMENTS = [
    {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux", "platform_machine": "x86_64"},
    {"python_version": "3.12", "python_full_version": "3.12.8", "sys_platform": "linux", "platform_machine": "x86_64"},
    {"python_version": "3.13", "python_full_version": "3.13.1", "sys_platform": "darwin", "platform_machine": "arm64"},
]


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int


def _pins(lock: Path) -> dict[str, list[Pin]]:
    """The lock's `name==version ; marker` lines, continuation lines (hashes) joined, comments dropped."""
    pins: dict[str, list[Pin]] = {}
    text = re.sub(r"\\\n", " ", lock.read_text(encoding="utf-8"))
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", line))
        requirement = Requirement(re.sub(r"--hash=\S+", "", line).strip())
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{lock.name}: {line[:80]} is not an exact pin"
        name = canonicalize_name(requirement.name)
        pins.setdefault(name, []).append(Pin(name, Version(spec.version), requirement.marker, hashes))
    return pins


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = _pyproject()["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        declared += [Requirement(r) for r in project["optional-dependencies"][extra]]
    build = [Requirement(r) for r in _pyproject()["build-system"]["requires"]]
    return declared + build


def _applicable(pins: list[Pin], env: dict[str, str]) -> list[Pin]:
    return [p for p in pins if p.marker is None or p.marker.evaluate(env)]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime.lock", ("video",)), ("dev.lock", ("video", "sandbox", "dev"))],
)
def test_the_lock_pins_every_declared_dependency_within_its_specifier(lock: str, extras: tuple[str, ...]) -> None:
    pins = _pins(LOCKS / lock)
    assert "make lock" in (LOCKS / lock).read_text(encoding="utf-8").split("\n", 3)[1], "written by `make lock`"
    for entries in pins.values():
        for pin in entries:
            assert pin.hashes >= 1, f"{lock}: {pin.name} has no hash (pip --require-hashes would refuse it)"
    for requirement in _declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is declared in pyproject.toml but not in {lock}: run `make lock`"
        for env in ENVIRONMENTS:
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            chosen = _applicable(pins[name], env)
            assert len(chosen) == 1, f"{lock}: {name} for {env}: {chosen}"
            assert requirement.specifier.contains(chosen[0].version, prereleases=True), (
                f"{lock} pins {name}=={chosen[0].version}, outside pyproject.toml's {requirement}: run `make lock`"
            )


def test_every_pin_of_the_runtime_lock_is_the_same_in_the_dev_lock() -> None:
    """Development and CI test the very versions the image runs."""
    runtime, dev = _pins(LOCKS / "runtime.lock"), _pins(LOCKS / "dev.lock")
    for name, entries in runtime.items():
        for env in ENVIRONMENTS:
            shipped = [p.version for p in _applicable(entries, env)]
            tested = [p.version for p in _applicable(dev.get(name, []), env)]
            assert shipped == tested, f"{name} for {env}: runtime {shipped}, dev {tested}"


def test_the_lock_has_nothing_the_project_does_not_need() -> None:
    """A dependency dropped from pyproject.toml leaves the lock at the next `make lock`: nothing stale."""
    import importlib.metadata as md

    runtime = _pins(LOCKS / "runtime.lock")
    declared = {canonicalize_name(r.name) for r in _declared(("video",))}
    # Every pin is declared or required by something pinned (the lock's `# via` closure), for the target.
    needed: set[str] = set()
    todo = list(declared)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not installed here (another platform's pin): its `via` comes from the lock's comments
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**ENVIRONMENTS[0], "extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    target = {name for name, entries in runtime.items() if _applicable(entries, ENVIRONMENTS[0])}
    assert target <= needed, f"pinned for nothing: {sorted(target - needed)}"


def test_build_requirements_are_locked_as_declared() -> None:
    """requirements/build.in repeats [build-system] requires, so the locked setuptools is the one declared."""
    lines = [
        line.strip()
        for line in (LOCKS / "build.in").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(lines) == sorted(_pyproject()["build-system"]["requires"])


def _imported_modules(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"bot", "cogs", "sandbox", "__future__"}


@pytest.mark.parametrize(
    ("where", "extras"),
    [("runtime", ("video",)), ("sandbox", ("sandbox",))],
)
def test_every_third_party_import_is_declared(where: str, extras: tuple[str, ...]) -> None:
    """A module the code imports by name is a declared dependency, not something another package brings."""
    import importlib.metadata as md

    tops = ("sandbox",) if where == "sandbox" else ("bot", "cogs")
    files = [p for top in tops for p in (ROOT / top).rglob("*.py")]
    distributions = md.packages_distributions()
    declared = {canonicalize_name(r.name) for r in _declared(extras)}
    if where == "sandbox":
        declared |= {canonicalize_name(r.name) for r in _declared(())}
    undeclared: dict[str, list[str]] = {}
    for module in _imported_modules(files):
        dists = distributions.get(module, [module])
        if not declared & {canonicalize_name(d) for d in dists}:
            undeclared[module] = dists
    assert undeclared == {}, f"imported in {where} code but not declared in pyproject.toml: {undeclared}"


def test_make_ci_and_the_image_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    stamp = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "pip install --quiet --require-hashes -r $(DEV_LOCK)" in stamp
    assert "--no-deps --no-build-isolation -e ." in stamp
    assert "DEV_LOCK := requirements/dev.lock" in makefile and "RUNTIME_LOCK := requirements/runtime.lock" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements/runtime.lock" in (ROOT / "deploy" / "Dockerfile").read_text("utf-8")
