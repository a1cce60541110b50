"""Hardware in the loop: the phone line against a real Android phone with Google Messages.

Needs, on the machine running it (a Pi with the appliance image, or any Linux host):
  TEXTBRIDGE_HIL_PHONE        USB serial of the bridge phone (`adb devices` shows it; or
                              `cat /sys/bus/usb/devices/*/serial`)
  TEXTBRIDGE_HIL_PEER         the number of a second phone that texts can go to (E.164)
optional:
  TEXTBRIDGE_HIL_PEER_SERIAL  the second phone's USB serial, if it is attached too: then it
                              answers and checks arrival by itself; without it a person is
                              asked (on stdout) to send from the second phone
  TEXTBRIDGE_HIL_BRIDGE_NUMBER  the bridge phone's own number (the second phone texts it)
  TEXTBRIDGE_HIL_THIRD        a third number, for the group test
  TEXTBRIDGE_HIL_KEY          where our ADB key lives (default ~/.config/textbridge-hil/adbkey,
                              kept between runs so the phone asks "Allow USB debugging?" once)
  TEXTBRIDGE_HIL_ARTIFACTS    directory for what the phone printed (dumpsys, uiautomator), to
                              refresh appliance/adbsim/fixtures from real output
  TEXTBRIDGE_HIL_WAIT         seconds to wait for a person or the network (default 120)

Everything is skipped, with the reason, when no phone is configured or attached.
Run: .venv/bin/python -m pytest hil/test_phone_hil.py -v -s
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.line import LineEvent, LineState
from appliance.phone.adb import AdbLink, Target
from appliance.phone.config import PhoneConfig
from appliance.phone.device import Phone
from appliance.phone.line import PhoneLine
from appliance.phone.notifications import MESSAGES_PACKAGE
from appliance.store import Store
from appliance.store.models import InboxRow, OutboundRequest, OutboxState
from tests.waiting import until

SERIAL = os.environ.get("TEXTBRIDGE_HIL_PHONE", "")
PEER = os.environ.get("TEXTBRIDGE_HIL_PEER", "")
PEER_SERIAL = os.environ.get("TEXTBRIDGE_HIL_PEER_SERIAL", "")
THIRD = os.environ.get("TEXTBRIDGE_HIL_THIRD", "")
WAIT = float(os.environ.get("TEXTBRIDGE_HIL_WAIT", "120"))
KEY = Path(
    os.environ.get("TEXTBRIDGE_HIL_KEY", Path.home() / ".config" / "textbridge-hil" / "adbkey")
)


def _usb_serials() -> set[str]:
    serials = set()
    for path in Path("/sys/bus/usb/devices").glob("*/serial"):
        try:
            serials.add(path.read_text().strip())
        except OSError:
            continue
    return serials


def _why_skip() -> str | None:
    if not SERIAL:
        return "TEXTBRIDGE_HIL_PHONE is not set (the USB serial of the bridge phone)"
    try:
        import usb1  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "USB support for adb-shell (libusb1, `adb-shell[usb]`) is not installed"
    if SERIAL not in _usb_serials():
        return f"no USB device with serial {SERIAL} is attached"
    if not PEER:
        return "TEXTBRIDGE_HIL_PEER is not set (the number of a second phone)"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


def _artifact(name: str, text: str) -> None:
    where = os.environ.get("TEXTBRIDGE_HIL_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / name).write_text(text)


class Rig:
    def __init__(self, line: PhoneLine, store: Store, events: list[LineEvent]) -> None:
        self.line, self.store, self.events = line, store, events
        self.peer: Phone | None = None

    async def inbound(self, body: str) -> InboxRow:
        async def found() -> InboxRow | None:
            rows = await self.store.inbox.pending(limit=1000)
            return next((r for r in rows if r.message.body == body), None)

        row: InboxRow = await until(found, WAIT, f"a message {body!r} in the store")
        return row

    async def from_peer(self, recipients: list[str], body: str) -> None:
        if self.peer is not None:
            await self.peer.send_text(recipients, body)
            return
        print(f"\n>>> From the second phone, send to {', '.join(recipients)}:\n>>> {body}\n")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await Store.open(tmp_path / "hil.db")
    events: list[LineEvent] = []
    config = PhoneConfig(
        enabled=True, transport="usb", serial=SERIAL, poll_interval=2.0, auth_timeout=60.0
    )
    line = PhoneLine("phone", config, store, key_path=KEY, on_event=events.append)
    await line.start()
    assert await line.wait_connected(90), line.status().summary
    await until(lambda: line.status().state == LineState.READY, 60, "the line to be ready")
    rig = Rig(line, store, events)
    peer_link = None
    if PEER_SERIAL:
        peer_link = AdbLink(Target("usb", PEER_SERIAL), KEY, auth_timeout=60.0)
        await peer_link.connect()
        rig.peer = Phone(peer_link)
        await rig.peer.stay_awake()
    yield rig
    await line.stop()
    await store.close()
    if peer_link is not None:
        await peer_link.close()
        peer_link.shutdown()


async def test_health_and_formats(rig: Rig) -> None:
    status = rig.line.status()
    assert status.state == LineState.READY, status.summary
    link = AdbLink(Target("usb", SERIAL), KEY)
    await link.connect()
    try:
        _artifact(
            "dumpsys_notification_noredact.txt", await link.shell("dumpsys notification --noredact")
        )
        _artifact("dumpsys_window.txt", await link.shell("dumpsys window"))
        _artifact("messages_version.txt", await link.shell(f"dumpsys package {MESSAGES_PACKAGE}"))
    finally:
        await link.close()
        link.shutdown()
    print(f"\nphone: {status.details}")


async def test_send_to_second_phone(rig: Rig) -> None:
    body = f'Textbridge HIL {int(time.time())}: it\'s "quoted" $(reboot); 😀\nzweite Zeile'
    row, _ = await rig.store.outbox.enqueue(
        OutboundRequest(f"hil-out-{time.time()}", "phone", PEER, body, "@hil:test"), 1
    )
    rig.line.wake()
    await until(lambda: _state(rig.store, row.id, OutboxState.SENT), WAIT, "the message to be sent")
    if rig.peer is not None:

        async def arrived() -> bool:
            assert rig.peer is not None
            return any(m.text == body for n in await rig.peer.notifications() for m in n.messages)

        await until(arrived, WAIT, "the message on the second phone")


async def test_receive_from_second_phone(rig: Rig) -> None:
    body = f"HIL inbound {int(time.time())} ✓"
    bridge_number = os.environ.get("TEXTBRIDGE_HIL_BRIDGE_NUMBER", "the bridge phone")
    await rig.from_peer([bridge_number], body)
    row = await rig.inbound(body)
    assert row.message.conversation == PEER, row.message
    assert row.message.sender == PEER


@pytest.mark.skipif(
    _why_skip() is None and not THIRD, reason="TEXTBRIDGE_HIL_THIRD is not set (a third number)"
)
async def test_group(rig: Rig) -> None:
    body = f"HIL group {int(time.time())}"
    bridge_number = os.environ.get("TEXTBRIDGE_HIL_BRIDGE_NUMBER", "the bridge phone")
    await rig.from_peer([bridge_number, THIRD], body)
    row = await rig.inbound(body)
    msg = row.message
    assert msg.conversation.startswith("group:"), msg
    assert PEER in msg.meta["members"]
    # Where the members come from (the telephony provider's threads): saved, to check the
    # simulator's rendering and whether Messages lists RCS groups there at all.
    link = AdbLink(Target("usb", SERIAL), KEY)
    await link.connect()
    try:
        for name, uri in (
            ("content_query_threads.txt", "'content://mms-sms/conversations?simple=true'"),
            ("content_query_canonical_addresses.txt", "content://mms-sms/canonical-addresses"),
        ):
            _artifact(name, await link.shell(f"content query --uri {uri}"))
    finally:
        await link.close()
        link.shutdown()
    complete = msg.meta.get("members_complete") is True
    print(f"\ngroup members from the phone: {complete} ({len(msg.meta['members'])} people)")
    reply = f"HIL group reply {int(time.time())}"
    out, _ = await rig.store.outbox.enqueue(
        OutboundRequest(f"hil-g-{time.time()}", "phone", msg.conversation, reply, "@hil:test"), 1
    )
    rig.line.wake()
    if complete:
        assert set(msg.meta["members"]) == {PEER, THIRD}, msg.meta
        await until(lambda: _state(rig.store, out.id, OutboxState.SENT), WAIT, "the group reply")
    else:
        # Never to a part of the group: refused, in words.
        await until(lambda: _state(rig.store, out.id, OutboxState.FAILED), WAIT, "the refusal")


async def test_media_in(rig: Rig) -> None:
    """An MMS picture arrives with its bytes; an RCS one as its description with a note.
    Saves what the phone printed for the MMS store, to replace the simulator's formats."""
    print(
        "\n>>> From the second phone, send a photo to the bridge phone now (as MMS: turn RCS "
        "chats off on the second phone, or send it in a group MMS).\n"
    )

    async def media() -> InboxRow | None:
        rows = await rig.store.inbox.pending(limit=1000)
        return next(
            (r for r in rows if r.message.kind == "media" or "media_type" in r.message.meta),
            None,
        )

    row: InboxRow = await until(media, WAIT, "a picture message")
    link = AdbLink(Target("usb", SERIAL), KEY)
    await link.connect()
    try:
        mms = await link.shell(
            "content query --uri content://mms --projection "
            "_id:thread_id:date:msg_box:m_type:m_size --sort '_id DESC'"
        )
        _artifact("content_query_mms.txt", mms)
        mms_id = row.message.meta.get("mms_id")
        if mms_id is not None:
            _artifact(
                "content_query_mms_part.txt",
                await link.shell(f"content query --uri content://mms/part --where mid={mms_id}"),
            )
            _artifact(
                "content_query_mms_addr.txt",
                await link.shell(f"content query --uri content://mms/{mms_id}/addr"),
            )
    finally:
        await link.close()
        link.shutdown()
    if row.message.kind == "media":
        assert row.message.raw, row.message
        print(f"\nMMS with {row.message.meta['attachments']}")
    else:
        assert row.message.note and "RCS" in row.message.note
        print("\nthe picture came by RCS: only its description (as documented)")


async def test_media_out(rig: Rig) -> None:
    """A small PNG to the second phone through the share path; the screens are saved."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    picture = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" + b"\xff\0\0" * 2 + b"\0" + b"\0\0\xff" * 2))
        + chunk(b"IEND", b"")
    )
    name = await rig.store.attachments.put(picture)
    row, _ = await rig.store.outbox.enqueue(
        OutboundRequest(
            f"hil-media-{time.time()}",
            "phone",
            PEER,
            "hil.png",
            "@hil:test",
            meta={"attachment": {"file": name, "type": "image/png", "name": "hil.png"}},
        ),
        1,
    )
    rig.line.wake()
    try:
        await until(lambda: _state(rig.store, row.id, OutboxState.SENT), WAIT, "the picture")
    finally:
        link = AdbLink(Target("usb", SERIAL), KEY)
        await link.connect()
        try:
            await link.shell("uiautomator dump /sdcard/tb-hil.xml")
            _artifact("uiautomator_after_share.xml", await link.shell("cat /sdcard/tb-hil.xml"))
        finally:
            await link.close()
            link.shutdown()


async def _state(store: Store, row_id: int, state: OutboxState) -> bool:
    row = await store.outbox.get(row_id)
    if row is not None and row.state in (OutboxState.FAILED, OutboxState.AMBIGUOUS):
        raise AssertionError(f"message ended {row.state.value}: {row.error}")
    return row is not None and row.state == state
