"""One family for the web setup and the bridge (issue 18, item 6): the demo's member is
written where the wizard writes every member, so the wizard's family step, its done step,
the dashboard's Family page and the bridge's line membership all show the same people.

No homeserver here: the owner is written through the web state as step 1 leaves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from appliance.config import Config
from appliance.demo import seed_family
from appliance.run import apply_members
from appliance.web.state import Member, WebState
from tests.plugins.web import OWNER, OWNER_PASSWORD

ALEX = "@alex:textbridge.test"
OWNER_MXID = f"@{OWNER}:textbridge.test"


def demo_config(tmp_path: Path) -> Config:
    # As the demo configures the lines now: nobody in the config, the family in the web state.
    return Config.from_dict({
        "general": {"data_dir": str(tmp_path / "data")},
        "bridge": {"server_name": "textbridge.test",
                   "lines": [{"id": "sms"}, {"id": "phone", "kind": "phone"}]},
    })  # fmt: skip


def owner_after_step(state: WebState, *steps: int) -> None:
    state.save_owner(name="Owner Person", username=OWNER, mxid=OWNER_MXID,
                     password_hash=PasswordHasher().hash(OWNER_PASSWORD))
    state.upsert_member(Member(name="Owner Person", username=OWNER, mxid=OWNER_MXID, owner=True))
    for step in steps:
        state.mark_done(step)


async def test_the_demo_member_is_one_family_for_the_wizard_the_dashboard_and_the_bridge(
    web_factory: Any, tmp_path: Path
) -> None:
    c = await web_factory()
    web_state = c.settings.state_dir
    seed_family(web_state, ALEX, ["sms", "phone"])
    owner_after_step(c.state, 1, 2, 3)

    # The bridge's view, read the way `textbridge run` reads it at start and on reload.
    config = apply_members(demo_config(tmp_path), web_state)
    assert [(x.id, x.members, x.owner) for x in config.bridge.lines] == [
        ("sms", [ALEX], OWNER_MXID), ("phone", [ALEX], OWNER_MXID)]

    await c.login()
    # The wizard's family step and its done step list Alex beside the owner.
    status, text = await c.page("/setup/4")
    assert status == 200, text
    assert "Alex" in text and ALEX in text and "Owner Person" in text
    c.state.mark_done(4)
    c.state.mark_done(5)
    status, text = await c.page("/setup/6")
    assert status == 200
    assert "<dt>Family</dt><dd>Alex, Owner Person</dd>" in text
    status, text, _ = await c.submit("/setup/6", "/setup/6", {})
    assert status == 303

    # The dashboard's Family page: Alex, to manage like anyone the wizard added.
    status, text = await c.page("/family")
    assert status == 200
    assert ALEX in text and "Remove Alex" in text and "New password for Alex" in text

    # Taking Alex off the lines on that page reaches the bridge through the same file.
    status, _, _ = await c.submit("/family", "/family/alex/lines", {})
    assert status == 303
    config = apply_members(demo_config(tmp_path), web_state)
    assert [(x.id, x.members) for x in config.bridge.lines] == [("sms", []), ("phone", [])]

    # A second start of the demo does not bring back a member the owner removed.
    c.state.remove_member("alex")
    seed_family(web_state, ALEX, ["sms", "phone"])
    assert c.state.member("alex") is None
