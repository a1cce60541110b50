"""End to end, through everything `textbridge run` holds: the modem simulator on a pty (the
phone network), the SMS line over real pyserial, the store, the bridge and a real Synapse
with the bridge's registration installed; a family member reads and writes with matrix-nio.

- The homeserver is stopped for a minute while texts arrive: afterwards every one is in the
  room, in order, once.
- The appliance is restarted while texts are coming in: nothing shows twice, nothing is lost.
- A reply leaves the modem exactly once, also across a restart, and the network's status
  report becomes the ghost's read receipt and the row's DELIVERED state.
- The real `textbridge run` process is killed with SIGKILL at random instants of the
  traffic and started again: nothing shows twice, nothing is lost, nothing is left on the
  SIM, and a reply afterwards still leaves once.

Order across a restart is printed, not asserted: texts that reach the modem while the line
opens it are taken (by their +CMTI) before the catch-up sweep takes the older ones stored
while the appliance was down, so they can show ahead of those (see the SMS line's _open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.config import Config
from appliance.homeserver.registration import Registration
from appliance.homeserver.synapse import SynapseAdapter, SynapseServer, free_port
from appliance.run import Appliance
from appliance.sim.modem import ModemSimulator
from appliance.store.models import OutboxState
from tests.plugins.bridge import Member, eventually
from tests.plugins.synapse import MatrixUser, SynapseFactory, create_test_user

pytestmark = [pytest.mark.synapse, pytest.mark.slow]

SERVER_NAME = "textbridge.test"
NUMBER = "+4915112345678"
LINE = "sms"
OUTAGE_SECONDS = 60.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class E2E:
    tmp: Path
    server: SynapseServer
    registration: Registration
    sim: ModemSimulator
    user: MatrixUser
    config: Config
    appliance: Appliance | None = None
    member: Member | None = None

    @property
    def ghost(self) -> str:
        return f"@{self.registration.user_prefix}{NUMBER.lstrip('+')}:{SERVER_NAME}"

    @property
    def app(self) -> Appliance:
        assert self.appliance is not None
        return self.appliance

    async def start(self) -> None:
        self.appliance = Appliance(self.config)
        await self.appliance.start()
        line = self.appliance.lines[LINE]
        assert await line.wait_ready(30), line.status().summary

    async def stop(self) -> None:
        if self.appliance is not None:
            await self.appliance.stop()
            self.appliance = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def bridge_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.app.bridge.health()["ok"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge not ready: {self.app.bridge.health()}")
            await asyncio.sleep(0.1)

    async def portal(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            portal = await self.app.bridge.db.portal(LINE, NUMBER)
            if portal is not None and portal.ready:
                return str(portal.room_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"no portal for {NUMBER}")
            await asyncio.sleep(0.1)

    async def texts(self, room_id: str) -> list[str]:
        """Bodies of the ghost's texts in the room, oldest first (all of them: the member
        reads the whole timeline, paginating)."""
        assert self.member is not None
        events = await self.member.messages(room_id, limit=1000)
        return [
            e["content"]["body"]
            for e in events
            if e["type"] == "m.room.message"
            and e["sender"] == self.ghost
            and e["content"].get("msgtype") == "m.text"
        ]

    async def wait_texts(self, room_id: str, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            texts = await self.texts(room_id)
            if len(texts) >= count:
                return texts
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(texts)} of {count} texts after {timeout} s: {texts}")
            await asyncio.sleep(0.5)


@pytest.fixture
async def e2e(
    synapse_factory: SynapseFactory,
    modem_sim_factory: Callable[..., ModemSimulator],
    tmp_path: Path,
) -> AsyncIterator[E2E]:
    bridge_port = free_port()
    registration = Registration.generate(url=f"http://127.0.0.1:{bridge_port}")
    reg_path = tmp_path / "registration.yaml"
    registration.save(reg_path, SERVER_NAME)
    server = await synapse_factory.start(server_name=SERVER_NAME, appservice_files=[reg_path])
    user = await create_test_user(SynapseAdapter.for_server(server), "fam")
    link = tmp_path / "modem"
    sim = modem_sim_factory(pin=None, link_path=link)
    config = Config.from_dict(
        {
            "general": {"data_dir": str(tmp_path / "data"), "home_country": "DE"},
            "modem": {"port": str(link), "sweep_interval": 5.0, "retry_delay": 0.2},
            "bridge": {
                "homeserver_url": server.url,
                "server_name": SERVER_NAME,
                "registration": str(reg_path),
                "listen_port": bridge_port,
                "lines": [{"id": LINE, "members": [user.mxid], "owner": user.mxid}],
            },
        }
    )
    stack = E2E(tmp_path, server, registration, sim, user, config)
    await stack.start()
    stack.member = Member(server.url, user)
    try:
        await stack.bridge_ready()
        yield stack
    finally:
        if server.paused:
            server.resume()
        await stack.stop()
        await stack.member.close()


async def _open_portal(stack: E2E, first: str) -> str:
    """The first text from NUMBER opens its portal; the member joins it."""
    assert stack.member is not None
    stack.sim.network.deliver(NUMBER, first)
    room_id = await stack.portal()
    await stack.member.join(room_id, timeout=30)
    assert await stack.wait_texts(room_id, 1, timeout=30) == [first]
    return room_id


async def test_homeserver_stopped_for_a_minute(e2e: E2E) -> None:
    stack = e2e
    room_id = await _open_portal(stack, "before the outage")
    store = stack.app.store

    await stack.server.stop()
    stopped = time.monotonic()
    sent = [f"during the outage {i:02d}" for i in range(1, 11)]
    for text in sent:
        stack.sim.network.deliver(NUMBER, text)
        await asyncio.sleep(2.0)

    # Durable and off the SIM while Matrix is away: the line does not need the homeserver.
    async def all_stored() -> bool:
        bodies = [r.message.body for r in await store.inbox.pending(limit=100)]
        return bodies == sent and not stack.sim.storage

    await eventually(all_stored, timeout=30, what="the 10 texts in the store, off the SIM")
    health = stack.app.bridge.health()
    print(f"\nduring the outage: {len(sent)} in the store, SIM empty, bridge {health['loops']}")
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
    outage = time.monotonic() - stopped
    assert not stack.server.running

    await stack.server.start(120)
    back = time.monotonic()
    texts = await stack.wait_texts(room_id, 1 + len(sent), timeout=120)
    caught_up = time.monotonic() - back
    # Give a duplicate every chance to show up before counting.
    await asyncio.sleep(5)
    texts = await stack.texts(room_id)
    print(
        f"homeserver down {outage:.0f} s; {len(sent)} texts arrived meanwhile; "
        f"{len(texts) - 1} in the room {caught_up:.1f} s after it came back; "
        f"duplicates {len(texts) - len(set(texts))}"
    )
    assert texts == ["before the outage", *sent]
    assert await store.inbox.pending(limit=100) == []


async def test_restart_mid_traffic_then_reply_and_report(e2e: E2E) -> None:
    stack = e2e
    assert stack.member is not None
    room_id = await _open_portal(stack, "hello")

    # (b) Texts keep arriving while the appliance (bridge and SMS line) is restarted twice:
    # as soon as the bridge is delivering them, and again two seconds later.
    sent = [f"traffic {i:02d}" for i in range(1, 31)]
    restarts = 0

    async def traffic() -> None:
        for text in sent:
            stack.sim.network.deliver(NUMBER, text)
            await asyncio.sleep(0.3)

    feeder = asyncio.create_task(traffic())
    try:

        async def bridge_busy() -> bool:
            assert stack.appliance is not None
            return bool(stack.appliance.bridge.inbound.delivered >= 3)

        await eventually(bridge_busy, timeout=30, what="the bridge delivering traffic")
        await stack.restart()
        restarts += 1
        await asyncio.sleep(2.0)
        await stack.restart()
        restarts += 1
        await feeder
    finally:
        feeder.cancel()
    texts = await stack.wait_texts(room_id, 1 + len(sent), timeout=120)
    await asyncio.sleep(5)
    texts = await stack.texts(room_id)
    duplicates = len(texts) - len(set(texts))
    in_order = texts == ["hello", *sent]
    print(
        f"\nrestarted {restarts} times mid-traffic: {len(sent)} sent, "
        f"{len(texts) - 1} in the room, duplicates {duplicates}, in order {in_order}"
    )
    assert duplicates == 0, texts
    assert sorted(texts) == sorted(["hello", *sent])
    assert await stack.app.store.inbox.pending(limit=100) == []

    # (c) A reply from the member leaves the modem once, also across a restart.
    event_id = await stack.member.say(room_id, "Reply from Matrix")

    def replies() -> list[tuple[str, str]]:
        return [(d, t) for d, t in stack.sim.network.sent_messages() if "Reply from Matrix" in t]

    async def reply_sent() -> bool:
        return bool(replies())

    await eventually(reply_sent, timeout=60, what="the reply at the simulated network")
    row = await stack.app.store.outbox.by_request(event_id)
    assert row is not None
    await eventually(
        lambda: _outbox_state(stack, event_id, OutboxState.SENT),
        timeout=30,
        what="the outbox row SENT",
    )
    await stack.restart()
    await asyncio.sleep(5)
    assert replies() == [(NUMBER, "Reply from Matrix")], stack.sim.network.sent_messages()
    part = next(p for p in stack.sim.network.sent if "Reply from Matrix" in p.text)
    assert part.request_status, "the bridge must ask for a status report"

    # The network's report: the message was delivered to the phone.
    stack.sim.network.report(part.reference, 0)
    await eventually(
        lambda: _outbox_state(stack, event_id, OutboxState.DELIVERED),
        timeout=30,
        what="the outbox row DELIVERED",
    )

    async def receipt() -> bool:
        assert stack.member is not None
        await stack.member.sync()
        return any(
            r["event_id"] == event_id and r["user_id"] == stack.ghost for r in stack.member.receipts
        )

    await eventually(receipt, timeout=30, what="the ghost's read receipt")
    statuses = [
        e
        for e in await stack.member.messages(room_id, limit=1000)
        if e["type"] == "com.beeper.message_send_status"
        and e["content"].get("m.relates_to", {}).get("event_id") == event_id
    ]
    final = (await stack.app.store.outbox.by_request(event_id)).state  # type: ignore[union-attr]
    print(
        f"reply: {len(replies())} SMS at the network (TP-MR {part.reference}), row {final}, "
        f"receipt from {stack.ghost}, {len(statuses)} send-status event(s)"
    )
    assert len(replies()) == 1


async def _outbox_state(stack: E2E, event_id: str, state: OutboxState) -> bool:
    row = await stack.app.store.outbox.by_request(event_id)
    return row is not None and row.state == state


# --- the real `textbridge run` process, killed with SIGKILL mid-traffic ----------------------


class RunProcess:
    """`python -m appliance run --config ...` as systemd starts it, killable at any instant."""

    def __init__(self, config: Path, data: Path, log: Path) -> None:
        self.config = config
        self.data = data
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 90.0) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance", "run", "--config", str(self.config),
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(f"`textbridge run` exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, aiohttp.ClientError, ValueError, KeyError):
                status = await _control_status(self.data / "control.sock")
                if status["bridge"]["pid"] == self.proc.pid and [
                    line["state"] for line in status["lines"]
                ] == ["ready"]:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"`textbridge run` not ready:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.proc = None

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            await self.kill()
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


async def _control_status(socket_path: Path) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get("http://appliance/v1/status") as resp,
    ):
        result: dict[str, Any] = await resp.json()
        return result


async def test_appliance_killed_mid_traffic(
    synapse_factory: SynapseFactory,
    modem_sim_factory: Callable[..., ModemSimulator],
    tmp_path: Path,
) -> None:
    rng = random.Random(20261123)
    bridge_port = free_port()
    registration = Registration.generate(url=f"http://127.0.0.1:{bridge_port}")
    reg_path = tmp_path / "registration.yaml"
    registration.save(reg_path, SERVER_NAME)
    server = await synapse_factory.start(server_name=SERVER_NAME, appservice_files=[reg_path])
    user = await create_test_user(SynapseAdapter.for_server(server), "fam")
    link = tmp_path / "modem"
    sim = modem_sim_factory(pin=None, link_path=link)
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[general]
data_dir = {json.dumps(str(data))}
log_level = "warning"

[modem]
port = {json.dumps(str(link))}
sweep_interval = 5.0
retry_delay = 0.2

[bridge]
homeserver_url = {json.dumps(server.url)}
server_name = {json.dumps(SERVER_NAME)}
registration = {json.dumps(str(reg_path))}
listen_port = {bridge_port}

[[bridge.lines]]
id = "{LINE}"
members = [{json.dumps(user.mxid)}]
owner = {json.dumps(user.mxid)}
""",
        encoding="utf-8",
    )
    ghost = f"@{registration.user_prefix}{NUMBER.lstrip('+')}:{SERVER_NAME}"
    appliance = RunProcess(config, data, tmp_path / "run.log")
    member = Member(server.url, user)
    try:
        await appliance.start()
        sim.network.deliver(NUMBER, "first")
        room_id = await _find_portal(member, ghost, "first")

        sent = [f"text {i:02d}" for i in range(1, 41)]
        kills = []
        feeder_done = asyncio.Event()

        async def traffic() -> None:
            for text in sent:
                sim.network.deliver(NUMBER, text)
                await asyncio.sleep(0.15)
            feeder_done.set()

        feeder = asyncio.create_task(traffic())
        try:
            # Kill at random instants of the traffic, and start again at once each time.
            while not feeder_done.is_set() or len(kills) < 3:
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                await appliance.kill()
                kills.append(len(sim.network.sent))
                await appliance.start()
                if len(kills) >= 6:
                    break
            await feeder
        finally:
            feeder.cancel()

        def ghost_texts(events: list[dict[str, Any]]) -> list[str]:
            return [
                e["content"]["body"]
                for e in events
                if e["type"] == "m.room.message"
                and e["sender"] == ghost
                and e["content"].get("msgtype") == "m.text"
            ]

        deadline = time.monotonic() + 120
        while True:
            texts = ghost_texts(await member.messages(room_id, limit=1000))
            if len(set(texts)) >= 1 + len(sent) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)
        texts = ghost_texts(await member.messages(room_id, limit=1000))
        duplicates = len(texts) - len(set(texts))
        if texts != ["first", *sent]:
            print(f"\norder in the room: {texts}")
        print(
            f"\nkilled `textbridge run` {len(kills)} times mid-traffic: {len(sent)} sent, "
            f"{len(set(texts)) - 1} in the room, duplicates {duplicates}, "
            f"in order {texts == ['first', *sent]}"
        )
        assert duplicates == 0, texts
        assert sorted(texts) == sorted(["first", *sent]), texts
        assert not sim.storage, "texts left on the SIM"

        # After all that, a reply still goes out exactly once.
        await member.say(room_id, "still here")

        def replies() -> list[tuple[str, str]]:
            return [m for m in sim.network.sent_messages() if "still here" in m[1]]

        async def reply_sent() -> bool:
            return bool(replies())

        await eventually(reply_sent, timeout=90, what="the reply at the simulated network")
        await asyncio.sleep(3)
        assert replies() == [(NUMBER, "still here")], sim.network.sent_messages()
        assert await appliance.stop() == 0, appliance.log_tail()
        assert "Traceback" not in appliance.log.read_text(errors="replace"), appliance.log_tail()
    finally:
        await appliance.kill()
        await member.close()


async def _find_portal(member: Member, ghost: str, text: str, timeout: float = 60.0) -> str:
    """Join every invite until a room shows `text` from `ghost`; that room is the portal."""
    deadline = time.monotonic() + timeout
    joined: set[str] = set()
    while time.monotonic() < deadline:
        resp = await member.sync()
        for room_id in resp.rooms.invite:
            await member.join(room_id)
            joined.add(room_id)
        for room_id in joined:
            for e in await member.messages(room_id):
                if e["sender"] == ghost and e.get("content", {}).get("body") == text:
                    return room_id
        await asyncio.sleep(0.3)
    raise AssertionError(f"no room shows {text!r} from {ghost}")
