"""The store's doorbell (store/doorbell.py) and the commits the SMS line merges.

Stores opened on one database in this process talk over the same unix socket as two
processes would; tests/test_sms_line_pace.py covers a real second process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState
from tests.waiting import until

DEST = "+4915112345678"


async def test_the_doorbell_socket_is_gone_after_stop_and_a_stale_one_is_replaced(
    tmp_path: Path,
) -> None:
    """A listener that was killed leaves its socket file; the next one takes it over, and a
    clean stop removes it."""
    path = tmp_path / "textbridge.db"
    first = await Store.open(path)
    first.doorbell.subscribe(lambda: None)
    sock_file = tmp_path / "textbridge.db-wake"
    assert sock_file.exists()
    # As if the process died: the socket closes, its file stays.
    assert first.doorbell._listener is not None
    first.doorbell._listener.close()
    second = await Store.open(path)
    rings: list[int] = []
    second.doorbell.subscribe(lambda: rings.append(1))
    assert second.doorbell.listening
    writer = await Store.open(path)
    await writer.outbox.enqueue(OutboundRequest("y", "sms", DEST, "hi", "@m:t"), 1)
    await until(lambda: rings, 10, "a ring")
    second.doorbell.unsubscribe(second.doorbell._callbacks[0])
    assert not sock_file.exists()
    for s in (writer, second):
        await s.close()
    first.doorbell._listener = None
    await first.close()


async def test_a_listening_store_hears_other_commits_without_polling(tmp_path: Path) -> None:
    """Once this process listens, its change waiters stop polling data_version: only the
    ring of the other store's commit can end this wait before its 30 s."""
    path = tmp_path / "textbridge.db"
    listener = await Store.open(path)
    listener.doorbell.subscribe(lambda: None)
    writer = await Store.open(path)
    try:
        seen = listener.changed.version
        waiting = asyncio.create_task(listener.changed.wait(30.0, since=seen))
        await asyncio.sleep(0.1)
        await writer.outbox.enqueue(OutboundRequest("z", "sms", DEST, "hi", "@m:t"), 1)
        assert await asyncio.wait_for(waiting, 60) is True
    finally:
        await writer.close()
        await listener.close()


async def test_last_part_and_sent_are_one_commit(tmp_path: Path) -> None:
    """The last part's reference and SENT land together; every earlier part has its own
    commit, as before (a crash between parts must leave the earlier references)."""
    store = await Store.open(tmp_path / "textbridge.db")
    try:
        row, _ = await store.outbox.enqueue(
            OutboundRequest("m", "sms", DEST, "two parts", "@m:t"), 2
        )
        await store.outbox.mark_sending(row.id)
        first = await store.outbox.mark_part_sent(row.id, 0, 11)
        assert first.state == OutboxState.SENDING
        before = store.changed.version
        done = await store.outbox.mark_part_sent(row.id, 1, 12, last=True)
        assert store.changed.version == before + 1
        assert done.state == OutboxState.SENT
        assert [p.reference for p in done.parts] == [11, 12]
        stored = await store.outbox.get(row.id)
        assert stored is not None and stored.state == OutboxState.SENT
    finally:
        await store.close()


async def test_next_due_is_the_earliest_waiting_head(tmp_path: Path) -> None:
    """What the sender sleeps until: a row put back for a retry holds its conversation, so
    the row behind it does not count, and nothing waiting means None."""
    now = [1_000_000]
    store = await Store.open(tmp_path / "textbridge.db", clock=lambda: now[0])
    try:
        assert await store.outbox.next_due("sms") is None
        a, _ = await store.outbox.enqueue(OutboundRequest("a", "sms", DEST, "1", "@m:t"), 1)
        await store.outbox.enqueue(OutboundRequest("b", "sms", DEST, "2", "@m:t"), 1)
        await store.outbox.mark_sending(a.id)
        await store.outbox.mark_retry(a.id, "busy", 30.0)
        assert await store.outbox.next_due("sms") == 1_000_000 + 30_000
        await store.outbox.enqueue(
            OutboundRequest("c", "sms", "+4915100000001", "3", "@m:t"), 1
        )
        assert await store.outbox.next_due("sms") == 1_000_000
        assert await store.outbox.next_due("phone") is None
    finally:
        await store.close()
