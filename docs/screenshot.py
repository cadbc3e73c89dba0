"""Regenerate docs/images/member-view.png, the README's picture of what a member sees (`make screenshot`).

It runs the offline demo (or reads an existing demo output with --demo DIR), opens the transcript page of one
thread (the sunrise by default) in headless Chromium, crops the empty dark bottom and stores a small
PNG (under 250 KiB). Needs Chromium (Debian: `apt-get install chromium`); neither `make demo` nor `make test` needs
this script or Chromium: the picture is a committed file.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

from sandbox.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "images" / "member-view.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BACKGROUND = (0x31, 0x33, 0x38)  # the transcript's page colour (Discord's dark theme)
MARGIN = 16


def thread_page(demo: Path, thread: str) -> Path:
    """The transcript page that plays the video of the job whose `what` is `thread` (as in report.json)."""
    report = json.loads((demo / "report.json").read_text(encoding="utf-8"))
    video = next(job["video"] for job in report["jobs"] if job["what"] == thread and job["video"])
    folder = demo / "transcript"
    return next(p for p in sorted(folder.glob("thread-*.html")) if f'src="../videos/{video}"' in p.read_text("utf-8"))


def shoot(page: Path, width: int, height: int) -> Image.Image:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        raise SystemExit("No Chromium found: install it (Debian: apt-get install chromium) and run again.")
    with tempfile.TemporaryDirectory(prefix="kf2v-shot-") as tmp:
        target = Path(tmp) / "shot.png"
        subprocess.run(  # noqa: S603 - the installed browser, our own arguments
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--screenshot={target}",
             page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with Image.open(target) as shot:
            return shot.convert("RGB")


def crop_bottom(image: Image.Image) -> Image.Image:
    """Cut the page's empty background below the last message, keeping a margin."""
    plain = Image.new("RGB", image.size, BACKGROUND)
    box = ImageChops.difference(image, plain).convert("L").point(lambda v: 255 if v > 8 else 0).getbbox()
    if box is None:
        return image
    return image.crop((0, 0, image.width, min(image.height, box[3] + MARGIN)))


def small_png(image: Image.Image, budget: int = 250 * 1024) -> bytes:
    """Truecolour when it fits the budget (the still's sky bands in 256 colours), else a 256-colour palette:
    a dark UI needs few colours."""
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    if out.tell() <= budget:
        return out.getvalue()
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()


async def demo_output(folder: Path) -> Path:
    code = await run_demo(time_scale=600, output=folder, stream=sys.stderr, tty=False)
    if code != 0:
        raise SystemExit(f"the demo failed (exit {code}); see {folder / 'demo.log'}")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="an existing demo output folder (default: run the demo now)")
    parser.add_argument("--thread", default="sunrise-over-the-sea", help="the job's `what` in report.json")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--width", type=int, default=760)
    parser.add_argument("--height", type=int, default=1400, help="the window; the empty bottom is cropped")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kf2v-demo-") as tmp:
        demo = args.demo or asyncio.run(demo_output(Path(tmp)))
        page = thread_page(demo, args.thread)
        image = crop_bottom(shoot(page, args.width, args.height))
    data = small_png(image)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"{args.output}: {image.width}x{image.height}, {len(data) / 1024:.0f} KiB (from {page.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
