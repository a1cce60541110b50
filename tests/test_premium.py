"""Premium-rate numbers through the whole bridge (issue 12, item 1): the bot's `new`
refuses to open a chat with one, and a chat that exists (the number texted us) refuses
every reply; a real Synapse, the real store, matrix-nio as the family."""

from __future__ import annotations

import pytest

from tests.plugins.bridge import BridgeStack, notices
from tests.test_bridge import _portal_with_member, _reply_to

pytestmark = pytest.mark.synapse

# The reported bypass (one digit more than a valid German 0900 number), a valid 0900
# number, a shared-cost 0180 number, and the same in national spelling.
COSTLY = ["+4990012345678", "+49 900 1234567", "0180 1234567", "0900 1234567"]


async def test_new_refuses_costly_numbers_at_once(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    anna = stack.client(stack.owner)
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)
    await anna.wait_for(mgmt, notices(stack.bot))
    assert stack.bridge is not None
    refused = notices(stack.bot)
    for n, number in enumerate(COSTLY, start=1):
        await anna.say(mgmt, f"new {number}")
        answers = await anna.wait_for(
            mgmt,
            lambda e: refused(e) and ("premium-rate" in e["content"]["body"]
                                      or "is ready" in e["content"]["body"]),
            count=n,
        )
        body = answers[-1]["content"]["body"]
        assert "premium-rate" in body and "No chat was opened" in body, body
    assert await stack.bridge.db.portals("modem") == []
    # An ordinary number still gets its chat.
    await anna.say(mgmt, "new 0151 99999999")
    await anna.wait_for(
        mgmt, lambda e: notices(stack.bot)(e) and "is ready: https://matrix.to/#/"
        in e["content"]["body"]
    )


async def test_replies_to_a_costly_sender_are_refused(bridge_stack: BridgeStack) -> None:
    stack = bridge_stack
    await stack.start()
    assert stack.store is not None
    room, anna = await _portal_with_member(stack, "+4990012345678")
    paid = await anna.say(room, "STOP")
    (notice,) = await anna.wait_for(room, _reply_to(stack.bot, paid))
    assert "premium-rate" in notice["content"]["body"]
    assert await stack.store.outbox.by_request(paid) is None
