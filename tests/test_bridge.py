"""The bridge end to end: a real Synapse, the real store, matrix-nio as the family.

Inbound rows are put into the store the way a line does (store.inbox.add); outbound
messages are sent by a family member's client and read back from the outbox. The path
through the SMS line and the modem simulator is in test_bridge_sms.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from appliance.store.models import InboundMessage, InboxState
from tests.plugins.bridge import BridgeStack, eventually, notices

pytestmark = pytest.mark.synapse

ANNA_NUMBER = "+4915112345678"
OUTAGE_S = float(os.environ.get("TEXTBRIDGE_OUTAGE_S", "12"))


def inbound(
    body: str,
    sender: str = ANNA_NUMBER,
    *,
    sent_at: int | None = None,
    key: str | None = None,
    **extra: Any,
) -> InboundMessage:
    sent_at = sent_at if sent_at is not None else int(time.time() * 1000) - 3_600_000
    return InboundMessage(
        line_id="modem",
        conversation=extra.pop("conversation", sender),
        sender=sender,
        body=body,
        sent_at=sent_at,
        dedup_key=key or f"{sender}|{sent_at}|{body}",
        **extra,
    )


def texts_from(sender: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == "m.text"
    )


async def test_inbound_texts_arrive_from_the_ghost_at_the_smsc_time(
    bridge_stack: BridgeStack,
) -> None:
    stack = bridge_stack
    await stack.start()
    store = stack.store
    assert store is not None
    base = int(time.time() * 1000) - 86_400_000  # yesterday: the SMSC time, not "now"
    long_text = ("Multipart message, reassembled by the line. " * 10).strip()
    bodies = [
        "Hello from the phone network @ 10:00 - GSM-7 {€}",
        "Привет! Как дела? Ünïcödé in UCS-2",
        "Party tonight 🎉🎂👍🏽 family emoji 👨‍👩‍👧",
        long_text,
    ]
    rows = []
    for i, body in enumerate(bodies):
        meta = {"parts": "3"} if body is long_text else {}
        row, created = await store.inbox.add(
            inbound(
                body, "015112345678" if i == 1 else ANNA_NUMBER, sent_at=base + i * 1000, meta=meta
            )
        )
        assert created
        rows.append(row)
    bank, _ = await store.inbox.add(inbound("Your code is 123456", "ACMEBANK", sent_at=base))

    anna = stack.client(stack.owner)
    room = await stack.portal_room(ANNA_NUMBER)
    await anna.join(room)
    ghost = stack.ghost(ANNA_NUMBER)
    events = await anna.wait_for(room, texts_from(ghost), count=len(bodies))
    # The national spelling (row 1) lands in the same room as the international one.
    assert [e["content"]["body"] for e in events] == bodies
    assert [e["origin_server_ts"] for e in events] == [base + i * 1000 for i in range(4)]
    for e in events:
        assert "formatted_body" not in e["content"]
        assert e["content"]["m.mentions"] == {}

    # The room says SMS is not end-to-end encrypted, in its topic and a first notice.
    state = await anna.client.room_get_state(room)
    topic = next(s for s in state.events if s["type"] == "m.room.topic")["content"]["topic"]
    assert "not end-to-end encrypted" in topic
    first_notices = await anna.wait_for(room, notices(stack.bot))
    assert "not end-to-end encrypted" in first_notices[0]["content"]["body"]
    # Both family members are invited; the contact's name is the readable number.
    members = {s["state_key"]: s["content"] for s in state.events if s["type"] == "m.room.member"}
    assert members[stack.member.mxid]["membership"] == "invite"
    assert members[ghost]["displayname"] == "+49 1511 2345678"

    # Every row is DELIVERED with the event id it became.
    await eventually(
        lambda: _all_delivered(stack, [r.id for r in rows] + [bank.id]), what="rows delivered"
    )
    for row, event in zip(rows, events, strict=True):
        got = await store.inbox.get(row.id)
        assert got is not None and got.delivered_ref == event["event_id"]

    # An alphanumeric sender has its own portal and ghost.
    bank_room = await stack.portal_room("ACMEBANK")
    await anna.join(bank_room)
    bank_ghost = f"@{stack.hs.registration.user_prefix}x.acmebank:textbridge.test"
    (code,) = await anna.wait_for(bank_room, texts_from(bank_ghost))
    assert code["content"]["body"] == "Your code is 123456"


async def _all_delivered(stack: BridgeStack, ids: list[int]) -> bool:
    assert stack.store is not None
    for row_id in ids:
        row = await stack.store.inbox.get(row_id)
        if row is None or row.state != InboxState.DELIVERED:
            return False
    return True


async def test_hostile_text_arrives_as_plain_text(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    assert stack.store is not None
    hostile = [
        '<b>bold</b> <a href="https://evil.example">click</a> <img src=x onerror=alert(1)>',
        f"@room look! {stack.owner.mxid} https://matrix.to/#/{stack.owner.mxid}",
        "!help\n/leave\n`code` **markdown** > quote",
    ]
    for i, body in enumerate(hostile):
        await stack.store.inbox.add(inbound(body, sent_at=int(time.time() * 1000) + i))
    anna = stack.client(stack.owner)
    room = await stack.portal_room(ANNA_NUMBER)
    await anna.join(room)
    events = await anna.wait_for(room, texts_from(stack.ghost(ANNA_NUMBER)), count=3)
    for e, body in zip(events, hostile, strict=True):
        content = e["content"]
        assert content["body"] == body
        assert content["msgtype"] == "m.text"
        assert "format" not in content and "formatted_body" not in content
        assert content["m.mentions"] == {}
    # "!help" in a portal is a text for the family, not a bot command: no bot reply.
    await asyncio.sleep(1.0)
    bot_msgs = [
        e
        for e in await anna.messages(room)
        if e["sender"] == stack.bot and e["type"] == "m.room.message"
    ]
    assert len(bot_msgs) == 1  # only the encryption notice


async def _portal_with_member(stack: BridgeStack, number: str = ANNA_NUMBER) -> tuple[str, Any]:
    """A portal made by an inbound text, joined by the owner's client."""
    assert stack.store is not None
    await stack.store.inbox.add(inbound("Hi, it's me", number))
    room = await stack.portal_room(number)
    anna = stack.client(stack.owner)
    await anna.join(room)
    ghost = stack.ghost(number) if number.startswith("+") else stack.ghost("x." + number)
    await anna.wait_for(room, texts_from(ghost))
    return room, anna


async def _outbox_row(stack: BridgeStack, event_id: str, timeout: float = 10.0) -> Any:
    assert stack.store is not None
    store = stack.store
    found: list[Any] = []

    async def check() -> bool:
        row = await store.outbox.by_request(event_id)
        if row is not None:
            found.append(row)
        return row is not None

    await eventually(check, timeout, what=f"outbox row for {event_id}")
    return found[0]


async def test_member_reply_becomes_an_outbox_row(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None

    plain = await anna.say(room, "On my way, 10 minutes 🚗")
    row = await _outbox_row(stack, plain)
    # The line is shared (owner and member), so the recipient learns who wrote.
    anna_name = stack.owner.localpart
    assert row.request.body == f"{anna_name}: On my way, 10 minutes 🚗"
    assert row.request.conversation == ANNA_NUMBER
    assert row.request.line_id == "modem"
    assert row.request.requested_by == stack.owner.mxid
    assert row.request.meta == {"room_id": room, "event_id": plain}

    # A formatted reply: HTML reduced to text, the quoted original (both fallbacks) gone.
    reply = await anna.send(
        room,
        {
            "msgtype": "m.text",
            "body": (
                "> <@sms_4915112345678:textbridge.test> Hi, it's me\n\nSee **you** soon\n- milk"
            ),
            "format": "org.matrix.custom.html",
            "formatted_body": (
                "<mx-reply><blockquote>In reply to Hi, it's me</blockquote></mx-reply>"
                "See <strong>you</strong> soon<ul><li>milk</li><li>bread &amp; butter</li></ul>"
                '<a href="https://example.org/list">our list</a>'
            ),
            "m.relates_to": {"m.in_reply_to": {"event_id": "$whatever"}},
        },
    )
    row = await _outbox_row(stack, reply)
    assert row.request.body == (
        f"{anna_name}: See you soon\n• milk\n• bread & butter\nour list (https://example.org/list)"
    )

    # A reply with only the plain body fallback.
    reply2 = await anna.send(
        room,
        {
            "msgtype": "m.text",
            "body": "> <@x:y> quoted\n> more quoted\n\nJust this",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$whatever"}},
        },
    )
    assert (await _outbox_row(stack, reply2)).request.body == f"{anna_name}: Just this"

    # An emote.
    emote = await anna.send(room, {"msgtype": "m.emote", "body": "waves"})
    assert (await _outbox_row(stack, emote)).request.body == f"{anna_name}: * {anna_name} waves"


async def test_a_redelivered_transaction_does_not_send_twice(bridge_stack: BridgeStack) -> None:
    import aiohttp

    stack = bridge_stack
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None
    event_id = await anna.say(room, "Only once please")
    row = await _outbox_row(stack, event_id)
    event = (await anna.client.room_get_event(room, event_id)).event.source
    # What Synapse does after a bridge crash: the same events again, in a new transaction.
    reg = stack.hs.registration
    async with aiohttp.ClientSession() as http:
        for txn in ("replay-1", "replay-2"):
            async with http.put(
                f"http://127.0.0.1:{stack.hs.port}/_matrix/app/v1/transactions/{txn}",
                json={"events": [event]},
                headers={"Authorization": f"Bearer {reg.hs_token}"},
            ) as resp:
                assert resp.status == 200
        # Without the hs_token nobody can feed the bridge events.
        async with http.put(
            f"http://127.0.0.1:{stack.hs.port}/_matrix/app/v1/transactions/forged",
            json={"events": [event]},
        ) as resp:
            assert resp.status == 401
    assert await stack.store.outbox.count_requested(stack.owner.mxid, 0) == 1
    assert (await stack.store.outbox.by_request(event_id)).id == row.id  # type: ignore[union-attr]


async def test_a_non_member_is_refused_visibly(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None
    invite = await anna.client.room_invite(room, stack.outsider.mxid)
    assert not hasattr(invite, "status_code") or invite.status_code is None, invite
    eve = stack.client(stack.outsider)
    await eve.join(room)
    event_id = await eve.say(room, "Send this on Anna's bill")
    (refusal,) = await eve.wait_for(
        room,
        lambda e: (
            notices(stack.bot)(e)
            and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == event_id
        ),
    )
    assert "not a member of line modem" in refusal["content"]["body"]
    assert refusal["content"]["m.mentions"] == {"user_ids": [stack.outsider.mxid]}
    assert await stack.store.outbox.by_request(event_id) is None


def _reply_to(bot: str, event_id: str) -> Any:
    return lambda e: (
        notices(bot)(e)
        and (
            e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == event_id
        )
    )


async def test_edits_reactions_redactions_and_media_get_notices(
    bridge_stack: BridgeStack,
) -> None:
    stack = bridge_stack
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None
    original = await anna.say(room, "See you at 5")
    await _outbox_row(stack, original)

    edit = await anna.send(
        room,
        {
            "msgtype": "m.text",
            "body": "* See you at 6",
            "m.new_content": {"msgtype": "m.text", "body": "See you at 6"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    reaction = await anna.send(
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}},
        "m.reaction",
    )
    image = await anna.send(
        room,
        {
            "msgtype": "m.image",
            "body": "cat.jpg",
            "url": "mxc://textbridge.test/abc",
            "info": {"mimetype": "image/jpeg", "size": 1000},
        },
    )
    redaction = await anna.client.room_redact(room, original)
    redaction_id = redaction.event_id

    for event_id, words in (
        (edit, "Edits cannot be sent by SMS"),
        (reaction, "Reactions cannot be sent by SMS"),
        (image, "text only"),
        (redaction_id, "Deleting does not reach the phone"),
    ):
        (notice,) = await anna.wait_for(room, _reply_to(stack.bot, event_id))
        assert words in notice["content"]["body"], notice
        assert await stack.store.outbox.by_request(event_id) is None
    assert await stack.store.outbox.count_requested(stack.owner.mxid, 0) == 1


async def test_edits_and_reactions_can_be_rendered_as_texts(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    stack.config = stack.config.__class__(
        **{**stack.config.__dict__, "edits": "render", "reactions": "render"}
    )
    await stack.start()
    room, anna = await _portal_with_member(stack)
    original = await anna.say(room, "See you at 5")
    edit = await anna.send(
        room,
        {
            "msgtype": "m.text",
            "body": "* See you at 6",
            "m.new_content": {"msgtype": "m.text", "body": "See you at 6"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    reaction = await anna.send(
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}},
        "m.reaction",
    )
    name = stack.owner.localpart
    assert (await _outbox_row(stack, edit)).request.body == f"{name}: * See you at 6"
    assert (await _outbox_row(stack, reaction)).request.body == f"{name}: 👍 to “See you at 5”"


async def test_daily_cap_and_premium_numbers_are_refused(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    from dataclasses import replace

    from appliance.bridge import CapsConfig
    from appliance.config import UserCapConfig

    stack.config = replace(
        stack.config,
        caps=CapsConfig(
            daily_per_user=2,
            block_premium=True,
            international_allowed=False,
            per_user=[UserCapConfig(user=stack.member.mxid, daily=5)],
        ),
    )
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None
    first = await anna.say(room, "one")
    second = await anna.say(room, "two")
    third = await anna.say(room, "three")
    await _outbox_row(stack, first)
    await _outbox_row(stack, second)
    (notice,) = await anna.wait_for(room, _reply_to(stack.bot, third))
    assert "limit (2)" in notice["content"]["body"]
    assert await stack.store.outbox.by_request(third) is None
    # The cap is per person: the other family member can still send, and their own cap
    # (5, set in the dashboard) is not the default.
    ben = stack.client(stack.member)
    await ben.join(room)
    for i in range(3):
        await _outbox_row(stack, await ben.say(room, f"mine {i}"))

    # Texts abroad switched off: a number in another country is refused, visibly.
    abroad_room, _ = await _portal_with_member(stack, "+447911123456")
    await ben.join(abroad_room)
    away = await ben.say(abroad_room, "hello London")
    (notice,) = await ben.wait_for(abroad_room, _reply_to(stack.bot, away))
    assert "abroad" in notice["content"]["body"]
    assert await stack.store.outbox.by_request(away) is None

    # A premium-rate number: the chat can exist (it texted us), replies are refused.
    premium_room, _ = await _portal_with_member(stack, "+499001234567")
    await anna.join(premium_room)
    paid = await anna.say(premium_room, "STOP")
    (notice,) = await anna.wait_for(premium_room, _reply_to(stack.bot, paid))
    assert "premium-rate" in notice["content"]["body"]
    assert await stack.store.outbox.by_request(paid) is None
    # A short code sender (a bank's 5-digit number) is refused too.
    short_room, _ = await _portal_with_member(stack, "80888")
    await anna.join(short_room)
    short = await anna.say(short_room, "YES")
    (notice,) = await anna.wait_for(short_room, _reply_to(stack.bot, short))
    assert "short" in notice["content"]["body"]


def _status_of(bot: str, event_id: str, status: str) -> Any:
    return lambda e: (
        e["type"] == "com.beeper.message_send_status"
        and e["sender"] == bot
        and e["content"]["m.relates_to"]["event_id"] == event_id
        and e["content"]["status"] == status
    )


async def test_outbox_states_show_in_the_room(bridge_stack: BridgeStack) -> None:
    from appliance.store.models import OutboxState, PartState

    stack = bridge_stack
    await stack.start()
    await stack.ready()
    room, anna = await _portal_with_member(stack)
    store = stack.store
    assert store is not None
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)

    # SENT, then a status report says DELIVERED: send status, then the contact's receipt.
    ok = await anna.say(room, "Arrived?")
    row = await _outbox_row(stack, ok)
    await store.outbox.mark_sending(row.id)
    await store.outbox.mark_part_sent(row.id, 0, 42)
    await store.outbox.mark_sent(row.id)
    await anna.wait_for(room, _status_of(stack.bot, ok, "SUCCESS"))
    await eventually(lambda: _reported(stack, row.id, OutboxState.SENT), what="SENT reported")
    report = await store.outbox.apply_status_report(
        "modem", 42, ANNA_NUMBER, PartState.DELIVERED, None
    )
    assert report is not None and report.state == OutboxState.DELIVERED
    ghost = stack.ghost(ANNA_NUMBER)

    async def receipt() -> bool:
        await anna.sync()
        return any(
            r["event_id"] == ok and r["user_id"] == ghost and r["room_id"] == room
            for r in anna.receipts
        )

    await eventually(receipt, what="the ghost's read receipt")

    # FAILED: a notice with the reason and how to retry, here and in the member's room.
    bad = await anna.say(room, "Wrong number?")
    row = await _outbox_row(stack, bad)
    await store.outbox.mark_sending(row.id)
    await store.outbox.mark_failed(row.id, "the network says this number does not exist")
    await anna.wait_for(room, _status_of(stack.bot, bad, "FAIL_PERMANENT"))
    (notice,) = await anna.wait_for(room, _reply_to(stack.bot, bad))
    assert "does not exist" in notice["content"]["body"]
    assert f"retry {row.id}" in notice["content"]["body"]
    await anna.wait_for(
        mgmt, lambda e: notices(stack.bot)(e) and f"retry {row.id}" in e["content"]["body"]
    )
    failed_id = row.id

    # AMBIGUOUS: may or may not have gone; the person decides.
    unsure = await anna.say(room, "Did this go?")
    row = await _outbox_row(stack, unsure)
    await store.outbox.mark_sending(row.id)
    await store.outbox.mark_ambiguous(row.id)
    await anna.wait_for(room, _status_of(stack.bot, unsure, "FAIL_RETRIABLE"))
    (notice,) = await anna.wait_for(room, _reply_to(stack.bot, unsure))
    assert "may or may not" in notice["content"]["body"]
    ambiguous_id = row.id
    await eventually(
        lambda: _reported(stack, ambiguous_id, OutboxState.AMBIGUOUS), what="AMBIGUOUS reported"
    )

    # With two waiting, a bare "retry" asks which; "retry <n>" resends that one.
    await anna.say(mgmt, "retry")
    await anna.wait_for(
        mgmt,
        lambda e: notices(stack.bot)(e) and "Several texts are waiting" in e["content"]["body"],
    )
    await anna.say(mgmt, f"retry {failed_id}")
    await anna.wait_for(
        mgmt,
        lambda e: (
            notices(stack.bot)(e) and f"Text {failed_id} will be sent again" in e["content"]["body"]
        ),
    )
    assert (await store.outbox.get(failed_id)).state == OutboxState.QUEUED  # type: ignore[union-attr]
    await anna.wait_for(room, _status_of(stack.bot, bad, "PENDING"))
    # Now only the ambiguous one waits: a bare "cancel" is about it.
    await anna.say(mgmt, "cancel")
    await anna.wait_for(
        mgmt,
        lambda e: (
            notices(stack.bot)(e)
            and f"Text {ambiguous_id} will not be sent" in e["content"]["body"]
        ),
    )
    assert (await store.outbox.get(ambiguous_id)).state == OutboxState.CANCELLED  # type: ignore[union-attr]
    # Someone else cannot decide about Anna's texts.
    ben = stack.client(stack.member)
    ben_mgmt = await stack.management_room(stack.member)
    await ben.join(ben_mgmt)
    await ben.say(ben_mgmt, f"cancel {failed_id}")
    await ben.wait_for(
        ben_mgmt,
        lambda e: notices(stack.bot)(e) and f"no text {failed_id} of yours" in e["content"]["body"],
    )


async def _reported(stack: BridgeStack, row_id: int, state: Any) -> bool:
    assert stack.store is not None
    row = await stack.store.outbox.get(row_id)
    return row is not None and row.reported_state == state


async def test_bot_commands_answer(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    anna = stack.client(stack.owner)
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)
    (welcome,) = await anna.wait_for(mgmt, notices(stack.bot))
    assert "new <number>" in welcome["content"]["body"]

    async def ask(text: str, expect: str) -> dict[str, Any]:
        event_id = await anna.say(mgmt, text)
        del event_id
        found = await anna.wait_for(
            mgmt, lambda e: notices(stack.bot)(e) and expect in e["content"]["body"]
        )
        return found[-1]

    await ask("help", "contacts import")
    await ask("frobnicate the modem", "I did not understand that")
    await ask("lines", f"Modem (line modem); members: {stack.owner.mxid}, {stack.member.mxid}")
    await ask("status", "Line modem: not running.")
    await ask("new ACMEBANK", "is not a phone number I can text")
    await ask("new", "Which number?")
    answer = await ask("new 0151 99999999", "is ready: https://matrix.to/#/")
    room = answer["content"]["body"].rsplit("/", 1)[-1]
    assert stack.bridge is not None
    portal = await stack.bridge.db.portal("modem", "+4915199999999")
    assert portal is not None and portal.room_id == room
    await anna.join(room)
    ben = stack.client(stack.member)
    await ben.join(room)  # invited too
    ghost = stack.ghost("+4915199999999")
    members = await anna.client.joined_members(room)
    assert ghost in {m.user_id for m in members.members}

    # A vCard pasted as text names the contact: ghost and room follow.
    await ask(
        "BEGIN:VCARD\nVERSION:3.0\nN:Muster;Erna;;;\nFN:Oma Erna\n"
        "TEL;TYPE=cell:0151 99999999\nEND:VCARD",
        "Imported 1 number(s) from 1 contact(s)",
    )

    async def named(user: str, name: str) -> bool:
        resp = await anna.client.get_displayname(user)
        return getattr(resp, "displayname", None) == name

    await eventually(lambda: named(ghost, "Oma Erna"), what="ghost renamed")
    state = await anna.client.room_get_state(room)
    names = [s["content"]["name"] for s in state.events if s["type"] == "m.room.name"]
    assert names == ["Oma Erna"]

    # A .vcf file (vCard 2.1, quoted-printable, two cards, one without a number).
    vcf = (
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=B6rg\r\n"
        b"TEL;CELL:+49 170 1234567\r\nitem1.TEL:0171 7654321\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Number\r\nEMAIL:x@example.org\r\nEND:VCARD\r\n"
    )
    import io

    upload, _keys = await anna.client.upload(
        io.BytesIO(vcf),
        content_type="text/vcard",
        filename="contacts.vcf",
        filesize=len(vcf),
    )
    await anna.send(
        mgmt,
        {
            "msgtype": "m.file",
            "body": "contacts.vcf",
            "url": upload.content_uri,
            "info": {"mimetype": "text/vcard", "size": len(vcf)},
        },
    )
    await anna.wait_for(
        mgmt,
        lambda e: (
            notices(stack.bot)(e)
            and "Imported 2 number(s) from 1 contact(s)" in e["content"]["body"]
        ),
    )
    assert await stack.bridge.db.contact_name("+491701234567") == "Jörg Müller"
    assert await stack.bridge.db.contact_name("+491717654321") == "Jörg Müller"

    # The address book the owner uploads in the dashboard goes the same way.
    added = await stack.bridge.import_contacts(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Tante Ilse\r\nTEL:0170 1112223\r\nEND:VCARD\r\n",
        stack.owner.mxid,
        "DE",
    )
    assert added == 1
    assert await stack.bridge.db.contact_name("+491701112223") == "Tante Ilse"


async def test_line_events_and_quarantine_reach_the_management_rooms(
    bridge_stack: BridgeStack,
) -> None:
    from appliance.line import LineEvent, Severity

    stack = bridge_stack
    await stack.start()
    await stack.ready()
    assert stack.bridge is not None and stack.store is not None
    anna, ben = stack.client(stack.owner), stack.client(stack.member)
    anna_mgmt = await stack.management_room(stack.owner)
    ben_mgmt = await stack.management_room(stack.member)
    await anna.join(anna_mgmt)
    await ben.join(ben_mgmt)
    pin = LineEvent("modem", Severity.ERROR, "The SIM card needs its PIN.", "sim-pin")
    for _ in range(3):  # a line repeating itself is one notice
        stack.bridge.on_line_event(pin)
    stack.bridge.on_line_event(
        LineEvent("modem", Severity.INFO, "The SMS line is working again.", "recovered")
    )
    for client, room in ((anna, anna_mgmt), (ben, ben_mgmt)):
        await client.wait_for(
            room, lambda e: notices(stack.bot)(e) and "working again" in e["content"]["body"]
        )
        pins = [
            e
            for e in await client.messages(room)
            if notices(stack.bot)(e) and "needs its PIN" in e["content"]["body"]
        ]
        assert len(pins) == 1

    # A text that could not be decoded: the owner hears of it, with what is known.
    row, _ = await stack.store.inbox.add(
        InboundMessage(
            line_id="modem",
            conversation="unknown",
            sender="unknown",
            body="",
            sent_at=int(time.time() * 1000),
            dedup_key="raw:deadbeef",
            kind="quarantine",
            raw=b"\x07\x91\xff",
            note="A text arrived that could not be read (bad PDU).",
        )
    )
    (notice,) = await anna.wait_for(
        anna_mgmt, lambda e: notices(stack.bot)(e) and "could not be read" in e["content"]["body"]
    )
    assert f"inbox row {row.id}" in notice["content"]["body"]

    async def told() -> bool:
        got = await stack.store.inbox.get(row.id)  # type: ignore[union-attr]
        return got is not None and got.delivered_ref is not None

    await eventually(told, what="quarantine reported")

    # A text with a note (a part that never came) shows the note under it.
    await stack.store.inbox.add(
        inbound(
            "Start of the story [part 2 of 2 missing]",
            note="Part 2 of this 2-part text never arrived; what did arrive is shown.",
        )
    )
    room = await stack.portal_room(ANNA_NUMBER)
    await anna.join(room)
    (note,) = await anna.wait_for(
        room, lambda e: notices(stack.bot)(e) and "never arrived" in e["content"]["body"]
    )
    texts = await anna.wait_for(room, texts_from(stack.ghost(ANNA_NUMBER)))
    assert texts[0]["origin_server_ts"] <= note["origin_server_ts"]


async def _texts(client: Any, room: str, ghost: str) -> list[str]:
    return [e["content"]["body"] for e in await client.messages(room) if texts_from(ghost)(e)]


async def test_homeserver_outage_loses_nothing_and_keeps_order(
    bridge_stack: BridgeStack,
) -> None:
    """A hung (SIGSTOP) and then a stopped homeserver. The hang is kept short here (12 s);
    TEXTBRIDGE_OUTAGE_S=60 runs the long version."""
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    store = stack.store
    assert store is not None and stack.bridge is not None
    room, anna = await _portal_with_member(stack)
    ghost = stack.ghost(ANNA_NUMBER)
    base = int(time.time() * 1000)
    expected = ["Hi, it's me"]

    stack.server.pause()
    try:
        for i in range(5):
            body = f"during the hang {i}"
            await store.inbox.add(inbound(body, sent_at=base + i))
            expected.append(body)
            await asyncio.sleep(OUTAGE_S / 5)
        # While the homeserver hangs the rows wait: none is marked delivered.
        assert len(await store.inbox.pending()) == 5
    finally:
        stack.server.resume()
    await eventually(lambda: _none_pending(stack), timeout=60, what="rows after the hang")

    await stack.server.stop()
    for i in range(3):
        body = f"while it is down {i}"
        await store.inbox.add(inbound(body, sent_at=base + 100 + i))
        expected.append(body)
    await asyncio.sleep(2.0)
    assert len(await store.inbox.pending()) == 3
    assert stack.bridge.health()["inbound_error"] is not None
    await stack.server.start()
    await eventually(lambda: _none_pending(stack), timeout=90, what="rows after the restart")
    assert await _texts(anna, room, ghost) == expected
    assert stack.bridge.health()["inbound_error"] is None


async def _none_pending(stack: BridgeStack) -> bool:
    assert stack.store is not None
    return not await stack.store.inbox.pending()


async def test_bridge_restart_duplicates_nothing(bridge_stack: BridgeStack) -> None:
    import sqlite3

    from appliance.store import Store

    stack = bridge_stack
    await stack.start()
    await stack.ready()
    assert stack.store is not None
    room, anna = await _portal_with_member(stack)
    ghost = stack.ghost(ANNA_NUMBER)
    mgmt_before = await stack.management_room(stack.owner)

    # A plain restart: same rooms, nothing sent again, no second welcome.
    await stack.restart()
    await stack.ready()
    assert await stack.management_room(stack.owner) == mgmt_before
    row, _ = await stack.store.inbox.add(inbound("after the restart"))
    await eventually(lambda: _none_pending(stack), what="row after restart")
    assert await stack.portal_room(ANNA_NUMBER) == room
    assert await _texts(anna, room, ghost) == ["Hi, it's me", "after the restart"]
    await anna.join(mgmt_before)
    welcomes = [e for e in await anna.messages(mgmt_before) if notices(stack.bot)(e)]
    assert len(welcomes) == 1

    # A crash after the homeserver took the message but before mark_delivered: on disk the
    # row is still RECEIVED. The homeserver restarts too, forgetting its transaction ids.
    delivered = await stack.store.inbox.get(row.id)
    assert delivered is not None and delivered.delivered_ref
    await stack.stop()
    await stack.store.close()
    with sqlite3.connect(stack.tmp / "textbridge.db") as db:
        db.execute("UPDATE inbox SET state='received', delivered_ref=NULL WHERE id=?", (row.id,))
    stack.store = await Store.open(stack.tmp / "textbridge.db")
    await stack.server.restart()
    await stack.start()
    await eventually(lambda: _none_pending(stack), what="the crashed row")
    again = await stack.store.inbox.get(row.id)
    assert again is not None and again.delivered_ref == delivered.delivered_ref
    assert await _texts(anna, room, ghost) == ["Hi, it's me", "after the restart"]

    # A message written while the bridge is down reaches the outbox once it is back.
    await stack.stop()
    event_id = await anna.say(room, "sent while the bridge was down")
    await stack.start()
    row_out = await _outbox_row(stack, event_id, timeout=90)
    assert row_out.request.body.endswith("sent while the bridge was down")
    assert await stack.store.outbox.count_requested(stack.owner.mxid, 0) == 1


async def test_group_texts_and_a_broken_portal(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    assert stack.store is not None and stack.bridge is not None
    # A line that knows groups (RCS through the phone) hands in a group conversation.
    other = "+4917011112222"
    for sender, body in ((ANNA_NUMBER, "Who brings cake?"), (other, "Me!")):
        await stack.store.inbox.add(
            inbound(body, sender, conversation="group:family-42", meta={"group_name": "Family"})
        )
    room = await stack.portal_room("group:family-42")
    anna = stack.client(stack.owner)
    await anna.join(room)
    await anna.wait_for(room, texts_from(stack.ghost(other)))
    texts = [
        (e["sender"], e["content"]["body"])
        for e in await anna.messages(room)
        if e["type"] == "m.room.message" and e["content"].get("msgtype") == "m.text"
    ]
    assert texts == [(stack.ghost(ANNA_NUMBER), "Who brings cake?"), (stack.ghost(other), "Me!")]
    state = await anna.client.room_get_state(room)
    assert [s["content"]["name"] for s in state.events if s["type"] == "m.room.name"] == ["Family"]
    # A reply in the group goes to the group conversation.
    reply = await anna.say(room, "I do")
    assert (await _outbox_row(stack, reply)).request.conversation == "group:family-42"

    # The bridge's users were removed from a 1:1 portal: the next text opens a new room
    # instead of waiting forever.
    dm, _ = await _portal_with_member(stack)
    ghost = stack.bridge.az.intent.user(stack.ghost(ANNA_NUMBER))  # type: ignore[arg-type]
    await ghost.leave_room(dm)  # type: ignore[arg-type]
    await stack.bridge.az.intent.leave_room(dm)  # type: ignore[arg-type]
    await stack.store.inbox.add(inbound("Are you there?"))
    await eventually(lambda: _none_pending(stack), what="text after the portal broke")
    new_room = await stack.portal_room(ANNA_NUMBER)
    assert new_room != dm
    await anna.join(new_room)
    assert await _texts(anna, new_room, stack.ghost(ANNA_NUMBER)) == ["Are you there?"]


async def test_health_and_appservice_ping(bridge_stack: BridgeStack) -> None:
    import aiohttp

    stack = bridge_stack
    await stack.start()
    await stack.ready()
    assert stack.bridge is not None
    health = stack.bridge.health()
    # The homeserver reached the bridge through the ping API (a real round trip).
    assert health["homeserver_reachable"] is True
    assert isinstance(health["ping_ms"], int) and health["ping_ms"] >= 0
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.hs.port}/health") as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    assert body["ok"] is True
    assert set(body["loops"]) == {
        "bridge-setup",
        "bridge-inbound",
        "bridge-delivery",
        "bridge-line-events",
        "bridge-line-fallback",
    }
    assert stack.hs.registration.as_token not in str(body)
    assert stack.hs.registration.hs_token not in str(body)

    # The same Bridge object can be stopped and started again (a reload).
    bridge = stack.bridge
    await bridge.stop()
    assert bridge.health()["ok"] is False
    await bridge.start()
    await stack.ready()
    assert bridge.health()["ok"] is True


async def test_starting_a_chat_with_a_ghost_opens_a_portal(bridge_stack: BridgeStack) -> None:
    import nio

    stack = bridge_stack
    await stack.start()
    await stack.ready()
    assert stack.store is not None and stack.bridge is not None
    anna = stack.client(stack.owner)
    number = "+4915122223333"
    ghost = stack.ghost(number)
    created = await anna.client.room_create(is_direct=True, invite=[ghost])
    assert isinstance(created, nio.RoomCreateResponse), created
    room = await stack.portal_room(number)
    assert room == created.room_id
    await anna.wait_for(room, notices(stack.bot))  # the encryption notice
    event_id = await anna.say(room, "New phone, who dis?")
    row = await _outbox_row(stack, event_id)
    assert row.request.conversation == number
    # A second room with the same ghost is declined with a pointer to the first.
    again = await anna.client.room_create(is_direct=True, invite=[ghost])
    assert isinstance(again, nio.RoomCreateResponse), again
    (pointer,) = await anna.wait_for(again.room_id, notices(ghost))
    assert room in pointer["content"]["body"]
    assert await stack.bridge.db.portal_by_room(again.room_id) is None
    # An outsider cannot open a portal this way.
    eve = stack.client(stack.outsider)
    theirs = await eve.client.room_create(is_direct=True, invite=[ghost])
    assert isinstance(theirs, nio.RoomCreateResponse), theirs
    (refusal,) = await eve.wait_for(theirs.room_id, notices(ghost))
    assert "Only members" in refusal["content"]["body"]


async def test_a_transaction_the_store_cannot_take_is_refused_for_a_retry(
    bridge_stack: BridgeStack,
) -> None:
    import aiohttp

    from appliance.store import Store

    stack = bridge_stack
    await stack.start()
    room, anna = await _portal_with_member(stack)
    assert stack.store is not None and stack.bridge is not None
    event_id = await anna.say(room, "first")
    await _outbox_row(stack, event_id)
    event = (await anna.client.room_get_event(room, event_id)).event.source
    event = {
        **event,
        "event_id": "$not-yet-stored",
        "content": {"msgtype": "m.text", "body": "second"},
    }
    url = f"http://127.0.0.1:{stack.hs.port}/_matrix/app/v1/transactions"
    headers = {"Authorization": f"Bearer {stack.hs.registration.hs_token}"}
    await stack.store.close()  # the store is gone (disk trouble)
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/t1", json={"events": [event]}, headers=headers) as resp:
            # Not 200: the homeserver keeps the transaction and sends it again.
            assert resp.status == 500
        stack.store = await Store.open(stack.tmp / "textbridge.db")
        stack.bridge.store = stack.store
        async with http.put(f"{url}/t1", json={"events": [event]}, headers=headers) as resp:
            assert resp.status == 200
    row = await stack.store.outbox.by_request("$not-yet-stored")
    assert row is not None and row.request.body.endswith("second")
