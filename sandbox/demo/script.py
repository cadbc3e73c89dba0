"""The scripted afternoon: who is where, what they ask for, and what should come of it.

Three guilds (one in Chinese), nine members and the bot's owner. The owner first lowers Pixel Pals' daily
budget with `/kf2v-admin budget`; then ten `/kf2v` requests arrive in a burst, with a four-keyframe
`/kf2v-story` in the middle of it. One prompt carries the sandbox's fail word (the provider's content check
rejects the output), one request does not fit its guild's budget, one is cancelled with its Cancel button
while it waits, one delivered video is regenerated with its Regenerate button and one is remixed (Remix
button, an edited prompt in the modal, a new thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sandbox.dashscope_emulator import EmulatorConfig

FAIL_WORD = EmulatorConfig().fail_word  # "FAIL_CONTENT": the emulator fails any task whose prompt has it
OWNER_ID = 880_000_000_000_000_001
OWNER_NAME = "rin"


class Expect(StrEnum):
    DELIVERED = "delivered"
    CONTENT_REJECTED = "content rejected"
    OVER_BUDGET = "over budget"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Member:
    handle: str  # ASCII, for file names
    name: str  # what Discord shows
    user_id: int
    locale: str


@dataclass(frozen=True)
class GuildSpec:
    key: str  # ASCII, for file names
    name: str
    locale: str
    channel: str
    members: tuple[Member, ...]
    daily_budget: str | None = None  # set by the owner through /kf2v-admin budget (CNY)


@dataclass(frozen=True)
class RequestSpec:
    key: str  # ASCII, for file names; unique
    guild: str
    user: str  # a member's handle
    prompt: str
    scene: str  # sandbox.demo.scenes.SCENES
    resolution: str = "720P"
    image_format: str = "PNG"
    expect: Expect = Expect.DELIVERED
    regenerate: bool = False  # the requester presses Regenerate once the video is delivered
    model: str | None = None  # None: the bot's default model
    duration: int | None = None  # seconds, for a model with a duration range
    extend_seconds: int | None = None  # the requester presses Extend on the delivered video, adding this many
    after: str | None = None  # sent only once this request (by key) has been answered
    remix_prompt: str | None = None  # the requester presses Remix once delivered and submits this prompt


@dataclass(frozen=True)
class StorySpec:
    """One `/kf2v-story`: `frames` keyframes of a scene (t = k/(frames-1)), one prompt per segment."""

    key: str  # ASCII, for file names
    guild: str
    user: str
    prompts: tuple[str, ...]  # sent `|`-separated, one per segment
    scene: str
    frames: int
    resolution: str
    send_after: str  # sent in the burst right after this request (by key)

    @property
    def segments(self) -> int:
        return self.frames - 1


GUILDS: tuple[GuildSpec, ...] = (
    GuildSpec(
        "aurora",
        "Aurora Studio",
        "en-US",
        "videos",
        (
            Member("alice", "alice", 880_000_000_000_000_011, "en-US"),
            Member("bob", "bob", 880_000_000_000_000_012, "en-US"),
            Member("carol", "carol", 880_000_000_000_000_013, "en-GB"),
        ),
        daily_budget="20.00",  # room for the 8-second wan2.7 video with sound and its Extend (¥4.80 + ¥6.60)
    ),
    GuildSpec(
        "chenguang",
        "晨光工作室",
        "zh-CN",
        "视频",
        (
            Member("lilei", "李雷", 880_000_000_000_000_021, "zh-CN"),
            Member("hanmeimei", "韩梅梅", 880_000_000_000_000_022, "zh-CN"),
            Member("wangfang", "王芳", 880_000_000_000_000_023, "zh-CN"),
            # Tells the story: its three segments are three queued videos, a member's whole queue allowance.
            Member("zhangwei", "张伟", 880_000_000_000_000_024, "zh-CN"),
        ),
    ),
    GuildSpec(
        "pixelpals",
        "Pixel Pals",
        "en-GB",
        "clips",
        (
            Member("dave", "dave", 880_000_000_000_000_031, "en-GB"),
            Member("erin", "erin", 880_000_000_000_000_032, "en-GB"),
        ),
        daily_budget="1.50",  # one 720P video (¥1.00) fits, a second does not
    ),
)

REQUESTS: tuple[RequestSpec, ...] = (
    RequestSpec("sunrise-over-the-sea", "aurora", "alice",
                "The sun rises slowly over a calm sea; golden light spreads across the water",
                "sunrise-sea", regenerate=True),
    RequestSpec("mountain-sunrise", "chenguang", "lilei", "太阳从群山后缓缓升起,天空由紫色变成蔚蓝",
                "sunrise-mountains"),
    RequestSpec("kite", "pixelpals", "dave", "A kite climbs high into a windy spring sky", "kite"),
    RequestSpec("red-balloon", "aurora", "bob", "A red balloon drifts up past the clouds", "balloon",
                resolution="480P", remix_prompt="A red balloon drifts up past the clouds as the first snow falls"),
    RequestSpec("paper-boat", "chenguang", "hanmeimei", "一只纸船慢慢漂过池塘", "paper-boat",
                resolution="480P", image_format="JPEG"),
    RequestSpec("city-at-night", "aurora", "carol",
                f"The city switches its lights on as day turns to night {FAIL_WORD}", "city-night",
                expect=Expect.CONTENT_REJECTED),
    RequestSpec("melting-snowman", "pixelpals", "erin", "A snowman melts in the spring sun", "snowman",
                expect=Expect.OVER_BUDGET, after="kite"),
    RequestSpec("blooming-flower", "chenguang", "lilei", "一朵花在晨光中慢慢绽放", "flower", resolution="480P"),
    RequestSpec("autumn-tree", "aurora", "alice", "The tree's leaves turn from green to autumn gold",
                "autumn-tree", resolution="480P", image_format="JPEG"),
    RequestSpec("moonrise", "chenguang", "wangfang", "月亮从山丘后升起,满天繁星闪烁", "moonrise",
                expect=Expect.CANCELLED),
    # wan2.7-i2v (issue 12): 8 seconds with a generated soundtrack, then Extend by 3 s (the whole 11 s video).
    RequestSpec("lantern-with-sound", "aurora", "carol", "A paper lantern rises into the dusk, crackling softly",
                "balloon", model="wan2.7-i2v", duration=8, extend_seconds=3),
)  # fmt: skip

# Three segments at 480P (¥0.50 each) on the default model: reserved whole (¥1.50) within 晨光工作室's default
# budget, each settled as it is delivered; joined into one 15-second video with the seams at keyframes 2 and 3.
STORY = StorySpec("lighthouse-day", "chenguang", "zhangwei",
                  ("清晨,灯塔熄灯,太阳从海面升起", "太阳升到正午,海面波光粼粼", "夕阳落下,夜幕降临,灯塔重新亮起"),
                  "lighthouse-day", frames=4, resolution="480P", send_after="paper-boat")  # fmt: skip

BURST_GAP_S = 0.35  # real seconds between two requests of the burst


def guild_spec(key: str) -> GuildSpec:
    return next(g for g in GUILDS if g.key == key)


def member(guild: GuildSpec, handle: str) -> Member:
    return next(m for m in guild.members if m.handle == handle)
