"""Fixtures for the web tests: the web app under aiohttp's test client, and the bridge's
control API served on a real unix socket in-process, backed by a real Store and the real SMS
line on the modem simulator (tests/plugins/sim.py)."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from appliance.config import ModemConfig
from appliance.control import make_control_app, serve_control
from appliance.line import LineEvent
from appliance.sim.modem import ModemSimulator
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.web.app import make_app
from appliance.web.config import WebSettings
from appliance.web.state import Member, WebState

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
OWNER = "owner"
OWNER_PASSWORD = "correct horse battery"
PIN = "1234"


@dataclass
class ControlStack:
    """The bridge's control API on a real unix socket, with a real Store and the real SMS
    line talking AT over a pty to the modem simulator."""

    socket: Path
    store: Store
    line: SmsLine
    sim: ModemSimulator
    events: list[LineEvent]
    # What the bridge's self-check reports; tests change it to see the dashboard react.
    health: dict[str, Any] = field(default_factory=lambda: {"ok": True})

    async def wait_sim(self, state: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.line.sim_state())[0] != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"SIM never reached {state}: {self.line.status()}")
            await asyncio.sleep(0.1)

    def pins_entered(self) -> list[str]:
        return [c for c in self.sim.commands if c.upper().startswith("AT+CPIN=")]


async def _control_stack(
    modem_sim_factory: Callable[..., ModemSimulator], pin: str | None
) -> AsyncIterator[ControlStack]:
    # A short directory: unix socket paths are limited to about 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="tbctl"))
    sim = modem_sim_factory(pin=pin, link_path=base / "modem")
    sim.network.auto_report = 0x00  # the network reports every text as delivered
    sim.network.report_delay = 0.1
    store = await Store.open(base / "store.db")
    events: list[LineEvent] = []
    line = SmsLine(
        "modem",
        ModemConfig(port=str(base / "modem"), sweep_interval=2.0, retry_delay=0.2,
                    command_timeout=3.0),
        store,
        on_event=events.append,
    )
    await line.start()
    stack = ControlStack(base / "control.sock", store, line, sim, events)
    app = make_control_app(lines={"modem": line}, store=store, sim_control={"modem": line},
                           sample_interval=0.1, bridge_health=lambda: stack.health)
    runner = await serve_control(app, base / "control.sock")
    try:
        if pin is None:
            assert await line.wait_ready(20), line.status().summary
        else:
            await stack.wait_sim("SIM PIN")
        yield stack
    finally:
        await runner.cleanup()
        await line.stop()
        await store.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def control_stack(
    modem_sim_factory: Callable[..., ModemSimulator],
) -> AsyncIterator[ControlStack]:
    """The SIM without a PIN: the line is ready when the test starts."""
    async for stack in _control_stack(modem_sim_factory, None):
        yield stack


@pytest.fixture
async def locked_control_stack(
    modem_sim_factory: Callable[..., ModemSimulator],
) -> AsyncIterator[ControlStack]:
    """The SIM locked with PIN 1234 (3 tries), as a new SIM usually is."""
    async for stack in _control_stack(modem_sim_factory, PIN):
        yield stack


def forged_peer(remote: Callable[[], str | None]) -> Any:
    """A middleware that makes the app see `remote()` as the TCP peer, the way a visitor
    from that address would arrive (the test server itself only listens on loopback).
    None leaves the real peer (127.0.0.1)."""

    @web.middleware
    async def forge(request: web.Request, handler: Any) -> web.StreamResponse:
        address = remote()
        if address is None:
            return await handler(request)
        return await handler(request.clone(remote=address))

    return forge


class WebClient:
    """aiohttp's test client plus form helpers that fetch a page's CSRF token first."""

    def __init__(self, client: TestClient[web.Request, web.Application],
                 settings: WebSettings, remote: str | None) -> None:
        self.client = client
        # The source address the app sees; change it between requests to move the visitor.
        self.remote = remote
        self.settings = settings
        self.state = WebState(settings)

    async def page(self, path: str, **kw: Any) -> tuple[int, str]:
        resp = await self.client.get(path, **kw)
        return resp.status, await resp.text()

    async def csrf(self, path: str) -> str:
        status, text = await self.page(path)
        match = CSRF_RE.search(text)
        assert match, f"no CSRF token on {path} ({status}): {text[:300]}"
        return match.group(1)

    async def submit(self, page: str, action: str, data: dict[str, Any],
                     **kw: Any) -> tuple[int, str, Any]:
        token = await self.csrf(page)
        form = {"csrf": token, **data}
        resp = await self.client.post(action, data=form, allow_redirects=False, **kw)
        return resp.status, (await resp.read()).decode("utf-8", "replace"), resp

    async def login(self, username: str = OWNER, password: str = OWNER_PASSWORD) -> Any:
        status, text, resp = await self.submit(
            "/login", "/login", {"username": username, "password": password, "next": "/"}
        )
        assert status == 303, text
        return resp


def complete_setup(settings: WebSettings, *, username: str = OWNER,
                   password: str = OWNER_PASSWORD) -> None:
    """Write the state a finished wizard leaves, through our own state API."""
    state = WebState(settings)
    mxid = f"@{username}:textbridge.test"
    state.save_owner(name="Owner Person", username=username, mxid=mxid,
                     password_hash=PasswordHasher().hash(password))
    state.upsert_member(Member(name="Owner Person", username=username, mxid=mxid, owner=True))
    state.finish()


@pytest.fixture
async def web_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(*, remote: str | None = None, **overrides: Any) -> WebClient:
        values: dict[str, Any] = {"state_dir": tmp_path / "web", "port": 0}
        values.update(overrides)
        settings = WebSettings(**values)
        app = make_app(settings)
        holder: list[WebClient] = []
        app.middlewares.insert(0, forged_peer(lambda: holder[0].remote))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        holder.append(WebClient(client, settings, remote))
        return holder[0]

    yield make
    for client in clients:
        await client.close()
