"""The benchmarks run at their tiny size so they cannot rot. Only shapes and correctness are checked here
(the JSON line, its keys, limits kept, nothing lost), never timings: those are for `make bench`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `bench all --size tiny --parallel 2` took 44 s on a busy 2-core machine (load ~3).
pytestmark = pytest.mark.timeout(240)

KEYS = {
    "throughput": {"jobs", "makespan_s", "ideal_makespan_s", "slot_utilization", "limit_violations"},
    "polling": {
        "polls_per_job",
        "sdk_polls_per_job",
        "detect_p50_s",
        "detect_p95_s",
        "sdk_detect_p50_s",
        "sdk_detect_p95_s",
    },
    "ack": {"ack_p50_ms", "ack_p99_ms", "ack_max_ms"},
    "scale": {"enqueue_per_s", "dispatch_p99_ms", "rss_mb", "recovery_s"},
    "delivery": {"deliver_p50_s", "deliver_p95_s"},
    "failover": {"takeover_s_p50", "takeover_s_max"},
    "admission": {"sqlite_enqueue_per_s", "sqlite_admit_per_s", "sqlite_dispatch_p99_ms"},
    "report_chart": {"guild_build_ms", "guild_render_ms", "all_build_ms", "all_render_ms", "all_csv_ms"},
    "memory": {"idle_rss_mib", "peak_rss_mib", "budget_mib", "answered"},
    "soak": {"rss_warm_mib", "rss_end_mib", "growth_mib", "jobs_per_s"},
    "handover": {"pause_s_p50", "pause_s_max", "resume_s_p50", "stop_s_p50", "stop_s_max"},
    "discord_outage": {"after_recovery_p50_s", "after_recovery_max_s", "backoff_cap_s", "refused_posts"},
}


@pytest.fixture(scope="module")
def tiny_run() -> dict[str, Any]:
    """`python -m bench all --size tiny`: every benchmark in its own process, then one summary line; two at a
    time (the memory ones alone), since only shapes and correctness are checked here."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--size", "tiny", "--parallel", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(lines[-1])  # the last line is the summary
    summary["lines"] = [json.loads(line) for line in lines[:-1]]
    summary["stderr"] = done.stderr
    summary["returncode"] = done.returncode
    return summary


def test_all_runs_every_benchmark_and_ends_with_one_summary_line(tiny_run: dict[str, Any]) -> None:
    assert tiny_run["bench"] == "all" and tiny_run["size"] == "tiny"
    assert tiny_run["failed"] == [], tiny_run["stderr"][-3000:]
    assert tiny_run["returncode"] == 0
    assert [line["bench"] for line in tiny_run["lines"]] == list(KEYS)
    assert sorted(tiny_run["results"]) == sorted(KEYS)


@pytest.mark.parametrize("name", list(KEYS))
def test_benchmark_reports_its_figures(tiny_run: dict[str, Any], name: str) -> None:
    figures = tiny_run["results"].get(name)
    assert figures is not None, tiny_run["stderr"][-3000:]
    assert figures["bench"] == name and figures["size"] == "tiny"
    missing = KEYS[name] - set(figures)
    assert not missing, f"{name} lacks {sorted(missing)}"
    for key in KEYS[name]:
        assert isinstance(figures[key], int | float) and math.isfinite(figures[key]), (key, figures[key])
    CHECKS[name](figures)


def _throughput(f: dict[str, Any]) -> None:
    assert f["limit_violations"] == 0
    assert f["jobs"] == f["tasks"] >= 2
    assert f["max_in_flight"] <= 2
    assert 0 < f["slot_utilization"] <= 1
    assert f["makespan_s"] >= f["ideal_makespan_s"] - 0.01  # a lower bound, by construction


def _polling(f: dict[str, Any]) -> None:
    for run in (f, f["cold_start"]):
        assert run["limit_violations"] == 0
        assert run["jobs"] >= 1
        assert run["polls_per_job"] >= 1 and run["sdk_polls_per_job"] >= 1
        assert run["detect_p95_s"] >= run["detect_p50_s"] and run["sdk_detect_p95_s"] >= run["sdk_detect_p50_s"]
        assert 0 <= run["tasks_noticed_after_sdk_p50"] <= run["jobs"]
    # The cold start is a fresh bot: every one of its tasks is measured, none left out as warm-up.
    assert f["cold_start"]["warmup_jobs"] == 0 and f["cold_start"]["jobs"] == 4 == f["cold_start"]["jobs_per_run"]


def _ack(f: dict[str, Any]) -> None:
    assert f["acked"] == f["interactions"] >= 2
    assert f["replied_queued"] == f["interactions"]  # every command became a queued job
    assert 0 <= f["ack_p50_ms"] <= f["ack_p99_ms"] <= f["ack_max_ms"]


def _scale(f: dict[str, Any]) -> None:
    assert f["recovered_jobs"] == f["jobs"] >= 100  # a restart rebuilt the whole queue
    assert f["enqueue_per_s"] > 0 and f["recovery_s"] > 0 and f["rss_mb"] > 0
    assert 0 <= f["dispatch_p50_ms"] <= f["dispatch_p99_ms"]


def _delivery(f: dict[str, Any]) -> None:
    assert f["jobs"] >= 1
    assert f["video_mb"] >= 1  # the padded video arrived whole
    assert f["after_poll_p50_s"] >= 0 and f["deliver_p95_s"] >= f["deliver_p50_s"]


def _failover(f: dict[str, Any]) -> None:
    assert f["kills"] >= 1 and f["processes"] == 3  # a holder was SIGKILLed and another one took over
    assert 0 < f["takeover_s_p50"] <= f["takeover_s_max"]


def _admission(f: dict[str, Any]) -> None:
    # The PostgreSQL half runs where a server answers (always under CI=true: the bench fails without one).
    assert f["engines"][0] == "sqlite" and set(f["engines"]) <= {"sqlite", "postgresql"}
    if "postgresql" not in f["engines"]:
        assert f["postgresql_skipped"]
    for engine in f["engines"]:
        assert f[f"{engine}_queued_in_memory"] == f[f"{engine}_queued_in_database"] == f["queued"] >= f["jobs"] >= 100
        assert f[f"{engine}_reserved_equals_ledger"] is True  # every reservation has its ledger row
        assert f[f"{engine}_claimed"] == f["decisions"] >= 50  # each decision claimed exactly one job
        assert f[f"{engine}_enqueue_per_s"] > 0 and f[f"{engine}_admit_per_s"] > 0
        assert 0 <= f[f"{engine}_dispatch_p50_ms"] <= f[f"{engine}_dispatch_p99_ms"] <= f[f"{engine}_dispatch_max_ms"]
        assert f[f"{engine}_pick_p99_ms"] <= f[f"{engine}_dispatch_max_ms"]  # the pick is part of the decision


def _report_chart(f: dict[str, Any]) -> None:
    assert f["jobs"] == f["guilds"] * 30 * 2  # the tiny fixture: two jobs per guild per day
    assert f["all_spent_cny"] == f["settled_cny"] > f["guild_spent_cny"] > 0  # the report adds up to the rows
    assert f["guild_png_kb"] > 1 and f["all_csv_kb"] > f["guild_csv_kb"] > 0


def _memory(f: dict[str, Any]) -> None:
    # Four worst-case pictures at once against the real bot: every request answered, the bot alive.
    assert f["answered"] == f["requests"] == 4 and f["bot_alive"] is True
    assert f["queued"] == ["ordinary_jpeg", "phone_jpeg", "plain_png"]  # the 48 MP-like photo still a job
    assert f["refused"] == ["transparent_png"] and "pixels" in f["refusal_text"]
    assert f["submitted"] == f["videos_posted"] == 3  # each accepted job became a video
    assert 0 < f["idle_rss_mib"] <= f["peak_rss_mib"]
    # Each plan covered what the decode really took, give or take the probe's own floor (~2.5 MiB: what a
    # 0.05 MiB plan or a refusal is measured at).
    floor = max(alone["taken_mib"] for alone in f["alone"].values() if alone["planned_mib"] < 1)
    for name, alone in f["alone"].items():
        assert alone["taken_mib"] <= alone["planned_mib"] + floor + 1, name


def _soak(f: dict[str, Any]) -> None:
    assert f["delivered"] == f["jobs"] == f["tasks"] and f["failed"] == 0  # every job through, one task each
    assert f["limit_violations"] >= 0  # reported (a throttled create is refused, then sent again)
    assert f["rss_warm_mib"] > 0 and f["rss_end_mib"] > 0
    assert min(int(done) for done in f["rss_samples_mib"]) >= f["warmup_jobs"]  # sampled once warm


def _handover(f: dict[str, Any]) -> None:
    assert f["rounds"] >= 1
    assert 0 < f["pause_s_p50"] <= f["pause_s_max"] and 0 < f["stop_s_p50"] <= f["stop_s_max"]


def _discord_outage(f: dict[str, Any]) -> None:
    assert f["jobs"] >= 1 and f["refused_posts"] >= f["jobs"]  # every video was refused at least once
    assert 0 < f["after_recovery_p50_s"] <= f["after_recovery_max_s"]


CHECKS = {
    "throughput": _throughput,
    "polling": _polling,
    "ack": _ack,
    "scale": _scale,
    "delivery": _delivery,
    "failover": _failover,
    "admission": _admission,
    "report_chart": _report_chart,
    "memory": _memory,
    "soak": _soak,
    "handover": _handover,
    "discord_outage": _discord_outage,
}
