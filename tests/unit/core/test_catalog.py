"""The catalog as data: families, durations, prices, provenance, and the override file's validation."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from bot.catalog import DEFAULT_CATALOG, MILLI_PER_CNY, CatalogError, load_catalog


def test_the_default_catalog_describes_both_families() -> None:
    catalog = load_catalog()
    assert catalog.default_model == "wan2.2-kf2v-flash"
    wan27 = catalog.model("wan2.7-i2v")
    assert (wan27.family, wan27.duration_range, wan27.default_duration) == ("media", (2, 15), 5)
    assert wan27.makes_sound and not wan27.sound_optional and wan27.extends_clips
    assert wan27.default_resolution == "1080P" and wan27.prompt_max_chars == 5000
    assert wan27.inputs.audio is not None and wan27.inputs.audio.formats == ("wav", "mp3")
    assert frozenset({"first_clip", "last_frame"}) in wan27.media_combinations
    flash = catalog.model("wan2.2-kf2v-flash")
    assert (flash.family, flash.duration_range, flash.makes_sound) == ("kf2v", (5, 5), False)
    assert {m.key for m in catalog.models_in("singapore")} == {"wanx2.1-kf2v-plus", "wan2.7-i2v"}
    assert catalog.provider_name("wan2.7-i2v", "singapore") == "wan2.7-i2v"


def test_cost_of_eight_seconds_at_1080p_is_eight_times_the_listed_price() -> None:
    spec = load_catalog().model("wan2.7-i2v")
    listed = Decimal(DEFAULT_CATALOG["models"]["wan2.7-i2v"]["price_per_second"]["1080P"])
    assert spec.cost_milli("1080P", 8) == int(listed * 8 * MILLI_PER_CNY)
    singapore = Decimal(DEFAULT_CATALOG["models"]["wan2.7-i2v"]["region_prices"]["singapore"]["1080P"])
    assert spec.cost_milli("1080P", 8, region="singapore") == int(
        (singapore * 8 * MILLI_PER_CNY).to_integral_value("ROUND_CEILING")
    )


def test_effect_templates_follow_the_official_names() -> None:
    plus = load_catalog().model("wanx2.1-kf2v-plus")
    assert plus.template_names["hanfu-1"] == "唐韵翩然"
    # The seed reference's 唐韵翩然 example (`flying`) is offered beside the current reference's `hanfu-1`.
    assert "flying" in plus.templates and "hanfu-1" in plus.templates
    assert plus.templates_in("beijing") == plus.templates and plus.templates_in("singapore") == ()


def test_unconfirmed_lists_each_unsourced_value_with_its_reason() -> None:
    lines = load_catalog().unconfirmed()
    assert any(line.startswith("wan2.7-i2v.price_per_second: third-party") for line in lines)
    assert any(line.startswith("wanx2.1-kf2v-plus.templates.flying: the seed kf2v reference") for line in lines)
    assert not any(line.startswith("wan2.7-i2v.duration") for line in lines)  # sourced
    assert all(isinstance(url, str) and url for url in load_catalog().model("wan2.7-i2v").sources.values())


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_an_override_file_can_add_a_model(tmp_path: Path) -> None:
    data = copy.deepcopy(DEFAULT_CATALOG)
    snapshot = copy.deepcopy(data["models"]["wan2.7-i2v"])
    snapshot["provider_names"] = {"beijing": "wan2.7-i2v-2026-04-25"}
    snapshot["price_per_second"] = {"720P": "0.5", "1080P": "0.9"}
    snapshot.pop("region_prices")
    data["models"]["wan2.7-snapshot"] = snapshot
    catalog = load_catalog(_write(tmp_path, data))
    added = catalog.model("wan2.7-snapshot")
    assert added.family == "media" and added.cost_milli("720P", 10) == 5000
    assert catalog.key_for_provider_name("wan2.7-i2v-2026-04-25") == "wan2.7-snapshot"
    assert "wan2.7-snapshot" in {m.key for m in catalog.models_in("beijing")}


def test_an_old_style_override_without_families_still_loads(tmp_path: Path) -> None:
    old = {
        "regions": {"beijing": {"base_url": "https://dashscope.aliyuncs.com/api/v1"}},
        "models": {
            "m": {
                "provider_names": {"beijing": "m"},
                "resolutions": ["720P"],
                "default_resolution": "720P",
                "price_per_second": {"720P": "0.2"},
            }
        },
    }
    spec = load_catalog(_write(tmp_path, old)).model("m")
    assert spec.family == "kf2v" and spec.duration_range == (5, 5) and spec.prompt_max_chars == 800


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m["duration"].update(default=20), "models.wan2.7-i2v.duration"),
        (lambda m: m.update(colour="red"), "models.wan2.7-i2v.colour"),
        (lambda m: m.update(family="kf2v"), "kf2v family makes 5-second videos only"),
        (lambda m: m["media_combinations"].append(["first_frame", "sound"]), "media_combinations"),
        (lambda m: m["price_per_second"].pop("1080P"), "no price for 1080P"),
        (lambda m: m["inputs"].pop("audio"), "inputs.audio is missing"),
        (lambda m: m["provider_names"].update(mars="x"), "unknown region(s) mars"),
    ],
)
def test_a_broken_override_is_refused_with_the_field_named(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(DEFAULT_CATALOG)
    change(data["models"]["wan2.7-i2v"])
    with pytest.raises(CatalogError) as refused:
        load_catalog(_write(tmp_path, data))
    assert named in str(refused.value)
