"""Line membership changes reach the rooms that already exist (Bridge.reload_config).

The web setup changes who is on a line while the bridge runs; `appliance/run.py` replaces
`bridge.config` and calls `reload_config()`. People added get invited to the line's
existing portals and a management room, people removed are kicked from the portals, and
the same reconciliation runs once at start for edits made while the bridge was down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import nio
import pytest
from mautrix.errors import MatrixConnectionError

from appliance.bridge import core
from appliance.bridge.portal import REMOVED_REASON
from appliance.line import LineEvent, Severity
from appliance.store.models import InboundMessage
from tests.plugins.bridge import BridgeStack, Member, eventually, notices

pytestmark = pytest.mark.synapse

NUMBER = "+4915112345678"


async def _portal(stack: BridgeStack, number: str = NUMBER) -> str:
    """The portal a text from `number` opens (the line's people are invited)."""
    assert stack.store is not None
    sent_at = int(time.time() * 1000) - 60_000
    await stack.store.inbox.add(
        InboundMessage(
            line_id="modem",
            conversation=number,
            sender=number,
            body="Hi, it's me",
            sent_at=sent_at,
            dedup_key=f"{number}|{sent_at}",
        )
    )
    return await stack.portal_room(number)


def _with_members(stack: BridgeStack, members: list[str]) -> Any:
    (line,) = stack.config.lines
    return replace(stack.config, lines=[replace(line, members=members)])


async def _members(client: Member, room: str) -> dict[str, dict[str, Any]]:
    """user id -> their m.room.member event, as the room's state has it now."""
    state = await client.client.room_get_state(room)
    assert isinstance(state, nio.RoomGetStateResponse), state
    return {s["state_key"]: s for s in state.events if s["type"] == "m.room.member"}


async def _reload(stack: BridgeStack, members: list[str]) -> None:
    assert stack.bridge is not None
    stack.config = _with_members(stack, members)
    stack.bridge.config = stack.config
    await stack.bridge.reload_config()


async def test_added_members_are_invited_and_removed_ones_kicked(
    bridge_stack: BridgeStack,
) -> None:
    stack = bridge_stack
    bridge = await stack.start()
    await stack.ready()
    assert stack.store is not None
    anna = stack.client(stack.owner)
    ben = stack.client(stack.member)  # on the line from the start ("A")
    eve = stack.client(stack.outsider)  # added later ("B")
    room = await _portal(stack)
    await anna.join(room)
    await ben.join(room)
    assert await bridge.db.management_room(eve.mxid) is None

    # Eve is added to the line: invited to the existing portal, and gets her own room.
    await _reload(stack, [ben.mxid, eve.mxid])
    members = await _members(anna, room)
    assert members[eve.mxid]["content"]["membership"] == "invite"
    known = await bridge.db.management_room(eve.mxid)
    assert known is not None and known[1], "eve has no management room"
    await eve.join(known[0])
    (welcome,) = await eve.wait_for(known[0], notices(stack.bot))
    assert "Textbridge" in welcome["content"]["body"]

    # She joins and can text.
    await eve.join(room)
    event_id = await eve.say(room, "Eve here, on the line now")
    assert stack.store is not None

    async def row() -> Any:
        deadline = time.monotonic() + 10
        while (found := await stack.store.outbox.by_request(event_id)) is None:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no outbox row for eve's text"
            await asyncio.sleep(0.1)
        return found

    assert (await row()).request.requested_by == eve.mxid

    # Ben is taken off the line: kicked by the bot, with the reason in plain words.
    await _reload(stack, [eve.mxid])
    kicked = (await _members(anna, room))[ben.mxid]
    assert kicked["content"]["membership"] == "leave"
    assert kicked["sender"] == stack.bot
    assert kicked["content"].get("reason") == REMOVED_REASON
    refused = await ben.client.room_send(
        room, "m.room.message", {"msgtype": "m.text", "body": "still here?"}
    )
    assert isinstance(refused, nio.RoomSendError), refused
    assert await stack.store.outbox.count_requested(ben.mxid, 0) == 0

    # Calling it again changes nothing more.
    before = [e["event_id"] for e in await anna.messages(room)]
    rooms_before = await bridge.db.management_room(eve.mxid)
    await bridge.reload_config()
    await bridge.reload_config()
    await asyncio.sleep(1.0)
    assert [e["event_id"] for e in await anna.messages(room)] == before
    assert await bridge.db.management_room(eve.mxid) == rooms_before
    assert (await _members(anna, room))[ben.mxid]["event_id"] == kicked["event_id"]


async def test_edits_while_down_converge_at_start_and_leaving_is_respected(
    bridge_stack: BridgeStack,
) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    anna = stack.client(stack.owner)
    ben = stack.client(stack.member)
    room = await _portal(stack)
    await anna.join(room)
    await ben.join(room)

    # Eve is added while the bridge is down: the start invites her.
    await stack.stop()
    stack.config = _with_members(stack, [ben.mxid, stack.outsider.mxid])
    bridge = await stack.start()
    await stack.ready()
    members = await _members(anna, room)
    assert members[stack.outsider.mxid]["content"]["membership"] == "invite"

    # Ben leaves the chat himself: a reload does not pull him back in.
    left = await ben.client.room_leave(room)
    assert isinstance(left, nio.RoomLeaveResponse), left
    await bridge.reload_config()
    members = await _members(anna, room)
    assert members[ben.mxid]["content"]["membership"] == "leave"
    assert members[ben.mxid]["sender"] == ben.mxid

    # A new owner hears of the line's troubles from then on.
    (line,) = stack.config.lines
    stack.config = replace(stack.config, lines=[replace(line, owner=stack.outsider.mxid)])
    bridge.config = stack.config
    await bridge.reload_config()
    eve = stack.client(stack.outsider)
    known = await bridge.db.management_room(eve.mxid)
    assert known is not None
    await eve.join(known[0])
    bridge.on_line_event(LineEvent("modem", Severity.ERROR, "The SIM card needs its PIN.", "pin"))
    await eve.wait_for(known[0], lambda e: "needs its PIN" in e["content"].get("body", ""))


async def test_one_failing_room_does_not_stop_the_others_and_is_retried(
    bridge_stack: BridgeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = bridge_stack
    bridge = await stack.start()
    await stack.ready()
    anna = stack.client(stack.owner)
    first = await _portal(stack)
    second = await _portal(stack, "+4915199999999")
    await anna.join(first)
    await anna.join(second)

    # The homeserver fails the first room once (as if it were restarting).
    monkeypatch.setattr(core, "RECONCILE_RETRY_S", 0.5)
    real = bridge.portals.sync_access
    failures: list[str] = []

    async def flaky(line: Any, portal: Any) -> None:
        if portal.room_id == first and not failures:
            failures.append(portal.room_id)
            raise MatrixConnectionError("homeserver restarting")
        await real(line, portal)

    monkeypatch.setattr(bridge.portals, "sync_access", flaky)
    await _reload(stack, [stack.member.mxid, stack.outsider.mxid])
    assert failures == [first]
    assert (await _members(anna, second))[stack.outsider.mxid]["content"]["membership"] == (
        "invite"
    )

    async def invited_to_first() -> bool:
        member = (await _members(anna, first)).get(stack.outsider.mxid)
        return member is not None and member["content"]["membership"] == "invite"

    await eventually(invited_to_first, 10.0, "the retry to invite eve to the first room")
