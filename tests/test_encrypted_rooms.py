"""Element X's encrypted chats: a real encrypting client (matrix-nio with e2e, vodozemac)
starts chats as Element X does and writes really Megolm-encrypted messages; the real
Synapse, the bridge and the modem simulator (real pyserial over a pty) do the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import nio
import pytest
from mautrix.errors import MNotFound
from mautrix.types import EventType, RoomID

from appliance.config import ModemConfig
from appliance.sim.modem import ModemSimulator
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.store.models import OutboxState
from tests.plugins.bridge import BridgeStack, Member, notices
from tests.plugins.synapse import MatrixUser
from tests.waiting import until

pytestmark = pytest.mark.synapse

NUMBER = "+4915112345678"

# Exactly what Element X puts into a new direct chat.
ELEMENT_X_ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class ElementX(Member):
    """A family member on an encrypting client, with its own device keys."""

    def __init__(self, url: str, user: MatrixUser, store: Path) -> None:
        super().__init__(url, user)
        store.mkdir(parents=True, exist_ok=True)
        self.client = nio.AsyncClient(
            url,
            user.mxid,
            store_path=str(store),
            config=nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        )
        self.client.access_token = user.access_token

    async def log_in(self) -> None:
        me = await self.client.whoami()
        assert isinstance(me, nio.WhoamiResponse), me
        assert me.device_id
        self.client.restore_login(self.mxid, me.device_id, self.user.access_token)
        assert self.client.olm is not None, "no e2e support in this matrix-nio"
        if self.client.should_upload_keys:
            uploaded = await self.client.keys_upload()
            assert isinstance(uploaded, nio.KeysUploadResponse), uploaded

    async def start_chat(self, invitee: str) -> str:
        created = await self.client.room_create(
            preset=nio.RoomPreset.trusted_private_chat,
            is_direct=True,
            invite=[invitee],
            initial_state=[ELEMENT_X_ENCRYPTION],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        return str(created.room_id)

    async def write(self, room_id: str, body: str) -> str:
        """Sends as the client does: encrypted if the room is (nio decides from the
        room state it synced)."""
        await self.sync()
        resp = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            ignore_unverified_devices=True,
        )
        assert isinstance(resp, nio.RoomSendResponse), resp
        return str(resp.event_id)

    async def raw_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        """The event as the homeserver holds it (nio would hand back its decryption)."""
        url = f"{self.client.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/event/"
        headers = {"Authorization": f"Bearer {self.user.access_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + quote(event_id), headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            event: dict[str, Any] = await resp.json()
            return event


@dataclass
class Rig:
    stack: BridgeStack
    sim: ModemSimulator
    line: SmsLine
    anna: ElementX

    def sent(self) -> list[str]:
        return [text for dest, text in self.sim.network.sent_messages() if dest == NUMBER]

    async def encrypted(self, room_id: str) -> bool:
        """Whether the room has m.room.encryption, read by the bridge's bot (a person only
        invited cannot read the state yet)."""
        assert self.stack.bridge is not None
        bot = self.stack.bridge.az.intent
        try:
            await bot.get_state_event(RoomID(room_id), EventType.ROOM_ENCRYPTION)
        except MNotFound:
            return False
        return True

    async def membership(self, room_id: str, user: str) -> str | None:
        """`user`'s membership in a room anna is in, as the homeserver has it."""
        url = (
            f"{self.anna.client.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}"
            f"/state/m.room.member/{quote(user)}"
        )
        headers = {"Authorization": f"Bearer {self.anna.user.access_token}"}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
            if resp.status != 200:
                return None
            return str((await resp.json()).get("membership"))


async def _rig(
    stack: BridgeStack, modem_sim_factory: Callable[..., ModemSimulator], *, start_line: bool
) -> Rig:
    link = stack.tmp / "modem"
    sim = modem_sim_factory(pin=None, link_path=link)
    stack.store = await Store.open(stack.tmp / "textbridge.db")
    bridge = await stack.start()
    line = SmsLine(
        "modem",
        ModemConfig(port=str(link), sweep_interval=2.0, retry_delay=0.2, command_timeout=3.0),
        stack.store,
        on_event=bridge.on_line_event,
    )
    stack.lines["modem"] = line
    if start_line:
        await line.start()
        assert await line.wait_ready(30), line.status().summary
    await stack.ready()
    anna = ElementX(stack.server.url, stack.owner, stack.tmp / "anna-nio")
    stack.clients.append(anna)
    await anna.log_in()
    return Rig(stack, sim, line, anna)


@pytest.fixture
async def rig(
    bridge_stack: BridgeStack, modem_sim_factory: Callable[..., ModemSimulator]
) -> AsyncIterator[Rig]:
    r = await _rig(bridge_stack, modem_sim_factory, start_line=True)
    try:
        yield r
    finally:
        await r.line.stop()


@pytest.fixture
async def held_rig(
    bridge_stack: BridgeStack, modem_sim_factory: Callable[..., ModemSimulator]
) -> AsyncIterator[Rig]:
    """The modem line is not started until the test says: texts wait in the outbox."""
    r = await _rig(bridge_stack, modem_sim_factory, start_line=False)
    try:
        yield r
    finally:
        await r.line.stop()


def fail_status(event_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "com.beeper.message_send_status"
        and e["content"]["m.relates_to"]["event_id"] == event_id
        and e["content"]["status"] == "FAIL_PERMANENT"
    )


def status_of(event_id: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "com.beeper.message_send_status"
        and e["content"]["m.relates_to"]["event_id"] == event_id
        and e["content"]["status"] == status
    )


def saying(sender: str, *words: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: notices(sender)(e) and all(w in e["content"]["body"] for w in words)


async def _exactly_once(rig: Rig, text: str) -> None:
    await until(lambda: text in rig.sent(), 30, f"{text!r} at the simulated modem")
    await asyncio.sleep(2.0)  # a second copy would come within the line's retry delay
    assert rig.sent().count(text) == 1, rig.sent()


async def test_a_chat_started_with_a_ghost_moves_to_a_working_portal(rig: Rig) -> None:
    stack, anna = rig.stack, rig.anna
    assert stack.bridge is not None
    ghost = stack.ghost(NUMBER)
    started = time.monotonic()
    secret = await anna.start_chat(ghost)
    # Typed at once, as Element X allows before the ghost has even joined.
    first = await anna.write(secret, "Hallo, typed right away")
    assert (await anna.raw_event(secret, first))["type"] == "m.room.encrypted"

    portal = await stack.portal_room(NUMBER, timeout=30)
    assert portal != secret
    assert await stack.bridge.db.portal_by_room(secret) is None  # never adopted
    assert not await rig.encrypted(portal)
    topic = await stack.bridge.az.intent.get_state_event(RoomID(portal), EventType.ROOM_TOPIC)
    assert "not end-to-end encrypted" in str(topic.topic)
    (moved,) = await anna.wait_for(secret, saying(ghost, portal, "here instead"))
    print(f"\nstart chat -> portal invite and pointer: {time.monotonic() - started:.2f} s")
    assert "https://matrix.to/#/" in moved["content"]["body"]
    # The person is invited to the portal (Element X shows it on top of the chat list).
    await anna.sync()
    assert portal in anna.client.invited_rooms

    # Writing in the encrypted room anyway: each message FAIL, one notice for the burst.
    written = time.monotonic()
    more = [await anna.write(secret, f"still here {i}") for i in range(3)]
    for event_id in [first, *more]:
        assert (await anna.raw_event(secret, event_id))["type"] == "m.room.encrypted"
        await anna.wait_for(secret, fail_status(event_id), timeout=30)
    print(f"3 encrypted messages -> 3 FAIL statuses: {time.monotonic() - written:.2f} s")
    answers = await anna.wait_for(secret, saying(ghost, "Not sent", portal), timeout=30)
    assert len(answers) == 1, [a["content"]["body"] for a in answers]
    assert rig.sent() == []

    # In the real chat: the ghost leaves the encrypted room, and a text goes out once.
    await anna.join(portal)
    await until(lambda: _is(rig.membership(secret, ghost), "leave"), 30, "the ghost to leave")
    event_id = await anna.write(portal, "Hallo aus Element X")
    assert (await anna.raw_event(portal, event_id))["type"] == "m.room.message"
    await _exactly_once(rig, f"{stack.owner.localpart}: Hallo aus Element X")
    await anna.wait_for(portal, status_of(event_id, "SUCCESS"), timeout=30)

    # Starting the same chat again finds the same portal, and nothing is adopted.
    again = await anna.start_chat(ghost)
    await anna.wait_for(again, saying(ghost, portal), timeout=30)
    await until(lambda: _is(rig.membership(again, ghost), "leave"), 30, "the ghost to leave")
    assert [p.room_id for p in await stack.bridge.db.portals()] == [portal]


async def _is(value: Any, wanted: str) -> bool:
    return bool(await value == wanted)


async def test_a_chat_started_with_the_bot_moves_to_the_management_room(rig: Rig) -> None:
    stack, anna = rig.stack, rig.anna
    assert stack.bridge is not None
    mgmt = await stack.management_room(stack.owner)
    secret = await anna.start_chat(stack.bot)
    (moved,) = await anna.wait_for(secret, saying(stack.bot, mgmt, "new +49"), timeout=30)
    assert "end-to-end encrypted" in moved["content"]["body"]
    assert await stack.management_room(stack.owner) == mgmt  # not adopted
    help_id = await anna.write(secret, "help")
    assert (await anna.raw_event(secret, help_id))["type"] == "m.room.encrypted"
    await anna.wait_for(secret, fail_status(help_id), timeout=30)
    await anna.wait_for(secret, saying(stack.bot, "Not sent", mgmt), timeout=30)

    await anna.join(mgmt)
    await until(lambda: _is(rig.membership(secret, stack.bot), "leave"), 30, "the bot to leave")
    await anna.write(mgmt, "help")
    (answer,) = await anna.wait_for(mgmt, saying(stack.bot, "new +49", "Start chat"))
    body = answer["content"]["body"]
    assert stack.ghost(NUMBER) in body
    # No hard line break inside a sentence: each line is a list item or ends a sentence.
    for text_line in body.split("\n"):
        stripped = text_line.strip()
        assert not stripped or stripped.startswith("•") or stripped[-1] in ".:!?", text_line


async def test_encryption_turned_on_in_a_portal(held_rig: Rig) -> None:
    rig = held_rig
    stack, anna = rig.stack, rig.anna
    assert stack.bridge is not None and stack.store is not None
    ghost = stack.ghost(NUMBER)
    # A portal from an unencrypted start (an older client).
    created = await anna.client.room_create(is_direct=True, invite=[ghost])
    assert isinstance(created, nio.RoomCreateResponse), created
    old = await stack.portal_room(NUMBER, timeout=30)
    assert old == created.room_id
    queued = await anna.write(old, "written before encryption")
    row = await until(lambda: stack.store.outbox.by_request(queued), 30, "the outbox row")  # type: ignore[union-attr]
    assert row.state == OutboxState.QUEUED

    resp = await anna.client.room_put_state(
        old, "m.room.encryption", ELEMENT_X_ENCRYPTION["content"]
    )
    assert isinstance(resp, nio.RoomPutStateResponse), resp
    (told,) = await anna.wait_for(old, saying(stack.bot, "turned on"), timeout=30)

    async def fresh_portal() -> str | None:
        portal = await stack.bridge.db.portal("modem", NUMBER)  # type: ignore[union-attr]
        return portal.room_id if portal and portal.ready and portal.room_id != old else None

    new = await until(fresh_portal, 30, "a fresh portal")
    assert new in told["content"]["body"]
    assert await stack.bridge.db.portal_by_room(old) is None
    assert not await rig.encrypted(new)
    await anna.join(new)
    await anna.wait_for(new, saying(stack.bot, old), timeout=30)  # linked both ways

    late = await anna.write(old, "written after encryption")
    assert (await anna.raw_event(old, late))["type"] == "m.room.encrypted"
    await anna.wait_for(old, fail_status(late), timeout=30)
    await anna.wait_for(old, saying(stack.bot, "Not sent", new), timeout=30)

    # The line starts: the text queued before goes out once, its state shown in the old room.
    await rig.line.start()
    assert await rig.line.wait_ready(30), rig.line.status().summary
    await _exactly_once(rig, f"{stack.owner.localpart}: written before encryption")
    await anna.wait_for(old, status_of(queued, "SUCCESS"), timeout=30)
    # Its delivery report still becomes the contact's read receipt there.
    sent = [s for s in rig.sim.network.sent if s.reference is not None]
    assert len(sent) == 1, rig.sim.network.sent
    rig.sim.network.report(sent[0].reference, 0x00)

    async def receipt() -> bool:
        await anna.sync()
        return any(r["event_id"] == queued and r["user_id"] == ghost for r in anna.receipts)

    await until(receipt, 30, "the delivery receipt in the old room")

    event_id = await anna.write(new, "in the new room")
    await _exactly_once(rig, f"{stack.owner.localpart}: in the new room")
    await anna.wait_for(new, status_of(event_id, "SUCCESS"), timeout=30)
    assert not any("after encryption" in t for t in rig.sent())
    # And the contact's answers land in the new room.
    rig.sim.network.deliver(NUMBER, "Got it")
    await anna.wait_for(
        new, lambda e: e["sender"] == ghost and e["content"].get("body") == "Got it", timeout=30
    )


async def test_a_restart_between_the_invite_and_the_first_message(rig: Rig) -> None:
    stack, anna = rig.stack, rig.anna
    ghost = stack.ghost(NUMBER)
    secret = await anna.start_chat(ghost)
    portal = await stack.portal_room(NUMBER, timeout=30)
    await anna.wait_for(secret, saying(ghost, portal), timeout=30)

    await stack.restart()
    await stack.ready()
    assert stack.bridge is not None

    first = await anna.write(secret, "first message, after the restart")
    assert (await anna.raw_event(secret, first))["type"] == "m.room.encrypted"
    await anna.wait_for(secret, fail_status(first), timeout=30)
    await anna.wait_for(secret, saying(ghost, "Not sent", portal), timeout=30)

    await anna.join(portal)
    await until(lambda: _is(rig.membership(secret, ghost), "leave"), 30, "the ghost to leave")
    await anna.write(portal, "after the restart")
    await _exactly_once(rig, f"{stack.owner.localpart}: after the restart")
    assert [p.room_id for p in await stack.bridge.db.portals()] == [portal]
    assert rig.sent() == [f"{stack.owner.localpart}: after the restart"]


async def test_the_welcome_page_says_how_to_start_a_chat(web_factory: Any) -> None:
    from tests.plugins.web import complete_setup

    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/family/owner/welcome")
    assert status == 200
    assert "new +49 151 12345678" in text
    assert "Start chat" in text and "@sms_4915112345678:textbridge.local" in text


async def test_a_chat_started_while_the_bridge_is_down(rig: Rig) -> None:
    """The homeserver holds the invite and offers it again once the bridge is back."""
    stack, anna = rig.stack, rig.anna
    ghost = stack.ghost(NUMBER)
    await stack.stop()
    secret = await anna.start_chat(ghost)
    first = await anna.write(secret, "typed while the bridge was down")
    await asyncio.sleep(1.0)
    back = time.monotonic()
    await stack.start()
    portal = await stack.portal_room(NUMBER, timeout=120)
    await anna.wait_for(secret, saying(ghost, portal, "here instead"), timeout=60)
    await anna.wait_for(secret, fail_status(first), timeout=30)
    print(f"\nbridge back -> pointer in the encrypted room: {time.monotonic() - back:.1f} s")
    assert stack.bridge is not None
    assert [p.room_id for p in await stack.bridge.db.portals()] == [portal]
    await anna.join(portal)
    await until(lambda: _is(rig.membership(secret, ghost), "leave"), 30, "the ghost to leave")
    await anna.write(portal, "and now it works")
    await _exactly_once(rig, f"{stack.owner.localpart}: and now it works")
