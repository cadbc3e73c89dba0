"""The model catalog: which models exist per region, what they accept and what they cost.

Everything here is data (the provider changes names, tiers and prices more often than code), kept in
one place and overridable with a JSON file (`KF2V_CATALOG_FILE`) of the same shape as `DEFAULT_CATALOG`.
Money is counted in integer milli-yuan (1 CNY = 1000) so sums never drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

MILLI_PER_CNY = 1000
VIDEO_SECONDS = 5

DEFAULT_CATALOG: dict[str, Any] = {
    "regions": {
        "beijing": {"base_url": "https://dashscope.aliyuncs.com/api/v1"},
        "singapore": {"base_url": "https://dashscope-intl.aliyuncs.com/api/v1"},
    },
    "models": {
        "wan2.2-kf2v-flash": {
            "provider_names": {"beijing": "wan2.2-kf2v-flash"},
            "resolutions": ["480P", "720P", "1080P"],
            "default_resolution": "720P",
            "price_per_second": {"480P": "0.10", "720P": "0.20", "1080P": "0.48"},
            "templates": [],
            "free_seconds": 50,
            "limits": {"beijing": {"submit_rps": 2, "max_in_flight": 2}},
        },
        "wanx2.1-kf2v-plus": {
            "provider_names": {"beijing": "wanx2.1-kf2v-plus", "singapore": "wan2.1-kf2v-plus"},
            "resolutions": ["720P"],
            "default_resolution": "720P",
            "price_per_second": {"720P": "0.70"},
            "templates": ["hanfu-1", "solaron", "magazine", "mech1", "mech2"],
            "free_seconds": 200,
            "limits": {
                "beijing": {"submit_rps": 2, "max_in_flight": 2},
                "singapore": {"submit_rps": 1, "max_in_flight": 2},
            },
        },
    },
    "default_model": "wan2.2-kf2v-flash",
}


class CatalogError(ValueError):
    """The catalog data (default or override file) is inconsistent."""


@dataclass(frozen=True, slots=True)
class ModelLimits:
    submit_rps: float
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    key: str
    provider_names: dict[str, str]
    resolutions: tuple[str, ...]
    default_resolution: str
    price_per_second_milli: dict[str, int]
    templates: tuple[str, ...]
    free_seconds: int
    limits: dict[str, ModelLimits]

    @property
    def supports_template(self) -> bool:
        return bool(self.templates)

    def cost_milli(self, resolution: str, seconds: float = VIDEO_SECONDS) -> int:
        """Cost of `seconds` of output at `resolution`, rounded up to a whole milli-yuan."""
        per_second = self.price_per_second_milli[resolution]
        return int((Decimal(per_second) * Decimal(str(seconds))).to_integral_value(rounding="ROUND_CEILING"))


@dataclass(frozen=True, slots=True)
class Catalog:
    models: dict[str, ModelSpec]
    region_base_urls: dict[str, str]
    default_model: str

    def model(self, key: str) -> ModelSpec:
        try:
            return self.models[key]
        except KeyError:
            raise CatalogError(f"unknown model {key!r}") from None

    def models_in(self, region: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if region in m.provider_names]

    def provider_name(self, key: str, region: str) -> str:
        spec = self.model(key)
        try:
            return spec.provider_names[region]
        except KeyError:
            raise CatalogError(f"model {key!r} is not offered in region {region!r}") from None

    def key_for_provider_name(self, provider_name: str) -> str | None:
        for spec in self.models.values():
            if provider_name in spec.provider_names.values():
                return spec.key
        return None

    def region_for_base_url(self, base_url: str) -> str | None:
        wanted = base_url.rstrip("/")
        for region, url in self.region_base_urls.items():
            if url.rstrip("/") == wanted:
                return region
        return None

    def limits(self, key: str, region: str) -> ModelLimits:
        spec = self.model(key)
        return spec.limits.get(region) or next(iter(spec.limits.values()))


def _to_milli(value: str | int | float) -> int:
    return int((Decimal(str(value)) * MILLI_PER_CNY).to_integral_value(rounding="ROUND_CEILING"))


def parse_catalog(data: dict[str, Any]) -> Catalog:
    try:
        models: dict[str, ModelSpec] = {}
        for key, raw in data["models"].items():
            resolutions = tuple(raw["resolutions"])
            prices = {res: _to_milli(p) for res, p in raw["price_per_second"].items()}
            missing = [r for r in resolutions if r not in prices]
            if missing:
                raise CatalogError(f"model {key!r} has no price for {', '.join(missing)}")
            if raw["default_resolution"] not in resolutions:
                raise CatalogError(f"model {key!r}: default resolution is not one of its resolutions")
            models[key] = ModelSpec(
                key=key,
                provider_names=dict(raw["provider_names"]),
                resolutions=resolutions,
                default_resolution=raw["default_resolution"],
                price_per_second_milli=prices,
                templates=tuple(raw.get("templates", ())),
                free_seconds=int(raw.get("free_seconds", 0)),
                limits={
                    region: ModelLimits(float(lim["submit_rps"]), int(lim["max_in_flight"]))
                    for region, lim in raw.get("limits", {}).items()
                }
                or {"beijing": ModelLimits(2, 2)},
            )
        regions = {name: str(r["base_url"]) for name, r in data["regions"].items()}
        default_model = str(data.get("default_model") or next(iter(models)))
    except (KeyError, TypeError, AttributeError, StopIteration) as exc:
        raise CatalogError(f"catalog is missing or mistypes a field ({exc})") from exc
    if default_model not in models:
        raise CatalogError(f"default model {default_model!r} is not in the catalog")
    return Catalog(models=models, region_base_urls=regions, default_model=default_model)


def load_catalog(path: Path | None = None) -> Catalog:
    """The built-in catalog, or the override file when one is given."""
    if path is None:
        return parse_catalog(DEFAULT_CATALOG)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from exc
    return parse_catalog(data)


def format_cny(milli: int) -> str:
    """1234 -> '1.23' (display only; rounds half up to the fen)."""
    return str((Decimal(milli) / MILLI_PER_CNY).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP"))
