"""Benchmark runner: `python -m bench NAME [--size tiny|full]` or `python -m bench all`.

Each benchmark prints its figures as one JSON line, the last line of its stdout (progress goes to stderr).
`all` runs every benchmark in its own process (so memory figures are not polluted by the others), relays
their lines, and ends with one JSON line holding all of them. `--parallel N` (for the tiny smoke run, whose
timings nobody reads) runs up to N of them at once, except the ones that measure resident memory: those run
alone, as they always do without it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
# Their figures are resident memory: never run next to another benchmark, even under --parallel.
MEASURE_MEMORY = frozenset({"scale", "memory", "soak"})


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
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="all: run up to N benchmarks at once (not the memory ones; timings then shared: for smoke runs)",
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


def _run_child(name: str, args: argparse.Namespace) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench", name, "--size", args.size]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    note(f"running {name}")
    started = time.monotonic()
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # noqa: S603
    note(f"{name} took {time.monotonic() - started:.0f} s")
    return completed


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    ran_together: dict[str, subprocess.CompletedProcess[str]] = {}
    if args.parallel > 1:  # those that may share the machine first, then the memory ones one by one
        shared = [name for name in BENCHES if name not in MEASURE_MEMORY]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            ran_together = dict(zip(shared, pool.map(lambda name: _run_child(name, args), shared), strict=True))
    results: dict[str, Any] = {}
    failed = []
    for name in BENCHES:  # the lines relayed in this order, whatever order the benchmarks ran in
        completed = ran_together.get(name) or _run_child(name, args)
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            failed.append(name)
            note(f"{name} failed (exit {completed.returncode})")
            continue
        print(lines[-1], flush=True)
        results[name] = json.loads(lines[-1])
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
