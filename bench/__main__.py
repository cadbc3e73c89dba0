"""Benchmark runner. (Benchmarks land with the performance work.)"""

from __future__ import annotations

import sys


def main() -> int:
    print("bench: no benchmarks are built yet.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
