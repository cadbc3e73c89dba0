"""Security, end to end through the real bot and both emulators.

Already covered elsewhere (not repeated here): a guild manager shown /kf2v-admin by a server override is
refused `budget` (tests/e2e/test_e2e_discord.py), the real Cancel button pressed by someone else.

Here: every other owner subcommand refused to a manager and a member shown the command; no way for a
manager to raise the guild's budget; crafted button ids (cancel / regenerate someone else's job, a job of
another guild, a job that doesn't exist); a channel that is not allowed; the per-user rate limit; secrets
after a run with faults (logs in text and JSON, everything Discord recorded, the database with its WAL,
every file of the data dir); owner-only files; SQL, markdown and mention payloads stored verbatim and
posted without pinging anyone but the requester.

Each test prints one `SECURITY ...` line (pytest -s) for the table in docs/reliability.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import register_secrets
from bot.jobs.models import JobState
from bot.logs import setup_logging
from bot.settings import load_settings
from sandbox.dashscope_emulator import EmulatorConfig
from sandbox.discord_emu.model import DEFAULT_BOT_PERMISSIONS, Perm
from tests.support import corpus
from tests.support.reliability import (
    ALICE,
    BOB,
    FAKE_API_KEY,
    FAKE_BOT_TOKEN,
    FINAL,
    MANAGER,
    OWNER,
    discord_blobs,
    files_under,
    find_secrets,
    make_secret_world,
    mode,
)
from tests.support.waiting import wait_until
from tests.support.world import FAST, World, close_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_secret_world(tmp_path, guilds=2)
    yield w
    await close_world(w)


async def nothing_spent(world: World) -> None:
    assert await world.svc.store.all_jobs() == []
    assert await world.svc.store.ledger() == []
    assert world.dashscope.stats()["calls"]["create"] == 0
    assert not any((world.tmp / "data" / "media" / "frames").rglob("*.*"))


# Every /kf2v-admin subcommand the bot registers, as (group, subcommand). The list itself comes from the
# command tree Discord received (a new subcommand is tried without touching this test); this count keeps the
# README's refusal figure honest (two people refused each subcommand).
ADMIN_SUBCOMMANDS = 9


def admin_subcommands(world: World) -> list[tuple[str | None, str]]:
    """The /kf2v-admin subcommands (and groups) in the tree the bot synced, in their order."""
    synced = [c for scope in world.discord.commands.values() for (_, name), c in scope.items() if name == "kf2v-admin"]
    assert len(synced) == 1, f"{len(synced)} /kf2v-admin commands synced"
    found: list[tuple[str | None, str]] = []
    for option in synced[0].get("options") or []:
        if option["type"] == 1:  # SUB_COMMAND
            found.append((None, option["name"]))
        elif option["type"] == 2:  # SUB_COMMAND_GROUP
            found += [(option["name"], sub["name"]) for sub in option.get("options") or [] if sub["type"] == 1]
    return found


def admin_options(world: World, group: str | None, sub: str, values: dict[str, Any]) -> dict[str, Any]:
    """Every option of the subcommand given a value that would act if the owner check were missing: the
    values by option name; a required option without one fails the test (add it to `values`)."""
    [command] = [c for scope in world.discord.commands.values() for (_, n), c in scope.items() if n == "kf2v-admin"]
    definitions = command.get("options") or []
    if group is not None:
        definitions = next(o for o in definitions if o["name"] == group).get("options") or []
    leaf = next(o for o in definitions if o["name"] == sub).get("options") or []
    options: dict[str, Any] = {}
    for option in leaf:
        name = option["name"]
        if name in values:
            options[name] = values[name]
        else:
            assert not option.get("required"), f"/kf2v-admin {sub}: no test value for its required option {name!r}"
    return options


async def test_every_owner_subcommand_is_refused_to_managers_and_members(world: World) -> None:
    await world.svc.jobs.pause("held for the test")  # a queued job to try to cancel
    record = await world.kf2v()
    assert "queued" in await world.reply(record)
    job = await world.latest_job()
    values: dict[str, Any] = {
        "job_id": job.id, "user_id": str(job.user_id), "guild_id": str(world.guild), "reason": "x",
        "daily": "99999", "monthly": "99999",
    }  # fmt: skip
    subcommands = admin_subcommands(world)
    names = {sub for _, sub in subcommands}
    assert {"budget", "cancel", "pause", "resume", "redeliver", "forget", "report"} <= names, names
    assert len(subcommands) == ADMIN_SUBCOMMANDS, f"/kf2v-admin has {sorted(names)}: update the count and README"
    refused = 0
    for user in (MANAGER, BOB):
        for group, sub in subcommands:
            attempt = await world.discord.run_command(
                world.guild, world.channel, user, "kf2v-admin", admin_options(world, group, sub, values),
                subcommand=sub, group=group, ignore_default_permissions=True,
            )  # fmt: skip
            answer = await world.reply(attempt)
            assert "Only the bot's owners" in answer, (user, sub)
            assert not any(m.attachments for m in attempt.messages), (user, sub)  # no report's chart or CSV
            refused += 1
    assert refused == 2 * ADMIN_SUBCOMMANDS
    assert world.svc.jobs.paused  # resume was refused
    assert (await world.job(job.id)).state is JobState.QUEUED  # cancel was refused
    policy = await world.svc.budget.policy(world.guild)
    assert policy.daily_budget == world.svc.settings.default_daily_budget_milli  # budget was refused
    print(f"\nSECURITY owner-commands subcommands={len(subcommands)} refused={refused}")


async def test_a_manager_cannot_raise_the_guild_budget(world: World) -> None:
    synced = {key: command for scope in world.discord.commands.values() for key, command in scope.items()}
    view = next(c for (_, name), c in synced.items() if name == "kf2v-quota")
    assert not view.get("options") and view.get("default_member_permissions") is None  # every member's view
    quota = next(c for (_, name), c in synced.items() if name == "kf2v-quota-set")
    assert int(quota["default_member_permissions"]) == Perm.MANAGE_GUILD
    options = {o["name"] for o in quota.get("options") or []}
    assert options == {"member_daily_videos", "user_queue_limit", "allow_channel", "disallow_channel",
                       "allow_everywhere"}, options  # fmt: skip
    with pytest.raises(ValueError, match="unknown options"):  # Discord would not even send it
        await world.discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota-set", {"daily_budget": 1000})
    # The owners set 1 CNY a day; the manager opens every member limit wide: the budget still holds.
    await world.svc.budget.set_budgets(world.guild, daily=1000, monthly=None)
    wide = await world.discord.run_command(
        world.guild, world.channel, MANAGER, "kf2v-quota-set", {"member_daily_videos": 1000, "user_queue_limit": 100}
    )
    await world.reply(wide)
    before = await world.svc.budget.policy(world.guild)
    # The command that does set budgets, shown to the manager by a server override and sent through Discord.
    admin = await world.discord.run_command(
        world.guild, world.channel, MANAGER, "kf2v-admin", {"daily": "500", "monthly": "99999"},
        subcommand="budget", ignore_default_permissions=True,
    )  # fmt: skip
    assert "Only the bot's owners" in await world.reply(admin)
    after = await world.svc.budget.policy(world.guild)
    assert after == before and after.daily_budget == 1000
    texts = [await world.reply(await world.kf2v(user=MANAGER, resolution="480P")) for _ in range(3)]
    assert ["queued" in t for t in texts] == [True, True, False] and "¥0.00 of ¥1.00 left" in texts[2]
    assert (await world.svc.budget.policy(world.guild)).daily_budget == 1000
    print("\nSECURITY manager-budget no_budget_option=1 admin_refused=1 budget_held=1")


async def test_crafted_button_ids_cannot_touch_someone_elses_job(world: World) -> None:
    discord = world.discord
    await world.svc.jobs.pause("hold everything in the queue")
    await world.reply(await world.kf2v(user=ALICE, prompt="alice's video"))
    victim = await world.latest_job()
    await world.reply(await world.kf2v(user=BOB, prompt="bob's own video"))
    own = await world.latest_job()
    assert own.status_message_id is not None
    # Bob is a manager of the other guild: his rights there must not reach a job of this guild.
    other_guild, other_channel = world.extra["guild1"], world.extra["channel1"]
    discord.set_member_permissions(other_guild, BOB, manage_guild=True)
    elsewhere = await discord.run_command(
        other_guild, other_channel, BOB, "kf2v", {"prompt": "bob elsewhere"},
        attachments={"first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                     "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png")},
    )  # fmt: skip
    assert "queued" in await world.reply(elsewhere)
    foreign = await world.latest_job()
    assert foreign.guild_id == other_guild and foreign.status_message_id is not None

    def forge(message_id: int, *custom_ids: str) -> None:
        """Bob's client sends custom ids of his choosing on a message he can click."""
        message = discord.message(message_id)
        assert message is not None
        buttons = [{"type": 2, "style": 2, "label": "x", "custom_id": c} for c in custom_ids]
        message.components = [{"type": 1, "components": buttons}]

    jobs_before = len(await world.svc.store.all_jobs())
    forged = [f"kf2v:cancel:{victim.id}", f"kf2v:regen:{victim.id}", "kf2v:cancel:987654321", "kf2v:regen:987654321"]
    forge(own.status_message_id, *forged)
    forge(foreign.status_message_id, *forged[:2])
    answers = []
    for message_id, custom_id in [(own.status_message_id, c) for c in forged] + [
        (foreign.status_message_id, c) for c in forged[:2]
    ]:
        press = await discord.press_button(message_id, custom_id, BOB)
        answers.append(await world.reply(press))
    assert sum("belongs to someone else" in a for a in answers) == 4, answers
    assert sum("doesn't exist" in a for a in answers) == 2, answers
    victim = await world.job(victim.id)
    assert victim.state is JobState.QUEUED and not victim.cancel_requested
    assert len(await world.svc.store.all_jobs()) == jobs_before  # no regeneration on anyone's budget
    print(f"\nSECURITY crafted-buttons refused={len(answers)}")


async def test_a_channel_that_is_not_allowed_is_refused(world: World) -> None:
    allowed = world.discord.add_text_channel(world.guild, "video-requests")
    setup = await world.discord.run_command(
        world.guild, world.channel, MANAGER, "kf2v-quota-set", {"allow_channel": allowed}
    )
    await world.reply(setup)
    assert (await world.svc.budget.policy(world.guild)).allowed_channels == (allowed,)
    refused = await world.kf2v(user=ALICE)
    assert f"can't be requested in this channel. Use one of: <#{allowed}>" in await world.reply(refused)
    effect = await world.discord.run_command(
        world.guild, world.channel, ALICE, "kf2v-effect", {"template": "hanfu-1"},
        attachments={"image": ("a.png", corpus.good_png(), "image/png")},
    )  # fmt: skip
    assert "can't be requested in this channel" in await world.reply(effect)
    await nothing_spent(world)
    accepted = await world.kf2v(user=ALICE, channel=allowed)
    assert "queued" in await world.reply(accepted)
    print("\nSECURITY channel-not-allowed refused=2 allowed_channel_works=1")


async def test_per_user_rate_limit_refuses_a_flood(tmp_path: Path) -> None:
    world = await make_secret_world(tmp_path, KF2V_USER_COMMANDS_PER_MINUTE=3)
    try:
        await world.svc.jobs.pause("count only")
        answers = [await world.reply(await world.kf2v(user=ALICE, prompt=f"flood {i}")) for i in range(8)]
        accepted = [a for a in answers if "queued" in a]
        slowed = [a for a in answers if "Slow down: you can send another request <t:" in a]
        assert (len(accepted), len(slowed)) == (3, 5), answers
        jobs = await world.svc.store.all_jobs()
        assert len(jobs) == 3 and {j.user_id for j in jobs} == {ALICE}
        # Another member is not slowed down by Alice's flood.
        assert "queued" in await world.reply(await world.kf2v(user=BOB))
        await world.svc.jobs.resume()
        ids = [j.id for j in await world.svc.store.all_jobs()]

        async def done() -> bool:
            states = [(await world.job(i)).state for i in ids]
            return all(s in FINAL for s in states)

        await wait_until(done, within=30)
        assert world.dashscope.stats()["submissions_accepted"] == 4  # the provider saw no flood either
        # Within the same minute, the Regenerate button counts against Alice's limit too.
        first = await world.job(ids[0])

        async def regen_shown() -> bool:
            message = world.discord.message(first.status_message_id or 0)
            return message is not None and f"kf2v:regen:{first.id}" in message.custom_ids()

        await wait_until(regen_shown, within=10)
        regen = await world.discord.press_button(first.status_message_id or 0, f"kf2v:regen:{first.id}", ALICE)
        assert "Slow down" in await world.reply(regen)
        assert len(await world.svc.store.all_jobs()) == 4
    finally:
        await close_world(world)
    print(f"\nSECURITY rate-limit flood=8 accepted=3 refused={len(slowed) + 1}")


async def test_secrets_nowhere_after_a_run_with_faults_and_files_owner_only(tmp_path: Path) -> None:
    text_log, json_log = tmp_path / "bot.log", tmp_path / "bot.jsonl"
    root = logging.getLogger()
    old_level = root.level
    register_secrets(load_settings(_env_file=None, DISCORD_TOKEN=FAKE_BOT_TOKEN, DASHSCOPE_API_KEY=FAKE_API_KEY))
    with text_log.open("w") as text_stream, json_log.open("w") as json_stream:
        setup_logging("DEBUG", "text", stream=text_stream)
        world = await make_secret_world(tmp_path, EmulatorConfig(seed=13, **FAST), KF2V_OWNER_IDS=str(OWNER))  # type: ignore[arg-type]
        try:
            dashscope, discord = world.dashscope, world.discord
            everywhere = frozenset({"create", "get", "list", "cancel", "video"})
            dashscope.update(error_rate=0.3, drop_rate=0.1, malformed_rate=0.1, latency_s=0.02, routes=everywhere)
            discord.inject_rest_errors(503, 1, "/channels/", method="POST")
            discord.inject_rest_errors(429, 2, "/channels/", retry_after=0.1)
            first = [await world.reply(await world.kf2v(prompt=f"secret run {i}")) for i in range(2)]
            # The key stops working for a moment: the account is paused and the owners are alerted.
            dashscope.update(api_key="sk-someone-else-entirely")
            setup_logging("INFO", "json", stream=json_stream)
            more = [await world.reply(await world.kf2v(user=BOB, prompt=f"secret run {i}")) for i in range(2, 4)]
            assert all("queued" in a for a in first + more)

            def paused() -> bool:
                return bool(world.svc.scheduler.limits.paused())

            await wait_until(paused, within=20)
            dashscope.update(api_key=FAKE_API_KEY, error_rate=0.0, drop_rate=0.0, malformed_rate=0.0)
            resume = await discord.run_command(world.guild, world.channel, OWNER, "kf2v-admin", subcommand="resume")
            assert "resumed" in await world.reply(resume)
            ids = [j.id for j in await world.svc.store.all_jobs()]

            async def done() -> bool:
                states = [(await world.job(i)).state for i in ids]
                return all(s in FINAL for s in states)

            await wait_until(done, within=60)
            data = tmp_path / "data"
            live = list(files_under(data))  # the bot still runs: the WAL and shared-memory files exist
            assert any(p.endswith("-wal") for p, _ in live)
            modes = {p: mode(Path(p)) for p, _ in live}
            dirs = {str(d): mode(d) for d in [data, *(d for d in data.rglob("*") if d.is_dir())]}
            interaction_tokens = [i.token.encode() for i in discord.interactions]
        finally:
            await close_world(world)
            for handler in [h for h in root.handlers if getattr(h, "_kf2v", False)]:
                root.removeHandler(handler)
                handler.close()
            root.setLevel(old_level)
    blobs = [
        ("text log", text_log.read_bytes()),
        ("json log", json_log.read_bytes()),
        *discord_blobs(discord),
        *live,
        *files_under(data),
    ]
    assert text_log.stat().st_size > 10_000 and json_log.stat().st_size > 1_000  # the logs did record the run
    assert b"owner alert" in json_log.read_bytes() and b"InvalidApiKey" in json_log.read_bytes()
    assert find_secrets(blobs) == []
    # Interaction tokens (15 minutes of posting as the bot) stay out of the logs too, even at DEBUG.
    logs = text_log.read_bytes() + json_log.read_bytes()
    assert interaction_tokens and not [t for t in interaction_tokens if t in logs]
    assert dirs[str(data)] == 0o700 and all(m == 0o700 for m in dirs.values()), dirs
    db = data / "kf2v.sqlite3"
    assert modes[str(db)] == 0o600
    assert {p: m for p, m in modes.items() if m != 0o600} == {}, "files readable by others"
    print(
        f"\nSECURITY secrets places_searched={len(blobs)} bytes={sum(len(b) for _, b in blobs)} found=0 "
        f"files_owner_only={len(modes)} dirs_owner_only={len(dirs)}"
    )


async def test_sql_markdown_and_mention_payloads_are_verbatim_and_ping_nobody(tmp_path: Path) -> None:
    # The bot may mention @everyone in this guild: only its allowed_mentions stand between a prompt and a ping.
    world = await make_secret_world(tmp_path, bot_permissions=DEFAULT_BOT_PERMISSIONS | Perm.MENTION_EVERYONE)
    try:
        guild = world.discord.guild(world.guild)
        role = guild.manager_role_id
        prompt = (
            f"'); DROP TABLE jobs; -- \" OR 1=1 -- **bold** __under__ `code` ||spoiler|| [link](http://x) "
            f"@everyone @here <@&{role}> <@{BOB}> <@!{MANAGER}> <#{world.channel}> ```block```"
        )
        record = await world.kf2v(user=ALICE, prompt=prompt)
        assert "queued" in await world.reply(record)
        failing = await world.kf2v(user=ALICE, prompt=prompt + " FAIL_CONTENT")
        await world.reply(failing)
        ids = [j.id for j in await world.svc.store.all_jobs()]

        async def done() -> bool:
            states = [(await world.job(i)).state for i in ids]
            return all(s in FINAL for s in states)

        await wait_until(done, within=30)
        jobs = [await world.job(i) for i in ids]
        stored = [j.request.prompt for j in jobs]
        assert stored == [prompt, prompt + " FAIL_CONTENT"]  # stored verbatim
        assert [j.state for j in jobs] == [JobState.DELIVERED, JobState.FAILED]
        status = world.discord.message(jobs[0].status_message_id or 0)
        assert status is not None and status.embeds[0]["description"] == prompt  # shown verbatim
        posted = [m for m in world.discord.all_messages() if not m.ephemeral]
        assert len(posted) >= 4
        pings = []
        for message in posted:
            allowed = message.allowed_mentions
            assert allowed is not None, message  # every post says who may be pinged
            assert allowed.get("parse") in ([], None) and not allowed.get("roles"), allowed
            assert {int(u) for u in allowed.get("users") or []} <= {ALICE}, allowed
            assert not message.mention_everyone and set(message.mentions) <= {ALICE}, message
            pings += message.mentions
        assert pings.count(ALICE) == 2  # the requester, once for the video and once for the failure
        rows = await world.svc.store.database.fetch_all("SELECT COUNT(*) FROM jobs")
        assert next(iter(rows))[0] == 2  # the SQL in the prompt was only ever data
    finally:
        await close_world(world)
    print(f"\nSECURITY payloads verbatim=2 posts_checked={len(posted)} everyone_pings=0 foreign_pings=0")


def test_interaction_tokens_are_masked_in_debug_lines() -> None:
    """discord.py logs webhook URLs and gateway payloads at DEBUG; both carry interaction tokens."""
    from bot.logs import REDACTED, redact

    token = "aW50ZXJhY3Rpb246MTU3NTI0ODA1OTI5MjU4MTg5MDpNTmJVMVNmX05uODhF"
    lines = [
        f"Webhook ID 1 with POST http://127.0.0.1:1/api/v10/webhooks/1300000000000000001/{token} has returned 200",
        f"POST http://127.0.0.1:1/api/v10/interactions/1575248059514880002/{token}/callback has returned 204",
        f"WebSocket Event: {{'op': 0, 'd': {{'id': '1', 'token': '{token}', 'version': 1}}}}",
        f'{{"type": 2, "token": "{token}"}}',
    ]
    for line in lines:
        assert token not in redact(line) and REDACTED in redact(line), line
    assert redact("/webhooks/123/messages/@original") == "/webhooks/123/messages/@original"
