"""`kf2v-bot sandbox`: placeholder until the DashScope emulator lands."""

from __future__ import annotations

import argparse
import sys


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)


def run_sandbox(args: argparse.Namespace) -> int:
    print("kf2v-bot sandbox: the DashScope emulator is not built yet.", file=sys.stderr)
    return 1
