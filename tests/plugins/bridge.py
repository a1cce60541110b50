"""The bridge on a real Synapse, and matrix-nio clients as the family.

Fixtures:
  bridge_synapse -- module scope: a Synapse with the bridge's appservice registration
                    installed (starting Synapse costs seconds, so a test module shares one)
  bridge_stack   -- function scope: fresh store, fresh bridge.db, fresh family accounts
                    (owner, member, outsider) and a running Bridge; `await stack.restart()`
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nio
import pytest

from appliance.bridge import Bridge, BridgeConfig, CapsConfig, LineConfig
from appliance.homeserver.registration import Registration
from appliance.homeserver.synapse import (
    DEFAULT_PYTHON,
    SynapseAdapter,
    SynapseServer,
    SynapseStartError,
    free_port,
)
from appliance.line import Line
from appliance.store import Store

if TYPE_CHECKING:
    from tests.plugins.synapse import MatrixUser

# Starting a Synapse on a busy 2-core box takes long (same as tests/plugins/synapse.py).
START_TIMEOUT = 120.0

SERVER_NAME = "textbridge.test"


@dataclass
class BridgeHomeserver:
    server: SynapseServer
    registration: Registration
    port: int
    registration_path: Path


@pytest.fixture(scope="module")
def bridge_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeHomeserver]:
    if not DEFAULT_PYTHON.exists():
        pytest.fail(f"{DEFAULT_PYTHON} is missing: run `make`", pytrace=False)
    base = tmp_path_factory.mktemp("bridge-synapse")
    port = free_port()
    registration = Registration.generate(url=f"http://127.0.0.1:{port}")
    path = base / "registration.yaml"
    registration.save(path, SERVER_NAME)
    server = SynapseServer(base / "synapse", server_name=SERVER_NAME, appservice_files=[path])
    try:
        asyncio.run(server.start(START_TIMEOUT))
    except SynapseStartError as exc:
        pytest.fail(f"Synapse did not start: {exc}", pytrace=False)
    yield BridgeHomeserver(server, registration, port, path)
    asyncio.run(server.stop())


class Member:
    """A family member's Matrix client (matrix-nio), reading raw event JSON."""

    def __init__(self, url: str, user: MatrixUser) -> None:
        self.user = user
        self.mxid = user.mxid
        self.client = nio.AsyncClient(url, user.mxid)
        self.client.access_token = user.access_token
        self.client.user_id = user.mxid
        self._since: str | None = None
        self.receipts: list[dict[str, Any]] = []

    async def close(self) -> None:
        await self.client.close()

    async def sync(self) -> nio.SyncResponse:
        resp = await self.client.sync(timeout=0, since=self._since)
        assert isinstance(resp, nio.SyncResponse), resp
        self._since = resp.next_batch
        for room_id, room in resp.rooms.join.items():
            for ev in room.ephemeral:
                if isinstance(ev, nio.ReceiptEvent):
                    for r in ev.receipts:
                        self.receipts.append(
                            {"room_id": room_id, "event_id": r.event_id, "user_id": r.user_id}
                        )
        return resp

    async def join_invites(self) -> list[str]:
        resp = await self.sync()
        joined = []
        for room_id in resp.rooms.invite:
            result = await self.client.join(room_id)
            assert isinstance(result, nio.JoinResponse), result
            joined.append(room_id)
        return joined

    async def join(self, room_id: str, timeout: float = 20.0) -> None:
        """Join `room_id` as soon as the invite is there."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.client.join(room_id)
            if isinstance(result, nio.JoinResponse):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.mxid} could not join {room_id}: {result}")
            await asyncio.sleep(0.2)

    async def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Raw events of the room's timeline, oldest first."""
        resp = await self.client.room_messages(room_id, start="", limit=limit)
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        return [ev.source for ev in reversed(resp.chunk)]

    async def wait_for(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        count: int = 1,
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in await self.messages(room_id) if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [
                    (e["type"], e.get("content", {}).get("body"))
                    for e in await self.messages(room_id)
                ]
                raise AssertionError(f"waited {timeout} s in {room_id}; saw {seen}")
            await asyncio.sleep(0.25)

    async def send(
        self, room_id: str, content: dict[str, Any], type_: str = "m.room.message"
    ) -> str:
        resp = await self.client.room_send(room_id, type_, content)
        assert isinstance(resp, nio.RoomSendResponse), resp
        return str(resp.event_id)

    async def say(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body})


def notices(sender: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == "m.notice"
    )


@dataclass
class BridgeStack:
    hs: BridgeHomeserver
    tmp: Path
    config: BridgeConfig
    owner: MatrixUser
    member: MatrixUser
    outsider: MatrixUser
    lines: dict[str, Line] = field(default_factory=dict)
    store: Store | None = None
    bridge: Bridge | None = None
    clients: list[Member] = field(default_factory=list)

    @property
    def server(self) -> SynapseServer:
        return self.hs.server

    @property
    def bot(self) -> str:
        return self.hs.registration.bot_mxid(SERVER_NAME)

    def ghost(self, e164: str) -> str:
        return f"@{self.hs.registration.user_prefix}{e164.lstrip('+')}:{SERVER_NAME}"

    def client(self, user: MatrixUser) -> Member:
        member = Member(self.server.url, user)
        self.clients.append(member)
        return member

    async def start(self, lines: dict[str, Line] | None = None) -> Bridge:
        if self.store is None:
            self.store = await Store.open(self.tmp / "textbridge.db")
        if lines is not None:
            self.lines = lines
        self.bridge = Bridge(
            self.config,
            self.hs.registration,
            self.store,
            self.lines,
            database=self.tmp / "bridge.db",
        )
        await self.bridge.start()
        return self.bridge

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None

    async def restart(self, **changes: Any) -> Bridge:
        await self.stop()
        if changes:
            self.config = replace(self.config, **changes)
        return await self.start()

    async def ready(self, timeout: float = 60.0) -> None:
        """Until the bridge's setup (bot profile, management rooms) is done."""
        assert self.bridge is not None
        deadline = time.monotonic() + timeout
        while not self.bridge.health()["ok"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge not ready: {self.bridge.health()}")
            await asyncio.sleep(0.1)

    async def management_room(self, user: MatrixUser) -> str:
        assert self.bridge is not None
        known = await self.bridge.db.management_room(user.mxid)
        assert known is not None, f"no management room for {user.mxid}"
        return known[0]

    async def portal_room(
        self, conversation: str, line_id: str = "modem", timeout: float = 20.0
    ) -> str:
        assert self.bridge is not None
        deadline = time.monotonic() + timeout
        while True:
            portal = await self.bridge.db.portal(line_id, conversation)
            if portal is not None and portal.ready:
                return portal.room_id
            if time.monotonic() > deadline:
                raise AssertionError(f"no portal for {conversation} on {line_id}")
            await asyncio.sleep(0.1)


def family_config(hs: BridgeHomeserver, owner: str, member: str, **changes: Any) -> BridgeConfig:
    base = BridgeConfig(
        homeserver_url=hs.server.url,
        server_name=SERVER_NAME,
        registration=hs.registration_path,
        listen_host="127.0.0.1",
        listen_port=hs.port,
        bot_localpart=hs.registration.sender_localpart,
        ghost_prefix=hs.registration.user_prefix,
        lines=[
            LineConfig(
                id="modem",
                kind="modem",
                owner=owner,
                members=[member],
                relay_prefix=True,
                home_country="DE",
            )
        ],
        caps=CapsConfig(daily_per_user=50, block_premium=True),
    )
    return replace(base, **changes)


@pytest.fixture
async def bridge_stack(
    bridge_synapse: BridgeHomeserver, tmp_path: Path
) -> AsyncIterator[BridgeStack]:
    # Imported here: this plugin loads before the synapse plugin, which pytest must import
    # itself to rewrite its asserts.
    from tests.plugins.synapse import create_test_user

    server = bridge_synapse.server
    if not server.running:
        await server.start(START_TIMEOUT)
    adapter = SynapseAdapter.for_server(server)
    owner = await create_test_user(adapter, "anna")
    member = await create_test_user(adapter, "ben")
    outsider = await create_test_user(adapter, "eve")
    stack = BridgeStack(
        hs=bridge_synapse,
        tmp=tmp_path,
        config=family_config(bridge_synapse, owner.mxid, member.mxid),
        owner=owner,
        member=member,
        outsider=outsider,
    )
    try:
        yield stack
    finally:
        await stack.stop()
        for c in stack.clients:
            await c.close()
        if stack.store is not None:
            await stack.store.close()
        if server._paused:  # a test that paused Synapse and failed must not break the next
            server.resume()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    hs = getattr(item, "funcargs", {}).get("bridge_synapse")
    if isinstance(hs, BridgeHomeserver):
        report.sections.append(
            (f"Synapse log tail ({hs.server.state_dir})", hs.server.log_tail(40))
        )
