""""I already run Matrix": the appliance on a family's existing homeserver.

Two network namespaces joined by a veth pair: "hs" runs the family's Synapse (server name
family.test, which is not the host in its URL), "app" runs the appliance. The test's own
thread enters "app" (setns), so every socket the appliance and the test's Matrix clients
open lives there and reaches Synapse only over the veth, as over a home network.

The registration is made by the appliance in its "external" mode and installed the way the
server's admin would: listed in app_service_config_files, then a restart. The appliance
never calls Synapse's admin API; the family's account is made beforehand, as the admin would.

Synapse runs on SQLite here: the Synapse venv has no psycopg2 (docs/homeserver.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.bridge import Bridge
from appliance.config import Config
from appliance.homeserver import firewall
from appliance.homeserver.external import ExternalAdapter, ExternalHomeserver, registration_for
from appliance.homeserver.link import check_link, check_server, listener_answers
from appliance.homeserver.registration import Registration, new_token
from appliance.homeserver.synapse import DEFAULT_PYTHON, SynapseAdapter, SynapseServer, free_port
from appliance.run import Appliance
from appliance.store import Store
from tests.netns import sh, why_not
from tests.plugins.bridge import Member, eventually
from tests.plugins.synapse import MatrixUser, create_test_user, listening_sockets

HS_IP = "198.51.100.1"
APP_IP = "198.51.100.2"
SERVER_NAME = "family.test"
NUMBER = "+4915112345678"
START_TIMEOUT = 120.0
CLONE_NEWNET = 0x40000000


def _why_not() -> str | None:
    return why_not(["ip", "nft"], python=DEFAULT_PYTHON)


pytestmark = [
    pytest.mark.netns,
    pytest.mark.synapse,
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
]




_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """This thread in `netns` (Python 3.11 has no os.setns); sockets made meanwhile stay
    there for good. Threads started meanwhile are born there too."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(target)
        os.close(back)


@dataclass
class Family:
    """The family's server and what its admin made on it."""

    hs: str
    app: str
    base: Path
    server: SynapseServer
    anna: MatrixUser
    registration: Registration
    state: Path
    bridge_port: int

    @property
    def bridge_url(self) -> str:
        return f"http://{APP_IP}:{self.bridge_port}"

    def nft_app(self, ruleset: str) -> None:
        path = self.base / f"rules-{secrets.token_hex(3)}.nft"
        path.write_text(ruleset)
        sh("ip", "netns", "exec", self.app, "nft", "-f", str(path))


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Family]:
    base = tmp_path_factory.mktemp("family")
    sfx = secrets.token_hex(3)
    hs, app = f"tbfh-{sfx}", f"tbfa-{sfx}"
    server: SynapseServer | None = None
    try:
        for ns in (hs, app):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"fh{sfx}", "netns", hs, "type", "veth",
           "peer", "name", f"fa{sfx}", "netns", app)
        sh("ip", "-n", hs, "addr", "add", f"{HS_IP}/24", "dev", f"fh{sfx}")
        sh("ip", "-n", app, "addr", "add", f"{APP_IP}/24", "dev", f"fa{sfx}")
        sh("ip", "-n", hs, "link", "set", f"fh{sfx}", "up")
        sh("ip", "-n", app, "link", "set", f"fa{sfx}", "up")
        server = SynapseServer(
            base / "synapse",
            server_name=SERVER_NAME,
            bind_host=HS_IP,
            command_prefix=["ip", "netns", "exec", hs],
            extra_config={"serve_client_wellknown": True},
        )
        state = base / "appliance"
        bridge_port = free_port()
        with inside(app):
            asyncio.run(server.start(START_TIMEOUT))
            # The family member's account, made by the server's admin long before Textbridge.
            anna = asyncio.run(create_test_user(SynapseAdapter.for_server(server), "anna"))
            # What the wizard does in "Connect to my homeserver": a registration for that
            # server, whose url is the appliance's home address.
            registration = registration_for(
                state / "registration.yaml", f"http://{APP_IP}:{bridge_port}", SERVER_NAME
            )
            # The admin installs the downloaded file: app_service_config_files, restart.
            installed = base / "synapse-admin" / "textbridge.yaml"
            installed.parent.mkdir()
            shutil.copy(state / "registration.yaml", installed)
            server.add_appservice_file(installed)
            asyncio.run(server.restart(START_TIMEOUT))
        yield Family(hs, app, base, server, anna, registration, state, bridge_port)
    finally:
        if server is not None:
            with inside(app):
                asyncio.run(server.stop())
        for ns in (hs, app):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def in_app(family: Family) -> Iterator[Family]:
    with inside(family.app):
        yield family


def appliance_config(family: Family, tmp: Path, modem: Path) -> Config:
    return Config.from_dict(
        {
            "general": {"data_dir": str(tmp / "data"), "home_country": "DE"},
            "modem": {"port": str(modem), "sweep_interval": 5.0, "retry_delay": 0.2},
            "bridge": {
                "homeserver": "external",
                "homeserver_url": family.server.url,
                "server_name": SERVER_NAME,
                "homeserver_address": HS_IP,
                "registration": str(family.state / "registration.yaml"),
                "listen_host": APP_IP,
                "listen_port": family.bridge_port,
                "lines": [{"id": "sms", "owner": family.anna.mxid}],
            },
        }
    )


async def test_texts_through_the_familys_own_server(
    in_app: Family, modem_sim_factory: Any, tmp_path: Path
) -> None:
    family = in_app
    server = family.server
    # The address the owner types: the wizard finds the client API and its well-known.
    found = await check_server(server.url)
    assert found.problem is None and found.versions, found
    assert found.well_known == server.url
    # The Matrix ID is checked on the server, by a profile lookup, never the admin API.
    adapter = ExternalAdapter(ExternalHomeserver(server.url, SERVER_NAME), family.registration)
    assert await adapter.mxid_exists(family.anna.mxid)
    assert not await adapter.mxid_exists(f"@nobody{secrets.token_hex(3)}:{SERVER_NAME}")

    sim = modem_sim_factory(pin=None, link_path=tmp_path / "modem")
    appliance = Appliance(appliance_config(family, tmp_path, tmp_path / "modem"))
    await appliance.start()
    anna = Member(server.url, family.anna)
    try:
        assert await appliance.lines["sms"].wait_ready(30)
        # Bound to the home address only (this thread, and so /proc/net, is in "app").
        ports = {a for a in listening_sockets(os.getpid()) if a[1] == family.bridge_port}
        assert ports == {(APP_IP, family.bridge_port)}, ports
        report = await check_link(
            server.url,
            SERVER_NAME,
            family.registration,
            bridge_listening=await listener_answers(APP_IP, family.bridge_port),
        )
        assert report.ok, report.problems
        assert report.ping_ms is not None

        # The existing account is the line's owner: the bot opens its management room.
        async def managed() -> bool:
            return await appliance.bridge.db.management_room(family.anna.mxid) is not None

        await eventually(managed, timeout=60, what="anna's management room")

        sim.network.deliver(NUMBER, "Hallo from the phone network")
        ghost = f"@{family.registration.user_prefix}{NUMBER.lstrip('+')}:{SERVER_NAME}"

        async def portal() -> bool:
            p = await appliance.bridge.db.portal("sms", NUMBER)
            return p is not None and p.ready

        await eventually(portal, timeout=60, what="the portal room on the family's server")
        room = (await appliance.bridge.db.portal("sms", NUMBER)).room_id
        await anna.join(room, timeout=30)
        texts = await anna.wait_for(
            room,
            lambda e: e["type"] == "m.room.message" and e["sender"] == ghost,
            timeout=30,
        )
        assert texts[0]["content"]["body"] == "Hallo from the phone network"

        await anna.say(room, "Reply from the family's server")

        async def sent() -> bool:
            return any(
                "Reply from the family's server" in t for _, t in sim.network.sent_messages()
            )

        await eventually(sent, timeout=60, what="the reply at the simulated network")
        assert (NUMBER, "Reply from the family's server") in sim.network.sent_messages()
    finally:
        await anna.close()
        await appliance.stop()


@dataclass
class Listening:
    bridge: Bridge
    store: Store


@contextlib.asynccontextmanager
async def bridge_listening(
    family: Family, tmp: Path, registration: Registration
) -> Any:
    config = appliance_config(family, tmp, tmp / "no-modem").bridge
    config = dataclasses.replace(config, database=tmp / "bridge.db")
    store = await Store.open(tmp / "textbridge.db")
    bridge = Bridge(config, registration, store, {})
    await bridge.start()
    try:
        yield Listening(bridge, store)
    finally:
        await bridge.stop()
        await store.close()


async def _check(family: Family, registration: Registration, url: str | None = None) -> Any:
    return await check_link(
        url or family.server.url,
        SERVER_NAME,
        registration,
        bridge_listening=await listener_answers(APP_IP, family.bridge_port),
        ping_timeout=15,
    )


async def test_each_failure_has_its_words(in_app: Family, tmp_path: Path) -> None:
    family = in_app
    registration = family.registration

    # The server unreachable: nothing answers at that address.
    wrong = f"http://{HS_IP}:{free_port()}"
    report = await _check(family, registration, url=wrong)
    assert not report.ok and report.to_homeserver is not None
    assert report.to_homeserver.key == "unreachable", report.problems
    assert wrong in report.to_homeserver.words and "cannot reach" in report.to_homeserver.words

    # The registration not installed (a fresh one the server never saw).
    fresh = Registration.generate(url=family.bridge_url)
    report = await _check(family, fresh)
    assert report.to_homeserver is not None and report.to_homeserver.key == "not-installed"
    assert "app_service_config_files" in report.to_homeserver.words

    # The bridge not running: the homeserver's ping finds nothing there.
    report = await _check(family, registration)
    assert report.to_homeserver is None
    assert report.to_bridge is not None and report.to_bridge.key == "bridge-down"

    async with bridge_listening(family, tmp_path / "a", registration):
        report = await _check(family, registration)
        assert report.ok, report.problems

        # The ping blocked by a firewall on the way (here: on the appliance's side).
        family.nft_app(
            "table inet blocker {\n chain input {\n"
            "  type filter hook input priority filter - 5; policy accept;\n"
            f"  ip saddr {HS_IP} tcp dport {family.bridge_port} reject with tcp reset\n"
            " }\n}\n"
        )
        try:
            started = time.monotonic()
            report = await _check(family, registration)
            assert report.to_bridge is not None and report.to_bridge.key == "blocked"
            assert f"port {family.bridge_port}" in report.to_bridge.words
            assert time.monotonic() - started < 15
        finally:
            sh("ip", "netns", "exec", family.app, "nft", "delete", "table", "inet", "blocker")
        report = await _check(family, registration)
        assert report.ok, report.problems

    # A wrong token: the server's copy and the bridge's disagree on hs_token.
    stale = dataclasses.replace(registration, hs_token=new_token())
    async with bridge_listening(family, tmp_path / "b", stale):
        report = await _check(family, registration)
        assert report.to_bridge is not None and report.to_bridge.key == "wrong-token"
        assert "not the current one" in report.to_bridge.words


def _connect_from(family: Family, source: str) -> bool:
    """A TCP connection to the bridge's port from `source`, an address in the "hs"
    namespace (the homeserver's host, or another machine on that network)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(3)\n"
        f"s.bind(({source!r}, 0))\n"
        f"try: s.connect(({APP_IP!r}, {family.bridge_port}))\n"
        "except OSError: sys.exit(3)\n"
    )
    proc = sh("ip", "netns", "exec", family.hs, sys.executable, "-c", code, check=False)
    return proc.returncode == 0


async def test_firewall_admits_only_the_homeserver(in_app: Family, tmp_path: Path) -> None:
    family = in_app
    other = "198.51.100.3"  # another machine on the same network
    sh("ip", "-n", family.hs, "addr", "replace", f"{other}/24", "dev",
       f"fh{family.hs.removeprefix('tbfh-')}")
    rules = firewall.ruleset(family.bridge_port, HS_IP)
    async with bridge_listening(family, tmp_path, family.registration):
        assert await asyncio.to_thread(_connect_from, family, other)
        family.nft_app(rules)
        family.nft_app(rules)  # loading it again replaces it: one table
        try:
            tables = sh("ip", "netns", "exec", family.app, "nft", "list", "tables").stdout
            assert tables.count(firewall.TABLE) == 1, tables
            assert not await asyncio.to_thread(_connect_from, family, other)
            assert await asyncio.to_thread(_connect_from, family, HS_IP)
            report = await _check(family, family.registration)
            assert report.ok, report.problems
        finally:
            sh("ip", "netns", "exec", family.app, "nft", "delete", "table", "inet",
               firewall.TABLE)
        assert await asyncio.to_thread(_connect_from, family, other)


async def test_wizard_connects_to_my_homeserver(
    in_app: Family, web_factory: Any, tmp_path: Path
) -> None:
    """The owner walks the server step's second way in the web app; the family's admin
    installs what it offers; the appliance restarts onto that server and the link holds."""
    from argon2 import PasswordHasher

    from appliance.web.state import Member as WebMember
    from appliance.web.state import WebState
    from tests.plugins.web import OWNER, OWNER_PASSWORD

    family = in_app
    # A server of its own: installing this test's registration needs a restart.
    server = SynapseServer(
        tmp_path / "synapse",
        server_name=SERVER_NAME,
        bind_host=HS_IP,
        command_prefix=["ip", "netns", "exec", family.hs],
        extra_config={"serve_client_wellknown": True},
    )
    await server.start(START_TIMEOUT)
    appliance: Appliance | None = None
    try:
        anna = await create_test_user(SynapseAdapter.for_server(server), "anna")
        port = free_port()
        web = await web_factory(appservice_port=port)
        state = WebState(web.settings)
        state.save_owner(name="Anna", username=OWNER, mxid="@owner:textbridge.local",
                         password_hash=PasswordHasher().hash(OWNER_PASSWORD))
        state.upsert_member(WebMember(name="Anna", username=OWNER,
                                      mxid="@owner:textbridge.local", owner=True))
        state.mark_done(1)
        await web.login()

        status, text = await web.page("/setup/2")
        assert status == 200 and "Connect to my homeserver" in text
        form = "/setup/2/external"
        # A typo in the address, then an account the server does not have.
        status, text, _ = await web.submit(form, form, {"url": f"http://{HS_IP}:{free_port()}",
                                                        "mxid": anna.mxid})
        assert status == 400 and "cannot reach your homeserver" in text
        status, text, _ = await web.submit(form, form, {"url": server.url,
                                                        "mxid": f"@nobody:{SERVER_NAME}"})
        assert status == 400 and "has no account" in text
        status, text, _ = await web.submit(form, form, {"url": server.url, "mxid": anna.mxid})
        assert status == 303, text
        chosen_file = web.settings.state_dir / "homeserver.json"
        assert chosen_file.stat().st_mode & 0o777 == 0o600
        chosen = json.loads(chosen_file.read_text())
        assert chosen["listen_host"] == APP_IP and chosen["homeserver_address"] == HS_IP
        assert state.owner()["mxid"] == anna.mxid  # type: ignore[index]

        resp = await web.client.get("/setup/2/registration.yaml")
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        downloaded = await resp.text()
        registration = Registration.from_yaml(downloaded)
        assert registration.url == f"http://{APP_IP}:{port}"
        assert registration.user_regex(SERVER_NAME) in downloaded.replace("\\\\", "\\")

        # Not installed yet: the wizard says so, in words.
        status, text, _ = await web.submit(form, "/setup/2/check", {})
        assert status == 409 and 'data-key="not-installed"' in text
        assert 2 not in state.done_steps()

        # The family's admin installs the download and restarts the server.
        admin_copy = tmp_path / "admin" / "textbridge.yaml"
        admin_copy.parent.mkdir()
        admin_copy.write_text(downloaded)
        server.add_appservice_file(admin_copy)
        await server.restart(START_TIMEOUT)

        # The bridge not running yet: the homeserver's ping finds nobody there.
        status, text, _ = await web.submit(form, "/setup/2/check", {})
        assert status == 409 and 'data-key="bridge-down"' in text

        # The appliance, started on its usual config, takes the server the wizard chose.
        config = Config.from_dict(
            {
                "general": {"data_dir": str(tmp_path / "data")},
                "modem": {"enabled": False},
                "bridge": {"registration": str(tmp_path / "none.yaml"),
                           "listen_port": port, "lines": [{"id": "sms"}]},
            }
        )
        appliance = Appliance(config, web_state=web.settings.state_dir)
        await appliance.start()
        assert appliance.homeserver_watch is None  # the family's server is not ours to restart
        assert appliance.bridge.config.homeserver == "external"
        assert appliance.bridge.config.line("sms").owner == anna.mxid

        status, text, _ = await web.submit(form, "/setup/2/check", {})
        assert status == 200 and 'id="link-ok"' in text, text
        assert 2 in state.done_steps()

        async def managed() -> bool:
            assert appliance is not None
            return await appliance.bridge.db.management_room(anna.mxid) is not None

        await eventually(managed, timeout=60, what="the owner's management room")

        # The family: existing accounts, by Matrix ID, checked on the server.
        state.mark_done(3)
        ben = await create_test_user(SynapseAdapter.for_server(server), "ben")
        status, text = await web.page("/setup/4")
        assert 'name="mxid"' in text and 'name="username"' not in text
        status, text, _ = await web.submit("/setup/4", "/setup/4/add",
                                           {"name": "Nobody", "mxid": f"@nobody:{SERVER_NAME}"})
        assert status == 400 and f"has no account @nobody:{SERVER_NAME}" in text
        status, text, _ = await web.submit("/setup/4", "/setup/4/add",
                                           {"name": "Ben", "mxid": "@ben:elsewhere.test"})
        assert status == 400 and "only accounts there" in text
        status, text, resp = await web.submit("/setup/4", "/setup/4/add",
                                              {"name": "Ben", "mxid": ben.mxid})
        assert status == 303, text
        member = state.member(ben.localpart)
        assert member is not None and member.mxid == ben.mxid
        status, text = await web.page(resp.headers["Location"])
        assert status == 200 and server.url in text  # where Ben's app logs in
    finally:
        if appliance is not None:
            await appliance.stop()
        await server.stop()
