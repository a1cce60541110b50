"""The dashboard's Family page when the family's own homeserver is connected: the accounts
are theirs, so removing someone only takes them off the lines and no password is reset,
even when the Pi's own homeserver happens to hold an account with the same name."""

from __future__ import annotations

import os
from typing import Any

import pytest

from appliance.homeserver.synapse import SynapseAdapter
from appliance.web.config import HOMESERVER_FILE
from appliance.web.files import write_json
from appliance.web.state import Member, WebState
from tests.plugins.web import complete_setup

pytestmark = pytest.mark.synapse


async def test_family_on_my_homeserver_is_not_touched_on_the_pis(
    web_factory: Any, synapse_adapter: SynapseAdapter, make_user: Any
) -> None:
    # An account on the Pi's own server with the same name as the family member's.
    twin = await make_user("ben")
    c = await web_factory(homeserver=lambda: synapse_adapter)
    complete_setup(c.settings)
    write_json(c.settings.state_dir / HOMESERVER_FILE, {
        "mode": "external", "url": "https://matrix.example.org", "server_name": "example.org",
    })
    state = WebState(c.settings)
    ben = Member(name="Ben", username=twin.localpart, mxid=f"@{twin.localpart}:example.org",
                 lines=["sms"])
    state.upsert_member(ben)
    await c.login()

    status, text = await c.page("/family")
    assert status == 200 and ben.mxid in text and "New password for Ben" not in text
    status, text, _ = await c.submit("/family", f"/family/{ben.username}/reset", {})
    assert status == 400 and "changed on that server" in text
    # A form that asks for a new account on the Pi's server is refused in this mode.
    carla = f"carla{os.getpid()}"
    status, text, _ = await c.submit("/family", "/family/add",
                                     {"name": "Carla", "username": carla, "method": "password"})
    assert status == 400 and "by their Matrix ID" in text
    assert not await synapse_adapter.user_exists(carla)
    status, _, _ = await c.submit("/family", f"/family/{ben.username}/remove", {})
    assert status == 303 and state.member(ben.username) is None
    # The Pi's account of the same name still works: nothing was closed there.
    await synapse_adapter.login(twin.localpart, twin.password)
