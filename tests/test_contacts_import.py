"""An address book uploaded in the dashboard while the homeserver is away (issue 12,
item 6): the whole appliance in-process (`textbridge run`'s Appliance) with the real SMS
line on the modem simulator and a real Synapse, the web app on the bridge's real control
socket. Synapse is stopped, the owner uploads a vCard, the dashboard says it waits, the
bridge keeps trying; Synapse comes back and the names appear in Matrix."""

from __future__ import annotations

import time
from typing import Any

import pytest

from appliance.control_client import ControlClient
from tests.plugins.bridge import eventually
from tests.plugins.web import complete_setup
from tests.test_e2e import E2E, NUMBER, _open_portal, e2e  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.synapse]

VCF = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Muster;Erna;;;\r\nFN:Oma Erna\r\n"
    f"TEL;TYPE=cell:{NUMBER}\r\nEND:VCARD\r\n"
).encode()


async def _upload(c: Any, data: bytes) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("csrf", await c.csrf("/contacts"))
    form.add_field("vcf", data, filename="contacts.vcf", content_type="text/vcard")
    resp = await c.client.post("/contacts", data=form, allow_redirects=False)
    assert resp.status == 303, await resp.text()


async def test_contacts_uploaded_while_the_homeserver_is_away(
    e2e: E2E, web_factory: Any,  # noqa: F811
) -> None:
    stack = e2e
    assert stack.member is not None
    room_id = await _open_portal(stack, "hello, it's Erna")
    c = await web_factory(state_dir=stack.app.web_state,
                          control_socket=stack.app.control_socket)
    complete_setup(c.settings)
    await c.login()

    await stack.server.stop()
    await _upload(c, VCF)

    async def contacts() -> dict[str, Any]:
        # What the dashboard reads: the bridge's health over its control socket.
        status = await ControlClient(stack.app.control_socket).status()
        return dict(status["bridge"]["health"].get("contacts") or {})

    async def failed_twice() -> bool:
        now = await contacts()
        return bool(now.get("pending")) and int(now.get("tries", 0)) >= 2

    # Tried, failed, and tried again: not given up after one failure.
    await eventually(failed_twice, timeout=60, what="two failed tries")
    status, page = await c.page("/contacts")
    assert status == 200 and "not applied yet" in page and "keeps trying" in page, page
    status, page = await c.page("/")
    assert "The uploaded contacts are not applied yet" in page
    assert (await contacts())["applied"] is None

    started = time.monotonic()
    await stack.server.start(120)
    ghost = stack.ghost

    async def named() -> bool:
        resp = await stack.member.client.get_displayname(ghost)  # type: ignore[union-attr]
        return getattr(resp, "displayname", None) == "Oma Erna"

    async def room_named() -> bool:
        state = await stack.member.client.room_get_state(room_id)  # type: ignore[union-attr]
        names = [e["content"]["name"] for e in getattr(state, "events", [])
                 if e["type"] == "m.room.name"]
        return names == ["Oma Erna"]

    await eventually(named, timeout=90, what="the ghost named from the address book")
    await eventually(room_named, timeout=30, what="the room named from the address book")
    print(f"\napplied {time.monotonic() - started:.1f} s after Synapse started again")

    async def applied() -> bool:
        now = await contacts()
        return now.get("pending") is None and now.get("applied") is not None

    await eventually(applied, timeout=30, what="the upload recorded as applied")
    status, page = await c.page("/contacts")
    assert "Applied: chats show these names." in page
    status, page = await c.page("/")
    assert "not applied yet" not in page
    # Recorded durably: a restart of the bridge does not redo it, and finds nothing pending.
    digest = (await contacts())["applied"]
    await stack.restart()
    assert await contacts() == {"applied": digest, "pending": None, "tries": 0, "error": None}
