"""Group conversations through the phone, from Matrix: a reply reaches the whole group or
nobody (issue 18), and the room says what it is. Real parts: Synapse on loopback, the
simulated Android phone over the adb protocol (PhoneLine, adb-shell), the modem simulator
beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appliance.phonenum import format_display
from tests.plugins.bridge import BridgeStack, notices
from tests.plugins.lines import NUMBER, TwoLines, texts
from tests.plugins.phone import until

pytestmark = pytest.mark.synapse

OTHER = "+4915199887766"


async def group_room(stack: BridgeStack) -> str | None:
    assert stack.bridge is not None
    for portal in await stack.bridge.db.portals():
        if portal.conversation.startswith("group:") and portal.ready:
            return portal.room_id
    return None


def status_of(event_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "com.beeper.message_send_status"
        and e["content"]["m.relates_to"]["event_id"] == event_id
    )


async def _group_with_one_writer(t: TwoLines) -> tuple[Any, str]:
    stack = t.stack
    t.device.phone.receive(NUMBER, "Group hello", group="Family Weekend", members=(NUMBER, OTHER))
    room = await until(lambda: group_room(stack), 30, "the group's room")
    anna = stack.client(stack.owner)
    await anna.join(room)
    await anna.wait_for(room, texts(stack.ghost(NUMBER), "Group hello"), timeout=30)
    return anna, room


async def test_a_group_reply_reaches_every_member_and_the_room_says_what_it_is(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    anna, room = await _group_with_one_writer(t)

    # The topic names the group and its people, not an internal id; no SMS-only warning.
    state = await anna.client.room_get_state(room)
    topic = next(s for s in state.events if s["type"] == "m.room.topic")["content"]["topic"]
    assert "Family Weekend" in topic and "group:" not in topic
    assert format_display(NUMBER, "DE") in topic and format_display(OTHER, "DE") in topic
    bot_said = [e["content"]["body"] for e in await anna.messages(room) if notices(stack.bot)(e)]
    assert not [b for b in bot_said if "go out as SMS" in b]
    assert [b for b in bot_said if "RCS" in b]

    event_id = await anna.say(room, "Hi all")
    await until(lambda: [s.text for s in t.device.phone.sent], 30, "sent by the phone")
    sent = t.device.phone.sent[-1]
    assert sent.text.endswith("Hi all") and set(sent.recipients) == {NUMBER, OTHER}
    (status,) = await anna.wait_for(room, status_of(event_id), timeout=30)
    assert status["content"]["status"] == "SUCCESS"
    assert status["content"]["network"] == "rcs"


async def test_a_group_reply_the_phone_cannot_address_fails_with_words(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    t.device.phone.faults.rcs_threads_hidden = True
    anna, room = await _group_with_one_writer(t)

    event_id = await anna.say(room, "Hi all")
    (status,) = await anna.wait_for(room, status_of(event_id), timeout=30)
    assert status["content"]["status"] == "FAIL_PERMANENT"
    (notice,) = await anna.wait_for(
        room, lambda e: notices(stack.bot)(e) and "private text" in e["content"]["body"]
    )
    assert "on the phone" in notice["content"]["body"]
    assert t.device.phone.sent == []
