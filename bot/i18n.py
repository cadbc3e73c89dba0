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
        # --- uploaded frames (bot/jobs/images.py) ---
        "image.empty": "That file is empty (0 bytes). Upload the picture again.",
        "image.too_large": "That image is {size_mb:g} MB; the limit is {limit_mb:g} MB. "
        "Upload a smaller file (for example, export it as JPEG).",
        "image.not_an_image": "That file isn't a picture (detected type: {what}). "
        "Upload the frame as a JPEG, PNG, BMP or WEBP image.",
        "image.unrecognised": "That file isn't in any image format we recognise. "
        "Upload the frame as a JPEG, PNG, BMP or WEBP image.",
        "image.unsupported_format": "{format} images can't be used. "
        "Save the frame as JPEG, PNG, BMP or WEBP and upload that.",
        "image.animated": "Animated images can't be used as a frame. "
        "Upload a single still picture (JPEG, PNG, BMP or WEBP).",
        "image.corrupt": "That image is damaged or incomplete and can't be read. Re-save it or upload it again.",
        "image.too_small": "That image is {width}×{height} pixels; each side must be at least {min} pixels. "
        "Upload a larger picture.",
        "image.too_large_dimensions": "That image is {width}×{height} pixels; each side must be at most "
        "{max} pixels. Resize it and upload it again.",
        "image.bomb": "That image claims to be {width}×{height} pixels, far too many to process. "
        "Resize it to at most {max} pixels per side.",
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
        # --- uploaded frames (bot/jobs/images.py) ---
        "image.empty": "该文件是空的(0 字节)。请重新上传图片。",
        "image.too_large": "该图片大小为 {size_mb:g} MB,上限为 {limit_mb:g} MB。请上传更小的文件(例如导出为 JPEG)。",
        "image.not_an_image": "该文件不是图片(检测到的类型:{what})。请上传 JPEG、PNG、BMP 或 WEBP 格式的图片。",
        "image.unrecognised": "无法识别该文件的图片格式。请上传 JPEG、PNG、BMP 或 WEBP 格式的图片。",
        "image.unsupported_format": "不支持 {format} 格式的图片。请将画面另存为 JPEG、PNG、BMP 或 WEBP 后再上传。",
        "image.animated": "动图不能用作画面帧。请上传一张静态图片(JPEG、PNG、BMP 或 WEBP)。",
        "image.corrupt": "该图片已损坏或不完整,无法读取。请重新保存或重新上传。",
        "image.too_small": "该图片为 {width}×{height} 像素,每条边至少需要 {min} 像素。请上传更大的图片。",
        "image.too_large_dimensions": "该图片为 {width}×{height} 像素,每条边最多 {max} 像素。请缩小尺寸后重新上传。",
        "image.bomb": "该图片声明的尺寸为 {width}×{height} 像素,像素过多,无法处理。请将每条边缩小到 {max} 像素以内。",
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
