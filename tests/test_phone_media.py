"""Media on the phone line: MMS pictures and files read from the phone's MMS store
(content://mms over adb-shell, parts through `content read` on the exec service) against
the simulated phone; RCS media stay a description with a note."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from appliance.adbsim import SimPhone
from appliance.adbsim.device import SimMessage, SimPart
from appliance.bridge import LineConfig
from appliance.line import LineState
from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine
from appliance.store import Store
from appliance.store.models import InboxRow, OutboxState
from tests.plugins.bridge import BridgeStack, Member
from tests.plugins.lines import TwoLines
from tests.plugins.phone import AdbDevice, PhoneHarness
from tests.plugins.synapse import MatrixUser
from tests.waiting import until

NUMBER = "+4915112345678"
OTHER = "+4915198765432"


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A real PNG (the bridge reads its size from the header)."""
    raw = b"".join(
        b"\0" + bytes(((x * 7 + y * 3 + seed) & 0xFF) for x in range(width * 3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def attachments(h: PhoneHarness, row: InboxRow) -> list[tuple[str, str, bytes]]:
    """(type, name, bytes) of a media row, split from raw by meta["attachments"]; read with
    get(): pending() leaves a media row's raw out."""
    assert row.message.raw is None
    full = await h.store.inbox.get(row.id)
    assert full is not None
    row = full
    out, offset = [], 0
    raw = row.message.raw or b""
    for a in row.message.meta["attachments"]:
        size = int(a["size"])
        out.append((str(a["type"]), str(a["name"]), raw[offset : offset + size]))
        offset += size
    assert offset == len(raw)
    return out


async def settle(h: PhoneHarness, polls: int = 8) -> None:
    start = h.line.polls
    await until(lambda: h.line.polls >= start + polls, 20, f"{polls} more polls")


async def test_mms_picture_with_caption_is_stored_once_with_its_bytes(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line()
    picture = png(40, 30)
    h.phone.receive_mms(
        NUMBER,
        [SimPart("image/png", picture, "IMG_0042.png"), SimPart("text/plain", text="Look at this")],
        caption="Look at this",
    )
    (row,) = await h.inbox(1)
    m = row.message
    assert (m.kind, m.conversation, m.sender, m.body) == ("media", NUMBER, NUMBER, "Look at this")
    assert await attachments(h, row) == [("image/png", "IMG_0042.png", picture)]
    assert m.meta["source"] == "mms" and m.note is None
    # The notification stays and is read at every poll; the MMS store is read too.
    await settle(h)
    assert len(await h.store.inbox.pending(limit=10)) == 1
    reads = [c for c in h.device.server.commands if c.startswith("content read")]
    assert len(reads) == 1, reads

    # A restart (fresh memory, same store): the notification and the MMS are seen again.
    await h.line.stop()
    await h.line.start()
    assert await h.line.wait_connected(20)
    await settle(h)
    assert len(await h.store.inbox.pending(limit=10)) == 1
    assert len([c for c in h.device.server.commands if c.startswith("content read")]) == 1


async def test_mms_files_of_every_kind_and_a_group(phone_line: Callable[..., Any]) -> None:
    h: PhoneHarness = await phone_line()
    h.phone.receive(NUMBER, "Hi all", group="Family", members=(NUMBER, OTHER))
    (first,) = await h.inbox(1)
    voice, video, card = (
        b"#!AMR\n" + bytes(range(256)) * 4,
        b"\0\0\0\x18ftyp3gp4" * 50,
        (b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Oma\r\nTEL:+4930123456\r\nEND:VCARD\r\n"),
    )
    h.phone.receive_mms(
        OTHER,
        [
            SimPart("audio/amr", voice, "voice.amr"),
            SimPart("video/3gpp", video, "clip.3gp"),
            SimPart("text/x-vcard", card, "Oma.vcf"),
        ],
        group="Family",
        members=(NUMBER, OTHER),
    )
    rows = await h.inbox(2)
    m = rows[1].message
    assert m.kind == "media" and m.conversation == first.message.conversation
    assert m.conversation.startswith("group:") and m.meta["group_name"] == "Family"
    assert m.sender == OTHER and m.body == ""
    assert await attachments(h, rows[1]) == [
        ("audio/amr", "voice.amr", voice),
        ("video/3gpp", "clip.3gp", video),
        ("text/x-vcard", "Oma.vcf", card),
    ]


async def test_mms_too_big_and_missing_part_arrive_as_text_with_a_note(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line(media_max_bytes=4096)
    h.phone.receive_mms(NUMBER, [SimPart("image/jpeg", b"\xff\xd8\xff" + b"x" * 9000, "big.jpg")])
    (big,) = await h.inbox(1)
    assert big.message.kind == "text" and big.message.body == "[picture]"
    assert big.message.note is not None and "bigger than the 4 KiB" in big.message.note
    assert not [c for c in h.device.server.commands if c.startswith("content read")]

    small = png(8, 8)
    sent = h.phone.receive_mms(
        NUMBER,
        [SimPart("image/png", small, "a.png"), SimPart("image/jpeg", b"\xff\xd8\xffgone", "b.jpg")],
        at=h.phone.now() + 1000,
    )
    h.phone.faults.missing_parts.add(sent.parts[-1].id)
    rows = await h.inbox(2)
    m = rows[1].message
    assert m.kind == "media" and await attachments(h, rows[1]) == [("image/png", "a.png", small)]
    assert m.note is not None and "could not be read from the phone" in m.note


async def test_rcs_picture_stays_a_description_and_mms_while_open_is_fetched(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line(leave_open_conversations=False)
    h.phone.receive(NUMBER, "", mime="image/jpeg")  # an RCS picture: no MMS row
    (rcs,) = await h.inbox(1)
    assert rcs.message.kind == "text" and rcs.message.body == "[image]"
    assert rcs.message.note is not None and "RCS" in rcs.message.note

    # With the conversation open, Messages posts no notification; the MMS store has it.
    h.phone.open_conversation((OTHER,))
    picture = png(16, 16, seed=3)
    h.phone.receive_mms(OTHER, [SimPart("image/png", picture, "x.png")])
    rows = await h.inbox(2)
    assert rows[1].message.kind == "media" and rows[1].message.conversation == OTHER
    assert (await attachments(h, rows[1]))[0][2] == picture


# -- through the bridge, on a real Synapse ----------------------------------------------


@dataclass
class PhoneBridge:
    stack: BridgeStack
    line: PhoneLine
    device: AdbDevice

    @property
    def phone(self) -> SimPhone:
        return self.device.phone


@pytest.fixture
async def phone_bridge(
    bridge_stack: BridgeStack, adb_device: AdbDevice
) -> AsyncIterator[PhoneBridge]:
    stack = bridge_stack
    stack.config = replace(
        stack.config,
        lines=[
            LineConfig(
                id="phone", kind="phone", owner=stack.owner.mxid, members=[stack.member.mxid]
            )
        ],
    )
    stack.store = await Store.open(stack.tmp / "textbridge.db")
    bridge = await stack.start()
    line = PhoneLine(
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
    stack.lines["phone"] = line
    await line.start()
    try:
        assert await line.wait_connected(30), line.status().summary
        await until(lambda: line.status().state == LineState.READY, 30, "phone ready")
        await stack.ready()
        yield PhoneBridge(stack, line, adb_device)
    finally:
        await line.stop()


async def download(member: Member, user: MatrixUser, mxc: str) -> bytes:
    """The file back through the client API (authenticated media, Matrix 1.11)."""
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    url = f"{member.client.homeserver}/_matrix/client/v1/media/download/{server}/{media_id}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {user.access_token}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.read()


def of_type(sender: str, msgtype: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == msgtype
    )


@pytest.mark.synapse
async def test_mms_picture_reaches_the_portal_as_an_image_exactly_once(
    phone_bridge: PhoneBridge,
) -> None:
    t, stack = phone_bridge, phone_bridge.stack
    picture = png(64, 48, seed=9)
    t.phone.receive_mms(
        NUMBER,
        [
            SimPart("image/png", picture, "../../etc/IMG\u202e_7.png"),
            SimPart("text/plain", text="Für dich"),
        ],
        caption="Für dich",
    )
    room = await stack.portal_room(NUMBER, "phone", timeout=30)
    anna = stack.client(stack.owner)
    await anna.join(room)
    ghost = stack.ghost(NUMBER)
    (image,) = await anna.wait_for(room, of_type(ghost, "m.image"), timeout=30)
    c = image["content"]
    assert c["info"] == {"mimetype": "image/png", "size": len(picture), "w": 64, "h": 48}
    assert c["body"] == c["filename"] == "IMG_7.png"
    assert c["fi.textbridge.line"] == "phone"
    assert await download(anna, stack.owner, c["url"]) == picture
    (words,) = await anna.wait_for(room, of_type(ghost, "m.text"), timeout=30)
    assert words["content"]["body"] == "Für dich"
    events = [e["event_id"] for e in await anna.messages(room) if e["type"] == "m.room.message"]
    assert events.index(image["event_id"]) < events.index(words["event_id"])

    # More polls, a bridge restart and a line restart: still one picture, one text.
    start = t.line.polls
    await until(lambda: t.line.polls >= start + 10, 20, "polls")
    await stack.restart()
    await t.line.stop()
    await t.line.start()
    assert await t.line.wait_connected(20)
    start = t.line.polls
    await until(lambda: t.line.polls >= start + 10, 20, "polls")
    # Delivering the row again (as after a crash before mark_delivered) finds both parts
    # in the room's history and sends neither again.
    assert stack.store is not None and stack.bridge is not None
    media_row = await stack.store.inbox.get(int(c["fi.textbridge.inbox_row"]))
    assert media_row is not None and media_row.message.kind == "media"
    await stack.bridge.inbound.deliver(media_row)
    t.phone.receive(NUMBER, "danach")
    await anna.wait_for(room, lambda e: e["content"].get("body") == "danach", timeout=30)
    found = await anna.messages(room)
    assert len([e for e in found if of_type(ghost, "m.image")(e)]) == 1
    assert len([e for e in found if of_type(ghost, "m.text")(e)]) == 2
    assert stack.store is not None
    assert len(await stack.store.inbox.pending(limit=10)) == 0


@pytest.mark.synapse
async def test_group_mms_lands_in_the_group_portal_and_hostile_types_become_files(
    phone_bridge: PhoneBridge,
) -> None:
    t, stack = phone_bridge, phone_bridge.stack
    t.phone.receive(NUMBER, "Hallo Gruppe", group="Familie", members=(NUMBER, OTHER))
    anna = stack.client(stack.owner)
    assert stack.store is not None
    room = await until(lambda: _group_portal(stack), 30, "the group's portal")
    await anna.join(room)
    voice = b"#!AMR\n" + bytes(range(200))
    fake = b"<svg onload=alert(1)>"  # says it is a PNG
    t.phone.receive_mms(
        OTHER,
        [
            SimPart("audio/amr", voice, "Sprachnachricht.amr"),
            SimPart("image/png", fake, ""),
            SimPart("text/html", b"<script>1</script>", "x.html"),
        ],
        group="Familie",
        members=(NUMBER, OTHER),
    )
    ghost = stack.ghost(OTHER)
    (audio,) = await anna.wait_for(room, of_type(ghost, "m.audio"), timeout=30)
    assert audio["content"]["info"]["mimetype"] == "audio/amr"
    assert await download(anna, stack.owner, audio["content"]["url"]) == voice
    files = await anna.wait_for(room, of_type(ghost, "m.file"), count=2, timeout=30)
    assert [f["content"]["info"]["mimetype"] for f in files] == ["application/octet-stream"] * 2
    assert [f["content"]["body"] for f in files] == ["picture-2.png", "x.html"]
    assert await download(anna, stack.owner, files[0]["content"]["url"]) == fake


async def _group_portal(stack: BridgeStack) -> str | None:
    assert stack.bridge is not None
    for portal in await stack.bridge.db.portals():
        if portal.conversation.startswith("group:") and portal.ready:
            return portal.room_id
    return None


# -- media out, through the share intent and the UI -----------------------------------------


async def queue_file(
    h: PhoneHarness, data: bytes, mime: str, name: str, rid: str, dest: str = NUMBER
) -> int:
    stored = await h.store.attachments.put(data)
    attachment = {"file": stored, "type": mime, "name": name, "size": len(data)}
    return await h.send(name, dest=dest, rid=rid, attachment=attachment)


async def test_a_picture_goes_out_through_the_share_and_the_send_button(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line()
    picture = png(120, 80, seed=5)
    row_id = await queue_file(h, picture, "image/png", "Urlaub.png", "m1")
    row = await h.state(row_id, OutboxState.SENT)
    assert row.error is None
    (sent,) = h.phone.sent
    assert sent.recipients == (NUMBER,) and sent.attachment == ("image/png", picture)
    (path, pushed) = h.phone.received_pushes[0]
    assert pushed == picture and path == f"/storage/emulated/0/Download/Textbridge/tb-{row_id}.png"
    (share,) = h.phone.shares
    assert share.address == NUMBER and share.resolved
    assert share.uri.startswith("content://media/external/images/media/")
    # The pushed copy is gone from the phone, and the appliance's copy from the store.
    assert h.phone.storage == {} and h.phone.media_store == {}
    assert await h.store.attachments.get(hashlib.sha256(picture).hexdigest()) is None


async def test_push_failure_and_a_share_without_preview_send_nothing_and_retry(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line(retry_delay=0.3, max_send_attempts=10)
    h.phone.faults.push_fail = "No space left on device"
    data = b"BEGIN:VCARD\r\nFN:Oma\r\nEND:VCARD\r\n"
    row_id = await queue_file(h, data, "text/x-vcard", "Oma.vcf", "m2")
    await until(lambda: h.device.server.pushes >= 2, 15, "two push attempts")
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state in (OutboxState.QUEUED, OutboxState.SENDING)
    assert not h.phone.sent and not h.phone.shares

    async def errored() -> bool:
        r = await h.store.outbox.get(row_id)
        return r is not None and "No space left on device" in (r.error or "")

    await until(errored, 15, "the phone's words in the row's error")
    # A refused file is the phone's answer, not a broken link: the line stays connected.
    assert h.device.server.connections == 1
    assert not [e for e in h.events if e.key == "unplugged"]

    # The push works now, but Messages shows no attachment: no tap, the copy is removed.
    h.phone.faults.push_fail = None
    h.phone.faults.share_without_preview = True
    await h.event("layout")
    assert not h.phone.sent and h.phone.shares
    assert not [c for c in h.phone.executed if c[:2] == ["input", "tap"]]
    assert h.phone.storage == {}
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state in (OutboxState.QUEUED, OutboxState.SENDING)

    h.phone.faults.share_without_preview = False
    row = await h.state(row_id, OutboxState.SENT)
    (sent,) = h.phone.sent
    assert sent.attachment == ("text/x-vcard", data)
    assert h.phone.shares[-1].uri.startswith("content://media/external/file/")


async def upload(member: Member, user: MatrixUser, data: bytes, mime: str) -> str:
    url = f"{member.client.homeserver}/_matrix/media/v3/upload"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=data,
            headers={"Authorization": f"Bearer {user.access_token}", "Content-Type": mime},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["content_uri"])


@pytest.mark.synapse
async def test_a_picture_from_matrix_leaves_through_the_phone(phone_bridge: PhoneBridge) -> None:
    t, stack = phone_bridge, phone_bridge.stack
    t.phone.receive(NUMBER, "Schick mal ein Bild")
    room = await stack.portal_room(NUMBER, "phone", timeout=30)
    anna = stack.client(stack.owner)
    await anna.join(room)
    picture = png(100, 50, seed=11)
    mxc = await upload(anna, stack.owner, picture, "image/png")
    event_id = await anna.send(
        room,
        {
            "msgtype": "m.image",
            "body": "Katze.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "size": len(picture), "w": 100, "h": 50},
        },
    )
    assert stack.store is not None

    async def sent() -> bool:
        assert stack.store is not None
        row = await stack.store.outbox.by_request(event_id)
        return row is not None and row.state == OutboxState.SENT

    await until(sent, 30, "the picture sent")
    (out,) = t.phone.sent
    assert out.recipients == (NUMBER,) and out.attachment == ("image/png", picture)
    assert t.phone.storage == {}
    # A file bigger than the line sends is refused in the room, nothing is queued.
    big = await anna.send(
        room,
        {"msgtype": "m.file", "body": "huge.bin", "url": mxc, "info": {"size": 11 << 20}},
    )
    await anna.wait_for(
        room, lambda e: "bigger than the 10 MiB" in e["content"].get("body", ""), timeout=30
    )
    assert await stack.store.outbox.by_request(big) is None
    assert len(t.phone.sent) == 1


async def test_a_media_notification_after_its_mms_was_taken_adds_no_row(
    phone_line: Callable[..., Any],
) -> None:
    """The MMS store shows the MMS before Messages' notification does (provider_grace 0):
    the late notification is recognised as the same message."""
    h: PhoneHarness = await phone_line(provider_grace=0.0, leave_open_conversations=False)
    conv = h.phone.open_conversation((NUMBER,))
    sent = h.phone.receive_mms(NUMBER, [SimPart("image/png", png(4, 4), "a.png")])
    (row,) = await h.inbox(1)
    assert row.message.kind == "media"
    with h.phone.lock:  # now Messages posts its notification (the screen went home)
        h.phone.screen, h.phone.open_thread = "home", None
        conv.unread.append(SimMessage(NUMBER, "", sent.date_s * 1000 + 700, "image/png"))
    await settle(h)
    assert len(await h.store.inbox.pending(limit=10)) == 1


async def test_link_lost_after_the_tap_is_ambiguous_and_the_copy_is_removed_later(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line()
    h.phone.faults.disconnect_on = "input tap"
    h.phone.faults.after_effect = True  # the tap reached the phone, the answer did not
    picture = png(10, 10)
    row_id = await queue_file(h, picture, "image/png", "a.png", "m3")
    row = await h.state(row_id, OutboxState.AMBIGUOUS)
    assert row.error is not None and "tapped" in row.error
    (sent,) = h.phone.sent
    assert sent.attachment == ("image/png", picture)
    # Reconnected: the pushed copy is deleted; the row waits for a person, never resent.
    await until(lambda: h.phone.storage == {}, 15, "the pushed copy removed")
    await settle(h)
    assert len(h.phone.sent) == 1 and len(h.phone.received_pushes) == 1
    # The appliance keeps its copy: a person may say "retry".
    assert await h.store.attachments.get(hashlib.sha256(picture).hexdigest()) == picture


async def test_a_picture_to_a_group(phone_line: Callable[..., Any]) -> None:
    h: PhoneHarness = await phone_line()
    h.phone.receive(NUMBER, "Hallo", group="Familie", members=(NUMBER, OTHER))
    h.phone.receive(OTHER, "Hi", group="Familie", members=(NUMBER, OTHER))
    rows = await h.inbox(2)
    conv = rows[0].message.conversation
    picture = png(6, 6)
    row_id = await queue_file(h, picture, "image/png", "g.png", "m4", dest=conv)
    await h.state(row_id, OutboxState.SENT)
    (sent,) = h.phone.sent
    assert set(sent.recipients) == {NUMBER, OTHER} and sent.attachment == ("image/png", picture)


async def test_exec_and_sync_carry_every_byte_value(adb_device: AdbDevice) -> None:
    """adb-shell against the simulated adbd: a part read back over exec: and a file pushed
    over sync: arrive unchanged (every byte value, CR/LF included), the phone's FAIL
    reaches us in its words, and `shell:` is not what binary data takes."""
    from appliance.phone.adb import AdbLink, PushFailed, Target
    from appliance.phone.device import Phone

    blob = bytes(range(256)) * 300 + b"\r\n\n\r"
    sent = adb_device.phone.receive_mms(NUMBER, [SimPart("application/octet-stream", blob, "b")])
    link = AdbLink(Target("tcp", host="127.0.0.1", port=adb_device.port), adb_device.key_path)
    await link.connect()
    try:
        phone = Phone(link, ui_wait=1.0)
        assert await phone.read_part(sent.parts[-1].id, limit=1 << 20) == blob
        assert await link.exec_bytes("echo hi", limit=10) == b"hi\n"
        path = await phone.push_file(blob, "tb-x.bin")
        assert adb_device.phone.storage["/sdcard/Download/Textbridge/tb-x.bin"] == blob
        assert path == "/storage/emulated/0/Download/Textbridge/tb-x.bin"
        adb_device.phone.faults.push_fail = "No space left on device"
        with pytest.raises(PushFailed, match="No space left on device"):
            await phone.push_file(b"x", "tb-y.bin")
        # The link is still usable after a FAIL.
        assert (await link.shell("echo ok")).strip() == "ok"
    finally:
        await link.close()
        link.shutdown()


@pytest.mark.synapse
async def test_media_never_falls_back_to_the_modem(two_lines: TwoLines) -> None:
    """One room for the phone and the modem, route auto: while the phone cannot send, a
    picture is refused with the modem's notice (and why), never texted as its file name."""
    t, stack = two_lines, two_lines.stack
    assert stack.store is not None
    anna, room = await t.room("Hallo")
    t.device.phone.locked = True  # the phone cannot type: route auto picks the modem
    await until(lambda: not t.phone.status().can_send, 30, "phone cannot send")
    picture = png(8, 8)
    mxc = await upload(anna, stack.owner, picture, "image/png")
    event_id = await anna.send(
        room, {"msgtype": "m.image", "body": "b.png", "url": mxc, "info": {"size": 60}}
    )
    (notice,) = await anna.wait_for(
        room, lambda e: "carries text only" in e["content"].get("body", ""), timeout=30
    )
    assert "locked" in notice["content"]["body"], notice["content"]["body"]
    assert await stack.store.outbox.by_request(event_id) is None
    await asyncio.sleep(1.0)
    assert t.modem_sent() == []
    assert not t.device.phone.sent


async def test_mms_store_denied_leaves_the_description_and_says_why(
    phone_line: Callable[..., Any],
) -> None:
    h: PhoneHarness = await phone_line()
    h.phone.faults.provider_denied = True  # a vendor took READ_SMS from the shell user
    h.phone.receive_mms(NUMBER, [SimPart("image/png", png(4, 4), "a.png")], caption="Schau")
    (row,) = await h.inbox(1)
    assert row.message.kind == "text" and row.message.body == "Schau"
    assert row.message.note is not None and "cannot read the phone's MMS store" in row.message.note
    event = await h.event("mms-store")
    assert "MMS store" in event.text
    await settle(h)
    assert len(await h.store.inbox.pending(limit=10)) == 1
