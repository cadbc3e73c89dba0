"""`kf2v-bot sandbox`: serve the local DashScope emulator until SIGINT/SIGTERM.

By default any non-empty API key is accepted and a task finishes within a few seconds; flags pick the
provider's realistic timings, a fixed key, and fault injection. PyAV is loaded only when a video is first
rendered, so the server is up well under two seconds after launch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from sandbox.dashscope_emulator import (
    ABSURD_BILLS,
    CATALOG_REGIONS,
    OVER_LIMIT_MODES,
    DashScopeEmulator,
    EmulatorConfig,
    FaultConfig,
)


def _rate(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError("must be a share between 0 and 1")
    return number


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default 8765)")
    parser.add_argument("--api-key", default=None, help="accept only this API key (default: any non-empty key)")
    parser.add_argument(
        "--realistic", action="store_true", help="provider timings: up to 150 s queued, 240-360 s running"
    )
    parser.add_argument(
        "--time-scale", type=_positive, default=None, help="divide provider durations by this (e.g. 60)"
    )
    parser.add_argument("--fail-word", default=None, help="a prompt containing it ends FAILED (DataInspectionFailed)")
    parser.add_argument("--error-rate", type=_rate, default=0.0, help="share of API calls answered 500/503")
    parser.add_argument("--throttle-rate", type=_rate, default=0.0, help="share of API calls answered 429 Throttling")
    parser.add_argument("--latency", type=_non_negative, default=0.0, help="seconds added to every API call")
    parser.add_argument("--drop-rate", type=_rate, default=0.0, help="share of API calls whose connection is dropped")
    parser.add_argument("--malformed-rate", type=_rate, default=0.0, help="share of API calls answered broken JSON")
    parser.add_argument("--seed", type=int, default=None, help="seed for durations and faults (reproducible runs)")
    truth = parser.add_argument_group("provider truths (see the emulator's EmulatorConfig)")
    truth.add_argument(
        "--shared-account",
        default=None,
        metavar="NAME",
        help="every key belongs to this one main account (sharing its slots and task list)",
    )
    truth.add_argument(
        "--over-limit",
        choices=OVER_LIMIT_MODES,
        default="reject",
        help="past the in-flight limit: reject with 429 (default) or accept and hold PENDING",
    )
    truth.add_argument(
        "--neighbour-rate",
        type=_non_negative,
        default=0.0,
        help="tasks/s another key of the same account creates, of the models you use",
    )
    truth.add_argument(
        "--lose-create-answer-rate", type=_rate, default=0.0, help="share of creates done whose answer is lost"
    )
    truth.add_argument(
        "--malformed-poll-rate", type=_rate, default=0.0, help="share of polls answered 200 with an unreadable body"
    )
    truth.add_argument(
        "--absurd-billing", choices=sorted(ABSURD_BILLS), default=None, help="bill this video_duration on success"
    )
    truth.add_argument(
        "--foreign-video-url",
        default=None,
        metavar="URL",
        help="video_url of finished tasks; {trap} stands for the sandbox's request-counting trap listener",
    )
    truth.add_argument(
        "--foreign-video-redirect",
        action="store_true",
        help="keep video_url on the sandbox, which redirects it to --foreign-video-url",
    )
    truth.add_argument(
        "--upload-bytes-per-s", type=_positive, default=None, help="read create bodies at this rate (slow uploads)"
    )
    truth.add_argument(
        "--region",
        choices=sorted(CATALOG_REGIONS),
        default="cn-beijing",
        help="the region served: its models and names; the temporary upload exists in cn-beijing only",
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    values: dict[str, Any] = {
        "api_key": args.api_key,
        "seed": args.seed,
        "faults": FaultConfig(
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            latency_s=args.latency,
            drop_rate=args.drop_rate,
            malformed_rate=args.malformed_rate,
        ),
    }
    values.update(
        default_account=args.shared_account,
        over_limit=args.over_limit,
        neighbour_rate=args.neighbour_rate,
        lose_create_answer_rate=args.lose_create_answer_rate,
        malformed_poll_rate=args.malformed_poll_rate,
        absurd_billing=args.absurd_billing,
        foreign_video_url=args.foreign_video_url,
        foreign_video_redirect=args.foreign_video_redirect,
        upload_bytes_per_s=args.upload_bytes_per_s,
        region=args.region,
    )
    if args.time_scale is not None:
        values["time_scale"] = args.time_scale
    if args.fail_word is not None:
        values["fail_word"] = args.fail_word
    return EmulatorConfig.realistic(**values) if args.realistic else EmulatorConfig(**values)


async def _serve(args: argparse.Namespace) -> int:
    emulator = DashScopeEmulator(config_from_args(args))
    try:
        base_url = await emulator.start(args.host, args.port)
    except OSError as exc:
        print(f"kf2v-bot sandbox: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"DashScope sandbox listening on {base_url}")
    print(f"Point the bot at it: DASHSCOPE_BASE_URL={base_url} (any DASHSCOPE_API_KEY will do)"
          if args.api_key is None else
          f"Point the bot at it: DASHSCOPE_BASE_URL={base_url} with the API key given by --api-key")  # fmt: skip
    print(f"Statistics: {base_url.removesuffix('/api/v1')}/_sandbox/stats")
    if args.foreign_video_url is not None:
        print(f"Trap listener (counts requests to foreign video URLs): {emulator.trap_origin}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await emulator.stop()
    return 0


def run_sandbox(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))
