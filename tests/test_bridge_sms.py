"""The whole path: modem simulator -> SmsLine (real pyserial over a pty) -> store ->
bridge -> Synapse -> a family member's client, and back, including status reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from appliance.config import ModemConfig
from appliance.phonenum import format_display
from appliance.sim.modem import ModemSimulator
from appliance.sms.line import SmsLine
from appliance.store import Store
from tests.plugins.bridge import BridgeStack, eventually, notices

pytestmark = pytest.mark.synapse

NUMBER = "+4915112345678"


async def test_sms_to_matrix_and_back(
    bridge_stack: BridgeStack, modem_sim_factory: Callable[..., ModemSimulator]
) -> None:
    stack = bridge_stack
    link = stack.tmp / "modem"
    sim = modem_sim_factory(pin=None, link_path=link)
    stack.store = await Store.open(stack.tmp / "textbridge.db")
    bridge = await stack.start()
    line = SmsLine(
        "modem",
        # A short sweep interval: the line checks registration that often, and the
        # network-lost event below is found by that check.
        ModemConfig(port=str(link), sweep_interval=2.0, retry_delay=0.2, command_timeout=3.0),
        stack.store,
        on_event=bridge.on_line_event,
    )
    # Trouble is told once it has held texts up this long (a minute on the appliance).
    line.notice_after = 2.0
    stack.lines["modem"] = line  # the bridge holds this dict: status and wake reach the line
    await line.start()
    try:
        assert await line.wait_ready(20), line.status().summary
        await stack.ready()
        await _round_trip(stack, sim, line)
    finally:
        await line.stop()


async def _round_trip(stack: BridgeStack, sim: ModemSimulator, line: SmsLine) -> None:
    assert stack.store is not None
    anna = stack.client(stack.owner)
    # SCTS carries whole seconds; the room shows the network's time, not the arrival time.
    sent_at = (int(time.time()) - 600) * 1000
    long_text = "This text is too long for one SMS, so the network splits it. " * 5
    sim.network.deliver(NUMBER, "Hallo! Grüße aus dem Netz 👋", timestamp_ms=sent_at)
    sim.network.deliver(NUMBER, long_text, timestamp_ms=sent_at + 1000)
    room = await stack.portal_room("+4915112345678", timeout=30)
    await anna.join(room)
    ghost = stack.ghost(NUMBER)
    texts = await anna.wait_for(
        room,
        lambda e: e["sender"] == ghost and e["content"].get("msgtype") == "m.text",
        count=2,
        timeout=30,
    )
    assert [e["content"]["body"] for e in texts] == ["Hallo! Grüße aus dem Netz 👋", long_text]
    assert [e["origin_server_ts"] for e in texts] == [sent_at, sent_at + 1000]

    # A reply goes out through the modem, then the status report shows as a read receipt.
    event_id = await anna.say(room, "Danke, bis später!")
    name = stack.owner.localpart

    async def sent() -> bool:
        return (NUMBER, f"{name}: Danke, bis später!") in sim.network.sent_messages()

    await eventually(sent, timeout=30, what="the SMS at the simulated network")
    await anna.wait_for(
        room,
        lambda e: (
            e["type"] == "com.beeper.message_send_status"
            and e["content"]["m.relates_to"]["event_id"] == event_id
            and e["content"]["status"] == "SUCCESS"
        ),
    )
    reference = sim.network.sent[-1].reference
    assert reference is not None
    sim.network.report(reference, 0x00)

    async def receipt() -> bool:
        await anna.sync()
        return any(r["event_id"] == event_id and r["user_id"] == ghost for r in anna.receipts)

    await eventually(receipt, timeout=30, what="the delivery receipt")

    # The bot tells how the line is, from Line.status().
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)
    await anna.say(mgmt, "status")
    # Named as a person knows the line, with the id that commands take.
    status = line.status()
    name = f"Modem, SIM {format_display(sim.own_number, 'DE')} (line modem)"
    (answer,) = await anna.wait_for(
        mgmt, lambda e: notices(stack.bot)(e) and e["content"]["body"].startswith(name)
    )
    assert f"{name}: {status.state}." in answer["content"]["body"]
    if status.operator:
        assert status.operator in answer["content"]["body"]

    # Losing the network is a line event: one notice in the management room, then one
    # when it is back.
    sim.network.registered = False

    def says(words: str) -> Any:
        return lambda e: notices(stack.bot)(e) and words in e["content"]["body"]

    (lost,) = await anna.wait_for(mgmt, says("no mobile network"), timeout=30)
    assert lost["content"]["body"].startswith("⚠️ Line modem:")
    sim.network.registered = True
    await anna.wait_for(mgmt, says("mobile network again"), timeout=30)
    assert len([e for e in await anna.messages(mgmt) if says("no mobile network")(e)]) == 1
