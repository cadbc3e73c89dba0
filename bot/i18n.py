"""One message catalog, English and Simplified Chinese, for every string a user sees.

`t(locale, key, **params)` picks the language from a Discord locale ("zh-CN", "en-US", ...), falls back
to English, and formats with `str.format`. Tests check both languages have exactly the same keys and
placeholders.
"""

from __future__ import annotations

from typing import Any

EN = "en"
ZH = "zh"

MESSAGES: dict[str, dict[str, str]] = {
    EN: {
        "error.generic": "Something went wrong on our side (reference `{ref}`). Nothing was charged.",
        "error.invalid_input": "That request can't be sent: {detail}",
        "error.invalid_image": "That image can't be used: {detail}",
        "error.quota": "This server's video budget doesn't cover that.",
        "error.queue_full": "You already have {count} videos waiting (limit {limit}). "
        "Wait for one to finish or cancel one.",
        "error.not_allowed": "You can't do that here.",
        "error.rate_limited": "Slow down: try again {retry_at}.",
        "error.job_not_found": "Job #{job_id} doesn't exist.",
        "error.paused": "New videos are paused by the bot's owners right now. Try again later.",
    },
    ZH: {
        "error.generic": "我们这边出了点问题(参考编号 `{ref}`)。没有产生任何费用。",
        "error.invalid_input": "该请求无法提交:{detail}",
        "error.invalid_image": "该图片无法使用:{detail}",
        "error.quota": "本服务器的视频预算不足以完成此请求。",
        "error.queue_full": "你已有 {count} 个视频在排队(上限 {limit})。请等待完成或取消一个。",
        "error.not_allowed": "你不能在这里执行此操作。",
        "error.rate_limited": "操作太频繁:请在 {retry_at} 再试。",
        "error.job_not_found": "任务 #{job_id} 不存在。",
        "error.paused": "机器人所有者暂停了新的视频生成。请稍后再试。",
    },
}


def language(locale: str | None) -> str:
    """Discord locale -> catalog language ('zh-CN' and 'zh-TW' read Chinese; everything else English)."""
    if locale and locale.lower().startswith("zh"):
        return ZH
    return EN


def t(locale: str | None, key: str, /, **params: Any) -> str:
    lang = language(locale)
    template = MESSAGES[lang].get(key) or MESSAGES[EN].get(key)
    if template is None:
        raise KeyError(f"message {key!r} is missing from the catalog")
    return template.format(**params)
