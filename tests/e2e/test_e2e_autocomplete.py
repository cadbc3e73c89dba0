"""End to end (issue 18, item 7): model, resolution, duration and template are suggested by autocomplete from
the running catalog, filtered by the model chosen so far, in the member's language; what a member types
anyway is still refused before anything is reserved. Real discord.py against the Discord emulator."""

from __future__ import annotations

from typing import Any

from bot.catalog import ModelSpec
from tests.support import corpus
from tests.support.world import ALICE, World


async def suggestions(
    world: World, command: str, focused: str, typed: str = "", locale: str = "en-US", **filled: Any
) -> list[dict[str, Any]]:
    record = await world.discord.run_autocomplete(
        world.guild, world.channel, ALICE, command, focused, typed, filled, locale=locale
    )
    await record.wait_response(10)
    found = world.discord.autocomplete_choices(record)
    assert found is not None, "answered with something other than suggestions"
    return found


def offered(world: World) -> list[ModelSpec]:
    return world.svc.jobs.models()


def synced_options(world: World, name: str) -> dict[str, dict[str, Any]]:
    [command] = [c for scope in world.discord.commands.values() for (_, n), c in scope.items() if n == name]
    return {o["name"]: o for o in command.get("options") or []}


async def test_the_catalog_options_are_autocompleted_not_fixed_choices(world: World) -> None:
    for command, names in (
        ("kf2v", ("model", "resolution", "duration")),
        ("kf2v-effect", ("model", "template")),
        ("kf2v-story", ("model", "resolution")),
    ):
        options = synced_options(world, command)
        for name in names:
            assert options[name].get("autocomplete") is True, (command, name)
            assert not options[name].get("choices"), (command, name)


async def test_models_are_suggested_with_their_lengths_and_resolutions_the_default_marked(world: World) -> None:
    models = offered(world)
    default = world.svc.catalog.default_model
    found = await suggestions(world, "kf2v", "model")
    assert [c["value"] for c in found] == [m.key for m in models]
    for choice, spec in zip(found, models, strict=True):
        assert choice["name"].startswith(f"{spec.key} · {spec.describe_durations()} · {'/'.join(spec.resolutions)}")
        assert choice["name"].endswith(" (default)") == (spec.key == default)
    # What was typed narrows them; Chinese members read Chinese.
    typed = models[-1].key[:6]
    narrowed = await suggestions(world, "kf2v", "model", typed)
    assert [c["value"] for c in narrowed] == [m.key for m in models if typed in m.key]
    chinese = await suggestions(world, "kf2v", "model", locale="zh-CN")
    assert [c["name"].endswith("(默认)") for c in chinese] == [m.key == default for m in models]


async def test_resolutions_are_the_chosen_models(world: World) -> None:
    models = offered(world)
    assert len({m.resolutions for m in models}) > 1, "the catalog's models differ in resolutions"
    for spec in models:
        found = await suggestions(world, "kf2v", "resolution", model=spec.key)
        assert [c["value"] for c in found] == list(spec.resolutions)
        assert [c["name"] for c in found] == [
            f"{r} (default)" if r == spec.default_resolution else r for r in spec.resolutions
        ]
    # Nothing chosen yet: the default model's; a model not offered here: nothing to suggest.
    default = world.svc.catalog.model(world.svc.catalog.default_model)
    assert [c["value"] for c in await suggestions(world, "kf2v", "resolution")] == list(default.resolutions)
    assert await suggestions(world, "kf2v", "resolution", model="no-such-model") == []
    story = await suggestions(world, "kf2v-story", "resolution", model=models[-1].key)
    assert [c["value"] for c in story] == list(models[-1].resolutions)


async def test_durations_are_the_chosen_models_in_its_range(world: World) -> None:
    ranged = [m for m in offered(world) if not m.fixed_duration]
    fixed = [m for m in offered(world) if m.fixed_duration]
    assert ranged and fixed, "the catalog has a model with a range and one with a single length"
    spec = ranged[0]
    low, high = spec.duration_range
    found = await suggestions(world, "kf2v", "duration", model=spec.key)
    assert [c["value"] for c in found] == list(range(low, high + 1))
    assert f"{spec.default_duration} s (default)" in [c["name"] for c in found]
    typed = await suggestions(world, "kf2v", "duration", "1", model=spec.key)
    assert [c["value"] for c in typed] == [s for s in range(low, high + 1) if str(s).startswith("1")]
    chinese = await suggestions(world, "kf2v", "duration", locale="zh-CN", model=spec.key)
    assert f"{low} 秒" in [c["name"] for c in chinese]
    only = await suggestions(world, "kf2v", "duration", model=fixed[0].key)
    assert [c["value"] for c in only] == [fixed[0].default_duration]


async def test_templates_are_the_chosen_models_with_their_documented_names(world: World) -> None:
    region = world.svc.jobs.region
    with_templates = [m for m in offered(world) if m.templates_in(region)]
    without = [m for m in offered(world) if not m.templates_in(region)]
    assert with_templates and without
    models = await suggestions(world, "kf2v-effect", "model")
    assert [c["value"] for c in models] == [m.key for m in with_templates]
    spec = with_templates[0]
    found = await suggestions(world, "kf2v-effect", "template", model=spec.key)
    assert [c["value"] for c in found] == list(spec.templates_in(region))
    for choice in found:
        documented = spec.template_names.get(choice["value"])
        assert choice["name"] == (f"{choice['value']} · {documented}" if documented else choice["value"])
    # The effect's default model when none is chosen yet; none for a model without effects.
    assert [c["value"] for c in await suggestions(world, "kf2v-effect", "template")] == [c["value"] for c in found]
    assert await suggestions(world, "kf2v-effect", "template", model=without[0].key) == []


async def test_a_typed_value_not_offered_is_refused_before_anything_is_reserved(world: World) -> None:
    models = offered(world)
    narrow = min(models, key=lambda m: len(m.resolutions))
    missing = next(r for m in models for r in m.resolutions if r not in narrow.resolutions)
    record = await world.kf2v(model=narrow.key, resolution=missing)
    reply = await world.reply(record)
    assert f"`{narrow.key}` can't make {missing} videos. Choose one of: {', '.join(narrow.resolutions)}." in reply
    ranged = next(m for m in models if not m.fixed_duration)
    record = await world.kf2v(model=ranged.key, duration=ranged.duration_range[1] + 1)
    assert f"{ranged.duration_range[1] + 1} s isn't possible" in await world.reply(record)
    record = await world.kf2v(model="no-such-model")
    assert "Model `no-such-model` isn't available here." in await world.reply(record)
    record = await world.discord.run_command(
        world.guild, world.channel, ALICE, "kf2v-effect", {"template": "no-such-effect"},
        attachments={"image": ("a.png", corpus.good_png(), "image/png")},
    )  # fmt: skip
    assert "There is no effect called `no-such-effect`." in await world.reply(record)
    assert await world.svc.store.all_jobs() == []
    assert world.dashscope.stats()["calls"].get("create", 0) == 0
