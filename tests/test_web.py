"""The setup wizard and dashboard through aiohttp's test client: input validation, the
home-network rule, CSRF, sessions, the login throttle, certificates and backups."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import plistlib
import ssl
import stat
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.phonenum import format_display
from appliance.web import backup, logs, plots
from appliance.web.ca import CertificateAuthority
from appliance.web.state import WebState
from tests.plugins.web import CSRF_RE, OWNER, OWNER_PASSWORD, ControlStack, complete_setup

GOOD_OWNER = {
    "name": "Anna Schmidt",
    "username": "anna",
    "password": "a long enough secret",
    "password2": "a long enough secret",
}


# -- the home-network rule before setup -------------------------------------------------


@pytest.mark.parametrize(
    "remote",
    ["127.0.0.1", "::1", "10.1.2.3", "172.20.0.9", "192.168.1.20", "169.254.3.4", "fe80::1",
     "fd12:3456::1", "::ffff:192.168.1.7"],
)
async def test_setup_answers_home_network_sources(web_factory: Any, remote: str) -> None:
    c = await web_factory(remote=remote)
    status, text = await c.page("/setup/1")
    assert status == 200
    assert "Create my account" in text


@pytest.mark.parametrize(
    "remote", ["203.0.113.9", "8.8.8.8", "100.64.0.1", "172.32.0.1", "2001:db8::1", "", "x"]
)
async def test_setup_refuses_other_sources(web_factory: Any, remote: str) -> None:
    c = await web_factory(remote=remote)
    for path in ("/setup/1", "/", "/login", "/install"):
        status, text = await c.page(path)
        assert status == 403, path
        assert "same home network" in text
    resp = await c.client.post("/setup/1", data=GOOD_OWNER)
    assert resp.status == 403


async def test_forwarded_headers_are_ignored(web_factory: Any) -> None:
    outside = await web_factory(remote="203.0.113.9")
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        value = "for=192.168.1.5" if header == "Forwarded" else "192.168.1.5"
        status, _ = await outside.page("/setup/1", headers={header: value})
        assert status == 403, header
    inside = await web_factory(state_dir=outside.settings.state_dir / "b")
    status, _ = await inside.page("/setup/1", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200


async def test_after_setup_outside_sources_are_refused(web_factory: Any) -> None:
    # docs/web.md: the site answers the home network and the tunnel only, setup or not.
    c = await web_factory(remote="203.0.113.9")
    complete_setup(c.settings)
    for path in ("/login", "/", "/install", "/static/style.css", "/no-such-page"):
        status, text = await c.page(path)
        assert status == 403 and "home network" in text, path
    resp = await c.client.post("/login", data={"username": OWNER, "password": OWNER_PASSWORD})
    assert resp.status == 403
    resp = await c.client.get("/_matrix/client/versions")
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    c.remote = "192.168.1.20"
    status, text = await c.page("/login")
    assert status == 200 and "Log in" in text


async def test_trust_local_only_off_answers_everyone(web_factory: Any) -> None:
    c = await web_factory(remote="203.0.113.9", trust_local_only=False)
    status, _ = await c.page("/setup/1")
    assert status == 200


# -- form validation --------------------------------------------------------------------

HOSTILE_OWNER = [
    ({"name": "<script>alert(1)</script>"}, "name", "only letters"),
    ({"name": "x" * 65}, "name", "too long"),
    ({"name": "Anna\x00Schmidt"}, "name", "control characters"),
    ({"name": "Anna\u202eSchmidt"}, "name", "control characters"),
    ({"name": "   "}, "name", "Please type a name"),
    ({"username": "Anna"}, "username", "small letters only"),
    ({"username": "an na"}, "username", "may only use"),
    ({"username": "ánna"}, "username", "may only use"),
    ({"username": "<b>x</b>"}, "username", "may only use"),
    ({"username": "a" * 65}, "username", "too long"),
    ({"username": "anna\n"}, "username", ""),  # stripped: fine as a username, see below
    ({"username": "admin"}, "username", "kept for the appliance"),
    ({"username": "sms_4917"}, "username", "kept for the appliance"),
    ({"username": ""}, "username", "Please choose a username"),
    ({"password": "short", "password2": "short"}, "password", "too short"),
    ({"password": "a long enough secret", "password2": "a long enough secreT"}, "password",
     "not the same"),
    ({"password": "aaaaaaaaaaaa", "password2": "aaaaaaaaaaaa"}, "password", "too easy"),
    ({"password": "anna-is-the-best", "password2": "anna-is-the-best"}, "password",
     "must not contain the username"),
    ({"password": "a long\x07secret!", "password2": "a long\x07secret!"}, "password",
     "control characters"),
    ({"password": "p" * 300 + "xyz!", "password2": "p" * 300 + "xyz!"}, "password",
     "too long"),
]


@pytest.mark.parametrize(("override", "field", "message"), HOSTILE_OWNER)
async def test_owner_form_rejects_hostile_input(
    web_factory: Any, override: dict[str, str], field: str, message: str
) -> None:
    c = await web_factory()
    data = {**GOOD_OWNER, **override}
    status, text, _ = await c.submit("/setup/1", "/setup/1", data)
    if not message:
        # Surrounding whitespace is trimmed; the form then fails only for want of a
        # homeserver in this test, not because of the username.
        assert 'id="e-username"' not in text
        return
    assert status == 400
    assert f'id="e-{field}"' in text, text
    error = text.split(f'id="e-{field}"', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert "<script>alert" not in text and "<b>x</b>" not in text
    assert 'aria-invalid="true"' in text
    assert c.state.owner() is None


async def test_owner_form_keeps_values_but_never_passwords(web_factory: Any) -> None:
    c = await web_factory()
    data = {**GOOD_OWNER, "password2": "something else entirely"}
    status, text, _ = await c.submit("/setup/1", "/setup/1", data)
    assert status == 400
    assert 'value="Anna Schmidt"' in text and 'value="anna"' in text
    assert "a long enough secret" not in text


async def test_owner_form_without_homeserver_says_so(web_factory: Any) -> None:
    c = await web_factory()
    status, text, _ = await c.submit("/setup/1", "/setup/1", GOOD_OWNER)
    assert status == 503
    assert "home server is not ready yet" in text


async def test_wizard_steps_cannot_be_skipped(web_factory: Any) -> None:
    c = await web_factory()
    resp = await c.client.get("/setup/4", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/setup/1"
    resp = await c.client.get("/setup/9", allow_redirects=False)
    assert resp.status == 404


# -- CSRF -------------------------------------------------------------------------------


async def test_post_without_or_with_wrong_csrf_is_refused(web_factory: Any) -> None:
    c = await web_factory()
    await c.page("/setup/1")  # a session exists
    resp = await c.client.post("/setup/1", data=GOOD_OWNER)
    assert resp.status == 403 and "out of date" in await resp.text()
    resp = await c.client.post("/setup/1", data={**GOOD_OWNER, "csrf": "forged"})
    assert resp.status == 403
    resp = await c.client.post("/setup/1", data={**GOOD_OWNER, "csrf": ""})
    assert resp.status == 403
    # A token from another visitor's session is worthless in this one.
    other = await web_factory(state_dir=c.settings.state_dir)
    foreign = await other.csrf("/setup/1")
    resp = await c.client.post("/setup/1", data={**GOOD_OWNER, "csrf": foreign})
    assert resp.status == 403
    resp = await c.client.post("/setup/1", json=GOOD_OWNER)
    assert resp.status == 403


async def test_large_posts_need_the_owner(web_factory: Any) -> None:
    c = await web_factory()
    token = await c.csrf("/setup/1")
    resp = await c.client.post("/setup/1", data={**GOOD_OWNER, "csrf": token,
                                                  "filler": "x" * 100_000})
    assert resp.status == 413 and "Too much data" in await resp.text()


async def test_forged_session_cookie_is_ignored(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    cookie = next(iter(c.client.session.cookie_jar)).value
    sid, mac = cookie.rsplit(".", 1)
    other = await web_factory(state_dir=c.settings.state_dir)
    for forged in (f"{sid}.{mac[:-2]}AA", f"{sid}x.{mac}", sid, ""):
        other.client.session.cookie_jar.update_cookies({"tb_session": forged})
        resp = await other.client.get("/", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith("/login"), forged


# -- after setup: closed wizard, sessions, login ------------------------------------------


async def test_wizard_is_closed_after_setup(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    for n in range(1, 7):
        resp = await c.client.get(f"/setup/{n}", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    await c.login()
    resp = await c.client.get("/setup/1", allow_redirects=False)
    assert resp.headers["Location"] == "/"
    token = await c.csrf("/")
    resp = await c.client.post("/setup/1", data={**GOOD_OWNER, "csrf": token})
    assert resp.status == 404
    assert c.state.owner()["username"] == OWNER  # type: ignore[index]


@pytest.mark.parametrize(
    "path",
    ["/", "/family", "/sim", "/contacts", "/backup", "/logs", "/account",
     "/family/owner/welcome"],
)
async def test_pages_need_the_owner_session(web_factory: Any, path: str) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    resp = await c.client.get(path, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"/login?next={path}"


@pytest.mark.parametrize(
    "action",
    ["/family/add", "/family/owner/reset", "/family/owner/remove", "/policy", "/contacts",
     "/backup/download", "/backup/restore", "/sim/pin", "/sim/test-sms", "/account"],
)
async def test_posts_need_the_owner_session(web_factory: Any, action: str) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    token = await c.csrf("/login")  # a valid CSRF token of an anonymous session
    resp = await c.client.post(action, data={"csrf": token, "name": "x", "username": "xy"})
    assert resp.status == 403
    assert "Log in again" in await resp.text()


async def test_login_cookie_flags_and_rotation(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    resp = await c.client.get("/login")
    before = resp.cookies["tb_session"]
    assert before["httponly"] and before["samesite"] == "Strict" and not before["secure"]
    resp = await c.login()
    after = resp.cookies["tb_session"]
    assert after.value != before.value  # a new session id at login
    assert after["httponly"] and after["samesite"] == "Strict" and after["path"] == "/"
    status, text = await c.page("/")
    assert status == 200 and "How Textbridge is doing" in text

    secure = await web_factory(state_dir=c.settings.state_dir, secure_cookies=True)
    resp = await secure.client.get("/login")
    assert resp.cookies["tb_session"]["secure"]


async def test_logout_ends_the_session(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    status, _, _ = await c.submit("/", "/logout", {})
    assert status == 303
    resp = await c.client.get("/", allow_redirects=False)
    assert resp.status == 303


async def test_owner_changes_own_password(web_factory: Any) -> None:
    c = await web_factory(login_base_delay=30.0)
    complete_setup(c.settings)
    await c.login()
    # A second browser, logged in too: the change must end its session.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as second:
        url = c.client.make_url
        async with second.get(url("/login")) as resp:
            token = CSRF_RE.search(await resp.text()).group(1)  # type: ignore[union-attr]
        async with second.post(url("/login"), allow_redirects=False, data={
            "csrf": token, "username": OWNER, "password": OWNER_PASSWORD,
        }) as resp:
            assert resp.status == 303
        async with second.get(url("/"), allow_redirects=False) as resp:
            assert resp.status == 200

        new = "an entirely new secret"
        cases = [
            ({"current": "wrong one!", "password": new, "password2": new}, "not your current"),
            ({"current": OWNER_PASSWORD, "password": "short", "password2": "short"},
             "too short"),
            ({"current": OWNER_PASSWORD, "password": new, "password2": new + "x"},
             "not the same"),
        ]
        for data, message in cases:
            status, text, _ = await c.submit("/account", "/account", data)
            assert status == 400 and message in text
        status, _, _ = await c.submit(
            "/account", "/account", {"current": OWNER_PASSWORD, "password": new, "password2": new}
        )
        assert status == 303
        status, text = await c.page("/account?changed=1")
        assert status == 200 and "was changed" in text  # this session lives on
        async with second.get(url("/"), allow_redirects=False) as resp:
            assert resp.status == 303  # the other one does not
    c.client.session.cookie_jar.clear()
    status, text, _ = await c.submit("/login", "/login",
                                     {"username": OWNER, "password": OWNER_PASSWORD})
    assert status == 401
    await c.login(password=new)


async def test_login_wrong_password(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    for user, password in ((OWNER, "wrong password!"), ("nobody", OWNER_PASSWORD)):
        status, text, _ = await c.submit("/login", "/login",
                                         {"username": user, "password": password})
        assert status == 401 and "Wrong username or password" in text


async def test_login_open_redirect_is_refused(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        status, _, resp = await c.submit(
            "/login", "/login",
            {"username": OWNER, "password": OWNER_PASSWORD, "next": target},
        )
        assert status == 303 and resp.headers["Location"] == "/"


async def test_login_brute_force_is_throttled_per_account(web_factory: Any) -> None:
    c = await web_factory(login_base_delay=30.0)
    complete_setup(c.settings)
    for _ in range(3):
        status, _, _ = await c.submit("/login", "/login",
                                      {"username": OWNER, "password": "guess guess"})
        assert status == 401
    # Now even the right password waits, from this address.
    status, text, _ = await c.submit("/login", "/login",
                                     {"username": OWNER, "password": OWNER_PASSWORD})
    assert status == 429 and "Too many wrong tries" in text
    # An address that has not failed is never held by others' failures: the owner at home.
    c.remote = "192.168.1.78"
    await c.login()


async def test_login_brute_force_is_throttled_per_source(web_factory: Any) -> None:
    c = await web_factory(login_base_delay=30.0, remote="192.168.1.50")
    complete_setup(c.settings)
    for n in range(3):
        status, _, _ = await c.submit("/login", "/login",
                                      {"username": f"guess{n}", "password": "guess guess"})
        assert status == 401
    status, _, _ = await c.submit("/login", "/login",
                                  {"username": OWNER, "password": OWNER_PASSWORD})
    assert status == 429
    # Another address may still log in: one noisy device does not lock the owner out.
    c.remote = "192.168.1.51"
    await c.login()


async def test_account_count_holds_only_sources_past_their_own_free_tries(
    web_factory: Any,
) -> None:
    from appliance.web.app import WEB_KEY
    from appliance.web.security import Throttle

    c = await web_factory()
    complete_setup(c.settings)
    # The throttles on a clock the test turns, so waits pass without sleeping.
    now = [1000.0]
    w = c.client.server.app[WEB_KEY]
    w.by_source = Throttle(free=3, base=2.0, ceiling=900.0, clock=lambda: now[0])
    w.by_account = Throttle(free=3, base=2.0, ceiling=900.0, clock=lambda: now[0])

    async def attempt(remote: str, password: str) -> int:
        c.remote = remote
        status, _, _ = await c.submit("/login", "/login",
                                      {"username": OWNER, "password": password})
        return status

    for _ in range(12):  # a device guessing patiently: the account's count is high
        now[0] += 1000  # past this device's own wait
        assert await attempt("192.168.1.66", "guess guess") == 401
    # A second address past its own free tries is held by the account's count once its own
    # wait (2 s) is over: spreading guesses over addresses buys a few per address.
    for _ in range(3):
        assert await attempt("192.168.1.99", "guess guess") == 401
    now[0] += 3
    assert w.by_source.wait("ip:192.168.1.99") == 0
    assert await attempt("192.168.1.99", OWNER_PASSWORD) == 429
    # The owner elsewhere, even after two typos, is not held by any of that.
    assert await attempt("192.168.1.20", "typo typo") == 401
    assert await attempt("192.168.1.20", "typo typo") == 401
    assert await attempt("192.168.1.20", OWNER_PASSWORD) == 303


def test_throttle_counts_an_ipv6_device_by_its_64() -> None:
    from appliance.web.security import source_key

    assert source_key("fd12:3456:789a:1::5") == source_key("fd12:3456:789a:1:ffff::9")
    assert source_key("fd12:3456:789a:1::5") != source_key("fd12:3456:789a:2::5")
    assert source_key("::ffff:192.168.1.7") == source_key("192.168.1.7") == "ip:192.168.1.7"
    assert source_key("192.168.1.7") != source_key("192.168.1.8")


async def test_login_throttle_delay_grows_and_expires() -> None:
    from appliance.web.security import Throttle

    now = [1000.0]
    t = Throttle(free=3, base=2.0, ceiling=60.0, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        t.failed("k")
        waits.append(t.wait("k"))
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    now[0] += 61
    assert t.wait("k") == 0.0
    t.succeeded("k")
    t.failed("k")
    assert t.wait("k") == 0.0


async def test_security_headers(web_factory: Any) -> None:
    c = await web_factory()
    resp = await c.client.get("/setup/1")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    resp = await c.client.get("/no/such/page")
    assert resp.status == 404 and "Content-Security-Policy" in resp.headers


# -- dashboard forms --------------------------------------------------------------------


async def test_family_form_rejects_hostile_input(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    cases = [
        ({"name": "<img src=x onerror=alert(1)>", "username": "ilse"}, "name"),
        ({"name": "Ilse", "username": "Ilse"}, "username"),
        ({"name": "Ilse", "username": "il se"}, "username"),
        ({"name": "Ilse", "username": "owner"}, "username"),
        ({"name": "Ilse", "username": "ilse", "method": "magic"}, "method"),
        ({"name": "Ilse", "username": "ilse", "lines": "no-such-line"}, "lines"),
    ]
    for data, which in cases:
        status, text, _ = await c.submit("/family", "/family/add", data)
        assert status == 400, data
        assert "<img src=x" not in text
        assert 'class="error"' in text, data
        if which == "username" and data["username"] == "owner":
            assert "already in the family" in text
    assert [m.username for m in c.state.family()] == [OWNER]


async def test_policy_is_validated_and_written(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    status, text, _ = await c.submit("/family", "/policy", {"default_daily_cap": "-5"})
    assert status == 400 and "whole number" in text
    status, text, _ = await c.submit("/family", "/policy", {"default_daily_cap": "99999"})
    assert status == 400 and "between 0 and 1000" in text
    status, _, _ = await c.submit(
        "/family", "/policy",
        {"default_daily_cap": "20", f"cap_{OWNER}": "5", "block_short_codes": "on",
         "block_premium": "on"},
    )
    assert status == 303
    path = c.settings.state_dir / "policy.json"
    policy = json.loads(path.read_text())
    assert policy["default_daily_cap"] == 20
    assert policy["users"] == {f"@{OWNER}:textbridge.test": {"daily_cap": 5}}
    assert policy["block_short_codes"] and not policy["international_allowed"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


VCARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Oma Ilse\r\nTEL;TYPE=CELL:+49 170 1234567\r\n"
    "END:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Dr. Müller\r\nTEL:+4930123456\r\n"
    "END:VCARD\r\n"
)


async def test_contacts_upload(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    bad = [
        (b"hello", "not a vCard"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"BEGIN:VCARD\r\nFN:x\x01\r\nEND:VCARD\r\n", "control characters"),
        (b"BEGIN:VCARD\r\nFN:x\r\n", "incomplete"),
    ]
    for payload, message in bad:
        token = await c.csrf("/contacts")
        form = aiohttp.FormData()
        form.add_field("csrf", token)
        form.add_field("vcf", payload, filename="c.vcf", content_type="text/vcard")
        resp = await c.client.post("/contacts", data=form)
        assert resp.status == 400
        assert message in await resp.text()
    token = await c.csrf("/contacts")
    form = aiohttp.FormData()
    form.add_field("csrf", token)
    form.add_field("vcf", VCARD.encode(), filename="c.vcf", content_type="text/vcard")
    resp = await c.client.post("/contacts", data=form)
    assert resp.status == 200 and "2 contacts imported" in await resp.text()
    stored = c.settings.state_dir / "contacts.vcf"
    assert stored.read_bytes() == VCARD.encode()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


async def test_log_view_hides_contents_and_numbers(web_factory: Any, tmp_path: Path) -> None:
    log_file = tmp_path / "journal.txt"
    log_file.write_text(
        "2026-11-23T00:00:01 textbridge[1]: appliance.sms.line: inbound from +49170***67\n"
        "2026-11-23T00:00:02 textbridge[1]: debug: body='Meet me at 5, love' to +491701234567\n"
        "2026-11-23T00:00:03 textbridge[1]: token=syt_secret_abc pin: 1234 <script>x</script>\n"
    )
    c = await web_factory(log_file=log_file)
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/logs")
    assert status == 200
    assert "inbound from" in text
    for secret in ("Meet me", "491701234567", "syt_secret_abc", "1234", "<script>x"):
        assert secret not in text, secret
    assert logs.redact("text=hello +44 20 7946 0958 x") == "text=[hidden] ***58 x"


async def test_log_view_does_not_show_journalctls_remarks_as_log_lines() -> None:
    """The real journalctl, for a unit with no entries: it prints "-- No entries --", which
    the Log page showed as if it were the log (the demo has no such unit)."""
    unit = f"textbridge-test-{os.getpid()}-none"
    assert await logs.recent_lines(log_file=None, units=(unit,)) == []


# -- the control API and the SIM page -----------------------------------------------------




async def test_sim_page_shows_the_locked_sim(web_factory: Any,
                                            locked_control_stack: ControlStack) -> None:
    stack = locked_control_stack
    c = await web_factory(control_socket=stack.socket)
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/sim")
    assert status == 200
    assert "locked with a PIN" in text and "3 tries left" in text
    assert str(stack.sim.link_path) in text  # the port; the model comes after unlock
    for bad in ("12", "12345678901", "12a4", "<script>"):
        status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": bad})
        assert status == 400 and "4 to 8 digits" in text
    assert stack.pins_entered() == []  # nothing invalid reached the SIM


async def test_sim_page_pin_entry(web_factory: Any, locked_control_stack: ControlStack) -> None:
    stack = locked_control_stack
    c = await web_factory(control_socket=stack.socket)
    complete_setup(c.settings)
    await c.login()
    await c.page("/sim")
    status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "0000"})
    assert status == 400 and "was not accepted" in text and "2 attempts left" in text
    status, text = await c.page("/sim")
    assert "2 tries left" in text
    status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "1234"})
    assert status == 303
    await stack.wait_sim("READY")
    assert await stack.line.wait_ready(20)
    status, text = await c.page("/sim")
    assert "unlocked and ready" in text and 'name="pin"' not in text
    assert stack.pins_entered() == ['AT+CPIN="0000"', 'AT+CPIN="1234"']


async def test_sim_page_test_sms(web_factory: Any, control_stack: ControlStack) -> None:
    c = await web_factory(control_socket=control_stack.socket)
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/sim")
    assert "unlocked and ready" in text and 'name="pin"' not in text
    assert "Textbridge Mobile" in text and "Quectel EC25" in text

    # A test SMS: validated, queued in the real store, sent through the simulated network
    # and followed to "delivered" by its status report.
    for to, message in (("12345", "country code"), ("+49 170 abc", "country code"),
                        ("", "phone number")):
        status, text, _ = await c.submit("/sim", "/sim/test-sms",
                                         {"line": "modem", "to": to, "text": "hi"})
        assert status == 400 and message in text
    status, text, _ = await c.submit("/sim", "/sim/test-sms",
                                     {"line": "modem", "to": "+4917012345", "text": "x" * 161})
    assert status == 400 and "too long" in text
    status, text, _ = await c.submit("/sim", "/sim/test-sms",
                                     {"line": "modem", "to": "+4917012345", "text": "a\x1bb"})
    assert status == 400 and "control characters" in text
    status, text, _ = await c.submit("/sim", "/sim/test-sms",
                                     {"line": "no-such-line", "to": "+4917012345",
                                      "text": "hi"})
    assert status == 400 and "no such line" in text
    status, _, resp = await c.submit("/sim", "/sim/test-sms",
                                     {"line": "modem", "to": "+49 170 123456-7",
                                      "text": "Hello from the test"})
    assert status == 303
    request_id = resp.headers["Location"].split("sms=")[1].split("#")[0]
    row = await control_stack.store.outbox.by_request(request_id)
    assert row is not None and row.request.conversation == "+491701234567"
    assert row.request.requested_by == "web:owner"
    assert await _poll_outbox(c, request_id, {"delivered", "failed"}) == "delivered"
    assert ("+491701234567", "Hello from the test") in control_stack.sim.network.sent_messages()

    control_stack.sim.network.auto_report = 0x41  # the network says: could not deliver
    status, text, resp = await c.submit("/sim", "/sim/test-sms",
                                        {"line": "modem", "to": "+491701234560", "text": "x"})
    request_id = resp.headers["Location"].split("sms=")[1].split("#")[0]
    assert await _poll_outbox(c, request_id, {"delivered", "failed"}) == "failed"
    resp = await c.client.get(f"/api/outbox/{request_id}")
    assert (await resp.json())["words"].startswith("Failed: rejected by the network")


async def _poll_outbox(c: Any, request_id: str, final: set[str]) -> str:
    for _ in range(300):
        resp = await c.client.get(f"/api/outbox/{request_id}")
        data = await resp.json()
        assert resp.status == 200, data
        if data["state"] in final:
            assert data["final"]
            return str(data["state"])
        await asyncio.sleep(0.05)
    raise AssertionError("the test SMS never reached a final state")


async def test_sim_puk_is_never_guessed(web_factory: Any,
                                        locked_control_stack: ControlStack) -> None:
    stack = locked_control_stack
    c = await web_factory(control_socket=stack.socket)
    complete_setup(c.settings)
    await c.login()
    for n in range(3):
        await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": f"999{n}"})
    await stack.wait_sim("SIM PUK")
    status, text = await c.page("/sim")
    assert "Call your mobile carrier" in text and 'name="pin"' not in text
    # Even a hand-made request cannot reach the SIM now.
    status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "12345678"})
    assert status == 400 and "PUK" in text
    assert stack.pins_entered() == [f'AT+CPIN="999{n}"' for n in range(3)]


async def test_outbox_status_needs_the_owner(web_factory: Any, control_stack: ControlStack
                                             ) -> None:
    c = await web_factory(control_socket=control_stack.socket)
    complete_setup(c.settings)
    resp = await c.client.get("/api/outbox/web-test-x")
    assert resp.status == 403


@dataclass
class ScriptedSim:
    """Our SimControl protocol with a SIM in any state, for the control API's own rules
    (the PUK refusal above all) independent of the SMS line."""

    state: str
    attempts: int
    entered: list[str] = field(default_factory=list)

    async def sim_state(self) -> tuple[str, int | None]:
        return self.state, self.attempts

    async def enter_pin(self, pin: str) -> None:
        self.entered.append(pin)
        if pin != "1234":
            self.attempts -= 1
            raise RuntimeError(f"Wrong PIN. {self.attempts} attempts left.")
        self.state = "READY"


async def test_control_api_never_sends_a_pin_when_a_puk_is_needed(
    web_factory: Any, locked_control_stack: ControlStack
) -> None:
    from appliance.control import make_control_app, serve_control
    from appliance.control_client import ControlClient, ControlError

    sim = ScriptedSim("SIM PUK", 10)
    app = make_control_app(lines={"modem": locked_control_stack.line},
                           store=locked_control_stack.store, sim_control={"modem": sim})
    socket_path = locked_control_stack.socket.with_name("puk.sock")
    runner = await serve_control(app, socket_path)
    try:
        client = ControlClient(socket_path)
        with pytest.raises(ControlError) as err:
            await client.enter_pin("modem", "1234")
        assert err.value.status == 409 and "never guesses a PUK" in err.value.message
        assert sim.entered == []
        c = await web_factory(control_socket=socket_path)
        complete_setup(c.settings)
        await c.login()
        _, text = await c.page("/sim")
        assert "Call your mobile carrier" in text and 'name="pin"' not in text
        status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "1234"})
        assert status == 400 and "PUK" in text
        assert sim.entered == []
        # A PIN state: a wrong PIN's words and the tries left reach the page.
        sim.state, sim.attempts = "SIM PIN", 3
        status, text, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "0000"})
        assert status == 400 and "Wrong PIN. 2 attempts left." in text
        assert "2 tries left" in text
        status, _, _ = await c.submit("/sim", "/sim/pin", {"line": "modem", "pin": "1234"})
        assert status == 303 and sim.state == "READY"
    finally:
        await runner.cleanup()


async def test_control_api_sim_state(locked_control_stack: ControlStack) -> None:
    from appliance.control_client import ControlClient, ControlError

    client = ControlClient(locked_control_stack.socket)
    status = await client.status()
    assert status["lines"][0]["line_id"] == "modem"
    assert status["lines"][0]["state"] == "down"
    assert status["bridge"]["healthy"] is False  # the SIM is locked: no line works
    sim = await client.sim("modem")
    assert sim == {"state": "SIM PIN", "attempts_left": 3, "needs_puk": False}
    with pytest.raises(ControlError) as err:
        await client.sim("nope")
    assert err.value.status == 404
    for bad in ("12", "123456789", "12ab", ""):
        with pytest.raises(ControlError) as err:
            await client.enter_pin("modem", bad)
        assert err.value.status == 400
    assert locked_control_stack.pins_entered() == []


async def test_control_api_directly(control_stack: ControlStack) -> None:
    from appliance.control_client import ControlClient, ControlError

    client = ControlClient(control_stack.socket)
    status = await client.status()
    assert status["bridge"]["healthy"] is True
    assert status["lines"][0]["state"] == "ready"
    assert (await client.sim("modem"))["state"] == "READY"
    with pytest.raises(ControlError):
        await client.test_sms("modem", "12345", "premium?")
    for costly in ("+4990012345678", "+499001234567", "+491801234567"):
        with pytest.raises(ControlError) as refused:
            await client.test_sms("modem", costly, "premium?")
        assert "premium-rate" in refused.value.message
    request_id = await client.test_sms("modem", "+4917012345678", "hi")
    for _ in range(200):
        out = await client.outbox(request_id)
        if out["state"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert out["state"] == "delivered"
    await asyncio.sleep(0.3)
    stats = await client.stats(3)
    assert [d["outbound"] for d in stats["messages_per_day"]] == [0, 0, 1]
    assert len(stats["signal"]["modem"]) >= 2
    assert stats["messages_per_day"][-1]["day"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert stat.S_IMODE(control_stack.socket.stat().st_mode) == 0o660
    # An inbound text counts too.
    control_stack.sim.network.deliver("+4917099999999", "hello")
    for _ in range(100):
        stats = await client.stats(1)
        if stats["messages_per_day"][-1]["inbound"] == 1:
            break
        await asyncio.sleep(0.1)
    assert stats["messages_per_day"][-1] == {
        "day": dt.datetime.now(dt.UTC).date().isoformat(), "inbound": 1, "outbound": 1}


async def test_dashboard_shows_status_and_charts(web_factory: Any, control_stack: ControlStack
                                                 ) -> None:
    c = await web_factory(control_socket=control_stack.socket)
    complete_setup(c.settings)
    await c.login()
    await asyncio.sleep(0.3)  # a few signal samples
    status, text = await c.page("/")
    assert status == 200
    assert "Textbridge Mobile" in text and "GB free" in text
    # The line as a person knows it: the modem and its SIM's number.
    number = format_display(control_stack.sim.own_number, "DE")
    assert f"Signal strength of Modem, SIM {number}" in text and "<svg" in text
    assert "Running with problems" not in text
    control_stack.health = {"ok": False, "homeserver_reachable": False,
                            "setup_error": "M_FORBIDDEN <b>x</b>"}
    status, text = await c.page("/")
    assert "Running with problems" in text
    assert "cannot reach the home server" in text
    assert "Setting up the chat rooms failed: M_FORBIDDEN &lt;b&gt;x&lt;/b&gt;" in text


async def test_dashboard_with_a_locked_sim(web_factory: Any,
                                           locked_control_stack: ControlStack) -> None:
    c = await web_factory(control_socket=locked_control_stack.socket)
    complete_setup(c.settings)
    await c.login()
    _, text = await c.page("/")
    assert "Running with problems" in text and "No phone line is working" in text
    assert "locked with a PIN" in text


async def test_dashboard_without_bridge_says_so(web_factory: Any, tmp_path: Path) -> None:
    c = await web_factory(control_socket=tmp_path / "missing.sock")
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/")
    assert status == 200 and "bridge is not running" in text


def test_charts_are_valid_svg() -> None:
    for svg in (
        plots.signal_chart([(0, 10), (60, 80), (120, 55)], line_name="sms <1>"),
        plots.signal_chart([], line_name="x"),
        plots.messages_chart([("2026-11-21", 3, 1), ("2026-11-22", 0, 7)]),
        plots.messages_chart([]),
    ):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and root.get("role") == "img"
        assert root.find("{http://www.w3.org/2000/svg}title") is not None


# -- the certificate authority ------------------------------------------------------------


def test_ca_root_and_server_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", "family-smith.net")
    assert ca.ensure(("textbridge.local",), ("192.168.1.5",)) is True
    root = ca.ca_certificate()
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime < dt.timedelta(days=3651)
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    nc = root.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = nc.value.permitted_subtrees or []
    dns = {g.value for g in permitted if isinstance(g, x509.DNSName)}
    assert dns == {"family-smith.net", "local"}
    assert any(isinstance(g, x509.IPAddress) and str(g.value) == "192.168.0.0/16"
               for g in permitted)

    server = ca.server_certificate()
    assert server is not None
    server.verify_directly_issued_by(root)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["family-smith.net", "textbridge.local"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.168.1.5"]
    assert server.not_valid_after_utc - server.not_valid_before_utc <= dt.timedelta(days=398)
    for key in (ca.ca_key_path, ca.server_key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # Unchanged: nothing reissued. A new address, or near expiry: reissued from the same root.
    assert ca.ensure(("textbridge.local",), ("192.168.1.5",)) is False
    assert ca.ensure(("textbridge.local",), ("10.0.0.2",)) is True
    renewed = ca.server_certificate()
    assert renewed is not None and renewed.serial_number != server.serial_number
    assert ca.ca_certificate().serial_number == root.serial_number

    # A root made under a provisional name (before the homeserver existed) is replaced by
    # one that permits the real name; a .local name never needs that.
    early = CertificateAuthority(tmp_path / "early", "textbridge.local")
    early.ensure()
    first_root = early.ca_certificate()
    assert CertificateAuthority(tmp_path / "early", "box.local").ensure() is True
    assert early.ca_certificate() == first_root
    later = CertificateAuthority(tmp_path / "early", "family-smith.net")
    later.ensure()
    assert later.ca_certificate() != first_root
    leaf = later.server_certificate()
    assert leaf is not None
    leaf.verify_directly_issued_by(later.ca_certificate())


async def test_server_certificate_works_for_tls(tmp_path: Path) -> None:
    """A real TLS handshake, the client trusting only our root and checking the name:
    OpenSSL accepts the chain with its name constraints."""
    ca = CertificateAuthority(tmp_path / "ca", "textbridge.local")
    ca.ensure((), ("127.0.0.1",))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(ca.server_cert_path, ca.server_key_path)
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello over TLS")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/", ssl=client_ctx,
                                   server_hostname="textbridge.local") as resp:
                assert await resp.text() == "hello over TLS"
            async with session.get(f"https://127.0.0.1:{port}/", ssl=client_ctx) as resp:
                assert resp.status == 200  # the IP SAN
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{port}/", ssl=client_ctx,
                                       server_hostname="bank.example"):
                    pass
            default = ssl.create_default_context()  # the system roots only
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{port}/", ssl=default,
                                       server_hostname="textbridge.local"):
                    pass
    finally:
        await runner.cleanup()


async def test_certificate_downloads(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    resp = await c.client.get("/ca/textbridge-ca.crt")
    assert resp.status == 404  # nothing made yet
    ca = CertificateAuthority(c.settings.state_dir / "ca", "textbridge.local")
    ca.ensure()
    resp = await c.client.get("/ca/textbridge-ca.crt")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-x509-ca-cert"
    cert = x509.load_der_x509_certificate(await resp.read())
    assert cert == ca.ca_certificate()
    resp = await c.client.get("/ca/textbridge-ca.pem")
    assert x509.load_pem_x509_certificate(await resp.read()) == cert
    resp = await c.client.get("/ca/textbridge.mobileconfig")
    assert resp.headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(await resp.read())
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert x509.load_der_x509_certificate(payload["PayloadContent"]) == cert
    assert payload["PayloadUUID"] != profile["PayloadUUID"]
    for key in ("PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"):
        assert profile[key] and payload[key]
    again = plistlib.loads(await (await c.client.get("/ca/textbridge.mobileconfig")).read())
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    for platform, words in (("android", "CA certificate"), ("ios", "Certificate Trust")):
        status, text = await c.page(f"/install/{platform}")
        assert status == 200 and words in text
        assert ca.info().fingerprint_sha256 in text
    assert (await c.client.get("/ca/other.key")).status == 404


# -- backups ----------------------------------------------------------------------------


async def test_backup_round_trip_over_http(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    CertificateAuthority(c.settings.state_dir / "ca", "textbridge.local").ensure()
    await c.login()
    status, text, _ = await c.submit("/backup", "/backup/download",
                                     {"passphrase": "short", "passphrase2": "short"})
    assert status == 400 and "at least 12" in text
    status, text, _ = await c.submit(
        "/backup", "/backup/download",
        {"passphrase": "a very long phrase", "passphrase2": "a very long phrasE"},
    )
    assert status == 400 and "not the same" in text
    status, _, resp = await c.submit(
        "/backup", "/backup/download",
        {"passphrase": "a very long phrase", "passphrase2": "a very long phrase"},
    )
    assert status == 200
    assert "attachment" in resp.headers["Content-Disposition"]
    blob = await resp.read()
    assert blob.startswith(backup.MAGIC)
    original = {p.relative_to(c.settings.state_dir): p.read_bytes()
                for p in c.settings.state_dir.rglob("*") if p.is_file()}
    assert b"password_hash" not in blob  # encrypted, not merely packed

    # Lose the family and the CA, then restore.
    (c.settings.state_dir / "family.json").unlink()
    (c.settings.state_dir / "ca" / "ca.key").unlink()

    async def restore(data: bytes, phrase: str) -> aiohttp.ClientResponse:
        token = await c.csrf("/backup")
        form = aiohttp.FormData()
        form.add_field("csrf", token)
        form.add_field("passphrase", phrase)
        form.add_field("file", data, filename="b.tbbackup")
        return await c.client.post("/backup/restore", data=form, allow_redirects=False)

    resp = await restore(blob, "the wrong phrase!")
    assert resp.status == 400 and "passphrase is wrong" in await resp.text()
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    resp = await restore(bytes(tampered), "a very long phrase")
    assert resp.status == 400 and "damaged" in await resp.text()
    resp = await restore(b"not a backup", "a very long phrase")
    assert resp.status == 400 and "not a Textbridge backup" in await resp.text()
    resp = await restore(blob, "a very long phrase")
    assert resp.status == 303
    for rel, content in original.items():
        assert (c.settings.state_dir / rel).read_bytes() == content, rel
    assert stat.S_IMODE((c.settings.state_dir / "ca" / "ca.key").stat().st_mode) == 0o600
    # Everyone logs in again after a restore.
    resp = await c.client.get("/", allow_redirects=False)
    assert resp.status == 303


def test_restore_refuses_hostile_archives(tmp_path: Path) -> None:
    for name, kind in (("../escape", tarfile.REGTYPE), ("/etc/evil", tarfile.REGTYPE),
                       ("link", tarfile.SYMTYPE), ("dev", tarfile.CHRTYPE)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = b"x"
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
        blob = backup.encrypt(buf.getvalue(), "passphrase-123")
        target = tmp_path / name.replace("/", "_")
        target.mkdir()
        with pytest.raises(backup.BackupError):
            backup.restore(target, blob, "passphrase-123")
        assert list(target.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_state_files_are_private(tmp_path: Path) -> None:
    from appliance.web.config import WebSettings

    settings = WebSettings(state_dir=tmp_path / "s")
    complete_setup(settings)
    state = WebState(settings)
    state.session_secret()
    for path in (settings.state_dir).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    owner = json.loads((settings.state_dir / "owner.json").read_text())
    assert owner["password_hash"].startswith("$argon2id$")
    assert OWNER_PASSWORD not in (settings.state_dir / "owner.json").read_text()
    assert os.stat(settings.state_dir).st_mode & 0o077 == 0


def test_cli_serves_the_wizard(tmp_path: Path) -> None:
    """`textbridge web` as the lead registers it: a real process on a real port."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tls_port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "web", "--state-dir", str(tmp_path / "state"),
         "--host", "127.0.0.1", "--port", str(port), "--https-port", str(tls_port),
         "--certificate-ip", "192.168.1.50",
         "--control-socket", str(tmp_path / "none.sock")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/setup/1") as resp:
                    body = resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert "Create my account" in body
        key = tmp_path / "state" / "session.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # HTTPS with the appliance's own certificate, trusted through its own root only. The
        # HTTP site comes up first; the CA is made (in a thread) before the HTTPS one.
        ca_cert = tmp_path / "state" / "ca" / "ca.crt"
        while not ca_cert.exists():
            assert time.monotonic() < deadline + 20 and proc.poll() is None, "no CA made"
            time.sleep(0.2)
        context = ssl.create_default_context(cafile=str(ca_cert))
        reply = b""
        while not reply:
            try:
                with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw, \
                        context.wrap_socket(raw, server_hostname="textbridge.local") as tls:
                    tls.sendall(b"GET /setup/1 HTTP/1.1\r\nHost: textbridge.local\r\n"
                                b"Connection: close\r\n\r\n")
                    while chunk := tls.recv(65536):
                        reply += chunk
            except (ConnectionRefusedError, FileNotFoundError, ssl.SSLError):
                # The HTTPS site starts after the certificate is made.
                if time.monotonic() > deadline + 20 or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert reply.startswith(b"HTTP/1.1 200") and b"Create my account" in reply
        assert b"Secure" in reply.split(b"\r\n\r\n", 1)[0]  # the cookie over HTTPS
        from cryptography import x509

        server = x509.load_pem_x509_certificate(
            (tmp_path / "state" / "ca" / "server.crt").read_bytes())
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "192.168.1.50" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    finally:
        proc.terminate()
        proc.wait(10)


async def test_welcome_offers_the_home_address_the_certificate_names(web_factory: Any) -> None:
    """Many Android phones cannot resolve `.local` names: the welcome page also gives the
    box's home IPv4 address, but only one its certificate names (any other would fail)."""
    from appliance.web.ca import CertificateAuthority

    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/family/owner/welcome")
    assert status == 200 and "https://textbridge.local" in text
    assert "cannot find that server" not in text  # no certificate yet: nothing to offer
    ca = CertificateAuthority(c.settings.state_dir / "ca", "textbridge.local")
    ca.ensure(("textbridge.local",), ("192.168.1.50", "127.0.0.1", "fd12::5", "198.51.100.7"))
    status, text = await c.page("/family/owner/welcome")
    assert "cannot find that server" in text and "https://192.168.1.50" in text
    for other in ("127.0.0.1", "fd12::5", "198.51.100.7"):
        assert f"https://{other}" not in text
