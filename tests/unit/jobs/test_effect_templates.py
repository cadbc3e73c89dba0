"""Effect templates are data (issue 12): a template the catalog lists but the provider refuses is named to the user."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.catalog import DEFAULT_CATALOG
from bot.errors import InvalidInput
from bot.i18n import t
from bot.jobs.models import ChargeState, JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.waiting import wait_until

PLUS = "wanx2.1-kf2v-plus"


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(pending_s=(0.05, 0.1), running_s=(0.1, 0.2)))
    await emu.start()
    yield emu
    await emu.stop()


async def test_a_template_the_provider_refuses_fails_released_with_its_name(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # An operator's override adds an effect name the provider (here: the emulator, which knows only the
    # built-in names) does not accept.
    catalog = copy.deepcopy(DEFAULT_CATALOG)
    catalog["models"][PLUS]["templates"] = [*catalog["models"][PLUS]["templates"], "not-a-real-effect"]
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog), encoding="utf-8")
    services, recorder = await start_engine(tmp_path / "data", emulator.base_url, KF2V_CATALOG_FILE=str(catalog_file))
    try:
        job = await services.jobs.submit(
            draft(model=PLUS, resolution="720P", template="not-a-real-effect", prompt="", last_image=None)
        )
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        failed = await services.store.get(job.id)
        assert failed is not None and failed.state is JobState.FAILED
        assert failed.error_key == "job.failed.template_refused"
        assert failed.error_code == "InvalidParameter"
        assert failed.charge_state is ChargeState.RELEASED
        await wait_until(lambda: len(recorder.failed) >= 1, within=30)  # told just after the final row is written
        assert recorder.failed == [(job.id, "job.failed.template_refused")]
        assert emulator.stats()["submissions_accepted"] == 0
        for locale in ("en-US", "zh-CN"):
            assert "`not-a-real-effect`" in t(locale, failed.error_key, template=failed.request.template)
    finally:
        await services.stop()


async def test_kf2vs_effect_is_made_and_the_first_frame_familys_flying_is_not_offered(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    """唐韵翩然 is `hanfu-1` for kf2v (effects page); `flying` (魔法悬浮) belongs to the first-frame image-to-video
    family: the bot refuses it under kf2v before anything is stored or sent."""
    services, recorder = await start_engine(tmp_path / "data", emulator.base_url)
    try:
        with pytest.raises(InvalidInput) as refused:
            await services.jobs.submit(
                draft(model=PLUS, resolution="720P", template="flying", prompt="", last_image=None)
            )
        assert refused.value.key == "input.template_unknown"
        job = await services.jobs.submit(
            draft(model=PLUS, resolution="720P", template="hanfu-1", prompt="", last_image=None)
        )
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        made = await services.store.get(job.id)
        assert made is not None and made.state is JobState.DELIVERED
        assert [job_id for job_id, _ in recorder.delivered] == [job.id]
        assert emulator.stats()["submissions_accepted"] == 1
    finally:
        await services.stop()
