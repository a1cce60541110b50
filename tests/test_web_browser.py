"""Real Chromium (Debian's, driven by Playwright) walks the whole setup wizard on a 360-px
phone screen against a real Synapse, with the control API on a real socket, a real Store and
the real SMS line on the modem simulator; then the new family member logs into Matrix with
matrix-nio and, through the bridge, gets an SMS from a simulated contact and answers it.

Screenshots of every step go to tests/artifacts/web/.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import nio
import pytest

from appliance.homeserver.synapse import SynapseAdapter
from tests.plugins.bridge import BridgeHomeserver, BridgeStack, eventually, family_config
from tests.plugins.synapse import MatrixUser
from tests.plugins.web import ControlStack

pytestmark = [pytest.mark.browser, pytest.mark.synapse]

ARTIFACTS = Path(__file__).parent / "artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CONTACT = "+4915112345678"
_count = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}b{next(_count)}"


@pytest.fixture
async def browser_page() -> Any:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = await browser.new_context(viewport={"width": 360, "height": 740},
                                            device_scale_factor=1)
        page = await context.new_page()
        page.set_default_timeout(20000)
        problems: list[str] = []
        # CSP violations and script errors show up on the console. Error statuses are
        # expected (a form with mistakes answers 400) and are checked by the test itself.
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.problems = problems  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    # Nothing wider than the phone: no sideways scrolling on a 360-px screen.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"{name}: the page is {width} px wide"
    # Every control has a name a screen reader can say; every page has exactly one h1.
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea, button')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map(e => e.outerHTML)"""
    )
    assert unnamed == [], f"{name}: controls without a label: {unnamed}"
    assert await page.locator("h1").count() == 1, name


async def test_wizard_in_chromium(
    web_factory: Any,
    bridge_synapse: BridgeHomeserver,
    control_stack: ControlStack,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    page = browser_page
    adapter = SynapseAdapter.for_server(bridge_synapse.server)
    c = await web_factory(homeserver=lambda: adapter, control_socket=control_stack.socket)
    base = str(c.client.make_url("/")).rstrip("/")
    owner, member = unique("anna"), unique("ilse")
    owner_password = "a long enough secret"

    # 1: the owner, with a mistake first: the message appears next to the field.
    await page.goto(base + "/")
    assert page.url.endswith("/setup/1")
    await shot(page, "01-owner")
    await page.get_by_label("Your name").fill("Anna <b>Schmidt</b>")
    await page.get_by_label("Username").fill(owner)
    await page.get_by_label("Password", exact=True).fill(owner_password)
    await page.get_by_label("Password again").fill("something else")
    await page.get_by_role("button", name="Create my account").click()
    await page.locator("#e-name").wait_for()
    assert "only letters" in await page.locator("#e-name").inner_text()
    assert "not the same" in await page.locator("#e-password").inner_text()
    await shot(page, "01-owner-errors")
    await page.get_by_label("Your name").fill("Anna Schmidt")
    await page.get_by_label("Password", exact=True).fill(owner_password)
    await page.get_by_label("Password again").fill(owner_password)
    await page.get_by_role("button", name="Create my account").click()

    # 2: the server name.
    await page.wait_for_url("**/setup/2")
    assert adapter.server_name in await page.content()
    await shot(page, "02-server-name")
    await page.get_by_role("button", name="Next").click()

    # 3: the SIM (the simulated modem over a pty) and a test SMS, followed live by the
    # page's script until the network's status report says delivered.
    await page.wait_for_url("**/setup/3")
    await page.get_by_text("unlocked and ready").wait_for()
    assert "Quectel EC25" in await page.content()
    await page.get_by_label("Send to").fill("+49 170 1234567")
    await page.get_by_role("button", name="Send test SMS").click()
    status = page.locator("[data-outbox]")
    await status.get_by_text("Delivered to the phone.").wait_for()
    assert ("+491701234567", "Hello from Textbridge!") in (
        control_stack.sim.network.sent_messages()
    )
    await shot(page, "03-sim-test-sms")
    await page.get_by_role("button", name="Next").click()

    # 4: a family member with a one-time password and the SMS line.
    await page.wait_for_url("**/setup/4")
    await shot(page, "04-family")
    await page.get_by_label("Name", exact=True).fill("Oma Ilse")
    await page.get_by_label("Username").fill(member)
    await page.locator("form[action='/setup/4/add'] input[name=lines][value=modem]").check()
    await page.get_by_role("button", name="Add this person").click()
    await page.wait_for_url(f"**/setup/4/welcome/{member}")
    password = (await page.locator(".secret").inner_text()).strip()
    assert await page.locator("svg[role=img]").count() == 4  # the QR codes
    await shot(page, "04-welcome")
    await page.get_by_role("link", name="Done").click()
    await page.wait_for_url("**/setup/4")
    await page.get_by_role("button", name="Next").click()

    # 5: the secure connection; the install page a phone would open.
    await page.wait_for_url("**/setup/5")
    await shot(page, "05-secure-connection")
    await page.get_by_role("link", name="Android: step by step").click()
    await page.wait_for_url("**/install/android")
    await shot(page, "05-install-android")
    await page.go_back()
    await page.get_by_role("button", name="Next").click()

    # 6: done; then the dashboard.
    await page.wait_for_url("**/setup/6")
    await shot(page, "06-done")
    await page.get_by_role("button", name="Finish").click()
    await page.get_by_role("heading", name="How Textbridge is doing").wait_for()
    await shot(page, "07-dashboard")
    await page.goto(base + "/setup/1")
    assert page.url == base + "/"  # the wizard is closed
    await page.get_by_role("link", name="Family").click()
    await shot(page, "08-family")

    assert page.problems == []  # type: ignore[attr-defined]

    # The new member (and the owner) log into Matrix with the passwords from the pages.
    users = {}
    for user, secret in ((member, password), (owner, owner_password)):
        client = nio.AsyncClient(adapter.url, user)
        try:
            resp = await client.login(secret)
            assert isinstance(resp, nio.LoginResponse), resp
            assert resp.user_id == f"@{user}:{adapter.server_name}"
            users[user] = MatrixUser(resp.user_id, secret, resp.access_token)
        finally:
            await client.close()

    # The bridge, with the line's people as the web wrote them in members.json, carries an
    # SMS from a simulated contact to the new member and her reply back out.
    chosen = json.loads((c.settings.state_dir / "members.json").read_text())
    assert chosen == {"modem": [users[member].mxid]}
    config = family_config(bridge_synapse, users[owner].mxid, users[member].mxid)
    config = replace(config, lines=[replace(config.lines[0], members=chosen["modem"])])
    stack = BridgeStack(hs=bridge_synapse, tmp=tmp_path, config=config, owner=users[owner],
                        member=users[member], outsider=users[member],
                        store=control_stack.store)
    try:
        await stack.start({"modem": control_stack.line})
        await stack.ready()
        control_stack.sim.network.deliver(CONTACT, "Hallo Oma, wie geht's?")
        room = await stack.portal_room(CONTACT, timeout=30)
        ilse = stack.client(users[member])
        await ilse.join(room)
        ghost = stack.ghost(CONTACT)
        texts = await ilse.wait_for(
            room, lambda e: e["sender"] == ghost and e["content"].get("msgtype") == "m.text",
            timeout=30,
        )
        assert texts[0]["content"]["body"] == "Hallo Oma, wie geht's?"
        await ilse.say(room, "Danke, gut!")

        async def replied() -> bool:
            return any(dest == CONTACT and text.endswith("Danke, gut!")
                       for dest, text in control_stack.sim.network.sent_messages())

        await eventually(replied, timeout=30, what="the reply at the simulated network")
    finally:
        await stack.stop()
        for client in stack.clients:
            await client.close()


async def test_a_test_sms_without_a_delivery_report_says_so_after_a_minute(
    web_factory: Any,
    bridge_synapse: BridgeHomeserver,
    control_stack: ControlStack,
    browser_page: Any,
) -> None:
    """Issue 18: with a network that sends no report, step 3 waited in silence for good."""
    page = browser_page
    control_stack.sim.network.auto_report = None  # this network sends no report
    adapter = SynapseAdapter.for_server(bridge_synapse.server)
    c = await web_factory(homeserver=lambda: adapter, control_socket=control_stack.socket)
    base = str(c.client.make_url("/")).rstrip("/")
    # The page's minute passes on the browser's clock, not the test's.
    await page.clock.install()
    await page.goto(base + "/setup/1")
    await page.get_by_label("Your name").fill("Anna Schmidt")
    await page.get_by_label("Username").fill(unique("anna"))
    await page.get_by_label("Password", exact=True).fill("a long enough secret")
    await page.get_by_label("Password again").fill("a long enough secret")
    await page.get_by_role("button", name="Create my account").click()
    await page.wait_for_url("**/setup/2")
    await page.get_by_role("button", name="Next").click()
    await page.wait_for_url("**/setup/3")
    await page.get_by_label("Send to").fill("+49 170 1234567")
    await page.get_by_role("button", name="Send test SMS").click()
    status = page.locator("[data-outbox]")
    await status.get_by_text("Waiting for the delivery report").wait_for()
    await page.clock.fast_forward("00:30")
    await status.get_by_text("Waiting for the delivery report").wait_for()
    await page.clock.fast_forward("00:35")
    await status.get_by_text("no delivery report after a minute").wait_for()
    await shot(page, "03-sim-test-sms-no-report")
    # A late report still turns it into "delivered".
    (part,) = control_stack.sim.network.sent
    control_stack.sim.network.report(part.reference, 0x00)
    await page.clock.fast_forward("00:05")
    await status.get_by_text("Delivered to the phone.").wait_for()
    assert page.problems == []  # type: ignore[attr-defined]
