"""Logging: one line per event (text or JSON lines), with secrets scrubbed before anything is written.

`setup_logging` installs one handler on the root logger, carrying a `SecretRedactor`. Handler filters see
every record that reaches the handler, including those propagated from library loggers (a logger-level
filter would only see its own logger's records). The redactor replaces registered secrets (API keys, the
bot token) and masks signed URL queries, bearer/bot credentials and base64 image data URIs in the message,
its arguments, the exception and stack text and string `extra=` fields.

Note for whoever starts discord.py: `Client.run` installs its own root handler unless given
`log_handler=None`; that handler would bypass the redactor.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

REDACTED: Final = "[REDACTED]"
MIN_SECRET_LENGTH: Final = 4  # shorter "secrets" would blank out ordinary words

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Never write `value` to the logs from now on (ignored when blank or shorter than 4 characters)."""
    global _secrets_pattern
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret that contains another is replaced whole.
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


# Query parameters that make a URL a credential: OSS/S3/Discord CDN signatures, tokens, keys.
_SIGNED_PARAMS: Final = (
    r"Signature|Expires|OSSAccessKeyId|security-token|X-Amz-[A-Za-z-]+|X-Goog-[A-Za-z-]+|"
    r"ex|is|hm|sig|se|sp|sv|token|access_token|api_key|apikey|key"
)
_URL_QUERY: Final = re.compile(r"(?P<base>https?://[^\s?#'\"<>]+)\?(?P<query>[^\s#'\"<>]*)", re.IGNORECASE)
_SIGNED_QUERY: Final = re.compile(rf"(?:^|[&;])(?:{_SIGNED_PARAMS})=", re.IGNORECASE)
_LOOSE_PARAM: Final = re.compile(
    r"(?P<name>\b(?:Signature|OSSAccessKeyId|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|"
    r"security-token|access_token|api_key|apikey)=)[^&\s'\"<>]+",
    re.IGNORECASE,
)
# "Bot <token>" is covered by the token shape below; "Bot" alone starts too many ordinary sentences.
_AUTH_HEADER: Final = re.compile(r"(?P<scheme>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_DASHSCOPE_KEY: Final = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_DISCORD_TOKEN: Final = re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}")
_DATA_URI: Final = re.compile(r"(?P<head>data:[\w.+-]+/[\w.+-]+;base64,)[A-Za-z0-9+/=]+")
# A long bare base64 run (an image or a key pasted without its data: head); 120 characters is 90 bytes.
_BASE64_RUN: Final = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")
# Interaction tokens in webhook/callback paths (discord.py logs those URLs at DEBUG): 15 minutes of posting
# as the bot in that channel.
_INTERACTION_TOKEN: Final = re.compile(r"(?P<head>/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.-]{20,}")
# ... and in gateway payloads discord.py logs at DEBUG ({'token': '...'}).
_TOKEN_FIELD: Final = re.compile(r"(?P<head>['\"]token['\"]\s*:\s*['\"])[^'\"]{8,}")


def _mask_query(match: re.Match[str]) -> str:
    if _SIGNED_QUERY.search(match["query"]):
        return f"{match['base']}?{REDACTED}"
    return match[0]


def redact(text: str, *secrets: str) -> str:
    """`text` with every registered secret, the given `secrets` and credential-looking tokens masked.

    The one redaction of the project: the log filter and the provider client's error texts both use it.
    """
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a secret containing another goes whole
        if len(secret.strip()) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    pattern = _secrets_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "://" in text:
        text = _URL_QUERY.sub(_mask_query, text)
    if "=" in text:
        text = _LOOSE_PARAM.sub(rf"\g<name>{REDACTED}", text)
    if "data:" in text:
        text = _DATA_URI.sub(lambda m: f"{m['head']}<{len(m[0]) - len(m['head'])} chars>", text)
    text = _BASE64_RUN.sub(lambda m: f"<base64, {len(m[0])} chars>", text)
    text = _AUTH_HEADER.sub(rf"\g<scheme>{REDACTED}", text)
    text = _DASHSCOPE_KEY.sub(REDACTED, text)
    if "/webhooks/" in text or "/interactions/" in text:
        text = _INTERACTION_TOKEN.sub(rf"\g<head>{REDACTED}", text)
    if "token" in text:
        text = _TOKEN_FIELD.sub(rf"\g<head>{REDACTED}", text)
    return _DISCORD_TOKEN.sub(REDACTED, text)


class SecretRedactor(logging.Filter):
    """Rewrites each record in place so that no handler after it can write a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep both parts, still scrubbed
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value))
        record.__dict__["_redacted"] = True  # a record can pass through several handlers
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _one_line(text: str) -> str:
    # Prompts and provider messages are user-controlled: a newline in them must not forge a log line.
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or any(c.isspace() or c in '"=' for c in text) else text


class TextFormatter(logging.Formatter):
    """`2026-05-09T07:35:25.123Z INFO bot.jobs.worker: message job_id=42 | Traceback...` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{key}={_text_value(value)}" for key, value in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += " | " + record.exc_text
        if record.stack_info:
            line += " | " + record.stack_info
        return _one_line(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, exc_info, stack_info, then every extra."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc_info"] = record.exc_text
        if record.stack_info:
            event["stack_info"] = record.stack_info
        for key, value in _extras(record).items():
            event.setdefault(key, value)
        return json.dumps(event, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: Literal["text", "json"], *, stream: IO[str] | None = None) -> None:
    """Configure the root logger (idempotent: a second call replaces the first call's handler)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_kf2v", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretRedactor())
    handler._kf2v = True  # type: ignore[attr-defined]  # marks ours for the next call
    root.addHandler(handler)
    root.setLevel(level.upper())
