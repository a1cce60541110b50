"""Both lines on one bridge: Synapse on loopback, the modem simulator over a pty (SmsLine,
real pyserial) and the simulated Android phone over the adb protocol (PhoneLine,
adb-shell), one store; the lines have the same people, so a contact gets one room."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from appliance.bridge import LineConfig
from appliance.config import ModemConfig
from appliance.line import LineState
from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine
from appliance.sim.modem import ModemSimulator
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.store.models import OutboxRow
from tests.plugins.bridge import BridgeStack, Member
from tests.plugins.phone import AdbDevice
from tests.waiting import until

NUMBER = "+4915112345678"


def texts(sender: str, body: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == "m.text"
        and e["content"].get("body") == body
    )


@dataclass
class TwoLines:
    stack: BridgeStack
    sim: ModemSimulator
    modem: SmsLine
    phone: PhoneLine
    device: AdbDevice

    def phone_sent(self) -> list[str]:
        return [s.text for s in self.device.phone.sent]

    def modem_sent(self) -> list[str]:
        return [text for dest, text in self.sim.network.sent_messages() if dest == NUMBER]

    async def unplug_phone(self) -> None:
        """The phone stops allowing Textbridge (key revoked) and the link drops: DOWN."""
        self.device.phone.auto_accept = False
        self.device.phone.revoke_keys()
        self.device.server.unplug()
        await until(lambda: self.phone.status().state == LineState.DOWN, 30, "phone down")

    async def replug_phone(self) -> None:
        self.device.phone.auto_accept = True
        self.device.phone.accept_pending_key()
        await until(lambda: self.phone.status().state == LineState.READY, 60, "phone ready")

    async def row(self, event_id: str) -> OutboxRow:
        """The outbox row of a member's message (the bridge queues it when the homeserver
        hands over the event, a moment after the client sent it)."""
        store = self.stack.store
        assert store is not None
        row: OutboxRow = await until(
            lambda: store.outbox.by_request(event_id), 30, f"the outbox row of {event_id}"
        )
        return row

    async def room(self, body: str = "Hallo per RCS") -> tuple[Member, str]:
        """A contact writes through the phone; anna joins the room."""
        self.device.phone.receive(NUMBER, body)
        room = await self.stack.portal_room(NUMBER, "phone", timeout=30)
        anna = self.stack.client(self.stack.owner)
        await anna.join(room)
        await anna.wait_for(room, texts(self.stack.ghost(NUMBER), body), timeout=30)
        return anna, room


@pytest.fixture
async def two_lines(
    bridge_stack: BridgeStack,
    modem_sim_factory: Callable[..., ModemSimulator],
    adb_device: AdbDevice,
) -> AsyncIterator[TwoLines]:
    stack = bridge_stack
    owner, member = stack.owner.mxid, stack.member.mxid
    stack.config = replace(
        stack.config,
        lines=[
            LineConfig(id="phone", kind="phone", owner=owner, members=[member]),
            LineConfig(id="modem", kind="modem", owner=owner, members=[member]),
        ],
    )
    link = stack.tmp / "modem"
    sim = modem_sim_factory(pin=None, link_path=link)
    stack.store = await Store.open(stack.tmp / "textbridge.db")
    bridge = await stack.start()
    modem = SmsLine(
        "modem",
        ModemConfig(port=str(link), sweep_interval=2.0, retry_delay=0.2, command_timeout=3.0),
        stack.store,
        on_event=bridge.on_line_event,
    )
    phone = PhoneLine(
        "phone",
        PhoneConfig(
            enabled=True,
            transport="tcp",
            host="127.0.0.1",
            port=adb_device.port,
            poll_interval=0.1,
            health_interval=0.5,
            auth_timeout=2.0,
            connect_timeout=1.0,
            command_timeout=5.0,
            retry_delay=0.2,
            provider_grace=0.3,
            ui_wait=1.0,
        ),
        stack.store,
        key_path=adb_device.key_path,
        on_event=bridge.on_line_event,
    )
    # The bridge holds this dict: status and wake reach the lines, across restarts too.
    stack.lines["modem"] = modem
    stack.lines["phone"] = phone
    await modem.start()
    await phone.start()
    try:
        assert await modem.wait_ready(30), modem.status().summary
        assert await phone.wait_connected(30), phone.status().summary
        await until(lambda: phone.status().state == LineState.READY, 30, "phone ready")
        await stack.ready()
        yield TwoLines(stack, sim, modem, phone, adb_device)
    finally:
        await phone.stop()
        await modem.stop()
