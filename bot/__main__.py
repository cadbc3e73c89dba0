"""Command line: `kf2v-bot run | demo | sandbox | check | backup | migrate-db` (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

from bot.settings import SettingsError, load_settings

EXIT_CONFIG = 2
SANDBOX_EXTRA = "pip install 'kf2v-bot[sandbox]'"
SANDBOX_COMMANDS = ("sandbox", "demo")


def _sandbox_missing(command: str) -> str | None:
    """`sandbox` and `demo` render real mp4s with PyAV, which a plain install (and the Docker image) leaves out."""
    if importlib.util.find_spec("av") is not None and importlib.util.find_spec("sandbox") is not None:
        return None
    return f"kf2v-bot {command} needs the sandbox extra (PyAV): {SANDBOX_EXTRA}  (make demo installs it)"


def _sandbox(module: str) -> ModuleType:
    """The top-level `sandbox` package (emulators, demo), loaded by name: the bot itself never imports it."""
    return importlib.import_module(f"sandbox.{module}")


def _command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kf2v-bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="connect to Discord, serve the slash commands and run the job worker")
    sub.add_parser("check", help="validate the configuration and, with credentials, that both services answer")

    sandbox = sub.add_parser("sandbox", help="serve a local DashScope-compatible emulator")
    if command == "sandbox":  # its flags live with the emulator, loaded only for this command
        _sandbox("cli").add_sandbox_arguments(sandbox)

    demo = sub.add_parser("demo", help="the whole pipeline offline: emulated Discord and DashScope")
    demo.add_argument(
        "--time-scale", type=float, default=None, help="provider time compression factor (default 60: 1 s = 1 min)"
    )
    demo.add_argument("--output", default="demo-output", help="folder for the report and the mp4s")
    demo.add_argument("--seed", type=int, default=7, help="seed of the emulated provider's timings")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the bot's INFO log lines too")

    backup = sub.add_parser("backup", help="online, consistent copy of the database")
    backup.add_argument("path", help="where to write the copy")

    migrate_db = sub.add_parser(
        "migrate-db", help="copy the (stopped) bot's SQLite database into an empty PostgreSQL database"
    )
    migrate_db.add_argument("--to", required=True, metavar="postgresql://…", help="the target database's URL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    if command in SANDBOX_COMMANDS and (missing := _sandbox_missing(command)) is not None:
        print(f"kf2v-bot: {missing}", file=sys.stderr)
        return EXIT_CONFIG
    args = _parser(command).parse_args(argv)
    try:
        if args.command == "sandbox":
            status: int = _sandbox("cli").run_sandbox(args)
            return status
        if args.command == "demo":
            run_demo = _sandbox("demo").run_demo
            status = asyncio.run(
                run_demo(time_scale=args.time_scale, output=args.output, verbose=args.verbose, seed=args.seed)
            )
            return status
        settings = load_settings()
        if args.command == "run":
            settings.require_run_credentials()
            from bot.app import run_bot

            return asyncio.run(run_bot(settings))
        if args.command == "check":
            from bot.ops import run_check

            return asyncio.run(run_check(settings))
        if args.command == "backup":
            from bot.ops import run_backup

            return asyncio.run(run_backup(settings, args.path))
        if args.command == "migrate-db":
            from bot.jobs.db.copy import run_migrate_db

            status, line = run_migrate_db(settings.database_path, args.to)
            print(line, file=sys.stderr if status else sys.stdout)
            return status
    except SettingsError as exc:
        print(f"kf2v-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
