"""Names shown for people and rooms carry no bidi or invisible characters (issue 18): a
vCard's or a notification's name cannot turn a number around or hide itself. Bodies are
kept exactly as written (docs/bridge.md, "Bidi and invisible characters"). Real parts:
Synapse on loopback, the simulated phone over the adb protocol, the modem simulator."""

from __future__ import annotations

import pytest

from tests.plugins.bridge import eventually
from tests.plugins.lines import NUMBER, TwoLines, texts
from tests.plugins.phone import until
from tests.test_phone_groups import group_room

pytestmark = pytest.mark.synapse

INVISIBLE = "\u202e\u2066\u2067\u2068\u2069\u200b\ufeff"


async def test_names_lose_bidi_and_invisible_characters_bodies_keep_them(
    two_lines: TwoLines,
) -> None:
    t, stack = two_lines, two_lines.stack
    assert stack.bridge is not None
    anna = stack.client(stack.owner)

    # A vCard with a name built to read backwards.
    added = await stack.bridge.import_contacts(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:\u202eOma\u200b Erna\ufeff\u2066 \u2069\r\n"
        f"TEL:{NUMBER}\r\nEND:VCARD\r\n",
        stack.owner.mxid,
        "DE",
    )
    assert added == 1
    body = f"Rechnung \u202efdp.exe\u202c {INVISIBLE}ok"
    t.device.phone.receive(NUMBER, body)
    room = await stack.portal_room(NUMBER, "phone", timeout=30)
    await anna.join(room)
    ghost = stack.ghost(NUMBER)
    await anna.wait_for(room, texts(ghost, body), timeout=30)  # the body: byte-exact
    resp = await anna.client.get_displayname(ghost)
    assert getattr(resp, "displayname", None) == "Oma Erna"

    # A sender the phone names (a contact, an alphanumeric sender) in its notification.
    named = f"{INVISIBLE}\u202eKNABEMCA"
    t.device.phone.receive(named, "Ihr Code: 1234")

    async def named_ghost() -> str | None:
        assert stack.bridge is not None
        for portal in await stack.bridge.db.portals():
            if portal.ready and not portal.conversation.startswith(("+", "group:")):
                return stack.bridge.portals.ghost_mxid(portal.conversation, "DE")
        return None

    other = await until(named_ghost, 30, "the named sender's room")

    async def shown(user: str, name: str) -> bool:
        resp = await anna.client.get_displayname(user)
        return getattr(resp, "displayname", None) == name

    await eventually(lambda: shown(other, "KNABEMCA"), what="the named sender's ghost")

    # A group whose name hides characters: the room's name is clean.
    t.device.phone.receive(
        NUMBER, "Hallo", group=f"Fam\u202eilie{INVISIBLE}", members=(NUMBER, "+4915199887766")
    )
    group = await until(lambda: group_room(stack), 30, "the group's room")
    await anna.join(group)
    state = await anna.client.room_get_state(group)
    names = [s["content"]["name"] for s in state.events if s["type"] == "m.room.name"]
    assert names == ["Familie"]
