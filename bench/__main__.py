"""Benchmark runner: `python -m bench NAME [--size tiny|full]` or `python -m bench all`.

Each benchmark prints its figures as one JSON line, the last line of its stdout (progress goes to stderr).
`all` runs every benchmark in its own process (so memory figures are not polluted by the others), relays
their lines, and ends with one JSON line holding all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import subprocess
import sys
import time
from typing import Any

from bench._common import SIZES, configure_logging, emit, note

BENCHES = (
    "throughput",
    "polling",
    "ack",
    "scale",
    "delivery",
    "failover",
    "admission",
    "report_chart",
    "memory",
    "soak",
    "handover",
    "discord_outage",
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--size", choices=SIZES, default="full", help="tiny: a quick smoke run (CI); full: the figures")
    parser.add_argument(
        "--time-scale", type=float, default=None, help="provider time divided by this (default per bench)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="override the number of jobs (where it applies)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--hide-start-times",
        action="store_true",
        help="polling/throughput: the emulator leaves submit/scheduled times out of RUNNING answers",
    )
    parser.add_argument(
        "--running-s",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="polling: the provider's running seconds (default: the observed 240-360, which the prior says too)",
    )
    return parser.parse_args(argv)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{args.name}")
    options: dict[str, Any] = {}
    if args.time_scale is not None:
        options["time_scale"] = args.time_scale
    if args.jobs is not None:
        options["jobs"] = args.jobs
    if args.seed is not None:
        options["seed"] = args.seed
    if args.hide_start_times:
        options["hide_start_times"] = True
    if args.running_s is not None:
        options["running_s"] = tuple(args.running_s)
    result: dict[str, Any] = asyncio.run(module.measure(args.size, **options))
    return result


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    failed = []
    for name in BENCHES:
        command = [sys.executable, "-m", "bench", name, "--size", args.size]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        note(f"running {name}")
        started = time.monotonic()
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # noqa: S603
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            failed.append(name)
            note(f"{name} failed (exit {completed.returncode})")
            continue
        print(lines[-1], flush=True)
        results[name] = json.loads(lines[-1])
        note(f"{name} took {time.monotonic() - started:.0f} s")
    return {"bench": "all", "size": args.size, "failed": failed, "results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    configure_logging()
    if args.name == "all":
        summary = run_all(args)
        emit(summary)
        return 1 if summary["failed"] else 0
    emit(run_one(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
