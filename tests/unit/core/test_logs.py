from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Literal

import pytest

from bot.dashscope.errors import classify
from bot.logs import REDACTED, SecretRedactor, redact, register_secret, setup_logging

API_KEY = "sk-3f9a2c71d04e4b0c9e1f6a8d2b5c7e90"
BOT_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
OSS_URL = (
    "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/1d/ab/video.mp4"
    "?Expires=1767225600&OSSAccessKeyId=LTAI5tSecretAccessId&Signature=q%2BSeCrEtSiGnAtUrE%3D"
)
CDN_URL = (
    "https://cdn.discordapp.com/attachments/1/2/first.png"
    "?ex=67a1b2c3&is=67a06143&hm=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef&"
)


@pytest.fixture
def capture() -> Iterator[Callable[..., io.StringIO]]:
    """Run setup_logging into a buffer; put the root logger back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    register_secret(API_KEY)
    register_secret(BOT_TOKEN)

    def start(fmt: Literal["text", "json"] = "text", level: str = "DEBUG") -> io.StringIO:
        setup_logging(level, fmt, stream=buffer)
        return buffer

    yield start
    for handler in root.handlers[:]:
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_secrets_never_reach_the_output(capture: Callable[..., io.StringIO]) -> None:
    out = capture()
    log = logging.getLogger("kf2v.test")
    log.info("calling with key %s", API_KEY)
    log.warning(f"token is {BOT_TOKEN}")
    log.info("headers: %r", {"Authorization": f"Bearer {API_KEY}"})
    log.info("extra holds it", extra={"account": API_KEY})
    text = out.getvalue()
    assert API_KEY not in text
    assert BOT_TOKEN not in text
    assert text.count(REDACTED) >= 4


def test_secret_inside_an_exception_traceback_is_scrubbed(capture: Callable[..., io.StringIO]) -> None:
    out = capture()

    def submit() -> None:
        raise RuntimeError(f"401 InvalidApiKey for {API_KEY} fetching {OSS_URL}")

    try:
        submit()
    except RuntimeError:
        logging.getLogger("kf2v.worker").exception("submission failed")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: 401 InvalidApiKey" in text
    assert API_KEY not in text
    assert "Signature" not in text
    assert "LTAI5tSecretAccessId" not in text


def test_library_loggers_are_scrubbed_too(capture: Callable[..., io.StringIO]) -> None:
    out = capture()
    logging.getLogger("aiohttp.client").warning("GET %s failed", OSS_URL)
    logging.getLogger("discord.http").debug("Authorization: Bot %s", BOT_TOKEN)
    text = out.getvalue()
    assert "Signature" not in text
    assert BOT_TOKEN not in text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (OSS_URL, f"https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/1d/ab/video.mp4?{REDACTED}"),
        (CDN_URL, f"https://cdn.discordapp.com/attachments/1/2/first.png?{REDACTED}"),
        (
            "https://bucket.s3.amazonaws.com/a.mp4?X-Amz-Algorithm=AWS4&X-Amz-Signature=abcdef",
            f"https://bucket.s3.amazonaws.com/a.mp4?{REDACTED}",
        ),
        # ordinary queries stay readable
        ("GET https://dashscope.aliyuncs.com/api/v1/tasks?page_no=1&status=RUNNING", None),
        ("Signature=abc123 left outside a URL", f"Signature={REDACTED} left outside a URL"),
        ("The bot started and is ready", None),
        # credential shapes are masked even when nobody registered them
        ("key sk-0123456789abcdef0123456789abcdef used", f"key {REDACTED} used"),
        ("Authorization: Bearer abc.def-ghi_jkl", f"Authorization: Bearer {REDACTED}"),
        ("Bot MTA5ODc2NTQzMjEwOTg3NjU0.Gh1jK2.abcdefghijklmnopqrstuvwxyz0123", f"Bot {REDACTED}"),
    ],
)
def test_signed_urls_are_masked(raw: str, expected: str | None) -> None:
    assert redact(raw) == (raw if expected is None else expected)


def test_data_uris_are_shortened() -> None:
    blob = "data:image/png;base64," + "iVBORw0KGgo" * 1000
    assert (
        redact(f"input.first_frame_url={blob} done") == "input.first_frame_url=data:image/png;base64,<11000 chars> done"
    )


def test_short_or_blank_secrets_are_ignored() -> None:
    register_secret("")
    register_secret("  ab ")
    assert redact("a cab and a cat") == "a cab and a cat"


def test_json_lines_parse_and_carry_extras(capture: Callable[..., io.StringIO]) -> None:
    out = capture("json")
    log = logging.getLogger("kf2v.jobs")
    log.info("job %s submitted", 42, extra={"job_id": 42, "guild_id": 7, "user_id": 9, "task_id": "t-1"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("poll crashed", extra={"account": "main", "job_id": 42})
    first, second = (json.loads(line) for line in lines(out))
    assert first["message"] == "job 42 submitted"
    assert (first["level"], first["logger"]) == ("INFO", "kf2v.jobs")
    assert (first["job_id"], first["guild_id"], first["user_id"], first["task_id"]) == (42, 7, 9, "t-1")
    assert first["ts"].endswith("Z")
    assert "exc_info" not in first
    assert second["account"] == "main"
    assert "ValueError: boom" in second["exc_info"]


def test_text_is_one_line_per_event(capture: Callable[..., io.StringIO]) -> None:
    out = capture("text")
    log = logging.getLogger("kf2v.cog")
    log.info("prompt was:\nfake 2099-01-01 CRITICAL line", extra={"job_id": 5, "note": "two words"})
    try:
        raise KeyError("x")
    except KeyError:
        log.exception("handler failed")
    first, second = lines(out)
    assert " INFO kf2v.cog: prompt was:\\nfake 2099" in first
    assert first.endswith('job_id=5 note="two words"')
    assert " ERROR kf2v.cog: handler failed | Traceback (most recent call last):\\n" in second


def test_level_is_applied_and_setup_is_idempotent(capture: Callable[..., io.StringIO]) -> None:
    capture("text", "INFO")
    out = capture("text", "WARNING")
    ours = [h for h in logging.getLogger().handlers if any(isinstance(f, SecretRedactor) for f in h.filters)]
    assert len(ours) == 1
    logging.getLogger("kf2v").info("hidden")
    logging.getLogger("kf2v").warning("shown")
    assert [line.split(": ", 1)[1] for line in lines(out)] == ["shown"]


def test_provider_error_texts_and_log_lines_redact_alike(capture: Callable[..., io.StringIO]) -> None:
    """One redaction: a provider error's text and a log line of the same text come out the same."""
    key = "sk-0a1b2c3d4e5f"  # shorter than an issued key: still a key's shape
    image = base64.b64encode(bytes(900)).decode()
    bare = base64.b64encode(bytes(range(120))).decode()  # base64 without a data: head
    raw = (
        f"InvalidApiKey {key} for https://oss.example/v.mp4?Expires=1&Signature=abc "
        f"frame data:image/png;base64,{image} and {bare}"
    )
    error = classify(401, "InvalidApiKey", raw, "req-1")
    out = capture()
    logging.getLogger("kf2v.worker").warning("%s", raw)
    assert error.message == redact(raw)
    assert error.message in out.getvalue()
    for secret in (key, "Signature=abc", image, bare):
        assert secret not in error.message
    assert error.message == (
        f"InvalidApiKey {REDACTED} for https://oss.example/v.mp4?{REDACTED} "
        f"frame data:image/png;base64,<{len(image)} chars> and <base64, {len(bare)} chars>"
    )
