"""The README and docs/ link to each other: every relative link names a file that exists, and every #anchor a
heading of that file (GitHub's rule: lower case, punctuation dropped, spaces to hyphens); the README's picture
is there and small."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "PRIVACY.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "deploy").glob("*.md"))]  # fmt: skip


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_and_anchor_resolves() -> None:
    checked = 0
    for document in documents():
        text = FENCE.sub("", document.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (document.parent / path_part).resolve() if path_part else document
            where = f"{document.relative_to(ROOT)} -> {target}"
            assert path.exists(), where
            if anchor:
                assert anchor in anchors(path), where
            checked += 1
    assert checked >= 20  # the README's links to docs/ and back are all here


def test_the_readme_opens_with_the_picture_and_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[: readme.index("\n## ")]  # before the first section
    assert "](docs/images/member-view.png)" in head
    assert "make demo" in head and "make test" in head
    picture = ROOT / "docs" / "images" / "member-view.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size < 300 * 1024
    for doc in ("how-it-works", "performance", "reliability", "deployment", "scaling", "catalog"):
        assert f"](docs/{doc}.md)" in readme, doc
