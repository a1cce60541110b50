"""Inbound texts under modem faults: nothing lost, nothing stuck, order per conversation kept.

Each test drives the real SMS line over a pty against the modem simulator (tests/plugins/sim.py).
"""

# ruff: noqa: F811  (each test takes the imported make_line fixture as a parameter)

from __future__ import annotations

import asyncio
from typing import Any

from appliance.sms import pdu
from appliance.store.models import InboxState
from tests.test_sms_line import make_line  # noqa: F401  (the fixture the tests take)
from tests.waiting import until

SENDER = "+4915112345678"
T0 = 1_790_000_000_000


async def bodies(h: Any) -> list[str]:
    return [r.message.body for r in await h.store.inbox.pending(limit=1000)]


async def settled(h: Any) -> None:
    """The sweep a line makes when it comes up is over."""
    await until(lambda: h.line.status().details.get("count_sweeps"), what="first sweep")
    await asyncio.sleep(0.3)


# -- item 9: an empty PDU ---------------------------------------------------------------


async def test_empty_pdu_is_quarantined_reported_and_its_slot_freed(make_line: Any) -> None:
    h = await make_line()
    h.sim.network.deliver_pdu("")
    rows = await h.inbox(1)
    assert rows[0].state == InboxState.QUARANTINED
    assert rows[0].message.note and "could not be read" in rows[0].message.note
    await until(lambda: not h.sim.storage, what="the empty PDU deleted from the SIM")
    # The slot works again, and an empty PDU found by a sweep goes the same way.
    h.sim.network.notify = False
    h.sim.network.deliver_pdu("")
    h.sim.network.notify = True
    h.sim.network.deliver(SENDER, "after the empty one")
    await until(lambda: not h.sim.storage, what="SIM emptied by the next look")
    assert await bodies(h) == ["after the empty one"]


# -- item 2: two multipart texts with the same reference -----------------------------------


async def _interleaved(h: Any, a: str, b: str, ts_a: int, ts_b: int) -> None:
    """A1, B1, A2, B2, each taken off the SIM before the next arrives."""
    a1, a2 = pdu.encode_deliver(SENDER, a, timestamp_ms=ts_a, concat_ref=203)
    b1, b2 = pdu.encode_deliver(SENDER, b, timestamp_ms=ts_b, concat_ref=203)
    for part in (a1, b1, a2, b2):
        h.sim.network.deliver_pdu(part.hex())
        await until(lambda: not h.sim.storage, what="part taken off the SIM")


async def test_colliding_multipart_texts_told_apart_by_timestamp_are_both_delivered(
    make_line: Any,
) -> None:
    h = await make_line()
    a, b = "A" * 200, "B" * 200
    await _interleaved(h, a, b, T0, T0 + 7000)
    await until(lambda: not h.sim.storage, what="parts taken")
    await h.inbox(2)
    assert sorted(await bodies(h)) == [a, b]
    assert await h.store.inbox.quarantined() == []


async def test_colliding_multipart_texts_in_the_same_second_are_quarantined_not_lost(
    make_line: Any,
) -> None:
    h = await make_line()
    a = "Text A, the first of two long texts. " * 6
    b = "Text B, the second one, same ref. " * 6
    await _interleaved(h, a, b, T0, T0)
    await until(lambda: not h.sim.storage, what="parts taken")
    rows = await h.inbox(1)
    await asyncio.sleep(0.5)
    assert await h.store.inbox.pending() == []  # nothing pieced together wrongly
    (row,) = await h.store.inbox.quarantined()
    assert row.message.sender == SENDER
    assert row.message.note and "cannot be told apart" in row.message.note
    # Every part's words survive, so a person can read both texts.
    text = row.message.body
    for whole in (a, b):
        for piece in _pieces(whole):
            assert piece in text
    assert rows


def _pieces(text: str) -> list[str]:
    parts = pdu.encode_deliver(SENDER, text, timestamp_ms=T0, concat_ref=1)
    decoded = [pdu.decode(p.hex()) for p in parts]
    return [d.text for d in decoded if isinstance(d, pdu.Deliver)]


# -- item 7: order per conversation under modem faults -------------------------------------


async def test_texts_stored_during_a_hang_do_not_overtake_the_one_before_it(
    make_line: Any,
) -> None:
    h = await make_line(command_timeout=1.5)
    await settled(h)
    # The modem locks up when the line goes to read the first text, and the next two arrive
    # (in the same second) while it is deaf; their +CMTI come out when it answers again.
    h.sim.faults.hang_at_next(5.0, "AT+CMG")
    h.sim.network.deliver(SENDER, "one", timestamp_ms=T0)
    await until(lambda: h.sim._hang_until > 0, what="the modem hung")
    h.sim.network.deliver(SENDER, "two", timestamp_ms=T0 + 400)
    h.sim.network.deliver(SENDER, "three", timestamp_ms=T0 + 800)
    await h.inbox(3, timeout=40)
    assert await bodies(h) == ["one", "two", "three"]


async def test_a_cmti_inside_a_response_is_not_overtaken_by_a_later_text(
    make_line: Any,
) -> None:
    h = await make_line(sweep_interval=600.0)
    await settled(h)
    # Stored silently; its only notification comes inside the next command's response.
    h.sim.network.notify = False
    (index,) = h.sim.network.deliver(SENDER, "first", timestamp_ms=T0)
    h.sim.network.notify = True
    h.sim.faults.urc_in_next_response(f'+CMTI: "SM",{index}')
    await asyncio.sleep(3.0)
    h.sim.network.deliver(SENDER, "three seconds later", timestamp_ms=T0 + 3000)
    await h.inbox(2, timeout=20)
    assert await bodies(h) == ["first", "three seconds later"]
