"""SQL text helpers shared by both engines: placeholder translation, script splitting, URL redaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit


class PlaceholderError(ValueError):
    """The statement cannot be translated safely (a `?` inside a literal, or `$n` written by hand)."""


@lru_cache(maxsize=1024)
def to_numbered(sql: str) -> str:
    """Translate the portable `?` placeholders into PostgreSQL's `$1, $2, ...`.

    A small tokenizer skips string literals, quoted identifiers and comments, so a `?` written inside one
    is left alone; a `$` outside them is refused (dollar quoting and hand-written `$n` would make the
    numbering ambiguous). Statements are constants of the code, so the result is cached.
    """
    out: list[str] = []
    number = 0
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while True:  # a doubled quote is an escaped quote inside the same token
                end = sql.find(ch, end)
                if end < 0:
                    raise PlaceholderError("unterminated quoted text in SQL statement")
                if end + 1 < n and sql[end + 1] == ch:
                    end += 2
                    continue
                break
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise PlaceholderError("unterminated comment in SQL statement")
            out.append(sql[i : end + 2])
            i = end + 2
        elif ch == "?":
            number += 1
            out.append(f"${number}")
            i += 1
        elif ch == "$":
            raise PlaceholderError("write placeholders as '?'; '$' (dollar quoting, $n) is not portable")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def split_script(script: str) -> Sequence[str]:
    """Split a migration file into statements (the files hold no triggers and no semicolons in text)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


_SECRET_QUERY = re.compile(r"(?i)(password|sslpassword|passfile)=[^&]*")


def redact_url(url: str) -> str:
    """The URL with its password (in the authority or the query string) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_postgresql_url(url: str) -> bool:
    """Whether `url` names PostgreSQL (postgresql:// or postgres://) rather than a SQLite file."""
    return url.startswith(("postgresql://", "postgres://"))
