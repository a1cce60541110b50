"""Real Chromium (Debian's, driven by Playwright) walks the whole setup wizard on a 360-px
phone screen against a real Synapse, with the control API on a real socket, a real Store and
the real SMS line on the modem simulator; then the new family member logs into Matrix with
matrix-nio and, through the bridge, gets an SMS from a simulated contact and answers it.

Screenshots of every step go to tests/artifacts/web/.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nio
import pytest

from appliance import log as applog
from appliance.control_client import ControlClient
from appliance.demo import seed_family
from appliance.homeserver.synapse import SynapseAdapter
from appliance.phonenum import format_display
from tests.plugins.bridge import BridgeHomeserver, BridgeStack, eventually, family_config
from tests.plugins.synapse import MatrixUser
from tests.plugins.web import OWNER, OWNER_PASSWORD, ControlStack, complete_setup

pytestmark = [pytest.mark.browser, pytest.mark.synapse]

ARTIFACTS = Path(__file__).parent / "artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CONTACT = "+4915112345678"
_count = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}b{next(_count)}"


@contextlib.asynccontextmanager
async def chromium(width: int, height: int) -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            device_scale_factor=1)
        page = await context.new_page()
        page.set_default_timeout(20000)
        problems: list[str] = []
        # Pages the test itself expects to answer with an error (a form with mistakes
        # answers 400): Chromium reports those on the console too, and the test checks
        # their status. Any other failed resource (a missing icon, script or style) and
        # every CSP violation or script error is a problem.
        expected: set[str] = set()

        def on_response(response: Any) -> None:
            if response.status >= 400 and response.request.resource_type == "document":
                expected.add(response.url)

        def on_console(message: Any) -> None:
            if message.type != "error":
                return
            if "Failed to load resource" in message.text and (
                message.location.get("url") in expected
            ):
                return
            problems.append(f"{message.text} ({message.location.get('url')})")

        page.on("response", on_response)
        page.on("console", on_console)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.problems = problems  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            await browser.close()


@pytest.fixture
async def browser_page() -> AsyncIterator[Any]:
    async with chromium(360, 740) as page:
        yield page


@pytest.fixture
async def desktop_page() -> AsyncIterator[Any]:
    async with chromium(1280, 800) as page:
        yield page


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    # Nothing wider than the screen: no sideways scrolling, on a phone or a desktop.
    screen = page.viewport_size["width"]
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= screen, f"{name}: the page is {width} px wide"
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


# Every text inside a card stays within its border: the card's text (a Range over its
# contents, line by line) ends left of the right border, and no block inside scrolls.
OVERFLOW_JS = """() => [...document.querySelectorAll('.card')].flatMap(card => {
    const box = card.getBoundingClientRect();
    const edge = box.right - parseFloat(getComputedStyle(card).borderRightWidth);
    const range = document.createRange();
    range.selectNodeContents(card);
    const past = [...range.getClientRects()].filter(r => r.width > 0 && r.right > edge + 0.5);
    const scrolling = [card, ...card.querySelectorAll('*')].filter(
        e => getComputedStyle(e).display !== 'inline' && e.scrollWidth > e.clientWidth + 1);
    return past.length || scrolling.length
        ? [card.querySelector('h2, h3').textContent.trim() + ': ' + card.innerText.trim()] : [];
})"""
DASHBOARD_PAGES = ("/", "/family", "/sim", "/contacts", "/remote", "/backup", "/logs",
                   "/account", "/install", "/install/android", "/install/ios")


async def test_dashboard_at_1280_px_with_the_demo_family(
    web_factory: Any,
    synapse_adapter: SynapseAdapter,
    control_stack: ControlStack,
    desktop_page: Any,
    tmp_path: Path,
) -> None:
    """Issue 18, items 4, 6 and 8 and the dashboard's friction, on a desktop screen: the
    status cards keep their text inside (the server name ran past the border), the family
    the demo made is on the Family page, the Log page shows the appliance's own log, recent
    texts show their states, lines have names, and no page logs a console error (the
    browser's own /favicon.ico request was a 404 on every page)."""
    page = desktop_page
    log_file = tmp_path / "textbridge.log"
    root = logging.getLogger()
    level = root.level
    handler = applog.add_file(log_file)
    try:
        c = await web_factory(homeserver=lambda: synapse_adapter,
                              control_socket=control_stack.socket, log_file=log_file)
        alex = f"@alex:{synapse_adapter.server_name}"
        seed_family(c.settings.state_dir, alex, ["modem"])
        complete_setup(c.settings)
        base = str(c.client.make_url("/")).rstrip("/")

        # Traffic: a test SMS delivered, one the network refuses, one text received. Their
        # words must show up nowhere on the pages.
        client = ControlClient(control_stack.socket)
        secrets = ("Geheimer Inhalt eins", "Geheimer Inhalt zwei", "Geheime Antwort drei")
        delivered = await client.test_sms("modem", "+4917012345678", secrets[0])
        await until_state(client, delivered, "delivered")
        control_stack.sim.network.auto_report = 0x41  # could not deliver
        failed = await client.test_sms("modem", "+4917012345600", secrets[1])
        await until_state(client, failed, "failed")
        control_stack.sim.network.deliver("+4915112345678", secrets[2])

        await page.goto(base + "/login")
        await page.get_by_label("Username").fill(OWNER)
        await page.get_by_label("Password").fill(OWNER_PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.get_by_role("heading", name="How Textbridge is doing").wait_for()

        # The dashboard: the cards' text inside their borders (item 4).
        assert await page.locator(".card h2", has_text="Home server").count() == 1
        assert "Running (" in await page.locator(".cards .card").first.inner_text()
        assert await page.evaluate(OVERFLOW_JS) == []
        # The line by the name a person knows, its id for commands beside it.
        number = format_display(control_stack.sim.own_number, "DE")
        await page.get_by_role("heading", name=f"Modem, SIM {number}").wait_for()
        # Recent texts: states, never words.
        await page.reload()
        recent = page.locator("ul.activity")
        assert await recent.locator(".state-delivered").count() == 1
        assert await recent.locator(".state-failed").count() == 1
        assert await recent.locator(".state-received").count() == 1
        assert "to +49170***78" in await recent.inner_text()
        await shot(page, "1280-dashboard")

        # The Family page: the demo's member with the owner, to be managed (item 6).
        await page.get_by_role("link", name="Family").click()
        await page.get_by_role("button", name="Remove Alex").wait_for()
        assert alex in await page.locator("ul.members").inner_text()
        box = page.get_by_role("group", name="Lines for Alex").get_by_label(f"Modem, SIM {number}")
        assert await box.is_checked()
        await shot(page, "1280-family")

        # The Log page: the appliance's own lines (item 8), numbers masked.
        await page.get_by_role("link", name="Log").click()
        log_text = await page.locator("pre.log").inner_text()
        assert "test SMS queued on line modem" in log_text, log_text
        assert "SMS from +49151***78 stored" in log_text, log_text
        assert "The log is empty" not in log_text and "No entries" not in log_text
        await shot(page, "1280-log")

        # Every page: no console error, no text's words, nothing past the screen's edge.
        for path in DASHBOARD_PAGES:
            await page.goto(base + path)
            content = await page.content()
            assert not [s for s in secrets if s in content], path
            assert await page.evaluate(OVERFLOW_JS) == [], path
            assert await page.evaluate("document.documentElement.scrollWidth") <= 1280, path
        assert page.problems == []  # type: ignore[attr-defined]
        icon = await page.request.get(base + "/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)


async def until_state(client: ControlClient, request_id: str, state: str) -> None:
    for _ in range(300):
        if (await client.outbox(request_id))["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} never became {state}")


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
