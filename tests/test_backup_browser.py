"""Real Chromium on a phone-sized screen: the owner logs in, opens the Backup page and the
emergency kit, and downloads a full backup. Screenshots go to tests/artifacts/web/
(backup-page.png, backup-kit.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.backup.layout import Layout
from appliance.backup.restore import verify
from tests.plugins.web import OWNER, OWNER_PASSWORD, complete_setup
from tests.test_web_browser import browser_page, shot

pytestmark = [pytest.mark.browser]
__all__ = ["browser_page"]


async def test_emergency_kit_and_full_backup_in_chromium(
    web_factory: Any, browser_page: Any, tmp_path: Path
) -> None:
    page = browser_page
    c = await web_factory(data_dir=tmp_path, homeserver_kind="synapse")
    complete_setup(c.settings)
    base = str(c.client.make_url("/")).rstrip("/")
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(OWNER)
    await page.get_by_label("Password").fill(OWNER_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(base + "/")
    await page.goto(base + "/backup")
    await shot(page, "backup-page")
    await page.get_by_role("link", name="emergency kit").click()
    await page.wait_for_url("**/backup/kit")
    key = (await page.locator("#kit-key").inner_text()).strip()
    assert key.startswith("AGE-SECRET-KEY-1 ")
    assert await page.get_by_text("If this key is lost, the backups are lost").is_visible()
    await shot(page, "backup-kit")
    await page.goto(base + "/backup")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download full backup").click()
    download = await info.value
    target = tmp_path / "from-browser.tbbackup"
    await download.save_as(str(target))
    assert verify(target, Layout(tmp_path, "synapse"), key) >= 3
    assert page.problems == []


async def test_restore_from_a_backup_in_chromium(
    web_factory: Any, browser_page: Any, tmp_path: Path
) -> None:
    import asyncio

    from tests.test_backup_wizard import old_box_on_a_stick

    page = browser_page
    stick, kit = await asyncio.to_thread(old_box_on_a_stick, tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    c = await web_factory(state_dir=fresh / "web", data_dir=fresh, homeserver_kind="synapse",
                          backup_sources=(stick,))
    base = str(c.client.make_url("/")).rstrip("/")
    await page.goto(base + "/")
    await page.wait_for_url("**/setup/1")
    await page.get_by_role("link", name="Restore from a backup").click()
    await page.wait_for_url("**/restore")
    assert await page.get_by_label("textbridge-20261201-033000.tbbackup", exact=False).is_checked()
    await shot(page, "restore-1-choose")
    await page.get_by_label("Key or passphrase").fill("AGE-SECRET-KEY-1 WRONG")
    await page.get_by_role("button", name="Restore").click()
    await page.locator("#e-key").wait_for()
    assert "mistyped" in await page.locator("#e-key").inner_text()
    await shot(page, "restore-2-wrong-key")
    await page.get_by_label("Key or passphrase").fill(kit)
    await page.get_by_role("button", name="Restore").click()
    await page.get_by_text("The backup is being restored").wait_for()
    await shot(page, "restore-3-restoring")
    assert (fresh / ".restore-pending.json").exists()
    assert page.problems == []
