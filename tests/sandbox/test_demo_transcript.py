"""The demo's HTML transcript from a small recorded thread (no server, no bot): what a member wrote is shown as
text, never as markup; mentions, buttons, images and videos are drawn as Discord shows them; the poster is a
real frame of the video."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageStat

from sandbox.demo.transcript import Transcript, still_frame, write_transcript
from sandbox.discord_emu import DiscordEmulator
from sandbox.discord_emu.model import ChannelType, MessageType, UploadedFile
from sandbox.video import render_crossfade

MEMBER_ID = 880_000_000_000_000_077
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 180), colour).save(out, format="PNG")
    return out.getvalue()


async def test_a_thread_page_escapes_what_members_wrote_and_plays_the_video(tmp_path: Path) -> None:
    async with DiscordEmulator() as discord:  # on loopback (attachment URLs need its address); nobody connects
        transcript = record_a_thread(discord, tmp_path)
    check(transcript, tmp_path)


def record_a_thread(discord: DiscordEmulator, tmp_path: Path) -> Transcript:
    guild_id = discord.add_guild("Tea & <Biscuits>")
    channel = discord.channel(discord.add_text_channel(guild_id, "videos"))
    discord.add_member(guild_id, MEMBER_ID, "<b>eve</b>")
    dark, light = png((10, 10, 10)), png((250, 250, 250))
    status = discord.create_message(
        channel,
        {
            "embeds": [
                {
                    "title": "Video #7 · Done",
                    "description": HOSTILE,
                    "color": 0x2ECC71,
                    "fields": [{"name": "Requested by", "value": f"<@{MEMBER_ID}>", "inline": True}],
                }
            ],
            "components": [
                {
                    "type": 1,
                    "components": [
                        {"type": 2, "style": 2, "label": "Details", "custom_id": "kf2v:details:7"},
                        {"type": 2, "style": 4, "label": "Delete", "custom_id": "kf2v:delete:7"},
                    ],
                }
            ],
        },
        [UploadedFile(0, "first.png", dark, "image/png"), UploadedFile(1, "last.png", light, "image/png")],
        type=MessageType.DEFAULT,
    )
    thread = discord.create_thread(
        channel, f"#7 {HOSTILE}", type=ChannelType.PUBLIC_THREAD, auto_archive_duration=1440, message=status
    )
    video = render_crossfade(dark, light, resolution="480P", seconds=1, fps=8)
    discord.create_message(
        thread,
        {"content": f"<@{MEMBER_ID}> your video #7 is ready. `code` **bold**"},
        [UploadedFile(0, "kf2v-7.mp4", video, "video/mp4")],
        type=MessageType.DEFAULT,
    )
    discord.post_message(thread.id, MEMBER_ID, HOSTILE)
    saved = tmp_path / "videos" / "07-eve-fade.mp4"
    saved.parent.mkdir()
    saved.write_bytes(video)
    return write_transcript(discord, tmp_path, {"kf2v-7.mp4": saved})


def check(transcript: Transcript, tmp_path: Path) -> None:
    [page] = transcript.threads
    assert page.status == "Video #7 · Done" and page.videos == ["../videos/07-eve-fade.mp4"]
    html = (tmp_path / "transcript" / page.file).read_text(encoding="utf-8")
    index = transcript.index.read_text(encoding="utf-8")
    for text in (html, index):
        assert "<script" not in text and "<img src=x" not in text and "<b>eve" not in text
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") == 4  # <title>, header, embed, message
    assert "Tea &amp; &lt;Biscuits&gt;" in html and f'href="{page.file}"' in index
    assert '<span class="mention">@&lt;b&gt;eve&lt;/b&gt;</span>' in html  # the mention, by name, escaped
    assert "<code>code</code>" in html and "<b>bold</b>" in html
    assert '<span class="button secondary">Details</span>' in html
    assert '<span class="button danger">Delete</span>' in html
    assert html.count('<img src="files/') == 2  # both keyframes, copied beside the page
    assert '<video controls preload="none" poster="files/poster-' in html
    assert 'src="../videos/07-eve-fade.mp4"' in html
    poster = next((tmp_path / "transcript" / "files").glob("poster-*.png"))
    with Image.open(poster) as still:
        # The fade's middle frame: neither the dark first frame nor the light last one.
        assert 60 < ImageStat.Stat(still.convert("L")).mean[0] < 200


def test_a_still_frame_of_bytes_that_are_no_video_is_none() -> None:
    assert still_frame(b"not an mp4 at all") is None
