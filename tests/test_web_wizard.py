"""The whole wizard and family management over HTTP against a real Synapse, with the
bridge's control API on a real socket and a real Store."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from typing import Any

import pytest

from appliance.homeserver.base import LoginFailed
from appliance.homeserver.synapse import SynapseAdapter
from tests.plugins.web import ControlStack

pytestmark = pytest.mark.synapse
_count = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_count)}"


def secret_on(page: str) -> str:
    match = re.search(r'class="big secret">([^<]+)<', page)
    assert match, page[-2000:]
    return match.group(1)


async def test_wizard_against_synapse(
    web_factory: Any, synapse_adapter: SynapseAdapter, control_stack: ControlStack
) -> None:
    c = await web_factory(homeserver=lambda: synapse_adapter,
                          control_socket=control_stack.socket)
    owner = unique("owner")
    resp = await c.client.get("/", allow_redirects=False)
    assert resp.headers["Location"] == "/setup"

    # 1: the owner's account, an admin on the homeserver.
    status, _, resp = await c.submit("/setup/1", "/setup/1", {
        "name": "Anna Schmidt", "username": owner,
        "password": "a long enough secret", "password2": "a long enough secret",
    })
    assert status == 303 and resp.headers["Location"] == "/setup/2"
    await synapse_adapter.login(owner, "a long enough secret")
    saved = c.state.owner()
    assert saved is not None and saved["mxid"] == f"@{owner}:{synapse_adapter.server_name}"
    # Step 1 cannot be repeated to replace the owner.
    status, text = await c.page("/setup/1")
    assert "is made" in text and 'name="password"' not in text

    # A second visitor on the Wi-Fi cannot continue someone else's setup.
    other = await web_factory(state_dir=c.settings.state_dir,
                              homeserver=lambda: synapse_adapter)
    resp = await other.client.get("/setup/2", allow_redirects=False)
    assert resp.headers["Location"] == "/login?next=/setup/2"
    resp = await other.client.get("/setup/1", allow_redirects=False)
    assert resp.headers["Location"] == "/login?next=/setup/1"

    # 2: the server name is fixed by the running homeserver; a domain is validated.
    status, text = await c.page("/setup/2")
    assert synapse_adapter.server_name in text and "can never be changed" in text
    for bad in ("not a domain", "<script>x</script>.com", "192.168.1.1", "a" * 300, "x.123"):
        status, text, _ = await c.submit("/setup/2", "/setup/2", {"domain": bad})
        assert status == 400 and 'id="e-domain"' in text, bad
    status, _, _ = await c.submit("/setup/2", "/setup/2", {"domain": "Family-Smith.NET."})
    assert status == 303 and c.state.setup()["domain"] == "family-smith.net"

    # 3: the SIM (the real SMS line on the modem simulator) and a test SMS, through the
    # control socket. (PIN entry with the real line: see the xfail tests in test_web.py.)
    status, text = await c.page("/setup/3")
    assert "unlocked and ready" in text and "Quectel EC25" in text
    status, _, resp = await c.submit("/setup/3", "/setup/3/test-sms",
                                     {"line": "modem", "to": "+491701234567", "text": "Hi"})
    assert status == 303 and "sms=web-test-" in resp.headers["Location"]
    status, _, _ = await c.submit("/setup/3", "/setup/3", {})
    assert status == 303

    # 4: family members, with a one-time password or a sign-up code, and their lines.
    member = unique("ilse")
    status, _, resp = await c.submit("/setup/4", "/setup/4/add", {
        "name": "Oma Ilse", "username": member, "method": "password", "lines": "modem",
    })
    assert status == 303 and resp.headers["Location"] == f"/setup/4/welcome/{member}"
    status, page = await c.page(resp.headers["Location"])
    password = secret_on(page)
    assert "Element X" in page and "<svg" in page and member in page
    await synapse_adapter.login(member, password)
    # Shown once: a reload no longer shows it.
    status, page = await c.page(f"/setup/4/welcome/{member}")
    assert password not in page
    members_file = json.loads((c.settings.state_dir / "members.json").read_text())
    assert members_file == {"modem": [f"@{member}:{synapse_adapter.server_name}"]}

    kid = unique("max")
    status, _, resp = await c.submit("/setup/4", "/setup/4/add", {
        "name": "Max", "username": kid, "method": "token",
    })
    assert status == 303
    status, page = await c.page(resp.headers["Location"])
    assert len(secret_on(page)) >= 16 and "Sign-up code" in page
    status, text, _ = await c.submit("/setup/4", "/setup/4/add", {
        "name": "Again", "username": member, "method": "password",
    })
    assert status == 400 and "already in the family" in text
    # The owner may use the line too.
    status, _, _ = await c.submit("/setup/4", f"/setup/4/lines/{owner}", {"lines": "modem"})
    assert status == 303
    members_file = json.loads((c.settings.state_dir / "members.json").read_text())
    assert f"@{owner}:{synapse_adapter.server_name}" in members_file["modem"]
    status, _, _ = await c.submit("/setup/4", "/setup/4", {})
    assert status == 303

    # 5: the certificate authority exists and is offered for download.
    status, text = await c.page("/setup/5")
    assert "Fingerprint" in text
    # The domain from step 2 is offered a publicly trusted certificate (test_web_acme.py
    # orders one from a real ACME server).
    assert "Get a certificate for family-smith.net" in text and 'action="/setup/5/acme"' in text
    assert (c.settings.state_dir / "ca" / "ca.crt").exists()
    status, _, _ = await c.submit("/setup/5", "/setup/5", {})

    # 6: done; the wizard closes for good.
    status, text = await c.page("/setup/6")
    assert "Oma Ilse" in text
    status, _, resp = await c.submit("/setup/6", "/setup/6", {})
    assert status == 303 and c.state.complete
    status, text = await c.page("/")
    assert "How Textbridge is doing" in text and "Running" in text
    resp = await c.client.get("/setup/1", allow_redirects=False)
    assert resp.headers["Location"] == "/"

    # Dashboard: a new password replaces the old one; removal closes the account.
    status, _, resp = await c.submit("/family", f"/family/{member}/reset", {})
    assert status == 303
    status, page = await c.page(resp.headers["Location"])
    new_password = secret_on(page)
    assert new_password != password
    await synapse_adapter.login(member, new_password)
    with pytest.raises(LoginFailed):
        await synapse_adapter.login(member, password)
    status, _, _ = await c.submit("/family", f"/family/{member}/remove", {})
    assert status == 303
    with pytest.raises(LoginFailed):
        await synapse_adapter.login(member, new_password)
    assert c.state.member(member) is None
    members_file = json.loads((c.settings.state_dir / "members.json").read_text())
    assert members_file == {"modem": [f"@{owner}:{synapse_adapter.server_name}"]}
    status, text, _ = await c.submit("/family", f"/family/{owner}/remove", {})
    assert status == 400


async def test_owner_username_taken_on_homeserver(
    web_factory: Any, synapse_adapter: SynapseAdapter
) -> None:
    taken = unique("taken")
    await synapse_adapter.create_user(taken, "somebody elses pw")
    c = await web_factory(homeserver=lambda: synapse_adapter)
    status, text, _ = await c.submit("/setup/1", "/setup/1", {
        "name": "Anna", "username": taken,
        "password": "a long enough secret", "password2": "a long enough secret",
    })
    assert status == 400 and "already taken" in text
    assert c.state.owner() is None
    # The same person retrying after a crash (right password) gets their account back.
    status, _, _ = await c.submit("/setup/1", "/setup/1", {
        "name": "Anna", "username": taken,
        "password": "somebody elses pw", "password2": "somebody elses pw",
    })
    assert status == 303 and c.state.owner() is not None


async def test_only_one_owner_when_two_submit_at_once(
    web_factory: Any, synapse_adapter: SynapseAdapter
) -> None:
    c = await web_factory(homeserver=lambda: synapse_adapter)
    token = await c.csrf("/setup/1")
    names = [unique("twin"), unique("twin")]
    results = await asyncio.gather(*(
        c.client.post("/setup/1", allow_redirects=False, data={
            "csrf": token, "name": "Twin", "username": name,
            "password": "a long enough secret", "password2": "a long enough secret",
        })
        for name in names
    ))
    statuses = sorted(r.status for r in results)
    assert statuses == [303, 409], statuses
    owner = c.state.owner()
    assert owner is not None and owner["username"] in names
    # The loser's account was never made on the homeserver.
    loser = next(n for n in names if n != owner["username"])
    assert not await synapse_adapter.user_exists(loser)


async def test_signup_code_lets_the_member_register(
    web_factory: Any, synapse_factory: Any, tmp_path: Any
) -> None:
    """The registration-token path end to end: on a homeserver open only to token holders,
    the code from the getting-started page registers the suggested username, once."""
    from appliance.homeserver.api import MatrixHttp
    from appliance.homeserver.base import HomeserverError
    from tests.plugins.web import complete_setup

    server = await synapse_factory.start(registration_tokens=True)
    adapter = SynapseAdapter.for_server(server)
    c = await web_factory(homeserver=lambda: adapter)
    complete_setup(c.settings)
    await c.login()
    kid = unique("max")
    status, _, resp = await c.submit("/family", "/family/add",
                                     {"name": "Max", "username": kid, "method": "token"})
    assert status == 303
    _, page = await c.page(resp.headers["Location"])
    code = secret_on(page)
    http = MatrixHttp(server.url, server.server_name)
    mxid, _ = await http.register_with_token(kid, "max's own password", code)
    assert mxid == f"@{kid}:{server.server_name}"
    assert c.state.member(kid) is not None and c.state.member(kid).mxid == mxid  # type: ignore[union-attr]
    with pytest.raises(HomeserverError):
        await http.register_with_token(unique("eve"), "another password", code)
