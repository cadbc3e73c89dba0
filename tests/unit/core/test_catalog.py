"""The catalog as data: families, durations, prices, provenance, and the override file's validation."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from bot.catalog import DEFAULT_CATALOG, MILLI_PER_CNY, Catalog, CatalogError, load_catalog, parse_catalog


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
    # Flash is documented in Singapore too; wan2.7 is documented there but needs media at public URLs.
    assert {m.key for m in catalog.models_in("singapore")} == {"wan2.2-kf2v-flash", "wanx2.1-kf2v-plus"}
    assert catalog.provider_name("wan2.7-i2v", "singapore") == "wan2.7-i2v"
    assert catalog.offers("wan2.7-i2v", "beijing") and not catalog.offers("wan2.7-i2v", "singapore")
    [(key, why)] = catalog.not_offered("singapore")
    assert key == "wan2.7-i2v" and "public http(s) URLs" in why and "hosts nothing public" in why


def test_aliases_are_recognised_per_region_and_one_name_is_sent() -> None:
    catalog = load_catalog()
    plus = catalog.model("wanx2.1-kf2v-plus")
    assert plus.names_in("singapore") == ("wan2.1-kf2v-plus", "wanx2.1-kf2v-plus")
    assert catalog.provider_name("wanx2.1-kf2v-plus", "beijing") == "wanx2.1-kf2v-plus"
    assert catalog.recognised_names("wanx2.1-kf2v-plus", "beijing") == {"wanx2.1-kf2v-plus", "wan2.1-kf2v-plus"}
    for name in ("wan2.1-kf2v-plus", "wanx2.1-kf2v-plus"):
        assert catalog.key_for_provider_name(name, "beijing") == "wanx2.1-kf2v-plus"
    assert catalog.key_for_provider_name("wan2.2-kf2v-flash", "singapore") == "wan2.2-kf2v-flash"


def test_every_region_value_has_a_dated_source_or_is_unconfirmed() -> None:
    """Names, aliases, prices, limits and media transports of each offered model: a dated official source, or
    named in the catalog's `unconfirmed` list (which `kf2v-bot check` prints)."""
    catalog = load_catalog()
    for region in ("beijing", "singapore"):
        assert catalog.undocumented_region_values(region) == []
        for spec in catalog.models_in(region):
            for path in spec.region_value_paths(region):
                sourced = spec.provenance(path)
                assert sourced is not None or spec.is_unconfirmed(path), (region, spec.key, path)
                if sourced is not None:
                    url, day = sourced
                    assert url.startswith("https://") and day.year >= 2026
    # One without either is reported.
    data = copy.deepcopy(DEFAULT_CATALOG)
    data["models"]["wan2.7-i2v"]["unconfirmed"].remove("limits")
    assert load_catalog_data(data).undocumented_region_values("beijing") == ["wan2.7-i2v.limits.beijing"]


def load_catalog_data(data: dict[str, object]) -> Catalog:
    return parse_catalog(data)


def test_unconfirmed_in_a_region_leaves_out_other_regions_and_models_not_offered() -> None:
    catalog = load_catalog()
    singapore = catalog.unconfirmed("singapore")
    assert (
        "wan2.2-kf2v-flash.region_prices.singapore: no Singapore figure found: Beijing's seed figures (may bill more)"
        in singapore
    )
    assert not any(line.startswith("wan2.7-i2v.") for line in singapore)  # not offered there
    assert not any("beijing" in line.split(":")[0] for line in singapore)
    assert not any(".templates." in line for line in singapore)  # effects are Beijing-only
    assert not any(".price_per_second" in line for line in singapore)  # Singapore has its own price entries
    beijing = catalog.unconfirmed("beijing")
    assert any(line.startswith("wan2.7-i2v.price_per_second") for line in beijing)
    assert not any("singapore" in line.split(":")[0] for line in beijing)


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
    assert plus.sources["templates.hanfu-1"] == plus.sources["template_names.hanfu-1"]
    assert "wanx-video-sepical-effects" in plus.sources["templates.hanfu-1"]
    # `flying` (魔法悬浮) is a first-frame image-to-video effect of another API: not a kf2v template.
    assert "flying" not in plus.templates and "flying" not in plus.template_names
    assert plus.templates_in("beijing") == plus.templates and plus.templates_in("singapore") == ()


def test_unconfirmed_lists_each_unsourced_value_with_its_reason() -> None:
    lines = load_catalog().unconfirmed()
    assert any(line.startswith("wan2.7-i2v.price_per_second: third-party") for line in lines)
    assert any(line.startswith("wanx2.1-kf2v-plus.templates.mech1: only third-party") for line in lines)
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
        (lambda m: m.update(aliases={"mars": ["x"]}), "aliases for region(s) it has no name in: mars"),
        (lambda m: m["media_transport"].update(beijing="ftp"), "media_transport.beijing"),
        (lambda m: m.update(aliases={"beijing": ["wan2.2-kf2v-flash"]}), "names both"),
        (lambda m: m["sources"].update(limits={"url": "https://x", "confirmed_on": "someday"}), "confirmed_on"),
    ],
)
def test_a_broken_override_is_refused_with_the_field_named(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(DEFAULT_CATALOG)
    change(data["models"]["wan2.7-i2v"])
    with pytest.raises(CatalogError) as refused:
        load_catalog(_write(tmp_path, data))
    assert named in str(refused.value)
