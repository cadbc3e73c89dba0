"""One module per provider API family, registered here by the name the catalog's `family` field uses.

A family module (`kf2v.py`, `media.py`) holds everything that differs between request shapes of the provider's
video API: the endpoint and `input` object (`build_input`), the family's own request checks, which media go how
(`media_to_send`: inline data URIs or temporary uploads, and their file names), where the bill is read
(`billed_seconds`) and what a catalog entry of the family must respect (`catalog_problem`). The catalog, the
request builder (`bot.dashscope.models`) and the worker look the family up here instead of branching on its name.

Adding a family: a new module implementing `ApiFamily` (see `base.py`), one line below, and its models in the
catalog data. Families never import each other (import-linter keeps them independent).
"""

from __future__ import annotations

from bot.dashscope.families import kf2v, media
from bot.dashscope.families.base import ApiFamily

FAMILIES: dict[str, ApiFamily] = {family.name: family for family in (kf2v.FAMILY, media.FAMILY)}


def family_named(name: str) -> ApiFamily:
    """The registered family called `name`; `KeyError` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown API family {name!r} (known: {', '.join(FAMILIES)})") from None
