"""Line selection between the phone and the modem, on real parts: Synapse on loopback, the
modem simulator over a pty (SmsLine, real pyserial) and the simulated Android phone over
the adb protocol (PhoneLine, adb-shell), one store and one bridge for both lines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance.line import LineState
from appliance.phonenum import format_display
from appliance.store.models import OutboxState
from tests.plugins.bridge import BridgeStack, Member, eventually, notices
from tests.plugins.lines import NUMBER, TwoLines, texts
from tests.plugins.phone import until

pytestmark = pytest.mark.synapse

ROUTE = "fi.textbridge.route"


def says(stack: BridgeStack, words: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: notices(stack.bot)(e) and words in e["content"]["body"]


async def room_state(client: Member, room: str, type_: str) -> dict[str, Any]:
    state = await client.client.room_get_state(room)
    content: dict[str, Any] = next(s for s in state.events if s["type"] == type_)["content"]
    return content


async def test_one_room_for_both_lines_and_auto_goes_through_the_phone(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    anna, room = await t.room()
    ghost = stack.ghost(NUMBER)

    # The same number through the modem lands in the same room, marked as SMS.
    t.sim.network.deliver(NUMBER, "Hallo per SMS")
    (sms,) = await anna.wait_for(room, texts(ghost, "Hallo per SMS"), timeout=30)
    assert sms["content"]["fi.textbridge.line"] == "modem"
    assert await anna.wait_for(room, says(stack, "Received as SMS through the modem (line modem)"))
    first = next(e for e in await anna.messages(room) if texts(ghost, "Hallo per RCS")(e))
    assert first["content"]["fi.textbridge.line"] == "phone"
    portal = await stack.bridge.db.portal("modem", NUMBER)
    assert portal is not None and portal.room_id == room and portal.line_id == "phone"
    assert [p.room_id for p in await stack.bridge.db.portals()] == [room]
    # A text through the phone again says so once.
    t.device.phone.receive(NUMBER, "Wieder RCS")
    await anna.wait_for(room, texts(ghost, "Wieder RCS"), timeout=30)
    assert await anna.wait_for(room, says(stack, "Received through the phone (line phone)"))

    # The room shows its route: topic and state event.
    topic = (await room_state(anna, room, "m.room.topic"))["topic"]
    assert "Route: auto" in topic and "phone" in topic and "modem" in topic
    route = await room_state(anna, room, ROUTE)
    assert route["preference"] == "auto"
    assert [x["id"] for x in route["lines"]] == ["phone", "modem"]

    # auto, with the phone up: the reply goes through the phone, not the modem.
    name = stack.owner.localpart
    event_id = await anna.say(room, "Antwort")
    await until(lambda: f"{name}: Antwort" in t.phone_sent(), 30, "sent by the phone")
    await anna.wait_for(
        room,
        lambda e: (
            e["type"] == "com.beeper.message_send_status"
            and e["content"]["m.relates_to"]["event_id"] == event_id
            and e["content"]["status"] == "SUCCESS"
        ),
        timeout=30,
    )
    row = await t.row(event_id)
    assert row.request.line_id == "phone" and "fallback" not in row.request.meta
    assert t.modem_sent() == []
    assert not [e for e in await anna.messages(room) if says(stack, "Sent as SMS")(e)]


async def test_auto_answers_through_the_line_the_contact_last_wrote_through(
    two_lines: TwoLines,
) -> None:
    """The phone and the modem have different numbers: a contact who texted the modem's
    number gets the answer from that number, not from the phone's, though the phone is up;
    once they write through the phone again, answers go through the phone."""
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    anna, room = await t.room()
    ghost = stack.ghost(NUMBER)
    name = stack.owner.localpart
    t.sim.network.deliver(NUMBER, "Nur SMS bitte")
    await anna.wait_for(room, texts(ghost, "Nur SMS bitte"), timeout=30)
    first = await anna.say(room, "Antwort per SMS")
    await until(lambda: f"{name}: Antwort per SMS" in t.modem_sent(), 30, "sent by the modem")
    row = await t.row(first)
    assert row.request.line_id == "modem" and "fallback" not in row.request.meta
    assert not any("Antwort per SMS" in x for x in t.phone_sent())

    t.device.phone.receive(NUMBER, "Jetzt wieder RCS")
    await anna.wait_for(room, texts(ghost, "Jetzt wieder RCS"), timeout=30)
    second = await anna.say(room, "Antwort per RCS")
    await until(lambda: f"{name}: Antwort per RCS" in t.phone_sent(), 30, "sent by the phone")
    assert (await t.row(second)).request.line_id == "phone"
    assert not any("Antwort per RCS" in x for x in t.modem_sent())


async def test_phone_unplugged_or_failing_goes_through_the_modem_and_says_so(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    anna, room = await t.room()
    name = stack.owner.localpart

    # The phone no longer allows Textbridge: the text goes as SMS, and the room says why.
    await t.unplug_phone()
    event_id = await anna.say(room, "Bitte per SMS")
    await until(lambda: f"{name}: Bitte per SMS" in t.modem_sent(), 30, "SMS sent")
    (note,) = await anna.wait_for(room, says(stack, "Sent as SMS through the modem"), timeout=30)
    assert note["content"]["body"] == (
        "Sent as SMS through the modem (line modem): the phone is not connected."
    )
    assert note["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
    assert (await t.row(event_id)).request.line_id == "modem"

    # Back, but Messages' screen changed: the send fails before any tap, so nothing left
    # the phone, and the waiting text is handed to the modem.
    await t.replug_phone()
    t.device.phone.faults.layout_changed = True
    event_id = await anna.say(room, "Layout kaputt")
    await until(lambda: f"{name}: Layout kaputt" in t.modem_sent(), 30, "SMS sent")
    (note,) = await anna.wait_for(room, says(stack, "did not work"), timeout=30)
    assert note["content"]["body"].startswith(
        "Sent as SMS through the modem (line modem): sending through the phone (line phone) "
        "did not work ("
    )
    assert t.phone_sent() == []
    assert t.modem_sent() == [f"{name}: Bitte per SMS", f"{name}: Layout kaputt"]


async def test_a_send_that_may_have_left_the_phone_is_not_repeated_on_the_modem(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    anna, room = await t.room()
    name = stack.owner.localpart
    # The tap reaches the phone, its answer does not: the text may have gone.
    t.device.phone.faults.disconnect_on = "input tap"
    t.device.phone.faults.after_effect = True
    event_id = await anna.say(room, "Vielleicht weg")

    async def ambiguous() -> bool:
        row = await stack.store.outbox.by_request(event_id)  # type: ignore[union-attr]
        return row is not None and row.state == OutboxState.AMBIGUOUS

    await eventually(ambiguous, 30, "the send to be ambiguous")
    await anna.wait_for(room, says(stack, "may or may not have reached"), timeout=30)
    # The phone was DOWN for a while and is back; the router had every chance to move it.
    await until(lambda: t.phone.status().state == LineState.READY, 60, "phone back")
    await asyncio.sleep(3.0)
    row = await t.row(event_id)
    assert row.state == OutboxState.AMBIGUOUS and row.request.line_id == "phone"
    assert t.phone_sent() == [f"{name}: Vielleicht weg"]
    assert t.modem_sent() == []
    assert not [e for e in await anna.messages(room) if says(stack, "Sent as SMS")(e)]


async def test_line_command_changes_the_route_shows_it_and_survives_a_restart(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    anna, room = await t.room()
    name = stack.owner.localpart

    await anna.say(room, "!line")
    await anna.wait_for(room, says(stack, "through the line the contact last wrote through"),
                        timeout=30)
    await anna.say(room, "!line sms")
    (changed,) = await anna.wait_for(room, says(stack, "set this chat's route to sms"))
    assert "as SMS through the modem only" in changed["content"]["body"]
    assert "Route: sms" in (await room_state(anna, room, "m.room.topic"))["topic"]
    assert (await room_state(anna, room, ROUTE))["preference"] == "sms"
    # The command itself is not texted to anyone.
    assert t.phone_sent() == [] and t.modem_sent() == []

    event_id = await anna.say(room, "Nur SMS")
    await until(lambda: f"{name}: Nur SMS" in t.modem_sent(), 30, "SMS")
    assert (await t.row(event_id)).request.line_id == "modem"
    assert t.phone_sent() == []

    # A restart keeps the choice.
    await stack.restart()
    await stack.ready()
    await anna.say(room, "!line")
    await anna.wait_for(room, says(stack, "as SMS through the modem only (sms)"), timeout=30)
    await anna.say(room, "Immer noch SMS")
    await until(lambda: f"{name}: Immer noch SMS" in t.modem_sent(), 30, "SMS")
    assert t.phone_sent() == []

    # Phone only: while the phone is away the text waits (and says so), then goes by phone.
    await anna.say(room, "!line phone")
    await anna.wait_for(room, says(stack, "set this chat's route to phone"), timeout=30)
    await t.unplug_phone()
    event_id = await anna.say(room, "Warte aufs Telefon")
    (waits,) = await anna.wait_for(room, says(stack, "waits for it"), timeout=30)
    assert "The phone is not connected" in waits["content"]["body"]
    assert "!line auto" in waits["content"]["body"]
    await asyncio.sleep(3.0)
    assert f"{name}: Warte aufs Telefon" not in t.modem_sent()
    await t.replug_phone()
    await until(lambda: f"{name}: Warte aufs Telefon" in t.phone_sent(), 30, "phone")
    assert (await t.row(event_id)).request.line_id == "phone"


async def test_a_member_of_one_line_only_is_routed_and_refused_by_line(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    anna, room = await t.room()
    ben = stack.client(stack.member)
    await ben.join(room)
    # Ben may no longer send SMS (the modem costs money); he stays on the phone line.
    lines = [
        stack.config.lines[0],
        replace(stack.config.lines[1], members=[]),
    ]
    stack.config = replace(stack.config, lines=lines)
    stack.bridge.config = stack.config
    await stack.bridge.reload_config()
    members = await ben.client.joined_members(room)
    assert stack.member.mxid in {m.user_id for m in members.members}  # type: ignore[union-attr]

    await t.unplug_phone()
    ben_waits = await ben.say(room, "Ben wartet")
    (waits,) = await ben.wait_for(room, says(stack, "waits for it"), timeout=30)
    assert f"{stack.member.mxid} is not a member of line modem" in waits["content"]["body"]
    anna_sms = await anna.say(room, "Anna per SMS")
    await until(lambda: any("Anna per SMS" in x for x in t.modem_sent()), 30, "SMS")
    assert (await t.row(anna_sms)).request.line_id == "modem"
    await asyncio.sleep(2.0)
    assert not any("Ben wartet" in x for x in t.modem_sent())
    assert (await t.row(ben_waits)).request.line_id == "phone"

    # SMS only now: Ben's texts are refused, visibly, naming the line.
    await anna.say(room, "!line sms")
    await anna.wait_for(room, says(stack, "set this chat's route to sms"), timeout=30)
    refused = await ben.say(room, "Ben per SMS")
    (notice,) = await ben.wait_for(
        room,
        lambda e: (
            says(stack, "is not a member of line modem")(e)
            and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == refused
        ),
        timeout=30,
    )
    assert notice["content"]["m.mentions"] == {"user_ids": [stack.member.mxid]}
    assert await t.stack.store.outbox.by_request(refused) is None  # type: ignore[union-attr]

    # Someone on neither line, invited by a member, can neither text nor change the route.
    await anna.client.room_invite(room, stack.outsider.mxid)
    eve = stack.client(stack.outsider)
    await eve.join(room)
    change = await eve.say(room, "!line auto")
    (no,) = await eve.wait_for(
        room,
        lambda e: (
            says(stack, "is not a member of line phone or modem")(e)
            and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == change
        ),
        timeout=30,
    )
    assert no["content"]["m.mentions"] == {"user_ids": [stack.outsider.mxid]}
    assert await stack.bridge.db.route(room) == ("sms", "phone")

    # The phone is back: Ben's waiting text goes through it (where he is a member).
    await t.replug_phone()
    await until(lambda: any("Ben wartet" in x for x in t.phone_sent()), 30, "phone")
    assert not any("Ben" in x for x in t.modem_sent())


async def test_a_room_from_before_the_phone_line_takes_the_phone_in(two_lines: TwoLines) -> None:
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    both = stack.config
    ghost = stack.ghost(NUMBER)
    # The family had only the modem when this contact first wrote.
    stack.bridge.config = replace(both, lines=[both.lines[1]])
    t.sim.network.deliver(NUMBER, "Nur das Modem")
    room = await stack.portal_room(NUMBER, "modem", timeout=30)
    anna = stack.client(stack.owner)
    await anna.join(room)
    await anna.wait_for(room, texts(ghost, "Nur das Modem"), timeout=30)
    assert await stack.bridge.db.linked_lines(room) == []

    # The phone is set up: the contact's next text through it joins the same room.
    stack.bridge.config = both
    await stack.bridge.reload_config()
    t.device.phone.receive(NUMBER, "Jetzt per RCS")
    await anna.wait_for(room, texts(ghost, "Jetzt per RCS"), timeout=30)
    (linked,) = await anna.wait_for(room, says(stack, "This chat goes through"), timeout=30)
    assert linked["content"]["body"].startswith(
        "This chat goes through the phone (line phone) and SMS through the modem (line modem)."
    )
    assert await stack.bridge.db.linked_lines(room) == ["phone"]
    assert [p.room_id for p in await stack.bridge.db.portals()] == [room]
    assert "Route: auto" in (await room_state(anna, room, "m.room.topic"))["topic"]
    event_id = await anna.say(room, "Antwort")
    await until(lambda: f"{stack.owner.localpart}: Antwort" in t.phone_sent(), 30, "phone")
    assert (await t.row(event_id)).request.line_id == "phone" and t.modem_sent() == []


async def test_bridge_db_from_before_line_selection_keeps_its_portals(tmp_path: Path) -> None:
    from mautrix.util.async_db import Database, UpgradeTable

    from appliance.bridge import db as bridge_db

    path = tmp_path / "bridge.db"
    before = UpgradeTable(version_table_name="bridge_version", database_name="bridge")
    before.register(bridge_db._upgrade_v1, description="v1")
    before.register(bridge_db._upgrade_v2, description="v2")
    old = Database.create(f"sqlite:{path}", upgrade_table=before)
    await old.start()
    await old.execute(
        "INSERT INTO portal (line_id, conversation, room_id, kind, ready, created_at) "
        "VALUES ('modem', $1, '!old:test', 'dm', 1, 1)",
        NUMBER,
    )
    await old.stop()

    db = bridge_db.BridgeDB(path)
    await db.start()
    try:
        latest = len(bridge_db.upgrade_table.upgrades)  # upgraded to the newest version
        assert await db.db.fetchval("SELECT version FROM bridge_version") == latest
        portal = await db.portal("modem", NUMBER)
        assert portal is not None and portal.room_id == "!old:test" and portal.ready
        assert await db.portal("phone", NUMBER) is None
        assert await db.route("!old:test") == ("auto", None)
        await db.link_portal("phone", NUMBER, "!old:test")
        linked = await db.portal("phone", NUMBER)
        assert linked == portal  # the room keeps its key: the line that made it
        await db.set_route("!old:test", "sms", "@anna:test")
        await db.set_last_inbound_line("!old:test", "phone")
        assert await db.route("!old:test") == ("sms", "phone")
        await db.forget_portal("!old:test")
        assert await db.portal("phone", NUMBER) is None
        assert await db.route("!old:test") == ("auto", None)
    finally:
        await db.stop()


async def test_caps_and_premium_numbers_hold_whichever_line_sends(two_lines: TwoLines) -> None:
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    caps = replace(stack.config.caps, daily_per_user=2, block_premium=True)
    stack.config = replace(stack.config, caps=caps)
    stack.bridge.config = stack.config
    anna, room = await t.room()
    name = stack.owner.localpart
    await anna.say(room, "Eins")
    await until(lambda: f"{name}: Eins" in t.phone_sent(), 30, "through the phone")
    await t.unplug_phone()
    await anna.say(room, "Zwei")
    await until(lambda: f"{name}: Zwei" in t.modem_sent(), 30, "through the modem")
    # The cap counts a person's texts on every line.
    over = await anna.say(room, "Drei")
    (notice,) = await anna.wait_for(
        room,
        lambda e: (
            says(stack, "which is your limit (2)")(e)
            and e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == over
        ),
        timeout=30,
    )
    assert notice["content"]["m.mentions"] == {"user_ids": [stack.owner.mxid]}
    assert await stack.store.outbox.by_request(over) is None  # type: ignore[union-attr]

    # A premium-rate number that wrote through the modem: one room, replies refused on
    # either line.
    await t.replug_phone()
    premium = "+499001234567"
    t.sim.network.deliver(premium, "Ihr Gewinn!")
    paid_room = await stack.portal_room(premium, "modem", timeout=30)
    await until(lambda: stack.bridge.db.linked_lines(paid_room), 30, "the room's lines")  # type: ignore[union-attr]
    await anna.join(paid_room)
    stack.bridge.config = replace(stack.config, caps=replace(caps, daily_per_user=0))
    paid = await anna.say(paid_room, "STOP")
    (blocked,) = await anna.wait_for(
        paid_room,
        lambda e: (
            says(stack, "premium-rate")(e)
            and e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == paid
        ),
        timeout=30,
    )
    assert "Textbridge blocks such numbers" in blocked["content"]["body"]
    await asyncio.sleep(1.0)
    assert not any("STOP" in x for x in t.phone_sent() + t.modem_sent())


async def test_texts_keep_their_order_when_the_phone_comes_back(two_lines: TwoLines) -> None:
    t, stack = two_lines, two_lines.stack
    anna, room = await t.room()
    name = stack.owner.localpart
    # The modem takes its time with each text (the network answers AT+CMGS late).
    t.sim.network.submit_delay = 20.0
    await t.unplug_phone()
    first = await anna.say(room, "Eins")

    async def in_flight() -> bool:
        row = await t.row(first)
        return row.request.line_id == "modem" and row.state == OutboxState.SENDING

    await eventually(in_flight, 30, "the first text going out through the modem")
    await t.replug_phone()
    # The phone is back, but the first text is still on its way as SMS: the second one
    # follows it there instead of overtaking it through the phone.
    second = await anna.say(room, "Zwei")
    assert (await t.row(second)).request.line_id == "modem"
    await until(lambda: f"{name}: Zwei" in t.modem_sent(), 60, "the second SMS")
    assert t.modem_sent() == [f"{name}: Eins", f"{name}: Zwei"]
    assert t.phone_sent() == []
    (note,) = await anna.wait_for(room, says(stack, "follows them"), timeout=30)
    assert note["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == second
    # Once those are out, the chat is back on the phone.
    t.sim.network.submit_delay = 0.0
    third = await anna.say(room, "Drei")
    await until(lambda: f"{name}: Drei" in t.phone_sent(), 30, "through the phone")
    assert (await t.row(third)).request.line_id == "phone"


async def test_a_new_number_gets_one_short_notice_before_its_first_text(
    two_lines: TwoLines,
) -> None:
    """A new number's first text, through the line that is not first in the room (the
    modem): one notice before the text (SMS is not end-to-end encrypted), not three (that,
    "This chat goes through…" and "Received as SMS…"). The route is in the topic; a
    change of line later is still said."""
    t, stack = two_lines, two_lines.stack
    t.sim.network.deliver(NUMBER, "Erste SMS")
    room = await stack.portal_room(NUMBER, "modem", timeout=30)
    anna = stack.client(stack.owner)
    await anna.join(room)
    ghost = stack.ghost(NUMBER)
    await anna.wait_for(room, texts(ghost, "Erste SMS"), timeout=30)
    timeline = await anna.messages(room)
    first = next(i for i, e in enumerate(timeline) if texts(ghost, "Erste SMS")(e))
    before = [e["content"]["body"] for e in timeline[:first] if notices(stack.bot)(e)]
    assert len(before) == 1, before
    assert "not end-to-end encrypted" in before[0]
    assert "Route: auto" in (await room_state(anna, room, "m.room.topic"))["topic"]

    t.device.phone.receive(NUMBER, "Jetzt per RCS")
    await anna.wait_for(room, texts(ghost, "Jetzt per RCS"), timeout=30)
    assert await anna.wait_for(room, says(stack, "Received through the phone (line phone)"))
    bot_notices = [e for e in await anna.messages(room) if notices(stack.bot)(e)]
    assert len(bot_notices) == 2, [e["content"]["body"] for e in bot_notices]


async def test_the_bot_names_lines_as_a_person_knows_them(two_lines: TwoLines) -> None:
    """`lines` and `status` say "Phone, Pixel 7" and "Modem, SIM +49 …", each with the id
    that `!line` and `new` take."""
    t, stack = two_lines, two_lines.stack
    anna = stack.client(stack.owner)
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)
    number = format_display(t.sim.own_number, "DE")
    for command in ("lines", "status"):
        await anna.say(mgmt, command)
        (answer,) = await anna.wait_for(
            mgmt, lambda e, c=command: notices(stack.bot)(e) and command_answer(e, c),
            timeout=30)
        body = answer["content"]["body"]
        assert "Phone, Pixel 7 (line phone)" in body, body
        assert f"Modem, SIM {number} (line modem)" in body, body


def command_answer(event: dict[str, Any], command: str) -> bool:
    body = str(event["content"]["body"])
    return body.startswith("Your lines:") if command == "lines" else "Waiting to send" in body
