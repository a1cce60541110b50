"""What the family hears about each modem fault (docs/modem.md, "What the family is told").

Anything that holds texts up for longer than the line's `notice_after` (a minute; shortened
here) is told once and cleared once; shorter trouble is not told at all.
"""

# ruff: noqa: F811  (each test takes the imported make_line fixture as a parameter)

from __future__ import annotations

import asyncio
from typing import Any

from appliance.line import LineState
from appliance.store.models import OutboxState
from tests.test_sms_line import make_line  # noqa: F401  (the fixture the tests take)
from tests.waiting import until

SENDER = "+4915112345678"


def keys(h: Any, stem: str) -> list[str]:
    """The events of one condition, in order: "<stem>" told, "<stem>-resolved" cleared."""
    return [e.key for e in h.events if e.key in (stem, f"{stem}-resolved")]


async def told_once_and_cleared(h: Any, stem: str, timeout: float = 60.0) -> None:
    await until(lambda: keys(h, stem) == [stem, f"{stem}-resolved"], timeout,
                f"{stem} told once and cleared once; got {keys(h, stem)}")
    await asyncio.sleep(1.0)
    assert keys(h, stem) == [stem, f"{stem}-resolved"]


async def still_receives(h: Any, body: str, timeout: float = 60.0) -> None:
    h.sim.network.deliver(SENDER, body)

    async def arrived() -> bool:
        return body in [r.message.body for r in await h.store.inbox.pending(limit=1000)]

    await until(arrived, timeout, f"{body!r} received")


async def test_unplug_that_starts_while_reconnecting_is_told_and_cleared_once(
    make_line: Any,
) -> None:
    h = await make_line()
    h.sim.faults.unplug()
    await until(lambda: keys(h, "unavailable") == ["unavailable"], 40, "unplug told")
    # A slow modem, so that the test sees the line's last set-up command come in, and
    # pulls the stick as the modem answers it: the line is told "set up" and loses the port
    # in the same moment.
    h.sim.faults.slow(0.3)
    seen = len(h.sim.commands)
    h.sim.faults.replug()
    await until(lambda: "AT+CEREG=2" in h.sim.commands[seen:], 60, "reconnecting")
    h.sim.faults.unplug()
    h.sim.faults.slow(0)
    await asyncio.sleep(8.0)
    assert h.line.status().state == LineState.DOWN
    assert keys(h, "unavailable")[-1] == "unavailable", keys(h, "unavailable")
    h.sim.faults.replug()
    await until(lambda: keys(h, "unavailable")[-1:] == ["unavailable-resolved"], 60)
    got = keys(h, "unavailable")
    assert got.count("unavailable") == got.count("unavailable-resolved")
    await still_receives(h, "after the replugs")


async def test_network_loss_while_ready_is_told_after_a_while_and_cleared(
    make_line: Any,
) -> None:
    h = await make_line()
    h.line.notice_after = 2.0
    h.sim.network.registered = False
    # At once, not at the next health check (half a minute away): the line is not "ready".
    await until(lambda: h.line.status().state == LineState.DEGRADED, 5, "line degraded")
    assert not h.line.status().sending
    await until(lambda: keys(h, "no-network") == ["no-network"], 20, "no network told")
    h.sim.network.registered = True
    await told_once_and_cleared(h, "no-network", 20)
    await until(lambda: h.line.status().state == LineState.READY, 10, "ready again")


async def test_a_short_network_loss_is_not_told(make_line: Any) -> None:
    h = await make_line()
    h.line.notice_after = 5.0
    h.sim.network.registered = False
    await until(lambda: not h.line.status().sending, 10, "line says it cannot send")
    h.sim.network.registered = True
    await until(lambda: h.line.status().sending, 10, "sending again")
    await asyncio.sleep(6.0)
    assert h.events == []


async def test_storage_full_is_told_and_cleared(make_line: Any) -> None:
    h = await make_line(sweep_interval=1.0)
    h.line.notice_after = 2.0
    h.sim.faults.storage_full = True
    await until(lambda: keys(h, "storage-full") == ["storage-full"], 30, "storage full told")
    h.sim.faults.storage_full = False
    await told_once_and_cleared(h, "storage-full", 30)


async def test_a_12_second_hang_is_not_told(make_line: Any) -> None:
    h = await make_line(sweep_interval=2.0, command_timeout=3.0)
    h.sim.faults.hang(12.0)
    h.sim.network.deliver(SENDER, "during the hang")
    await asyncio.sleep(12.0)
    await still_receives(h, "after the hang")
    assert h.events == []


async def test_a_hang_that_holds_texts_up_is_told_once_and_cleared_once(make_line: Any) -> None:
    h = await make_line(sweep_interval=2.0, command_timeout=1.5)
    h.line.notice_after = 3.0
    h.sim.faults.hang(None)
    await until(lambda: keys(h, "unavailable") == ["unavailable"], 60, "hang told")
    h.sim.faults.hang(0)
    await told_once_and_cleared(h, "unavailable", 90)
    await still_receives(h, "after the long hang")


async def test_garbage_bytes_are_not_told(make_line: Any) -> None:
    h = await make_line(sweep_interval=2.0)
    h.sim.faults.garbage(b"\xff\xfe\x00garbage\x80\r\n\x1b[0m\xc3")
    await still_receives(h, "after the noise")
    await asyncio.sleep(3.0)
    assert h.events == []


async def test_a_urc_inside_a_response_is_not_told(make_line: Any) -> None:
    h = await make_line(sweep_interval=2.0)
    h.sim.faults.urc_in_next_response("+CREG: 2,1")
    await still_receives(h, "after the odd response")
    await asyncio.sleep(3.0)
    assert h.events == []


async def test_send_errors_that_hold_texts_up_are_told_once_and_cleared_once(
    make_line: Any,
) -> None:
    h = await make_line(retry_delay=0.5, max_send_attempts=20)
    h.line.notice_after = 2.0
    h.sim.faults.cms_error_next(332, command="CMGS", count=4)  # network timeout, retryable
    row_id = await h.send("keeps failing for a while")
    await until(lambda: keys(h, "send-retrying") == ["send-retrying"], 30, "send trouble told")
    await h.state(row_id, OutboxState.SENT, OutboxState.DELIVERED, timeout=60)
    await told_once_and_cleared(h, "send-retrying", 10)


async def test_a_send_error_retried_at_once_is_not_told(make_line: Any) -> None:
    h = await make_line(retry_delay=0.2)
    h.line.notice_after = 5.0
    h.sim.faults.cms_error_next(332, command="CMGS", count=1)
    row_id = await h.send("one hiccup")
    await h.state(row_id, OutboxState.SENT, OutboxState.DELIVERED)
    await asyncio.sleep(6.0)
    assert h.events == []


async def test_a_stuck_prompt_is_not_told(make_line: Any) -> None:
    h = await make_line(sweep_interval=2.0, command_timeout=1.5)
    h.sim.faults.stuck_prompt()
    row_id = await h.send("through the stuck prompt")
    await h.state(row_id, OutboxState.SENT, OutboxState.DELIVERED, timeout=60)
    await still_receives(h, "after the stuck prompt")
    assert h.events == []


async def test_texts_refused_for_want_of_network_go_as_soon_as_it_is_back(
    make_line: Any,
) -> None:
    h = await make_line(retry_delay=30.0)
    h.sim.network.registered = False
    await until(lambda: not h.line.status().sending, 10, "line says it cannot send")
    row_id = await h.send("waiting for the network")

    async def refused() -> bool:
        row = await h.store.outbox.get(row_id)
        return row is not None and row.attempts >= 1 and row.state == OutboxState.QUEUED

    await until(refused, 20, "refused once, waiting for a retry in 30 s")
    h.sim.network.registered = True
    # Not after the 30 s retry delay: the reason it waited is gone.
    await h.state(row_id, OutboxState.SENT, OutboxState.DELIVERED, timeout=10)
