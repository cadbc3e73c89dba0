"""The spend picture through Discord (issue 19): an owner's /kf2v-admin report attaches the PNG chart and the CSV
(every guild, or one); a manager's /kf2v-quota attaches the guild's; a member's /kf2v-quota attaches none."""

from __future__ import annotations

import csv
import io

from PIL import Image

from sandbox.discord_emu import MessageRecord
from tests.support.world import ALICE, MANAGER, OWNER, World, delivered


def attachments(record: MessageRecord | None) -> dict[str, bytes]:
    assert record is not None
    return {a.filename.rsplit(".", 1)[-1]: a.data for a in record.attachments}


async def test_owners_and_managers_get_the_chart_and_csv_members_do_not(world: World) -> None:
    await world.reply(await world.kf2v(ALICE, "a report's first video"))
    job = await world.latest_job()
    await delivered(world, job.id)
    job = await world.job(job.id)
    day = job.period_day

    report = await world.discord.run_command(world.guild, world.channel, OWNER, "kf2v-admin", subcommand="report")
    files = attachments(await report.wait_done(20))
    assert Image.open(io.BytesIO(files["png"])).size == (1500, 900)  # every guild: with the top guilds column
    rows = list(csv.DictReader(io.StringIO(files["csv"].decode())))
    assert [(r["day"], r["guild_id"], r["model"], r["delivered"]) for r in rows] == [
        (day, str(world.guild), job.request.model, "1")
    ]
    assert float(rows[0]["spent_cny"]) * 1000 == job.cost_settled > 0

    one = await world.discord.run_command(
        world.guild, world.channel, OWNER, "kf2v-admin", {"guild_id": str(world.guild)}, subcommand="report"
    )
    assert Image.open(io.BytesIO(attachments(await one.wait_done(20))["png"])).size == (1200, 900)

    managers = await world.discord.run_command(world.guild, world.channel, MANAGER, "kf2v-quota")
    seen = attachments(await managers.wait_done(20))
    assert set(seen) == {"png", "csv"} and seen["png"].startswith(b"\x89PNG")
    members = await world.discord.run_command(world.guild, world.channel, ALICE, "kf2v-quota")
    assert attachments(await members.wait_done(20)) == {}
