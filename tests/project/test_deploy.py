"""What can be checked of deploy/ without Docker or root: the Dockerfile's build replayed, its HEALTHCHECK
run against a live health server, the compose file's structure, the systemd unit through
`systemd-analyze verify`, and the README's invite URL (Add it to your server) against discord.py's permission flags."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.health import HealthServer, Metrics
from bot.ops import INVITE_PERMISSIONS, INVITE_SCOPES, invite_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYTHON = sys.executable


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def _instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def _dockerfile() -> list[list[Instruction]]:
    return _stages(_instructions((DEPLOY / "Dockerfile").read_text(encoding="utf-8")))


def _one(stage: list[Instruction], keyword: str) -> str:
    found = [i.args for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {found}"
    return found[0]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


# --- Dockerfile ----------------------------------------------------------------------------------------------
def test_dockerfile_final_stage() -> None:
    stages = _dockerfile()
    assert len(stages) >= 2, "multi-stage: a builder and a final image"
    builder, final = stages[0], stages[-1]
    assert " AS " in builder[0].args.upper()
    # One Debian release and one Python minor in both stages (a bare `python:3.11-slim` moves to the next Debian).
    assert builder[0].args.split()[0] == final[0].args == "python:3.11-slim-bookworm"
    assert any(i.keyword == "COPY" and i.args.startswith("--from=") for i in final), "the final stage copies the venv"
    assert not any("pip install" in i.args for i in final if i.keyword == "RUN"), "nothing is built in the final stage"
    user = _one(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert "/data" in _one(final, "VOLUME")
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert re.search(r"\bKF2V_DATA_DIR=/data\b", env)
    assert json.loads(_one(final, "ENTRYPOINT")) == ["kf2v-bot"]
    assert json.loads(_one(final, "CMD")) == ["run"]
    healthcheck = _one(final, "HEALTHCHECK")
    assert "/healthz" in healthcheck
    # the user owns the data directory it will write
    assert any(i.keyword == "RUN" and "chown" in i.args and "/data" in i.args for i in final)


def _replay_builder_copies(tmp_path: Path) -> Path:
    """Replay the builder stage's COPY lines into a fresh context; returns the WORKDIR it builds in."""
    builder = _dockerfile()[0]
    workdir = Path(_one(builder, "WORKDIR"))
    ctx = tmp_path / "ctx"
    for ins in builder:
        if ins.keyword != "COPY":
            continue
        parts = ins.args.split()
        assert not parts[0].startswith("--from"), "the builder copies from the build context only"
        *sources, dest = parts
        for source in sources:
            src = ROOT / source
            assert src.exists(), f"COPY {source}: not in the repository"
            target_dir = ctx / (workdir / dest).relative_to(workdir.anchor)
            if src.is_dir():
                shutil.copytree(src, target_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target_dir / src.name)
    return ctx / workdir.relative_to(workdir.anchor)


def test_dockerfile_builder_installs_the_repo_and_the_console_script_runs(tmp_path: Path) -> None:
    """Replay the builder stage here: COPY into a fresh context, then build and run what it installs."""
    builder = _dockerfile()[0]
    installs = [i.args for i in builder if i.keyword == "RUN" and "pip install" in i.args]
    # First the lock, every file's hash checked; then the project alone, nothing resolved beyond the lock.
    assert len(installs) == 2, installs
    assert re.search(r"pip install [^&]*--require-hashes -r requirements/runtime\.lock(\s|$)", installs[0])
    assert re.search(r"pip install [^&]*--no-deps [^&]*\s\.(\s|$)", installs[1]), "installs the project from the repo"
    # The default image has stories on (the lock carries the `video` extra's PyAV) and checks it at build time.
    assert "stories_available()" in installs[1]
    assert "kf2v-bot" in " ".join(i.args for i in builder if i.keyword == "RUN"), "smoke-runs the console script"

    src = _replay_builder_copies(tmp_path)
    pyproject = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    assert (src / pyproject["project"]["readme"]).is_file(), "the readme named in pyproject.toml is copied"
    entry = pyproject["project"]["scripts"]["kf2v-bot"]
    module, _, func = entry.partition(":")

    # What `pip install .` packs: build the sdist from exactly the copied files (no network needed).
    built = _run([PYTHON, "-c", "from setuptools import build_meta as b; print(b.build_sdist('dist'))"], src)
    assert built.returncode == 0, built.stderr
    with tarfile.open(src / "dist" / built.stdout.strip().splitlines()[-1]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        entry_points = next(n for n in sdist.getnames() if n.endswith(".egg-info/entry_points.txt"))
        handle = sdist.extractfile(entry_points)
        assert handle is not None
        assert f"kf2v-bot = {entry}" in handle.read().decode()
    for needed in ("bot/__main__.py", "bot/settings.py", "bot/health.py", "bot/ops.py", "cogs/__init__.py"):
        assert needed in names, f"{needed} missing from the package"
    assert any(n.startswith("bot/jobs/migrations/") and n.endswith(".sql") for n in names), "migrations are packaged"

    # The console script's target, imported from the copied tree only, answers --help.
    probe = (
        "import importlib, sys\n"
        f"m = importlib.import_module({module!r})\n"
        f"assert m.__file__.startswith({str(src)!r}), m.__file__\n"
        f"sys.exit(getattr(m, {func!r})(['--help']))\n"
    )
    ran = _run([PYTHON, "-c", probe], src, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert ran.returncode == 0, ran.stderr
    assert "usage: kf2v-bot" in ran.stdout
    for command in ("run", "check", "backup", "sandbox", "demo"):
        assert command in ran.stdout

    # Every module of the copied packages imports from the copied tree alone (nothing left outside COPY).
    walk = (
        "import importlib, pkgutil, sys\n"
        "for top in ('bot', 'cogs'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        f"        m = importlib.import_module(info.name)\n"
        f"        assert (m.__file__ or '').startswith({str(src)!r}), m.__file__\n"
    )
    ran = _run([PYTHON, "-W", "ignore", "-c", walk], src, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert ran.returncode == 0, ran.stderr


def test_dockerfile_pip_install_for_real_when_the_build_backend_is_here(tmp_path: Path) -> None:
    """`pip install --no-deps .` offline needs a wheel-capable setuptools in this venv; skip otherwise."""
    check = _run(
        [
            PYTHON,
            "-c",
            "import importlib.util, setuptools, sys; v = tuple(int(x) for x in setuptools.__version__.split('.')[:2]);"
            " sys.exit(0 if v >= (70, 1) or importlib.util.find_spec('wheel') else 1)",
        ],
        ROOT,
    )
    if check.returncode != 0:
        pytest.skip("no wheel-capable setuptools in this venv (setuptools < 70.1 and no `wheel`): sdist replay only")
    src = _replay_builder_copies(tmp_path)  # built from the copied files, never in the repository
    target = tmp_path / "site"
    installed = _run(
        [PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), "."],
        src,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    script = target / "bin" / "kf2v-bot"
    assert script.is_file()
    ran = _run([str(script), "--help"], tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert ran.returncode == 0, ran.stderr
    assert "usage: kf2v-bot" in ran.stdout


def _healthcheck_command() -> list[str]:
    spec = _one(_dockerfile()[-1], "HEALTHCHECK")
    _, _, cmd = spec.partition("CMD ")
    argv = json.loads(cmd)
    assert isinstance(argv, list) and argv[0] == "python"
    return [PYTHON, *argv[1:]]


async def _probe(argv: list[str], **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KF2V_") and "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**clean, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 20)


async def test_dockerfile_healthcheck_against_a_live_health_server() -> None:
    argv = _healthcheck_command()
    healthy = True
    server = HealthServer(Metrics(), {"database": True, "worker": lambda: healthy}, "127.0.0.1", 0)
    url = await server.start()
    port = url.rsplit(":", 1)[1]
    try:
        assert await _probe(argv, KF2V_HTTP_PORT=port) == 0
        assert await _probe(argv, KF2V_HTTP_PORT=port, KF2V_HTTP_HOST="0.0.0.0") == 0  # noqa: S104
        healthy = False
        assert await _probe(argv, KF2V_HTTP_PORT=port) == 1
    finally:
        await server.stop()
    assert await _probe(argv, KF2V_HTTP_PORT=port) == 1  # nothing listening
    assert await _probe(argv, KF2V_HTTP_PORT="0") == 0  # endpoint off: nothing to ask


# --- compose -------------------------------------------------------------------------------------------------
def _blocks(text: str, indent: int) -> dict[str, str]:
    """`name:` keys at exactly `indent` spaces, each with the text of its block."""
    blocks: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if name is not None:
                blocks[name] += line + "\n"
            continue
        lead = len(line) - len(line.lstrip(" "))
        if lead < indent:
            name = None
            continue
        match = re.match(rf"^ {{{indent}}}([A-Za-z0-9_.-]+):(.*)$", line)
        if lead == indent and match:
            name = match.group(1)
            blocks[name] = match.group(2).strip() + "\n"
        elif name is not None:
            blocks[name] += line + "\n"
    return blocks


def test_compose_structure() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert "\t" not in text
    top = _blocks(text, 0)
    assert {"services", "volumes"} <= set(top)
    anchor = top["x-bot"]
    assert "&bot" in anchor
    assert re.search(r"^\s+context: \.\.$", anchor, re.M)
    assert re.search(r"^\s+dockerfile: deploy/Dockerfile$", anchor, re.M)
    assert (DEPLOY / ".." / "deploy" / "Dockerfile").is_file()
    assert re.search(r"^\s+env_file: \.\./\.env$", anchor, re.M)
    assert re.search(r"^\s+KF2V_DATA_DIR: /data$", anchor, re.M), "the volume, whatever .env says"

    services = _blocks(top["services"], 2)
    assert {"bot", "sandbox", "bot-dry-run"} <= set(services)
    volumes = set(_blocks(top["volumes"], 2))
    bot = services["bot"]
    assert "<<: *bot" in bot and "profiles" not in bot, "the bot runs without a profile"
    mounts = re.findall(r"^\s+- ([\w-]+):/data$", bot, re.M)
    assert mounts and mounts[0] in volumes, "a named volume on /data"

    sandbox = services["sandbox"]
    assert re.search(r"^\s+profiles:\s*\n\s+- sandbox$", sandbox, re.M)
    command = json.loads(re.search(r"^\s+command: (\[.*\])$", sandbox, re.M).group(1))  # type: ignore[union-attr]
    assert command[:3] == ["sandbox", "--host", "0.0.0.0"]  # noqa: S104
    port = command[command.index("--port") + 1] if "--port" in command else "8765"

    dry = services["bot-dry-run"]
    assert "<<: *bot" in dry and re.search(r"^\s+- sandbox$", dry, re.M)
    assert re.search(rf"^\s+DASHSCOPE_BASE_URL: http://sandbox:{port}/api/v1$", dry, re.M)
    assert re.search(r"^\s+<<: \*bot-env$", dry, re.M), "keeps the bot's environment overrides"
    dry_mounts = re.findall(r"^\s+- ([\w-]+):/data$", dry, re.M)
    assert dry_mounts and dry_mounts[0] in volumes and dry_mounts[0] != mounts[0], "dry-run data kept apart"
    assert re.search(r"^\s+sandbox:\s*\n\s+condition: service_healthy$", dry, re.M)


def test_compose_config_when_docker_compose_exists(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or _run([docker, "compose", "version"], ROOT).returncode != 0:
        pytest.skip("docker compose is not installed here")
    (tmp_path / "deploy").mkdir()
    shutil.copy2(DEPLOY / "compose.yaml", tmp_path / "deploy" / "compose.yaml")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=x\nDASHSCOPE_API_KEY=y\n")
    done = _run([docker, "compose", "-f", "deploy/compose.yaml", "--profile", "sandbox", "config", "-q"], tmp_path)
    assert done.returncode == 0, done.stderr
    done = _run([docker, "compose", "-f", "deploy/compose.yaml", "--profile", "scale", "config", "-q"], tmp_path)
    assert done.returncode == 0, done.stderr


def test_compose_scale_profile() -> None:
    """PostgreSQL and two bot processes splitting the shards, sharing the media volume (docs/scaling.md)."""
    top = _blocks((DEPLOY / "compose.yaml").read_text(encoding="utf-8"), 0)
    services = _blocks(top["services"], 2)
    volumes = set(_blocks(top["volumes"], 2))
    networks = _blocks(top["networks"], 2)
    assert re.search(r"^\s+internal: true$", networks["kf2v-db"], re.M), "PostgreSQL unreachable from outside"

    postgres = services["postgres"]
    assert re.search(r"^\s+profiles:\s*\n\s+- scale$", postgres, re.M)
    assert "ports:" not in postgres, "no published port"
    assert re.findall(r"^\s+- ([\w-]+):/var/lib/postgresql/data$", postgres, re.M)[0] in volumes
    assert re.search(r"^\s+networks:\s*\n\s+- kf2v-db$", postgres, re.M)

    single_mount = re.findall(r"^\s+- ([\w-]+):/data$", services["bot"], re.M)[0]
    shard_ids: list[int] = []
    for name in ("bot-0", "bot-1"):
        bot = services[name]
        assert "<<: *bot" in bot and re.search(r"^\s+profiles:\s*\n\s+- scale$", bot, re.M)
        assert re.search(r"^\s+<<: \*bot-env$", bot, re.M), "keeps the bot's environment overrides"
        assert re.search(r"^\s+KF2V_DATABASE_URL: postgresql://kf2v@postgres/kf2v$", bot, re.M)
        assert re.search(r'^\s+KF2V_SHARD_COUNT: "2"$', bot, re.M)
        shard_ids.append(int(re.search(r'^\s+KF2V_SHARD_IDS: "(\d+)"$', bot, re.M).group(1)))  # type: ignore[union-attr]
        # The same volume as the single-process bot: frames and videos of every job, whoever handles it.
        assert re.findall(r"^\s+- ([\w-]+):/data$", bot, re.M) == [single_mount]
        assert re.search(r"^\s+- default$", bot, re.M) and re.search(r"^\s+- kf2v-db$", bot, re.M)
        assert re.search(r"^\s+postgres:\s*\n\s+condition: service_healthy$", bot, re.M)
    assert sorted(shard_ids) == [0, 1], "every shard served once"

    copy = services["migrate-db"]
    command = json.loads(re.search(r"^\s+command: (\[.*\])$", copy, re.M).group(1))  # type: ignore[union-attr]
    assert command == ["migrate-db", "--to", "postgresql://kf2v@postgres/kf2v"]
    assert re.findall(r"^\s+- ([\w-]+):/data$", copy, re.M) == [single_mount], "reads the single bot's SQLite"


# --- systemd -------------------------------------------------------------------------------------------------
def test_systemd_unit_directives() -> None:
    text = (DEPLOY / "kf2v-bot.service").read_text(encoding="utf-8")
    service = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    settings: dict[str, list[str]] = {}
    for line in service.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    expected = {
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], f"{key}={value}"
    for key in ("RestartSec", "User", "EnvironmentFile", "WorkingDirectory", "ReadWritePaths", "MemoryMax"):
        assert settings.get(key), f"{key} missing"
    assert settings["User"][0] not in ("root", "0")
    assert "@system-service" in settings["SystemCallFilter"]
    assert settings["ExecStart"][0].endswith("kf2v-bot run")
    data_dir = settings["ReadWritePaths"][0]
    assert settings["WorkingDirectory"][0].startswith(data_dir)
    assert f"KF2V_DATA_DIR={data_dir}" in " ".join(settings["Environment"])
    assert "WantedBy=multi-user.target" in text


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    text = (DEPLOY / "kf2v-bot.service").read_text(encoding="utf-8")
    executable = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    # The venv is not installed on this machine: point ExecStart at a stand-in, verify everything else.
    stand_in = tmp_path / "kf2v-bot"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "kf2v-bot.service"
    unit.write_text(text.replace(f"ExecStart={executable}", f"ExecStart={stand_in}"))
    done = _run([tool, "verify", str(unit)], tmp_path)
    if done.returncode != 0 and "Failed to" in done.stderr and "bus" in done.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # not even a warning (unknown keys, bad values)


def _unit_settings(text: str) -> dict[str, list[str]]:
    service = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    settings: dict[str, list[str]] = {}
    for line in service.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_template_unit_for_n_processes() -> None:
    """kf2v-bot@<shard>.service: the single unit's hardening, the instance name as the shard id."""
    single = _unit_settings((DEPLOY / "kf2v-bot.service").read_text(encoding="utf-8"))
    text = (DEPLOY / "kf2v-bot@.service").read_text(encoding="utf-8")
    template = _unit_settings(text)
    for key, values in single.items():
        if key not in ("ExecStart", "EnvironmentFile"):
            assert template.get(key) == values, f"{key} differs from kf2v-bot.service"
    # The shared settings file first, then the instance's own (e.g. its KF2V_HTTP_PORT), optional.
    assert template["EnvironmentFile"] == [single["EnvironmentFile"][0], "-/etc/kf2v-bot/kf2v-bot@%i.env"]
    # Set on the command line, so no environment file can give an instance another shard.
    assert template["ExecStart"] == [f"/usr/bin/env KF2V_SHARD_IDS=%i {single['ExecStart'][0]}"]
    assert "%i" in re.search(r"^Description=(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert "KF2V_SHARD_COUNT" in text and "KF2V_DATABASE_URL" in text, "says what the shared file must set"


def test_systemd_analyze_verify_template_instance(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    text = (DEPLOY / "kf2v-bot@.service").read_text(encoding="utf-8")
    stand_in = tmp_path / "kf2v-bot"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "kf2v-bot@1.service"  # an instance of the template, as `systemctl start kf2v-bot@1` loads it
    unit.write_text(text.replace("/opt/kf2v-bot/venv/bin/kf2v-bot", str(stand_in)))
    done = _run([tool, "verify", str(unit)], tmp_path)
    if done.returncode != 0 and "Failed to" in done.stderr and "bus" in done.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


# --- README --------------------------------------------------------------------------------------------------
# The permissions the bot uses, by discord.py's names; the README's integer must be exactly these.
INVITE_FLAGS = (
    "view_channel",
    "send_messages",
    "send_messages_in_threads",
    "create_public_threads",
    "embed_links",
    "attach_files",
    "read_message_history",
)


def test_readme_invite_url_has_exactly_the_permissions_used() -> None:
    with warnings.catch_warnings():  # discord.py imports audioop, deprecated on 3.11+
        warnings.simplefilter("ignore", DeprecationWarning)
        import discord

    expected = discord.Permissions(**dict.fromkeys(INVITE_FLAGS, True)).value
    assert expected == INVITE_PERMISSIONS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deployment = readme.split("\n## Add it to your server\n", 1)[1].split("\n## ", 1)[0]
    urls = re.findall(r"https://discord\.com/oauth2/authorize\?\S+", deployment)
    assert urls, "the README's 'Add it to your server' shows the invite URL"
    for url in urls:
        assert "client_id=<client_id>" in url
        assert f"scope={INVITE_SCOPES}" in url
        assert int(re.search(r"permissions=(\d+)", url).group(1)) == expected  # type: ignore[union-attr]
    assert f"`{expected}`" in deployment
    for label in (
        "View Channels",
        "Send Messages",
        "Send Messages in Threads",
        "Create Public Threads",
        "Embed Links",
        "Attach Files",
        "Read Message History",
    ):
        assert f"| {label} |" in deployment
    # The bits shown in the table add up to the same integer.
    bits = [int(b) for b in re.findall(r"`1 << (\d+)`", deployment)]
    assert sum(1 << b for b in bits) == expected and len(bits) == len(INVITE_FLAGS)
    assert (
        invite_url(123)
        == f"https://discord.com/oauth2/authorize?client_id=123&scope={INVITE_SCOPES}&permissions={expected}"
    )
