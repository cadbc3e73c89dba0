"""First and last frames for the demo, drawn with Pillow: small scenes a person recognises in the video.

Each scene is a function of `t` (0 = the first frame, 1 = the last frame), so the pair shows a change the
sandbox's crossfade turns into motion: a sun rising over the sea, a balloon drifting up, a boat crossing a
pond, a city going from day to night. Drawing is deterministic (stars come from a seeded generator).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageOps

RGB = tuple[int, int, int]
SIZE = (640, 360)  # 16:9, comfortably above the provider's 240 px minimum side


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    ramp = Image.linear_gradient("L").resize(size)
    return ImageOps.colorize(ramp, black=top, white=bottom).convert("RGB")


def _sky(t: float, size: tuple[int, int] = SIZE) -> Image.Image:
    """Night blue and dawn purple at t=0, daylight blue at t=1."""
    return _gradient(size, _mix((18, 22, 58), (70, 140, 225), t), _mix((150, 70, 90), (205, 225, 245), t))


def _sun(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, colour: RGB) -> None:
    x, y = centre
    for ring in range(3, 0, -1):  # a soft glow, then the disc
        glow = radius + ring * 9
        draw.ellipse((x - glow, y - glow, x + glow, y + glow), fill=_mix(colour, (255, 255, 255), 0.15 * ring))
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _cloud(draw: ImageDraw.ImageDraw, x: float, y: float, scale: float = 1.0, colour: RGB = (250, 250, 252)) -> None:
    for dx, dy, r in ((0, 0, 22), (24, -10, 26), (52, 0, 22), (26, 8, 22)):
        draw.ellipse((x + dx * scale - r * scale, y + dy * scale - r * scale,
                      x + dx * scale + r * scale, y + dy * scale + r * scale), fill=colour)  # fmt: skip


def sunrise_sea(t: float) -> Image.Image:
    w, h = SIZE
    horizon = int(h * 0.62)
    image = _sky(t)
    draw = ImageDraw.Draw(image)
    sun_y = horizon + 10 - t * (horizon - 70)
    _sun(draw, (w * 0.5, sun_y), 34, _mix((255, 120, 40), (255, 230, 120), t))
    sea = _gradient((w, h - horizon), _mix((40, 40, 90), (40, 110, 190), t), _mix((10, 15, 40), (20, 60, 120), t))
    image.paste(sea, (0, horizon))
    for i in range(9):  # the sun's reflection on the water
        y = horizon + 8 + i * 14
        half = (60 - i * 5) * (0.4 + 0.6 * t)
        draw.line((w * 0.5 - half, y, w * 0.5 + half, y), fill=_mix((230, 120, 60), (255, 240, 190), t), width=3)
    return image


def sunrise_mountains(t: float) -> Image.Image:
    w, h = SIZE
    image = _sky(t)
    draw = ImageDraw.Draw(image)
    _sun(draw, (w * 0.45, h * 0.6 - t * h * 0.42), 30, _mix((255, 110, 50), (255, 225, 110), t))
    far = _mix((60, 40, 80), (110, 140, 170), t)
    near = _mix((25, 25, 40), (50, 100, 60), t)
    draw.polygon([(0, h), (0, h * 0.6), (w * 0.25, h * 0.38), (w * 0.45, h * 0.62), (w * 0.7, h * 0.4),
                  (w, h * 0.58), (w, h)], fill=far)  # fmt: skip
    draw.polygon([(0, h), (0, h * 0.8), (w * 0.3, h * 0.62), (w * 0.55, h * 0.82), (w * 0.85, h * 0.66),
                  (w, h * 0.75), (w, h)], fill=near)  # fmt: skip
    return image


def moonrise(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (8, 10, 30), _mix((40, 30, 70), (20, 25, 55), t))
    draw = ImageDraw.Draw(image)
    stars = random.Random(7)
    for _ in range(90):
        x, y = stars.uniform(0, w), stars.uniform(0, h * 0.7)
        draw.point((x, y), fill=(235, 235, 255))
    mx, my = w * (0.25 + 0.35 * t), h * (0.68 - 0.45 * t)
    draw.ellipse((mx - 28, my - 28, mx + 28, my + 28), fill=(245, 240, 210))
    draw.ellipse((mx - 8, my - 14, mx + 4, my - 2), fill=(215, 210, 185))
    draw.polygon([(0, h), (0, h * 0.78), (w * 0.4, h * 0.7), (w * 0.75, h * 0.8), (w, h * 0.72), (w, h)],
                 fill=(12, 20, 18))  # fmt: skip
    return image


def balloon(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (90, 160, 235), (200, 230, 250))
    draw = ImageDraw.Draw(image)
    _cloud(draw, w * 0.12, h * 0.2)
    _cloud(draw, w * 0.66, h * 0.32, 1.3)
    draw.rectangle((0, h * 0.86, w, h), fill=(90, 170, 80))
    bx, by = w * (0.3 + 0.25 * t), h * (0.68 - 0.5 * t)
    draw.line((bx, by + 40, bx - 6, by + 110), fill=(60, 60, 60), width=2)
    draw.ellipse((bx - 30, by - 38, bx + 30, by + 38), fill=(220, 30, 40))
    draw.ellipse((bx - 16, by - 26, bx - 6, by - 12), fill=(245, 120, 120))
    return image


def paper_boat(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (150, 200, 240), (220, 235, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, h * 0.45, w, h), fill=(70, 140, 70))
    draw.ellipse((w * 0.05, h * 0.5, w * 0.95, h * 1.05), fill=(50, 110, 180))
    for i in range(5):
        y = h * (0.62 + i * 0.07)
        draw.arc((w * 0.2, y - 6, w * 0.8, y + 6), 200, 340, fill=(110, 160, 215), width=2)
    x, y = w * (0.2 + 0.55 * t), h * 0.7
    draw.polygon([(x - 45, y), (x + 45, y), (x + 30, y + 18), (x - 30, y + 18)], fill=(250, 250, 250))
    draw.polygon([(x - 5, y - 50), (x - 5, y), (x + 28, y)], fill=(235, 235, 235))
    return image


def flower(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (170, 215, 245), (240, 240, 225))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, h * 0.85, w, h), fill=(110, 80, 50))
    cx, cy = w * 0.5, h * 0.38
    draw.line((cx, h * 0.86, cx, cy), fill=(40, 130, 50), width=8)
    draw.ellipse((cx - 40, h * 0.6, cx, h * 0.68), fill=(50, 150, 60))
    petal = 18 + 40 * t
    for k in range(6):
        angle = k * math.pi / 3
        px, py = cx + math.cos(angle) * petal * 0.8, cy + math.sin(angle) * petal * 0.8
        r = 10 + 16 * t
        draw.ellipse((px - r, py - r, px + r, py + r), fill=_mix((150, 60, 110), (240, 90, 160), t))
    core = 12 + 6 * t
    draw.ellipse((cx - core, cy - core, cx + core, cy + core), fill=_mix((90, 140, 60), (250, 200, 40), t))
    return image


def city_night(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, _mix((90, 160, 230), (10, 12, 35), t), _mix((210, 230, 250), (60, 40, 90), t))
    draw = ImageDraw.Draw(image)
    towers = random.Random(3)
    x = 0.0
    while x < w:
        width, height = towers.uniform(40, 80), towers.uniform(h * 0.25, h * 0.7)
        draw.rectangle((x, h - height, x + width - 4, h), fill=_mix((110, 115, 130), (25, 25, 40), t))
        for wy in range(int(h - height + 10), h - 10, 16):
            for wx in range(int(x + 8), int(x + width - 12), 14):
                lit = towers.random() < 0.1 + 0.6 * t
                draw.rectangle((wx, wy, wx + 6, wy + 8), fill=(255, 220, 120) if lit else (70, 80, 100))
        x += width
    return image


def kite(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (100, 175, 240), (215, 235, 250))
    draw = ImageDraw.Draw(image)
    _cloud(draw, w * 0.7, h * 0.15, 0.9)
    draw.rectangle((0, h * 0.8, w, h), fill=(100, 180, 90))
    hand = (w * 0.15, h * 0.82)
    kx, ky = w * (0.35 + 0.35 * t), h * (0.6 - 0.42 * t)
    draw.line((hand, (kx, ky + 30)), fill=(80, 80, 80), width=1)
    draw.polygon([(kx, ky - 30), (kx + 22, ky), (kx, ky + 30), (kx - 22, ky)], fill=(250, 170, 30))
    draw.line((kx, ky - 30, kx, ky + 30), fill=(200, 60, 40), width=2)
    draw.line((kx - 22, ky, kx + 22, ky), fill=(200, 60, 40), width=2)
    return image


def snowman(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, _mix((160, 180, 210), (110, 180, 240), t), (235, 240, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, h * 0.78, w, h), fill=_mix((245, 245, 250), (120, 170, 90), t))
    melt = 1 - 0.55 * t
    cx, ground = w * 0.5, h * 0.8
    for radius, lift in ((60, 0), (42, 95), (28, 160)):
        r = radius * melt
        cy = ground - (lift * melt) - r
        draw.ellipse((cx - r * (1 + 0.3 * t), cy - r, cx + r * (1 + 0.3 * t), cy + r), fill=(250, 250, 252))
    nose_y = ground - 160 * melt - 28 * melt
    draw.polygon([(cx, nose_y), (cx + 26 * melt, nose_y + 4), (cx, nose_y + 8)], fill=(240, 120, 30))
    if t > 0.5:
        draw.ellipse((cx - 120, ground - 8, cx + 120, ground + 14), fill=(170, 200, 230))
    _sun(draw, (w * 0.85, h * 0.18), 22 + 6 * t, (255, 215, 90))
    return image


def autumn_tree(t: float) -> Image.Image:
    w, h = SIZE
    image = _gradient(SIZE, (130, 190, 235), (230, 235, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, h * 0.82, w, h), fill=_mix((90, 160, 70), (170, 130, 60), t))
    draw.rectangle((w * 0.48, h * 0.45, w * 0.52, h * 0.84), fill=(100, 70, 40))
    leaves = random.Random(11)
    for _ in range(160):
        x, y = leaves.gauss(w * 0.5, 55), leaves.gauss(h * 0.35, 40)
        r = leaves.uniform(5, 10)
        colour = _mix((40, 140, 50), (leaves.choice([(230, 120, 30), (200, 60, 30), (240, 190, 50)])), t)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image


_LIGHTHOUSE_SKIES: tuple[tuple[RGB, RGB], ...] = (  # (top, horizon) at dawn, noon, sunset and night
    ((60, 50, 110), (240, 150, 120)),
    ((60, 140, 230), (200, 225, 250)),
    ((90, 60, 120), (250, 120, 50)),
    ((8, 10, 35), (30, 35, 80)),
)


def lighthouse_day(t: float) -> Image.Image:
    """A day at a lighthouse in four moods (dawn, noon, sunset, night): the story's keyframes are t = k/3."""
    w, h = SIZE
    horizon = int(h * 0.64)
    low = min(2, int(t * 3))  # which two skies to blend, and how far: t = 1/3 is exactly noon
    top, bottom = (_mix(a, b, t * 3 - low) for a, b in zip(*_LIGHTHOUSE_SKIES[low : low + 2], strict=True))
    image = _gradient(SIZE, top, bottom)
    draw = ImageDraw.Draw(image)
    if t > 0.7:  # stars come out
        stars = random.Random(5)
        for _ in range(70):
            draw.point((stars.uniform(0, w), stars.uniform(0, horizon * 0.8)), fill=_mix(top, (240, 240, 255), t))
    # The sun rises on the left, stands high at noon and sets on the right; the moon follows it.
    arc = min(1.0, t * 1.4)  # low on the right at sunset (t = 2/3), gone by night
    sun_x, sun_y = w * (0.1 + 0.8 * arc), horizon - math.sin(math.pi * arc) * (horizon - 50) + 12
    if arc < 1.0:
        _sun(draw, (sun_x, sun_y), 26, _mix((255, 140, 60), (255, 235, 140), math.sin(math.pi * arc)))
    if t > 0.75:
        mx, my = w * 0.2, h * 0.2 + (1 - t) * h * 0.5
        draw.ellipse((mx - 20, my - 20, mx + 20, my + 20), fill=(245, 240, 210))
    sea = _gradient((w, h - horizon), _mix(bottom, (30, 60, 120), 0.6), _mix(top, (5, 10, 30), 0.5))
    image.paste(sea, (0, horizon))
    draw.polygon([(w * 0.62, h), (w * 0.66, horizon - 6), (w * 0.9, horizon - 10), (w, horizon), (w, h)],
                 fill=_mix((90, 80, 70), (25, 25, 30), t))  # fmt: skip
    tower = _mix((235, 235, 230), (120, 120, 135), t)
    draw.polygon([(w * 0.74, horizon - 8), (w * 0.76, h * 0.28), (w * 0.8, h * 0.28), (w * 0.82, horizon - 8)],
                 fill=tower)  # fmt: skip
    for band in (0.4, 0.52):
        draw.rectangle((w * 0.752, h * band, w * 0.808, h * (band + 0.04)), fill=(200, 40, 40))
    lit = t < 0.12 or t > 0.7  # the lamp is on at dawn and from dusk
    lamp = (255, 235, 130) if lit else (170, 190, 200)
    draw.rectangle((w * 0.765, h * 0.2, w * 0.795, h * 0.28), fill=lamp)
    draw.polygon([(w * 0.76, h * 0.2), (w * 0.78, h * 0.15), (w * 0.8, h * 0.2)], fill=(60, 60, 70))
    if lit:
        draw.polygon([(w * 0.765, h * 0.23), (w * 0.3, h * 0.12), (w * 0.3, h * 0.3)], fill=_mix(top, lamp, 0.45))
    return image


SCENES: dict[str, Callable[[float], Image.Image]] = {
    "sunrise-sea": sunrise_sea,
    "sunrise-mountains": sunrise_mountains,
    "moonrise": moonrise,
    "balloon": balloon,
    "paper-boat": paper_boat,
    "flower": flower,
    "city-night": city_night,
    "kite": kite,
    "snowman": snowman,
    "autumn-tree": autumn_tree,
    "lighthouse-day": lighthouse_day,
}


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=88)
    else:
        image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def frame_pair(scene: str, fmt: str = "PNG") -> tuple[bytes, bytes]:
    """(first frame, last frame) of a scene as encoded image files (PNG or JPEG)."""
    draw = SCENES[scene]
    return _encoded(draw(0.0), fmt), _encoded(draw(1.0), fmt)


def keyframes(scene: str, count: int, fmt: str = "PNG") -> list[bytes]:
    """`count` evenly spaced keyframes of a scene (t = 0 … 1), for a story: segment k runs frame k -> k+1."""
    draw = SCENES[scene]
    return [_encoded(draw(k / (count - 1)), fmt) for k in range(count)]
