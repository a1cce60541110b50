"""Real Chromium walks "Connect to my homeserver" on a 360-px phone screen, against a real
Synapse standing in for the family's server (on loopback here; the network-namespace walk
with the registration installed is tests/test_external_homeserver.py). Screenshots go to
tests/artifacts/web/."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from appliance.homeserver.synapse import SynapseServer, free_port
from appliance.web.state import Member, WebState
from tests.plugins.web import OWNER, OWNER_PASSWORD
from tests.test_web_browser import chromium, shot

pytestmark = [pytest.mark.browser, pytest.mark.synapse]


async def test_connect_to_my_homeserver_in_chromium(
    web_factory: Any, synapse: SynapseServer, make_user: Any
) -> None:
    async with chromium(360, 740) as page:
        await _walk(page, web_factory, synapse, make_user)


async def _walk(page: Any, web_factory: Any, synapse: SynapseServer, make_user: Any) -> None:
    anna = await make_user("anna")
    web = await web_factory(appservice_port=free_port())
    state = WebState(web.settings)
    state.save_owner(name="Anna", username=OWNER, mxid="@owner:textbridge.local",
                     password_hash=PasswordHasher().hash(OWNER_PASSWORD))
    state.upsert_member(Member(name="Anna", username=OWNER, mxid="@owner:textbridge.local",
                               owner=True))
    state.mark_done(1)
    base = str(web.client.make_url("/")).rstrip("/")

    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(OWNER)
    await page.get_by_label("Password").fill(OWNER_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.goto(base + "/setup/2")
    await shot(page, "ext-00-server-step")
    await page.get_by_role("link", name="Connect to my homeserver").click()
    await page.wait_for_url("**/setup/2/external")
    await shot(page, "ext-01-connect")

    # A Matrix ID the server does not have: the words appear next to the field.
    await page.get_by_label("Your homeserver's address").fill(synapse.url)
    await page.get_by_label("Your Matrix ID").fill(f"@nobody:{synapse.server_name}")
    await page.get_by_role("button", name="Check and make the registration").click()
    await page.locator("#e-mxid").wait_for()
    assert "has no account" in await page.locator("#e-mxid").inner_text()
    await shot(page, "ext-02-no-such-account")

    await page.get_by_label("Your Matrix ID").fill(anna.mxid)
    await page.get_by_role("button", name="Check and make the registration").click()
    await page.locator("#registration").wait_for()
    text = await page.locator("#registration").inner_text()
    assert "app_service_config_files" in text and "!admin appservices register" in text
    href = await page.get_by_role("link", name="Download the registration").get_attribute("href")
    assert href == "/setup/2/registration.yaml"
    await shot(page, "ext-03-registration")

    # Not installed on the server yet: the link check says what to do.
    await page.get_by_role("button", name="Check the link").click()
    problems = page.locator("#link-problems")
    await problems.wait_for()
    assert "does not know this bridge's registration yet" in await problems.inner_text()
    await shot(page, "ext-04-not-installed")
