"""The owner's "Away from home" page (appliance/web/remote.py) through aiohttp's test client,
and once in real Chromium on a 360-px screen: the owner's login and CSRF, the checks of the
public address, port and device name, the device's config shown once (QR and text) and never
again, revoking, and a removed family member's devices going with them."""

from __future__ import annotations

import asyncio
import html
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from appliance.web.app import WEB_KEY
from appliance.web.state import Member, WebState
from appliance.wireguard import client, keys, tunnel
from tests.plugins.web import OWNER, OWNER_PASSWORD, complete_setup
from tests.waiting import until

GOOD = {"enabled": "on", "endpoint_host": "smith.duckdns.org", "endpoint_port": "51820"}
PRE_RE = re.compile(r"<pre[^>]*>(.*?)</pre>", re.S)


def state_file(c: Any) -> Path:
    return Path(c.settings.state_dir) / tunnel.STATE_FILE


async def owner_client(web_factory: Any) -> Any:
    c = await web_factory()
    complete_setup(c.settings)
    WebState(c.settings).upsert_member(
        Member(name="Anna Schmidt", username="anna", mxid="@anna:textbridge.test")
    )
    await c.login()
    return c


async def configured(web_factory: Any) -> Any:
    c = await owner_client(web_factory)
    status, text, _ = await c.submit("/remote", "/remote", GOOD)
    assert status == 303, text
    return c


async def add_device(c: Any, name: str = "Anna's phone", member: str = "anna") -> tuple[int, str]:
    status, text, _ = await c.submit("/remote", "/remote/devices",
                                     {"member": member, "device_name": name})
    return status, text


def config_of(page: str) -> str:
    match = PRE_RE.search(page)
    assert match, page[:500]
    return html.unescape(match.group(1))


# -- who may use it ------------------------------------------------------------------------


async def test_page_needs_the_owner(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    resp = await c.client.get("/remote", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/remote"
    token = await c.csrf("/login")  # an anonymous session's valid token
    for action, data in [("/remote", GOOD),
                         ("/remote/devices", {"member": "owner", "device_name": "x"}),
                         ("/remote/devices/abc/revoke", {})]:
        resp = await c.client.post(action, data={"csrf": token, **data}, allow_redirects=False)
        assert resp.status == 403, action
        assert "Log in again" in await resp.text()
    assert not state_file(c).exists()


async def test_forms_need_the_csrf_token(web_factory: Any) -> None:
    c = await configured(web_factory)
    before = state_file(c).read_text()
    for data in (GOOD | {"endpoint_host": "other.example.org"},
                 GOOD | {"csrf": "forged"}):
        resp = await c.client.post("/remote", data=data, allow_redirects=False)
        assert resp.status == 403 and "Form expired" in await resp.text()
    status, _ = await add_device(c)
    assert status == 200
    peer = tunnel.load(state_file(c)).peers[0]
    resp = await c.client.post(f"/remote/devices/{peer.id}/revoke", data={},
                               allow_redirects=False)
    assert resp.status == 403
    resp = await c.client.post("/remote/devices", data={"member": "anna", "device_name": "b"},
                               allow_redirects=False)
    assert resp.status == 403
    assert [p.id for p in tunnel.load(state_file(c)).peers] == [peer.id]
    assert "other.example.org" not in state_file(c).read_text() and before


# -- settings ------------------------------------------------------------------------------


async def test_settings_saved(web_factory: Any) -> None:
    c = await owner_client(web_factory)
    status, text = await c.page("/remote")
    assert status == 200 and "Remote access is off" in text
    assert 'aria-current="page">Away from home' in text
    assert "No devices yet" in text and "First type your home's public address" in text
    status, _, resp = await c.submit("/remote", "/remote", GOOD | {"endpoint_port": " 40000 "})
    assert status == 303 and resp.headers["Location"] == "/remote"
    saved = tunnel.load(state_file(c))
    assert saved.enabled and saved.endpoint_host == "smith.duckdns.org"
    assert saved.endpoint_port == 40000 and saved.listen_port == 51820
    assert saved.network.subnet_of(tunnel.ipaddress.IPv4Network("10.0.0.0/8"))
    assert stat.S_IMODE(state_file(c).stat().st_mode) == 0o600
    status, text = await c.page("/remote")
    assert "Remote access is on" in text and saved.appliance_address in text
    assert "outside port <strong>40000</strong>" in text
    # Switching off keeps the address and the subnet (phones keep their configs).
    await c.submit("/remote", "/remote", {k: v for k, v in GOOD.items() if k != "enabled"})
    off = tunnel.load(state_file(c))
    assert not off.enabled and off.subnet == saved.subnet and off.endpoint_host == GOOD[
        "endpoint_host"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("endpoint_host", "192.168.178.20", "inside a home"),
        ("endpoint_host", "textbridge.local", "only work inside the home"),
        ("endpoint_host", "<script>alert(1)</script>", "not a valid"),
        ("endpoint_host", "smith.duckdns.org:51820", "port field"),
        ("endpoint_host", "127.0.0.1", "cannot be reached"),
        ("endpoint_host", "", "Please type your home"),
        ("endpoint_host", "smith\u202e.org", "control characters"),
        ("endpoint_port", "70000", "1 to 65535"),
        ("endpoint_port", "51820; rm -rf /", "1 to 65535"),
        ("endpoint_port", "", "1 to 65535"),
    ],
)
async def test_bad_settings_rejected(web_factory: Any, field: str, value: str,
                                     words: str) -> None:
    c = await owner_client(web_factory)
    status, text, _ = await c.submit("/remote", "/remote", GOOD | {field: value})
    assert status == 400
    assert words in html.unescape(text)
    assert f'id="f-{field}"' in text and 'aria-invalid="true"' in text
    assert f'aria-describedby="h-{field} e-{field}"' in text
    assert "<script>alert" not in text
    assert 'name="enabled" checked' in text  # the choice survives the error
    assert not state_file(c).exists()


# -- devices -------------------------------------------------------------------------------


async def test_device_config_shown_once(web_factory: Any) -> None:
    c = await configured(web_factory)
    status, page = await add_device(c)
    assert status == 200, page
    assert '<svg role="img" aria-label="QR code: the WireGuard set-up for Anna&#39;s phone"' in page
    assert "shown only now" in page
    text = config_of(page)
    sections = {name: dict(items) for name, items in client.parse(text)}
    state = tunnel.load(state_file(c))
    (peer,) = state.peers
    private = sections["Interface"]["PrivateKey"]
    assert keys.public_key(private) == peer.public_key
    appliance_private = keys.load_or_create(Path(c.settings.state_dir) / tunnel.KEY_FILE)
    assert sections["Peer"] == {
        "PublicKey": keys.public_key(appliance_private),
        "PresharedKey": peer.preshared_key,
        "Endpoint": "smith.duckdns.org:51820",
        "AllowedIPs": f"{state.appliance_address}/32",
        "PersistentKeepalive": "25",
    }
    assert sections["Interface"]["Address"] == f"{peer.address}/32"
    assert stat.S_IMODE((Path(c.settings.state_dir) / tunnel.KEY_FILE).stat().st_mode) == 0o600

    # Never again: not in the files, not on the page, not by posting the form once more.
    for path in Path(c.settings.state_dir).iterdir():
        if path.is_file():
            assert private not in path.read_text(errors="replace"), path
    status, listing = await c.page("/remote")
    assert status == 200 and "<strong>Anna&#39;s phone</strong> — Anna Schmidt" in listing
    assert private not in listing and peer.preshared_key not in listing
    for path in ("/remote/devices", f"/remote/devices/{peer.id}"):
        resp = await c.client.get(path)
        assert resp.status in (404, 405)
        assert private not in await resp.text()
    status, again = await add_device(c)
    assert status == 400 and "already has a device with that name" in html.unescape(again)
    assert private not in again
    assert len(tunnel.load(state_file(c)).peers) == 1


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"member": "anna", "device_name": ""}, "Please give the device a name"),
        ({"member": "anna", "device_name": "<b>phone</b>"}, "Please use only letters"),
        ({"member": "anna", "device_name": "x" * 40}, "too long"),
        ({"member": "anna", "device_name": "phone\x00"}, "control characters"),
        ({"member": "mallory", "device_name": "phone"}, "Please choose a person"),
        ({"member": "", "device_name": "phone"}, "Please choose a person"),
    ],
)
async def test_bad_device_rejected(web_factory: Any, data: dict[str, str], words: str) -> None:
    c = await configured(web_factory)
    status, text, _ = await c.submit("/remote", "/remote/devices", data)
    assert status == 400 and words in html.unescape(text)
    assert "<b>phone</b>" not in text
    assert tunnel.load(state_file(c)).peers == ()


async def test_device_needs_the_public_address_first(web_factory: Any) -> None:
    c = await owner_client(web_factory)
    status, text = await add_device(c)
    assert status == 400 and "First type your home&#39;s public address" in text
    assert not state_file(c).exists() or tunnel.load(state_file(c)).peers == ()


async def test_revoke(web_factory: Any) -> None:
    c = await configured(web_factory)
    await add_device(c, "Anna's phone")
    await add_device(c, "Owner's tablet", OWNER)
    state = tunnel.load(state_file(c))
    anna = next(p for p in state.peers if p.member == "anna")
    status, _, resp = await c.submit("/remote", f"/remote/devices/{anna.id}/revoke", {})
    assert status == 303 and resp.headers["Location"] == "/remote"
    left = tunnel.load(state_file(c))
    assert [p.member for p in left.peers] == [OWNER]
    assert anna.public_key not in state_file(c).read_text()
    status, _, _ = await c.submit("/remote", f"/remote/devices/{anna.id}/revoke", {})
    assert status == 404
    status, text = await c.page("/remote")
    assert "<strong>Anna&#39;s phone</strong>" not in text
    assert "<strong>Owner&#39;s tablet</strong>" in text


async def test_removing_a_family_member_revokes_their_devices(web_factory: Any) -> None:
    c = await configured(web_factory)
    await add_device(c, "Anna's phone")
    await add_device(c, "Owner's tablet", OWNER)
    status, text, _ = await c.submit("/family", "/family/anna/remove", {})
    assert status == 303, text
    assert [p.member for p in tunnel.load(state_file(c)).peers] == [OWNER]


async def test_state_file_is_what_the_apply_step_reads(web_factory: Any) -> None:
    """The web writes the file the privileged step checks strictly; it must pass."""
    c = await configured(web_factory)
    await add_device(c)
    data = json.loads(state_file(c).read_text())
    assert set(data) == {"version", "enabled", "endpoint_host", "endpoint_port", "subnet",
                         "interface", "listen_port", "peers"}
    assert data["interface"] == "wg0"
    assert tunnel.Tunnel.from_json(data) == tunnel.load(state_file(c))


# -- in a real browser, on a phone-sized screen ------------------------------------------


@pytest.mark.browser
async def test_remote_page_in_chromium(web_factory: Any, tmp_path: Path) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium", pytrace=False)
    from playwright.async_api import async_playwright

    from tests.test_web_browser import shot

    c = await web_factory()
    complete_setup(c.settings)
    base = str(c.client.make_url("/"))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(chromium),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = await (await browser.new_context(viewport={"width": 360, "height": 740}))\
                .new_page()
            page.set_default_timeout(20000)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(base + "remote")
            await page.fill("#f-username", OWNER)
            await page.fill("#f-password", OWNER_PASSWORD)
            await page.click("button[type=submit]:not(.link)")
            await page.wait_for_url("**/remote")
            await shot(page, "remote-off")
            await page.check("input[name=enabled]")
            await page.fill("#f-endpoint_host", "10.0.0.7")
            await page.click("text=Save")
            assert "inside a home" in await page.inner_text("#e-endpoint_host")
            await shot(page, "remote-error")
            await page.fill("#f-endpoint_host", "smith.duckdns.org")
            await page.click("text=Save")
            await page.wait_for_selector("text=Remote access is on")
            await page.select_option("#f-member", OWNER)
            await page.fill("#f-device_name", "Owner's phone")
            await page.click("text=Add device and show its code")
            await page.wait_for_selector("svg[role=img]")
            await shot(page, "remote-device")
            assert "PrivateKey = " in await page.inner_text("pre")
            await page.click("text=Done")
            await page.wait_for_selector("text=Remove this device")
            await shot(page, "remote-devices")
            assert "PrivateKey" not in await page.content()
            assert problems == []
        finally:
            await browser.close()


async def test_the_tunnel_address_gets_into_the_home_certificate(web_factory: Any) -> None:
    """With remote access on, the HTTPS site's certificate names the appliance's tunnel
    address (phones away from home reach it there), the device page says to use it in
    Element X, and the welcome page does not offer it as a home address."""
    from cryptography import x509

    c = await configured(web_factory)
    w = c.client.server.app[WEB_KEY]
    await asyncio.to_thread(w.tls.context)  # the HTTPS site is up
    status, page = await add_device(c)
    assert status == 200
    state = tunnel.load(state_file(c))
    assert f"https://{state.appliance_address}" in page

    def names_it() -> bool:
        cert = w.ca().server_certificate()
        if cert is None:
            return False
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return state.appliance_address in [str(i) for i in san.get_values_for_type(x509.IPAddress)]

    await until(names_it, 20, "the tunnel address in the certificate")
    status, welcome = await c.page("/family/owner/welcome")
    assert status == 200 and f"https://{state.appliance_address}" not in welcome
