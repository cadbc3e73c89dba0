"""What a member saw: an HTML page per thread, as Discord would show it, from what the Discord emulator recorded.

Each page starts with the thread's starter message (the bot's status, in the channel), then the thread's
messages: text, embeds, images, buttons and menus as labels, and every posted video as a <video> that plays
the mp4 the demo saved (a still frame from the middle as its poster). `index.html` links every thread.
Ephemeral replies are left out: only their recipient ever sees them (report.md lists them). Pages are
self-contained apart from the media files beside them (inline CSS, no scripts); every text a user or the bot
wrote is HTML-escaped before the little Discord markup it uses (mentions, `code`, **bold**) becomes tags.
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
from PIL import Image

from sandbox.discord_emu import AttachmentRecord, ChannelRecord, DiscordEmulator, MessageRecord

POSTER_WIDTH = 640  # Discord shows a video at most ~550 px wide; a larger still only makes the folder heavier

_USER = re.compile(r"&lt;@!?(\d+)&gt;")
_CHANNEL = re.compile(r"&lt;#(\d+)&gt;")
_TIMESTAMP = re.compile(r"&lt;t:(-?\d+)(?::([tTdDfFR]))?&gt;")
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")

# Discord's button styles (https://discord.com/developers/docs/components/reference#button-button-styles).
_BUTTON_CLASS = {1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "secondary"}

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#313338;color:#dbdee1;font:15px/1.375 "gg sans","Noto Sans","Noto Sans CJK SC",
"Helvetica Neue",Helvetica,Arial,sans-serif}
a{color:#00a8fc;text-decoration:none}
header{display:flex;align-items:center;gap:8px;height:48px;padding:0 16px;border-bottom:1px solid #1f2124;
background:#313338;font-weight:600;color:#f2f3f5;white-space:nowrap;overflow:hidden}
header .crumb{color:#949ba4;font-weight:500}
header .hash{color:#80848e;font-size:22px;font-weight:400}
header .name{min-width:0;overflow:hidden;text-overflow:ellipsis}
header a{flex:none}
main{padding:8px 0 24px}
.msg{display:flex;gap:16px;padding:6px 48px 6px 16px;margin-top:12px}
.avatar{flex:none;width:40px;height:40px;border-radius:50%;display:flex;align-items:center;justify-content:center;
font-weight:700;color:#fff}
.body{min-width:0;flex:1}
.head{display:flex;align-items:baseline;gap:6px}
.author{font-weight:600;color:#f2f3f5}
.app{background:#5865f2;color:#fff;font-size:10px;font-weight:600;border-radius:3px;padding:1px 4px;
vertical-align:2px}
.time{color:#949ba4;font-size:12px}
.starter{color:#949ba4;font-size:12px;margin:8px 16px -6px 72px}
.content{white-space:pre-wrap;overflow-wrap:anywhere}
.mention{background:rgba(88,101,242,.3);color:#c9cdfb;border-radius:3px;padding:0 2px;font-weight:500}
code{background:#2b2d31;border:1px solid #1e1f22;border-radius:4px;padding:0 3px;font-size:85%;
font-family:Consolas,"Liberation Mono",Menlo,monospace}
.ts{background:rgba(255,255,255,.06);border-radius:3px;padding:0 2px}
.embed{display:grid;max-width:520px;margin-top:6px;background:#2b2d31;border-left:4px solid #1e1f22;
border-radius:4px;padding:8px 16px 12px 12px}
.embed .title{font-weight:600;color:#f2f3f5;margin-top:4px}
.embed .desc{font-size:14px;margin-top:6px;white-space:pre-wrap;overflow-wrap:anywhere}
.fields{display:flex;flex-wrap:wrap;gap:8px 16px;margin-top:8px}
.field{flex:1 1 100%;min-width:0;font-size:14px}
.field.inline{flex:1 1 28%}
.field .name{font-weight:600;color:#f2f3f5;margin-bottom:2px}
.field .value{white-space:pre-wrap;overflow-wrap:anywhere}
.embed .footer{font-size:12px;color:#b5bac1;margin-top:8px}
.embed img{max-width:100%;border-radius:4px;margin-top:12px}
.files{display:flex;flex-wrap:wrap;gap:4px;margin-top:6px;max-width:520px}
.files img{width:calc(50% - 2px);border-radius:6px;display:block}
.files img:only-child{width:100%}
video{display:block;width:100%;max-width:520px;border-radius:8px;margin-top:6px;background:#000}
.file{margin-top:6px;padding:10px 12px;max-width:420px;background:#2b2d31;border:1px solid #1e1f22;border-radius:8px}
.row{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
.button{display:inline-block;padding:2px 16px;min-height:32px;line-height:28px;border-radius:3px;font-size:14px;
font-weight:500;color:#fff;background:#4e5058}
.button.primary{background:#5865f2}.button.success{background:#248046}.button.danger{background:#da373c}
.button.disabled{opacity:.5}
.select{display:flex;justify-content:space-between;width:100%;max-width:400px;padding:8px 12px;font-size:14px;
background:#1e1f22;border-radius:4px;color:#949ba4}
.index{max-width:900px;padding:8px 16px}
.index h2{font-size:12px;text-transform:uppercase;color:#949ba4;letter-spacing:.02em;margin:20px 0 6px}
.thread{display:flex;gap:12px;align-items:center;padding:8px;border-radius:4px}
.thread:hover{background:#2e3035}
.thread img{width:96px;height:54px;object-fit:cover;border-radius:4px;flex:none;background:#000}
.thread .what{color:#949ba4;font-size:13px}
"""


@dataclass
class ThreadPage:
    """One thread's page: what the index lists and what a test can check."""

    thread_id: int
    name: str
    guild: str
    channel: str
    file: str  # the page's file name in the transcript folder
    status: str  # the starter message's embed title (e.g. "Video #1 · Done")
    videos: list[str] = field(default_factory=list)  # src of each <video>, relative to the page
    poster: str | None = None  # the first video's poster, for the index


@dataclass
class Transcript:
    index: Path
    threads: list[ThreadPage]


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _avatar_colour(user_id: int) -> str:
    return ("#5865f2", "#3ba55c", "#faa61a", "#ed4245", "#eb459e", "#747f8d")[user_id % 6]


class _Renderer:
    def __init__(self, discord: DiscordEmulator, folder: Path, videos: dict[str, Path]) -> None:
        self.discord = discord
        self.folder = folder
        self.files = folder / "files"
        self.videos = videos  # an mp4 attachment's file name -> the file the demo saved it as
        self.pages: dict[int, str] = {}  # thread id -> page file name, for links between threads

    # --- names ---------------------------------------------------------------------------------------
    def user_name(self, user_id: int, guild_id: int | None = None) -> str:
        if guild_id is not None:
            member = self.discord.guilds[guild_id].members.get(user_id)
            if member is not None and member.nick:
                return member.nick
        user = self.discord.users.get(user_id)
        if user is None:
            return f"user {user_id}"
        return user.global_name or user.username

    def markup(self, text: str, message: MessageRecord) -> str:
        """Escaped text with Discord's markup shown as a reader sees it."""
        out = _escape(text)
        out = _CODE.sub(r"<code>\1</code>", out)
        out = _BOLD.sub(r"<b>\1</b>", out)
        out = _USER.sub(
            lambda m: f'<span class="mention">@{_escape(self.user_name(int(m.group(1)), message.guild_id))}</span>',
            out,
        )

        def channel(match: re.Match[str]) -> str:
            found = self.discord.channels.get(int(match.group(1)))
            if found is None:
                return match.group(0)
            name = f"#{_escape(found.name)}" if not found.is_thread else _escape(found.name)
            page = self.pages.get(found.id)
            inner = f'<span class="mention">{name}</span>'
            return f'<a href="{page}">{inner}</a>' if page else inner

        out = _CHANNEL.sub(channel, out)
        return _TIMESTAMP.sub(lambda m: self.timestamp(int(m.group(1)), m.group(2) or "f", message.timestamp), out)

    @staticmethod
    def timestamp(epoch: int, style: str, said_at: datetime) -> str:
        moment = datetime.fromtimestamp(epoch, UTC)
        if style == "R":
            seconds = (moment - said_at).total_seconds()
            amount, unit = abs(seconds), "seconds"
            for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
                if amount >= size:
                    amount, unit = amount / size, name
                    break
            count = round(amount)
            words = f"{count} {unit[:-1] if count == 1 else unit}"
            text = f"in {words}" if seconds >= 0 else f"{words} ago"
        else:
            text = moment.strftime("%Y-%m-%d %H:%M UTC")
        return f'<span class="ts">{text}</span>'

    # --- media ---------------------------------------------------------------------------------------
    def save(self, attachment: AttachmentRecord) -> str:
        name = f"{attachment.id}-{Path(attachment.filename).name}"
        path = self.files / name
        if not path.exists():
            path.write_bytes(attachment.data)
        return f"files/{name}"

    def video(self, attachment: AttachmentRecord) -> tuple[str, str | None]:
        """(src, poster) of a posted mp4: the demo's saved copy where there is one, else a copy of its own."""
        saved = self.videos.get(attachment.filename)
        src = f"../{saved.parent.name}/{saved.name}" if saved is not None else self.save(attachment)
        poster_name = f"poster-{attachment.id}.png"
        poster = still_frame(attachment.data)
        if poster is None:
            return src, None
        (self.files / poster_name).write_bytes(poster)
        return src, f"files/{poster_name}"

    # --- messages ------------------------------------------------------------------------------------
    def message(self, message: MessageRecord, page: ThreadPage) -> str:
        author = self.user_name(message.author_id, message.guild_id)
        user = self.discord.users.get(message.author_id)
        app = ' <span class="app">APP</span>' if user is not None and user.bot else ""
        parts = [
            f'<div class="msg" id="m{message.id}">',
            f'<div class="avatar" style="background:{_avatar_colour(message.author_id)}">'
            f"{_escape(author[:1].upper())}</div>",
            '<div class="body">',
            f'<div class="head"><span class="author">{_escape(author)}</span>{app}'
            f'<span class="time">{message.timestamp.strftime("%Y-%m-%d %H:%M UTC")}</span></div>',
        ]
        if message.content:
            parts.append(f'<div class="content">{self.markup(message.content, message)}</div>')
        in_embeds = {id_ for embed in message.embeds for id_ in _embedded_attachment_ids(embed)}
        images = [a for a in message.attachments if _is_image(a) and a.id not in in_embeds]
        if images:
            parts.append('<div class="files">')
            parts += [f'<img src="{self.save(a)}" alt="{_escape(a.description or a.filename)}">' for a in images]
            parts.append("</div>")
        for attachment in message.attachments:
            if attachment.filename.lower().endswith(".mp4"):
                src, poster = self.video(attachment)
                page.videos.append(src)
                page.poster = page.poster or poster
                poster_attr = f' poster="{poster}"' if poster else ""
                parts.append(
                    f'<video controls preload="none"{poster_attr} src="{_escape(src)}" '
                    f'title="{_escape(attachment.filename)}"></video>'
                )
            elif not _is_image(attachment):
                parts.append(
                    f'<div class="file"><a href="{self.save(attachment)}">{_escape(attachment.filename)}</a> '
                    f"({attachment.size:,} bytes)</div>"
                )
        for embed in message.embeds:
            parts.append(self.embed(embed, message))
        for row in message.components:
            parts.append(self.component_row(row))
        parts += ["</div>", "</div>"]
        return "\n".join(parts)

    def embed(self, embed: dict[str, Any], message: MessageRecord) -> str:
        colour = embed.get("color")
        style = f' style="border-left-color:#{int(colour):06x}"' if isinstance(colour, int) else ""
        parts = [f'<div class="embed"{style}>']
        if embed.get("title"):
            parts.append(f'<div class="title">{self.markup(str(embed["title"]), message)}</div>')
        if embed.get("description"):
            parts.append(f'<div class="desc">{self.markup(str(embed["description"]), message)}</div>')
        fields = [f for f in embed.get("fields") or [] if isinstance(f, dict)]
        if fields:
            parts.append('<div class="fields">')
            for item in fields:
                inline = " inline" if item.get("inline") else ""
                parts.append(
                    f'<div class="field{inline}"><div class="name">{self.markup(str(item.get("name", "")), message)}'
                    f'</div><div class="value">{self.markup(str(item.get("value", "")), message)}</div></div>'
                )
            parts.append("</div>")
        for key in ("image", "thumbnail"):
            found = self.embedded_attachment(embed.get(key), message)
            if found is not None:
                parts.append(f'<img src="{self.save(found)}" alt="{_escape(found.filename)}">')
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text"):
            parts.append(f'<div class="footer">{self.markup(str(footer["text"]), message)}</div>')
        parts.append("</div>")
        return "".join(parts)

    @staticmethod
    def embedded_attachment(part: Any, message: MessageRecord) -> AttachmentRecord | None:
        if not isinstance(part, dict):
            return None
        url = str(part.get("url", ""))
        return next((a for a in message.attachments if f"/{a.id}/" in url), None)

    def component_row(self, row: dict[str, Any]) -> str:
        items = [c for c in row.get("components") or [] if isinstance(c, dict)]
        parts = ['<div class="row">']
        for item in items:
            disabled = " disabled" if item.get("disabled") else ""
            if item.get("type") == 2:
                kind = _BUTTON_CLASS.get(int(item.get("style") or 2), "secondary")
                emoji = item.get("emoji") if isinstance(item.get("emoji"), dict) else None
                label = " ".join(p for p in ((emoji or {}).get("name"), item.get("label")) if p)
                parts.append(f'<span class="button {kind}{disabled}">{_escape(str(label))}</span>')
            elif item.get("type") in (3, 5, 6, 7, 8):
                placeholder = str(item.get("placeholder") or "Make a selection")
                parts.append(f'<span class="select{disabled}"><span>{_escape(placeholder)}</span><span>⌄</span></span>')
        parts.append("</div>")
        return "".join(parts)

    # --- pages ---------------------------------------------------------------------------------------
    def thread_page(self, thread: ChannelRecord, page: ThreadPage) -> str:
        starter = self.discord.message(thread.starter_message_id or thread.id)
        body: list[str] = []
        if starter is not None and not starter.deleted:
            parent = self.discord.channels.get(thread.parent_id or 0)
            where = _escape(parent.name if parent else "?")
            body.append(f'<div class="starter">Started from a message in #{where}</div>')
            body.append(self.message(starter, page))
        for message in self.discord.messages(thread.id):
            if not message.ephemeral:
                body.append(self.message(message, page))
        header = (
            f'<span class="crumb">{_escape(page.guild)}</span><span class="hash">#</span>'
            f'<span class="crumb">{_escape(page.channel)}</span><span class="crumb">›</span>'
            f'<span class="name">{_escape(thread.name)}</span>'
        )
        return _document(thread.name, header, "\n".join(body), back=True)

    def index_page(self, pages: list[ThreadPage]) -> str:
        body = ['<div class="index">']
        group: tuple[str, str] | None = None
        for page in pages:
            if (page.guild, page.channel) != group:
                group = (page.guild, page.channel)
                body.append(f"<h2>{_escape(page.guild)} · #{_escape(page.channel)}</h2>")
            still = f'<img src="{page.poster}" alt="">' if page.poster else '<img alt="">'
            videos = f"{len(page.videos)} video{'s' if len(page.videos) != 1 else ''}"
            body.append(
                f'<a class="thread" href="{page.file}">{still}<span><span class="author">{_escape(page.name)}</span>'
                f'<br><span class="what">{_escape(page.status)} · {videos}</span></span></a>'
            )
        body.append("</div>")
        header = f'<span>What the members saw</span><span class="crumb">· {len(pages)} threads</span>'
        return _document("kf2v-bot demo: every thread", header, "\n".join(body), back=False)


def _document(title: str, header: str, body: str, *, back: bool) -> str:
    link = '<a class="crumb" href="index.html">← all threads</a>' if back else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header>{header}<span style="flex:1"></span>{link}</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n'
    )


def _is_image(attachment: AttachmentRecord) -> bool:
    return (attachment.content_type or "").startswith("image/")


def _embedded_attachment_ids(embed: dict[str, Any]) -> list[int]:
    urls = [str(part.get("url", "")) for key in ("image", "thumbnail") if isinstance(part := embed.get(key), dict)]
    found = []
    for url in urls:
        match = re.search(r"/attachments/\d+/(\d+)/", url)
        if match:
            found.append(int(match.group(1)))
    return found


def still_frame(data: bytes, width: int = POSTER_WIDTH) -> bytes | None:
    """A PNG of the frame halfway through the video (what a <video> shows before it plays), or None if the
    bytes do not decode."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            middle = (container.duration or 0) / 2e6  # seconds
            chosen: Image.Image | None = None
            for frame in container.decode(stream):
                chosen = frame.to_image()  # type: ignore[no-untyped-call]
                if frame.time is not None and frame.time >= middle:
                    break
    except (av.FFmpegError, IndexError):
        return None
    if chosen is None:
        return None
    if chosen.width > width:
        chosen = chosen.resize((width, round(chosen.height * width / chosen.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    chosen.convert("RGB").save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_transcript(discord: DiscordEmulator, output: Path, videos: dict[str, Path]) -> Transcript:
    """Write OUTPUT/transcript/index.html and one page per thread the bot started; `videos` maps an mp4's
    attachment name (kf2v-7.mp4, story-1.mp4) to where the demo saved it, so pages play those files."""
    folder = output / "transcript"
    renderer = _Renderer(discord, folder, videos)
    renderer.files.mkdir(parents=True, exist_ok=True)
    for old in (*folder.glob("*.html"), *renderer.files.iterdir()):
        old.unlink()
    threads = sorted(
        (c for c in discord.channels.values() if c.is_thread and not c.deleted and c.guild_id in discord.guilds),
        key=lambda c: (discord.guilds[c.guild_id or 0].name, c.parent_id or 0, c.id),
    )
    for number, thread in enumerate(threads, start=1):
        renderer.pages[thread.id] = f"thread-{number:02d}.html"
    pages = []
    for thread in threads:
        parent = discord.channels.get(thread.parent_id or 0)
        starter = discord.message(thread.starter_message_id or thread.id)
        titles = [str(e.get("title")) for e in (starter.embeds if starter else []) if e.get("title")]
        page = ThreadPage(
            thread.id,
            thread.name,
            discord.guilds[thread.guild_id or 0].name,
            parent.name if parent else "?",
            renderer.pages[thread.id],
            titles[0] if titles else "",
        )
        (folder / page.file).write_text(renderer.thread_page(thread, page), encoding="utf-8")
        pages.append(page)
    index = folder / "index.html"
    index.write_text(renderer.index_page(pages), encoding="utf-8")
    return Transcript(index, pages)
