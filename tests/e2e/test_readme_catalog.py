"""The catalog override example (docs/catalog.md, linked from the README) is a valid catalog that adds a
media-family model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot.catalog import parse_catalog

CATALOG_DOC = Path(__file__).resolve().parents[2] / "docs" / "catalog.md"


def test_the_override_example_parses_and_adds_a_media_model() -> None:
    section = CATALOG_DOC.read_text(encoding="utf-8").split("# The catalog override file", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    catalog = parse_catalog(json.loads(block.group(1)))
    house = catalog.model("house-i2v")
    assert (house.family, house.duration_range, house.makes_sound) == ("media", (2, 10), True)
    assert house.cost_milli("720P", 8) == 4800
    assert catalog.default_model == "wan2.2-kf2v-flash"
    assert any("house-i2v.price_per_second" in line for line in catalog.unconfirmed())
