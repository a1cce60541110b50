"""The family domain's certificate, end to end: the wizard (and the dashboard) order it from
a real ACME server (pebble), pebble validates HTTP-01 against the web app's own port, and the
HTTPS site then presents it to clients asking for the domain while `textbridge.local` keeps
the home CA's certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from cryptography import x509

from appliance.web import cli as web_cli
from appliance.web.app import WEB_KEY, Web, make_app
from appliance.web.config import WebSettings
from appliance.web.state import Member, WebState
from tests.plugins.acme import Pebble, free_port, needs_pebble
from tests.plugins.web import OWNER, OWNER_PASSWORD, WebClient, complete_setup, forged_peer

pytestmark = needs_pebble

DOMAIN = "textbridge.test"
STRANGER = "203.0.113.9"  # pebble, as the internet would reach the box


@dataclass
class Site:
    client: WebClient
    web: Web
    https_port: int


def _prepare_wizard(settings: WebSettings) -> None:
    """The state after steps 1 to 4 with a domain entered in step 2."""
    state = WebState(settings)
    mxid = f"@{OWNER}:{DOMAIN}"
    state.save_owner(name="Owner Person", username=OWNER, mxid=mxid,
                     password_hash=PasswordHasher().hash(OWNER_PASSWORD))
    state.upsert_member(Member(name="Owner Person", username=OWNER, mxid=mxid, owner=True))
    state.mark_done(1)
    state.mark_done(2, domain=DOMAIN)
    state.mark_done(3)
    state.mark_done(4)


@pytest.fixture
async def site_factory(
    pebble: Pebble, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    made: list[TestClient[web.Request, web.Application]] = []

    async def make(*, http_port: int | None = None, remote: str | None = None) -> Site:
        settings = WebSettings(
            state_dir=tmp_path / "web",
            acme_directory=pebble.directory,
            acme_ca_bundle=pebble.ca_file,
            acme_poll_interval=0.1,
            certificate_ips=("127.0.0.1",),
        )
        app = make_app(settings)
        holder: list[WebClient] = []
        app.middlewares.insert(0, forged_peer(lambda: holder[0].remote))
        # The HTTP site on the port pebble validates on (port 80 of the domain).
        server = TestServer(app, host="127.0.0.1", port=http_port or pebble.http_port)
        client = TestClient(server)
        await client.start_server()
        w = app[WEB_KEY]
        https_port = free_port()
        context = await asyncio.to_thread(w.tls.context)
        # The HTTPS site on the same runner, as `textbridge web --https-port` does.
        assert server.runner is not None
        await web.TCPSite(server.runner, "127.0.0.1", https_port, ssl_context=context).start()
        made.append(client)
        holder.append(WebClient(client, settings, remote))
        return Site(holder[0], w, https_port)

    yield make
    for client in made:
        await client.close()


def _served_certificate_blocking(port: int, name: str) -> x509.Certificate:
    """The leaf the HTTPS site presents to a client asking for `name` (SNI)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def _served_certificate(port: int, name: str) -> x509.Certificate:
    # In a thread: the server answering the handshake runs on this test's event loop.
    return await asyncio.to_thread(_served_certificate_blocking, port, name)


async def _verified_handshake(port: int, name: str, cafile: Path | None = None,
                              cadata: str | None = None) -> None:
    await asyncio.to_thread(_verified_handshake_blocking, port, name, cafile, cadata)


def _verified_handshake_blocking(port: int, name: str, cafile: Path | None = None,
                        cadata: str | None = None) -> None:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None, cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name):
        pass


async def _pebble_root(pebble: Pebble) -> str:
    async with aiohttp.ClientSession() as session, session.get(
        pebble.management + "/roots/0", ssl=pebble.ssl
    ) as resp:
        assert resp.status == 200
        return await resp.text()


def _san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(ext.value.get_values_for_type(x509.DNSName))


async def test_wizard_gets_the_domain_a_trusted_certificate(
    site_factory: Any, pebble: Pebble
) -> None:
    site = await site_factory(remote=None)
    c = site.client
    _prepare_wizard(c.settings)
    await c.login()
    status, text = await c.page("/setup/5")
    assert status == 200 and f"Your domain {DOMAIN}" in text and "Subscriber Agreement" in text

    # Refusals first: nothing is ordered without the owner accepting the CA's terms, and a
    # hostile email is refused in words.
    status, text, _ = await c.submit("/setup/5", "/setup/5/acme", {"email": ""})
    assert status == 400 and "Tick the box" in text
    for bad in ("not an email", "a@b", "<script>@x.org", "x@exa mple.org", "a\u202e@x.org"):
        status, text, _ = await c.submit("/setup/5", "/setup/5/acme",
                                         {"email": bad, "agree": "yes"})
        assert status == 400 and ("email address" in text or "domain name" in text), bad
    assert not site.web.tls.working and site.web.tls.status().state == "none"
    # Without the CSRF token the form does nothing.
    resp = await c.client.post("/setup/5/acme", data={"agree": "yes"}, allow_redirects=False)
    assert resp.status == 403

    # Pebble reaches the challenge from "the internet" while the wizard itself answers
    # only the home network.
    status, _, _ = await c.submit("/setup/5", "/setup/5/acme",
                                  {"email": "owner@textbridge.test", "agree": "yes"})
    assert status == 303
    c.remote = STRANGER
    status, _ = await c.page("/setup/5")
    assert status == 403
    await asyncio.wait_for(site.web.tls.wait(), 60)
    c.remote = None
    status, text = await c.page("/setup/5")
    assert "has a certificate every phone" in text, text
    st = site.web.tls.status()
    assert st.state == "ok" and st.domain == DOMAIN and st.days_left is not None
    for path in (site.web.tls.cert_path, site.web.tls.key_path, site.web.tls.account_key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    # The HTTPS site: the domain gets pebble's certificate, verified against pebble's root
    # only; textbridge.local (and a client sending no usable name) the home CA's.
    own = await _served_certificate(site.https_port, DOMAIN)
    assert _san(own) == [DOMAIN]
    root = await _pebble_root(pebble)
    await _verified_handshake(site.https_port, DOMAIN, cadata=root)
    home = await _served_certificate(site.https_port, "textbridge.local")
    assert "textbridge.local" in _san(home) and home.issuer != own.issuer
    ca = site.web.ca()
    await _verified_handshake(site.https_port, "textbridge.local", cafile=ca.ca_cert_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _verified_handshake(site.https_port, "textbridge.local", cadata=root)

    # Nothing to renew now; a different domain (or an expiring certificate) would be.
    assert not site.web.tls.renewal_due(DOMAIN)
    assert site.web.tls.renewal_due("other.textbridge.test")


async def test_unreachable_port_80_is_explained_and_the_home_certificate_stays(
    site_factory: Any,
) -> None:
    # The web app listens elsewhere: pebble's check of "port 80" finds nobody, as when the
    # router forwards nothing.
    site = await site_factory(http_port=free_port())
    c = site.client
    _prepare_wizard(c.settings)
    await c.login()
    status, _, _ = await c.submit("/setup/5", "/setup/5/acme", {"agree": "yes"})
    assert status == 303
    await asyncio.wait_for(site.web.tls.wait(), 60)
    status, text = await c.page("/setup/5")
    assert "No certificate yet." in text and "port 80" in text, text
    assert 'action="/setup/5/acme"' in text  # the owner can try again
    assert not site.web.tls.cert_path.exists()
    home = await _served_certificate(site.https_port, DOMAIN)
    assert "textbridge.local" in _san(home)  # the site still answers, with the home one
    # The daily check does not hammer the CA after a failure; it waits hours.
    assert not site.web.tls.renewal_due(DOMAIN)
    st = site.web.tls.status()
    assert site.web.tls.renewal_due(DOMAIN, now=st.at + 7 * 3600)


async def test_dashboard_orders_and_the_daily_check_renews(
    site_factory: Any, pebble: Pebble
) -> None:
    site = await site_factory()
    c = site.client
    complete_setup(c.settings)
    state = WebState(c.settings)
    state.save_setup({**state.setup(), "domain": DOMAIN})
    # Logged out: refused, nothing ordered.
    token = await c.csrf("/login")
    resp = await c.client.post("/certificate", data={"csrf": token, "agree": "yes"},
                               allow_redirects=False)
    assert resp.status == 403 and not site.web.tls.working
    await c.login()
    status, text = await c.page("/")
    assert status == 200 and 'action="/certificate"' in text
    status, text, _ = await c.submit("/", "/certificate", {"agree": ""})
    assert status == 400 and "Tick the box" in text
    status, _, _ = await c.submit("/", "/certificate", {"agree": "yes"})
    assert status == 303
    # A second press while the order runs starts no second order.
    assert site.web.tls.working and not site.web.tls.start(DOMAIN)
    await asyncio.wait_for(site.web.tls.wait(), 60)
    first = await _served_certificate(site.https_port, DOMAIN)
    assert _san(first) == [DOMAIN]

    # The domain changes (a restore onto another box): the daily check orders anew and the
    # running site serves the new certificate without a restart.
    other = "home.textbridge.test"
    state.save_setup({**state.setup(), "domain": other})
    await web_cli.renew(site.web)
    assert site.web.tls.working
    await asyncio.wait_for(site.web.tls.wait(), 60)
    renewed = await _served_certificate(site.https_port, other)
    assert _san(renewed) == [other] and renewed.serial_number != first.serial_number
    status, text = await c.page("/")
    assert f"{other} has a certificate every phone" in text


async def test_an_order_cut_short_by_a_restart_is_reported(site_factory: Any) -> None:
    site = await site_factory()
    tls = site.web.tls
    tls._record("working", DOMAIN)  # what a crash in the middle of an order leaves
    st = tls.status()
    assert st.state == "error" and "restarted" in st.message
    # A certificate whose key does not match (power cut between the two writes) is not
    # served: the home certificate is, and a renewal is due.
    tls.dir.mkdir(parents=True, exist_ok=True)
    ca = site.web.ca()
    tls.cert_path.write_bytes(ca.server_cert_path.read_bytes())
    tls.key_path.write_bytes(ca.ca_key_path.read_bytes())
    await asyncio.to_thread(tls.reload)
    assert not tls.describe()["serving"]


@pytest.mark.netns
def test_home_addresses_name_what_a_phone_at_home_can_type(tmp_path: Path) -> None:
    """In a network namespace of its own with a home address, a public one and the usual
    link-local/loopback ones: only the home (private) addresses are put in the home
    certificate, through the real netlink interface."""
    import os
    import shutil
    import subprocess
    import sys
    import uuid

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    ns = f"tb-addr-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def run(*cmd: str) -> None:
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)

        run("ip", "link", "set", "lo", "up")
        run("ip", "link", "add", "home0", "type", "veth", "peer", "name", "home1")
        run("ip", "link", "set", "home0", "up")
        run("ip", "addr", "add", "192.168.77.5/24", "dev", "home0")
        run("ip", "addr", "add", "198.51.100.7/24", "dev", "home0")
        run("ip", "-6", "addr", "add", "fd12:3456::5/64", "dev", "home0", "nodad")
        code = (
            "from appliance.web.tls import home_addresses; "
            "print(','.join(home_addresses()))"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
        ).stdout.strip()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert sorted(out.split(",")) == ["192.168.77.5", "fd12:3456::5"], out
