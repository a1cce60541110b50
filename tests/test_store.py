"""The durable store: every method, every outbox transition, dedup, ordering and reports."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import appliance.store.db as store_db
from appliance.store import INTERRUPTED_ERROR, Store, StoreError, StoreNotFound, StoreStateError
from appliance.store.fragments import DONE_KEEP_MS
from appliance.store.models import (
    InboundMessage,
    InboxState,
    OutboundRequest,
    OutboxRow,
    OutboxState,
    PartState,
)
from appliance.store.schema import SCHEMA_VERSION

Q = OutboxState
T0 = 1_790_000_000_000


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "store.db", clock=clock)
    yield s
    await s.close()


def msg(
    key: str, body: str = "hello", line: str = "sms", conv: str = "+4915112345678", **kw: Any
) -> InboundMessage:
    return InboundMessage(
        line_id=line,
        conversation=conv,
        sender=conv,
        body=body,
        sent_at=T0 - 5000,
        dedup_key=key,
        **kw,
    )


def req(
    rid: str,
    conv: str = "+4915112345678",
    line: str = "sms",
    by: str = "@mum:test",
    body: str = "hi",
    **kw: Any,
) -> OutboundRequest:
    return OutboundRequest(rid, line, conv, body, by, **kw)


async def sent_row(
    store: Store,
    rid: str,
    refs: list[int],
    conv: str = "+4915112345678",
    clock: FakeClock | None = None,
) -> OutboxRow:
    row, _ = await store.outbox.enqueue(req(rid, conv), len(refs))
    await store.outbox.mark_sending(row.id)
    for i, ref in enumerate(refs):
        if clock is not None:
            clock.advance(1)
        await store.outbox.mark_part_sent(row.id, i, ref)
    return await store.outbox.mark_sent(row.id)


# -- opening, durability settings, schema ---------------------------------------------------


async def test_open_uses_wal_full_sync_and_foreign_keys(store: Store) -> None:
    db = store._db
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
    assert (await db.fetchone("PRAGMA synchronous"))[0] == 2  # type: ignore[index]  # FULL
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert (await db.fetchone("PRAGMA page_size"))[0] == store_db.PAGE_SIZE  # type: ignore[index]
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.check() == []


async def test_directory_is_fsynced_only_when_the_file_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = store_db.fsync_dir

    def spy(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(store_db, "fsync_dir", spy)
    path = tmp_path / "new" / "dir" / "store.db"
    s = await Store.open(path)
    await s.close()
    assert synced == [path.parent]
    s = await Store.open(path)
    await s.close()
    assert synced == [path.parent]


async def test_data_survives_reopen(tmp_path: Path) -> None:
    s = await Store.open(tmp_path / "s.db")
    row, _ = await s.inbox.add(msg("k1", raw=b"\x00\x01", meta={"encoding": "gsm7", "n": [1]}))
    await s.close()
    s = await Store.open(tmp_path / "s.db")
    again = await s.inbox.get(row.id)
    await s.close()
    assert again == row
    assert again is not None and again.message.raw == b"\x00\x01"


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = await Store.open(path)
    await s.close()
    with sqlite3.connect(path) as conn:
        # A newer version whose migration older ones cannot run on (its floor says so);
        # tests/test_update_migrations.py has the backward-compatible kind.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("UPDATE schema_floor SET oldest_reader = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        await Store.open(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_an_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE unrelated (x)")  # a file at version 0
    s = await Store.open(path)
    assert await s.schema_version() == SCHEMA_VERSION
    row, created = await s.inbox.add(msg("k"))
    await s.close()
    assert created and row.id == 1


async def test_a_version_1_file_from_a_development_build_is_migrated(tmp_path: Path) -> None:
    from appliance.store.schema import MIGRATIONS

    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        # As written before the partial indexes existed.
        conn.execute("DROP INDEX outbox_parts_open")
        conn.execute("DROP INDEX outbox_active")
        conn.execute("CREATE INDEX outbox_conversation ON outbox (line_id, conversation, id)")
        conn.execute("PRAGMA user_version = 1")
    s = await Store.open(path)
    assert await s.schema_version() == SCHEMA_VERSION == 3
    row = await sent_row(s, "r", [5])
    got = await s.outbox.apply_status_report("sms", 5, None, PartState.DELIVERED, None)
    assert got is not None and got.id == row.id and got.state == Q.DELIVERED
    await s.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"outbox_active", "outbox_parts_open"} <= names
    assert not {"outbox_conversation", "fragments_received"} & names


async def test_check_reports_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = await Store.open(path)
    for i in range(300):
        await s.inbox.add(msg(f"k{i}", body="x" * 200))
    await s.close()  # checkpoints the WAL into the main file
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # from the database header
    assert page == store_db.PAGE_SIZE and len(data) > 10 * page
    for number in (2, 3, 4):  # scribble over b-tree page headers
        data[number * page : number * page + 8] = b"\xa5" * 8
    path.write_bytes(bytes(data))
    try:
        s = await Store.open(path)
        problems = await s.check()
        await s.close()
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    assert problems


# -- inbox --------------------------------------------------------------------------------


async def test_inbox_add_is_deduplicated_per_line(store: Store, clock: FakeClock) -> None:
    first, created = await store.inbox.add(msg("k1", body="one"))
    assert created and first.state == InboxState.RECEIVED and first.received_at == T0
    clock.advance(10)
    again, created = await store.inbox.add(msg("k1", body="one, read again"))
    assert not created and again == first
    other_line, created = await store.inbox.add(msg("k1", line="phone"))
    assert created and other_line.id != first.id
    assert [r.id for r in await store.inbox.pending()] == [first.id, other_line.id]


async def test_inbox_pending_order_limit_and_line(store: Store) -> None:
    ids = []
    for i in range(5):
        row, _ = await store.inbox.add(msg(f"k{i}", line="sms" if i % 2 == 0 else "phone"))
        ids.append(row.id)
    assert [r.id for r in await store.inbox.pending()] == ids
    assert [r.id for r in await store.inbox.pending(limit=2)] == ids[:2]
    assert [r.id for r in await store.inbox.pending(line_id="phone")] == [ids[1], ids[3]]


async def test_mark_delivered_is_idempotent(store: Store) -> None:
    row, _ = await store.inbox.add(msg("k1"))
    done = await store.inbox.mark_delivered(row.id, "$event1")
    assert done.state == InboxState.DELIVERED and done.delivered_ref == "$event1"
    again = await store.inbox.mark_delivered(row.id, "$event2")
    assert again.delivered_ref == "$event1"
    assert await store.inbox.pending() == []
    assert await store.inbox.get(row.id) == done
    with pytest.raises(StoreNotFound):
        await store.inbox.mark_delivered(999, "$x")
    assert await store.inbox.get(999) is None


async def test_quarantine_keeps_raw_and_note_until_reported(store: Store) -> None:
    raw = bytes(range(256))
    row, created = await store.inbox.add(
        msg("raw:abc", body="", kind="quarantine", raw=raw, note="could not be read")
    )
    assert created and row.state == InboxState.QUARANTINED
    assert await store.inbox.pending() == []
    [q] = await store.inbox.quarantined()
    assert q.message.raw == raw and q.message.note == "could not be read"
    told = await store.inbox.mark_delivered(row.id, "$notice")
    assert told.state == InboxState.QUARANTINED and told.delivered_ref == "$notice"
    assert await store.inbox.quarantined() == []
    assert await store.inbox.quarantined(include_reported=True) == [told]


async def test_meta_round_trips_as_json_and_bad_meta_stores_nothing(store: Store) -> None:
    meta = {"group": "Familie 👪", "members": ["+491", "+492"], "n": 3}
    row, _ = await store.inbox.add(msg("k1", meta=meta))
    assert (await store.inbox.get(row.id)).message.meta == meta  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        await store.inbox.add(msg("k2", meta={"x": object()}))
    assert [r.id for r in await store.inbox.pending()] == [row.id]
    later, _ = await store.inbox.add(msg("k3"))
    assert later.id == row.id + 1  # the failed add left no gap and no open transaction


# -- fragments ----------------------------------------------------------------------------


async def test_fragments_held_until_complete(store: Store, clock: FakeClock) -> None:
    f = store.fragments
    assert await f.add("sms", "g1", 2, 3, "b", "g1|2", T0, T0 - 100) == 1
    assert await f.add("sms", "g1", 1, 3, "a", "g1|1", T0 + 5) == 2
    assert await f.add("sms", "g1", 1, 3, "A!", "g1|1", T0 + 9) == 2  # duplicate part ignored
    assert await f.add("sms", "g2", 1, 2, "other", "g2|1", T0) == 1
    parts = await f.get("sms", "g1")
    assert [(p.index, p.payload, p.sent_at) for p in parts] == [
        (1, "a", T0 + 5),
        (2, "b", T0 - 100),
    ]
    assert await f.add("sms", "g1", 3, 3, "c", "g1|3", T0 + 10) == 3
    row, created = await f.complete("sms", "g1", msg("g1-whole", body="abc"))
    assert created and row.message.body == "abc"
    assert await f.get("sms", "g1") == []
    assert len(await f.get("sms", "g2")) == 1
    assert [r.id for r in await store.inbox.pending()] == [row.id]


async def test_a_completed_part_read_again_is_not_held(store: Store, clock: FakeClock) -> None:
    f = store.fragments
    await f.add("sms", "g", 1, 2, "a", "g|1", T0)
    await f.add("sms", "g", 2, 2, "b", "g|2", T0)
    await f.complete("sms", "g", msg("g-whole"))
    # A crash between that commit and the modem delete: the line reads both parts again.
    assert await f.add("sms", "g", 1, 2, "a", "g|1", T0 + 60_000) == 0
    assert await f.add("sms", "g", 2, 2, "b", "g|2", T0 + 60_000) == 0
    assert await f.get("sms", "g") == []
    assert await f.expired(T0 + 10**9) == []
    # Other lines have their own keys.
    assert await f.add("phone", "g", 1, 2, "a", "g|1", T0) == 1
    # The memory of completed parts is pruned after a week.
    clock.advance(DONE_KEEP_MS + 1)
    await f.add("sms", "h", 1, 1, "x", "h|1", clock.now)
    await f.complete("sms", "h", msg("h-whole"))
    assert await f.add("sms", "g", 1, 2, "a", "g|1", clock.now) == 1


async def test_complete_with_a_duplicate_message_still_drops_parts(store: Store) -> None:
    first, _ = await store.inbox.add(msg("same"))
    await store.fragments.add("sms", "g", 1, 1, "x", "g|1", T0)
    row, created = await store.fragments.complete("sms", "g", msg("same", body="other"))
    assert not created and row == first
    assert await store.fragments.get("sms", "g") == []


async def test_complete_is_one_transaction(store: Store) -> None:
    await store.fragments.add("sms", "g", 1, 2, "a", "g|1", T0)
    with pytest.raises(TypeError):  # the message cannot be stored (meta is not JSON)
        await store.fragments.complete("sms", "g", msg("g", meta={"bad": {1, 2}}))
    assert len(await store.fragments.get("sms", "g")) == 1  # so the part is kept
    assert await store.inbox.pending() == []
    with pytest.raises(ValueError):
        await store.fragments.complete("sms", "g", msg("g", line="phone"))


async def test_expired_goes_by_the_first_part(store: Store) -> None:
    f = store.fragments
    await f.add("sms", "old", 1, 3, "a", "old|1", T0)
    await f.add("sms", "old", 2, 3, "b", "old|2", T0 + 50_000)
    await f.add("sms", "new", 1, 2, "a", "new|1", T0 + 20_000)
    await f.add("phone", "older", 1, 2, "a", "older|1", T0 - 1)
    assert await f.expired(T0) == [("phone", "older")]
    assert await f.expired(T0 + 1) == [("phone", "older"), ("sms", "old")]
    assert await f.expired(T0 + 20_001) == [("phone", "older"), ("sms", "old"), ("sms", "new")]
    # Giving up on a group: what arrived, with a note, in the same transaction as the drop.
    row, created = await f.take(
        "sms", "old", msg("old-incomplete", body="ab[part 3 missing]", note="Part 3 never arrived")
    )
    assert created and row.message.note == "Part 3 never arrived"
    assert await f.get("sms", "old") == []
    assert await f.expired(T0 + 20_001) == [("phone", "older"), ("sms", "new")]


async def test_fragment_numbers_are_validated(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.fragments.add("sms", "g", 1, 0, "a", "k", T0)
    with pytest.raises(ValueError):
        await store.fragments.add("sms", "g", -1, 2, "a", "k", T0)


# -- outbox: enqueue, order, retries ------------------------------------------------------


async def test_enqueue_is_idempotent_by_request_id(store: Store, clock: FakeClock) -> None:
    row, created = await store.outbox.enqueue(req("$e1", meta={"reply_to": "$e0"}), 3)
    assert created and row.state == Q.QUEUED and row.attempts == 0
    assert row.next_attempt_at == row.created_at == row.updated_at == T0
    assert [p.state for p in row.parts] == [PartState.PENDING] * 3
    assert row.request.meta == {"reply_to": "$e0"} and row.reported_state is None
    clock.advance(1000)
    again, created = await store.outbox.enqueue(req("$e1", body="different"), 1)
    assert not created and again == row
    assert await store.outbox.by_request("$e1") == row
    assert await store.outbox.by_request("$nope") is None
    assert await store.outbox.get(row.id) == row
    assert await store.outbox.get(row.id + 1) is None
    with pytest.raises(ValueError):
        await store.outbox.enqueue(req("$e2"), 0)


async def test_ready_keeps_order_per_conversation(store: Store) -> None:
    a1, _ = await store.outbox.enqueue(req("a1", "+491"), 1)
    b1, _ = await store.outbox.enqueue(req("b1", "+492"), 1)
    a2, _ = await store.outbox.enqueue(req("a2", "+491"), 1)
    await store.outbox.enqueue(req("p1", "+491", line="phone"), 1)
    ob = store.outbox
    assert [r.id for r in await ob.ready("sms", T0)] == [a1.id, b1.id]
    await ob.mark_sending(a1.id)  # in flight: a2 must wait behind it
    assert [r.id for r in await ob.ready("sms", T0)] == [b1.id]
    await ob.mark_part_sent(a1.id, 0, 1)
    await ob.mark_sent(a1.id)
    assert [r.id for r in await ob.ready("sms", T0)] == [b1.id, a2.id]
    assert [r.request.request_id for r in await ob.ready("phone", T0)] == ["p1"]


async def test_reroute_moves_only_a_message_nothing_of_has_left(
    store: Store, clock: FakeClock
) -> None:
    ob = store.outbox
    row, _ = await ob.enqueue(req("r1", line="phone", meta={"room_id": "!r"}), 2)
    # The phone line read it (ready), then failed before anything left: back to QUEUED.
    await ob.mark_sending(row.id, line_id="phone")
    await ob.mark_retry(row.id, "The phone is locked.", 60.0)
    clock.advance(5)
    assert await ob.reroute(row.id, "sms", "phone", {}) is None  # not on that line
    moved = await ob.reroute(row.id, "phone", "sms", {"fallback": {"from": "phone"}})
    assert moved is not None and moved.request.line_id == "sms" and moved.state == Q.QUEUED
    assert moved.request.meta == {"room_id": "!r", "fallback": {"from": "phone"}}
    assert moved.attempts == 0 and moved.error is None and moved.next_attempt_at == T0 + 5
    assert [r.id for r in await ob.ready("sms", T0 + 5)] == [row.id]
    assert await ob.ready("phone", T0 + 5) == []
    # The phone line still holds the row it read earlier: it can no longer start it.
    with pytest.raises(StoreStateError):
        await ob.mark_sending(row.id, line_id="phone")
    assert (await ob.get(row.id)) == moved
    # In flight, ambiguous or partly sent: it stays where it is.
    await ob.mark_sending(row.id, line_id="sms")
    assert await ob.reroute(row.id, "sms", "phone", {}) is None
    await ob.mark_part_sent(row.id, 0, 7)
    await ob.mark_retry(row.id, "part 2 refused", 0.0)
    assert await ob.reroute(row.id, "sms", "phone", {}) is None  # part 1 has gone
    await ob.mark_sending(row.id, line_id="sms")
    await ob.mark_ambiguous(row.id)
    assert await ob.reroute(row.id, "sms", "phone", {}) is None
    assert (await ob.get(row.id)).request.line_id == "sms"  # type: ignore[union-attr]


async def test_retry_backs_off_and_blocks_its_conversation(store: Store, clock: FakeClock) -> None:
    ob = store.outbox
    a1, _ = await ob.enqueue(req("a1", "+491"), 1)
    a2, _ = await ob.enqueue(req("a2", "+491"), 1)
    await ob.mark_sending(a1.id)
    clock.advance(100)
    row = await ob.mark_retry(a1.id, "The network is busy. Trying again in 30 seconds.", 30.0)
    assert row.state == Q.QUEUED and row.attempts == 1 and row.next_attempt_at == T0 + 100 + 30_000
    assert row.error is not None and "busy" in row.error
    assert await ob.ready("sms", T0 + 100 + 29_999) == []  # a2 waits behind a1
    assert [r.id for r in await ob.ready("sms", T0 + 100 + 30_000)] == [a1.id]
    await ob.mark_sending(a1.id)
    row = await ob.mark_retry(a1.id, "busy again", 0.5)
    assert row.attempts == 2 and row.next_attempt_at == T0 + 100 + 500
    await ob.mark_sending(a1.id)
    await ob.mark_failed(a1.id, "The number does not exist.")
    assert [r.id for r in await ob.ready("sms", T0)] == [a2.id]  # FAILED does not block
    with pytest.raises(ValueError):
        await ob.mark_retry(a2.id, "x", -1)


async def test_ambiguous_does_not_block_its_conversation(store: Store) -> None:
    ob = store.outbox
    a1, _ = await ob.enqueue(req("a1", "+491"), 1)
    a2, _ = await ob.enqueue(req("a2", "+491"), 1)
    await ob.mark_sending(a1.id)
    amb = await ob.mark_ambiguous(a1.id, "The modem stopped answering.")
    assert amb.state == Q.AMBIGUOUS and amb.error == "The modem stopped answering."
    assert [r.id for r in await ob.ready("sms", T0)] == [a2.id]
    assert [r.id for r in await ob.by_state(Q.AMBIGUOUS)] == [a1.id]
    assert [r.id for r in await ob.by_state(Q.AMBIGUOUS, Q.QUEUED, line_id="sms")] == [
        a1.id,
        a2.id,
    ]
    assert await ob.by_state(Q.AMBIGUOUS, line_id="phone") == []


async def test_parts_keep_references_across_a_retry(store: Store) -> None:
    ob = store.outbox
    row, _ = await ob.enqueue(req("r"), 2)
    await ob.mark_sending(row.id)
    await ob.mark_part_sent(row.id, 0, 200)
    await ob.mark_retry(row.id, "busy", 0)
    row = await ob.mark_sending(row.id)
    assert row.parts[0].state == PartState.SENT and row.parts[0].reference == 200
    with pytest.raises(StoreStateError, match="duplicate"):
        await ob.mark_part_sent(row.id, 0, 201)
    with pytest.raises(StoreStateError, match="never sent"):
        await ob.mark_sent(row.id)
    with pytest.raises(StoreStateError, match="no part 2"):
        await ob.mark_part_sent(row.id, 2, 5)
    with pytest.raises(ValueError):
        await ob.mark_part_sent(row.id, 1, 256)
    await ob.mark_part_sent(row.id, 1, 201)
    row = await ob.mark_sent(row.id)
    assert row.state == Q.SENT and row.error is None
    assert [(p.state, p.reference) for p in row.parts] == [
        (PartState.SENT, 200),
        (PartState.SENT, 201),
    ]


async def _row_in(store: Store, state: OutboxState, rid: str) -> OutboxRow:
    ob = store.outbox
    row, _ = await ob.enqueue(req(rid, conv=f"+49{rid}"), 1)
    if state == Q.QUEUED:
        return row
    await ob.mark_sending(row.id)
    if state == Q.SENDING:
        return await ob.get(row.id)  # type: ignore[return-value]
    if state == Q.AMBIGUOUS:
        return await ob.mark_ambiguous(row.id)
    if state == Q.FAILED:
        return await ob.mark_failed(row.id, "no")
    if state == Q.CANCELLED:
        await ob.mark_failed(row.id, "no")
        return await ob.resolve(row.id, "cancel")
    await ob.mark_part_sent(row.id, 0, 7)
    row = await ob.mark_sent(row.id)
    if state == Q.DELIVERED:
        row = await ob.apply_status_report("sms", 7, f"+49{rid}", PartState.DELIVERED, None)  # type: ignore[assignment]
    assert row.state == state
    return row


CALLS: dict[str, tuple[Any, set[OutboxState]]] = {
    "mark_sending": (lambda ob, i: ob.mark_sending(i), {Q.QUEUED}),
    "mark_retry": (lambda ob, i: ob.mark_retry(i, "e", 1), {Q.SENDING}),
    "mark_failed": (lambda ob, i: ob.mark_failed(i, "e"), {Q.QUEUED, Q.SENDING}),
    "mark_ambiguous": (lambda ob, i: ob.mark_ambiguous(i), {Q.SENDING}),
    "mark_part_sent": (lambda ob, i: ob.mark_part_sent(i, 0, 9), {Q.SENDING}),
    "resend": (lambda ob, i: ob.resolve(i, "resend"), {Q.AMBIGUOUS, Q.FAILED}),
    "cancel": (lambda ob, i: ob.resolve(i, "cancel"), {Q.AMBIGUOUS, Q.FAILED}),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("state", list(OutboxState))
async def test_only_allowed_transitions_happen(store: Store, call: str, state: OutboxState) -> None:
    fn, allowed_from = CALLS[call]
    row = await _row_in(store, state, "x")
    if state in allowed_from:
        await fn(store.outbox, row.id)
        return
    with pytest.raises(StoreStateError):
        await fn(store.outbox, row.id)
    assert await store.outbox.get(row.id) == row  # nothing written


async def test_mark_sent_only_from_sending(store: Store) -> None:
    row = await _row_in(store, Q.SENT, "s")
    with pytest.raises(StoreStateError, match="sent -> sent"):
        await store.outbox.mark_sent(row.id)
    with pytest.raises(StoreNotFound):
        await store.outbox.mark_sending(12345)


# -- status reports -----------------------------------------------------------------------


async def test_reports_derive_the_message_state_from_all_parts(store: Store) -> None:
    ob = store.outbox
    row = await sent_row(store, "r", [10, 11, 12])
    row = await ob.apply_status_report("sms", 10, "+4915112345678", PartState.DELIVERED, "ok")  # type: ignore[assignment]
    assert row.state == Q.SENT and row.parts[0].state == PartState.DELIVERED
    row = await ob.apply_status_report("sms", 11, None, PartState.TRYING, "SMSC still trying")  # type: ignore[assignment]
    assert row.state == Q.SENT and row.parts[1].state == PartState.TRYING
    assert row.parts[1].detail == "SMSC still trying"
    row = await ob.apply_status_report("sms", 12, "+4915112345678", PartState.DELIVERED, None)  # type: ignore[assignment]
    assert row.state == Q.SENT  # part 1 is only trying
    row = await ob.apply_status_report("sms", 11, "+4915112345678", PartState.DELIVERED, None)  # type: ignore[assignment]
    assert row.state == Q.DELIVERED and row.error is None
    # A repeated report changes nothing and still names the row.
    assert await ob.apply_status_report("sms", 11, None, PartState.DELIVERED, None) == row
    assert await ob.apply_status_report("sms", 11, None, PartState.FAILED, "late") is None


async def test_one_failed_part_fails_the_message_with_its_detail(store: Store) -> None:
    ob = store.outbox
    row = await sent_row(store, "r", [1, 2])
    row = await ob.apply_status_report(  # type: ignore[assignment]
        "sms", 2, None, PartState.FAILED, "The phone at +4915112345678 is switched off."
    )
    assert row.state == Q.FAILED and row.error == "The phone at +4915112345678 is switched off."
    row = await ob.apply_status_report("sms", 1, None, PartState.DELIVERED, None)  # type: ignore[assignment]
    assert row.state == Q.FAILED and row.parts[0].state == PartState.DELIVERED
    other = await sent_row(store, "r2", [3])
    other = await ob.apply_status_report("sms", 3, None, PartState.FAILED, None)  # type: ignore[assignment]
    assert other.state == Q.FAILED and other.error  # a plain-words default


async def test_reference_wraparound_picks_the_newest_open_part(
    store: Store, clock: FakeClock
) -> None:
    ob = store.outbox
    old = await sent_row(store, "old", [42], conv="+4915100000001", clock=clock)
    # 256 references later the modem hands out 42 again, for another message.
    new = await sent_row(store, "new", [41, 42], conv="+4915100000001", clock=clock)
    got = await ob.apply_status_report("sms", 42, "+4915100000001", PartState.DELIVERED, None)
    assert got is not None and got.id == new.id and got.parts[1].state == PartState.DELIVERED
    assert (await ob.get(old.id)).parts[0].state == PartState.SENT  # type: ignore[union-attr]
    # The recipient decides between two open parts with the same reference.
    third = await sent_row(store, "third", [42], conv="+4917600000002", clock=clock)
    got = await ob.apply_status_report("sms", 42, "+4915100000001", PartState.DELIVERED, None)
    assert got is not None and got.id == old.id and got.state == Q.DELIVERED
    # A report may give the national form of the number.
    got = await ob.apply_status_report("sms", 42, "017600000002", PartState.FAILED, "gone")
    assert got is not None and got.id == third.id and got.state == Q.FAILED
    assert await ob.apply_status_report("sms", 99, None, PartState.DELIVERED, None) is None
    assert await ob.apply_status_report("sms", 41, "+4930123456", PartState.DELIVERED, None) is None
    assert await ob.apply_status_report("phone", 41, None, PartState.DELIVERED, None) is None


async def test_report_before_mark_sent_is_kept_and_applied(store: Store) -> None:
    ob = store.outbox
    row, _ = await ob.enqueue(req("r"), 2)
    await ob.mark_sending(row.id)
    await ob.mark_part_sent(row.id, 0, 5)
    row = await ob.apply_status_report("sms", 5, None, PartState.DELIVERED, None)  # type: ignore[assignment]
    assert row.state == Q.SENDING and row.parts[0].state == PartState.DELIVERED
    await ob.mark_part_sent(row.id, 1, 6)
    await ob.apply_status_report("sms", 6, None, PartState.DELIVERED, None)
    row = await ob.mark_sent(row.id)
    assert row.state == Q.DELIVERED
    with pytest.raises(ValueError):
        await ob.apply_status_report("sms", 5, None, PartState.PENDING, None)


async def test_report_on_an_ambiguous_message_leaves_it_to_a_person(store: Store) -> None:
    ob = store.outbox
    row, _ = await ob.enqueue(req("r"), 2)
    await ob.mark_sending(row.id)
    await ob.mark_part_sent(row.id, 0, 5)
    await ob.mark_ambiguous(row.id)
    row = await ob.apply_status_report("sms", 5, None, PartState.FAILED, "no")  # type: ignore[assignment]
    assert row.state == Q.AMBIGUOUS and row.parts[0].state == PartState.FAILED


# -- recovery and a person's decision -----------------------------------------------------


async def test_recover_interrupted_after_restart(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    s = await Store.open(path, clock=clock)
    a, _ = await s.outbox.enqueue(req("a", "+491"), 2)
    b, _ = await s.outbox.enqueue(req("b", "+492", line="phone"), 1)
    q, _ = await s.outbox.enqueue(req("q", "+493"), 1)
    await s.outbox.mark_sending(a.id)
    await s.outbox.mark_part_sent(a.id, 0, 77)
    await s.outbox.mark_sending(b.id)
    assert await s.outbox.recover_interrupted() == []  # in flight here, not interrupted
    await s.close()  # the process "dies" with a and b SENDING

    s = await Store.open(path, clock=clock)
    [ra] = await s.outbox.recover_interrupted(line_id="sms")
    assert ra.id == a.id and ra.state == Q.AMBIGUOUS and ra.error == INTERRUPTED_ERROR
    assert ra.parts[0].reference == 77  # what is known about the send is kept
    await s.outbox.mark_sending(q.id)  # a line that is already running
    [rb] = await s.outbox.recover_interrupted()
    assert rb.id == b.id and rb.state == Q.AMBIGUOUS
    assert await s.outbox.recover_interrupted() == []
    assert (await s.outbox.get(q.id)).state == Q.SENDING  # type: ignore[union-attr]
    # The sms line is stopped mid-send and started again in this process: it names itself.
    [rq] = await s.outbox.recover_interrupted(line_id="sms")
    assert rq.id == q.id and rq.state == Q.AMBIGUOUS and rq.error == INTERRUPTED_ERROR
    await s.close()


async def test_resolve_resend_sends_the_whole_message_again(store: Store, clock: FakeClock) -> None:
    ob = store.outbox
    row, _ = await ob.enqueue(req("r"), 2)
    await ob.mark_sending(row.id)
    await ob.mark_part_sent(row.id, 0, 77)
    await ob.mark_retry(row.id, "busy", 0)
    await ob.mark_sending(row.id)
    await ob.mark_ambiguous(row.id)
    clock.advance(5000)
    row = await ob.resolve(row.id, "resend")
    assert row.state == Q.QUEUED and row.error is None and row.attempts == 0
    assert row.next_attempt_at == T0 + 5000
    assert [(p.state, p.reference, p.detail) for p in row.parts] == [
        (PartState.PENDING, None, None)
    ] * 2
    assert [r.id for r in await ob.ready("sms", clock.now)] == [row.id]
    # A failed message can be resent too, and either can be cancelled.
    await ob.mark_sending(row.id)
    await ob.mark_failed(row.id, "The number does not exist.")
    row = await ob.resolve(row.id, "cancel")
    assert row.state == Q.CANCELLED
    with pytest.raises(StoreStateError):
        await ob.resolve(row.id, "resend")
    with pytest.raises(ValueError):
        await ob.resolve((await _row_in(store, Q.AMBIGUOUS, "z")).id, "maybe")  # type: ignore[arg-type]


# -- reporting to the room, caps ----------------------------------------------------------


async def test_unreported_until_the_bridge_has_shown_the_state(store: Store) -> None:
    ob = store.outbox
    a, _ = await ob.enqueue(req("a", "+491"), 1)
    b, _ = await ob.enqueue(req("b", "+492"), 1)
    assert [r.id for r in await ob.unreported()] == [a.id, b.id]
    assert [r.id for r in await ob.unreported(limit=1)] == [a.id]
    row = await ob.mark_reported(a.id, Q.QUEUED)
    assert row.reported_state == Q.QUEUED
    assert [r.id for r in await ob.unreported()] == [b.id]
    await ob.mark_sending(a.id)
    assert [r.id for r in await ob.unreported()] == [a.id, b.id]
    await ob.mark_failed(a.id, "no")
    await ob.mark_reported(a.id, Q.SENDING)  # the bridge was behind: still unreported
    assert [r.id for r in await ob.unreported()] == [a.id, b.id]
    await ob.mark_reported(a.id, Q.FAILED)
    await ob.mark_reported(a.id, Q.FAILED)
    assert [r.id for r in await ob.unreported()] == [b.id]


async def test_count_requested_for_daily_caps(store: Store, clock: FakeClock) -> None:
    ob = store.outbox
    await ob.enqueue(req("1", by="@kid:test"), 1)
    clock.advance(1000)
    await ob.enqueue(req("2", by="@kid:test"), 3)
    c, _ = await ob.enqueue(req("3", by="@kid:test"), 1)
    await ob.enqueue(req("4", by="@mum:test"), 1)
    await ob.enqueue(req("2", by="@kid:test"), 1)  # a repeat is not a new message
    assert await ob.count_requested("@kid:test", T0) == 3
    assert await ob.count_requested("@kid:test", T0 + 1) == 2
    await ob.mark_failed(c.id, "no")
    assert await ob.count_requested("@kid:test", T0) == 3  # a failed text still cost a try
    await ob.resolve(c.id, "cancel")
    assert await ob.count_requested("@kid:test", T0) == 2
    assert await ob.count_requested("@nobody:test", 0) == 0


# -- store.changed, concurrency -----------------------------------------------------------


async def test_changed_wakes_waiters_on_commit(store: Store) -> None:
    assert await store.changed.wait(0.05) is False
    waiter = asyncio.create_task(store.changed.wait(5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await store.inbox.add(msg("k"))
    assert await asyncio.wait_for(waiter, 1) is True
    seen = store.changed.version
    await store.inbox.add(msg("k2"))
    assert await store.changed.wait(0.01, since=seen) is True  # committed before the wait


async def test_every_committing_method_notifies(store: Store) -> None:
    ob, f = store.outbox, store.fragments
    calls: list[Any] = [
        lambda: store.inbox.add(msg("k")),
        lambda: store.inbox.mark_delivered(1, "$e"),
        lambda: f.add("sms", "g", 1, 1, "x", "g|1", T0),
        lambda: f.complete("sms", "g", msg("g")),
        lambda: ob.enqueue(req("r"), 2),
        lambda: ob.mark_sending(1),
        lambda: ob.mark_part_sent(1, 0, 1),
        lambda: ob.mark_retry(1, "busy", 0),
        lambda: ob.mark_sending(1),
        lambda: ob.mark_part_sent(1, 1, 2),
        lambda: ob.mark_sent(1),
        lambda: ob.apply_status_report("sms", 1, None, PartState.FAILED, "no"),
        lambda: ob.resolve(1, "resend"),
        lambda: ob.mark_sending(1),
        lambda: ob.mark_ambiguous(1),
        lambda: ob.resolve(1, "cancel"),
        lambda: ob.mark_reported(1, Q.CANCELLED),
        lambda: ob.enqueue(req("r2"), 1),
        lambda: ob.mark_failed(2, "no"),
    ]
    for call in calls:
        before = store.changed.version
        await call()
        assert store.changed.version == before + 1, call
    before = store.changed.version
    await ob.ready("sms", T0)
    await store.inbox.pending()
    assert store.changed.version == before  # reads do not


async def test_changed_sees_commits_from_another_process(store: Store) -> None:
    waiter = asyncio.create_task(store.changed.wait(5))
    await asyncio.sleep(0.05)

    def other_process() -> None:
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "INSERT INTO inbox (line_id, dedup_key, conversation, sender, body, sent_at, "
                "kind, state, received_at) VALUES ('sms', 'x', 'c', 'c', 'b', 0, 'text', "
                "'received', 0)"
            )

    await asyncio.to_thread(other_process)
    assert await asyncio.wait_for(waiter, 2) is True
    assert len(await store.inbox.pending()) == 1


async def test_concurrent_writers_are_serialised(store: Store) -> None:
    results = await asyncio.gather(
        *(store.inbox.add(msg(f"k{i % 20}", body=str(i))) for i in range(60)),
        *(store.outbox.enqueue(req(f"r{i % 10}"), 2) for i in range(30)),
    )
    inbox = results[:60]
    assert sum(created for _, created in inbox) == 20
    assert len({row.id for row, _ in inbox}) == 20
    assert len(await store.inbox.pending(limit=1000)) == 20
    assert len({row.id for row, _ in results[60:]}) == 10
    assert await store.check() == []


async def test_a_cancelled_write_leaves_no_open_transaction(store: Store) -> None:
    for delay in range(12):
        task = asyncio.create_task(store.outbox.enqueue(req(f"c{delay}"), 3))
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        try:
            row, _ = await task
        except asyncio.CancelledError:
            row = None
        after = await store.outbox.by_request(f"c{delay}")
        # Either the whole enqueue happened or none of it did, never part of it.
        assert after is None or len(after.parts) == 3
        assert row is None or row == after
        assert not store._db.conn.in_transaction
    row, created = await store.inbox.add(msg("after"))
    assert created and await store.inbox.get(row.id) == row


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = await Store.open(tmp_path / "s.db")
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.inbox.add(msg("k"))
    with pytest.raises(StoreError, match="closed"):
        await s.outbox.get(1)
    assert await s.changed.wait(0.6) is False


def test_recipients_compare_across_number_formats() -> None:
    from appliance.store.outbox import _same_recipient

    assert _same_recipient("+4915112345678", "+4915112345678")
    assert _same_recipient("015112345678", "+4915112345678")  # national form in a report
    assert _same_recipient("4915112345678", "+49 151 1234-5678")
    assert not _same_recipient("+4915112345679", "+4915112345678")
    assert not _same_recipient("12345", "+4915112345")  # too short to match on a suffix
    assert _same_recipient("AcmeBank", "ACMEBANK")
    assert not _same_recipient("ACMEBANK", "+4915112345678")


async def test_check_reports_broken_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = await Store.open(path)
    assert await s.outbox.by_state() == []
    await s.close()
    with sqlite3.connect(path) as conn:  # foreign keys are off by default in sqlite3
        conn.execute("INSERT INTO outbox_parts (outbox_id, idx, state) VALUES (77, 0, 'pending')")
    s = await Store.open(path)
    problems = await s.check()
    await s.close()
    assert problems == ["foreign key: a row of outbox_parts points at a missing outbox row"]


async def test_a_different_part_with_a_held_index_is_kept_as_a_variant(store: Store) -> None:
    f = store.fragments
    assert (await f.hold("sms", "g", 1, 2, "a1", "g|1|a", T0)).count == 1
    held = await f.hold("sms", "g", 1, 2, "b1", "g|1|b", T0 + 1)
    assert (held.group_key, held.count, held.variants) == ("g#2", 1, 2)
    again = await f.hold("sms", "g", 1, 2, "b1", "g|1|b", T0 + 2)  # a re-read: not twice
    assert (again.group_key, again.count, again.variants) == ("g#2", 1, 2)
    assert (await f.hold("sms", "g", 2, 2, "a2", "g|2|a", T0 + 3)).group_key == "g"
    assert [x.payload for x in await f.family("sms", "g")] == ["a1", "b1", "a2"]
    assert [x.payload for x in await f.get("sms", "g")] == ["a1", "a2"]
    stored = await f.complete_family("sms", "g#2", [msg("q", body="a1 b1 a2")])
    assert [created for _, created in stored] == [True]
    assert await f.family("sms", "g") == []
    assert (await f.hold("sms", "g", 1, 2, "b1", "g|1|b", T0 + 4)).count == 0


async def test_due_now_makes_rows_waiting_for_a_retry_due(store: Store, clock: FakeClock) -> None:
    o = store.outbox
    waiting, _ = await o.enqueue(req("$w"), 1)
    other_line, _ = await o.enqueue(req("$o", line="phone"), 1)
    for row, line in ((waiting, "sms"), (other_line, "phone")):
        await o.mark_sending(row.id, line_id=line)
        await o.mark_retry(row.id, "no network", 600)
    assert await o.ready("sms", clock.now) == []
    assert await o.due_now("sms") == 1
    assert [r.id for r in await o.ready("sms", clock.now)] == [waiting.id]
    assert await o.ready("phone", clock.now) == []  # another line's rows keep their time
    assert await o.due_now("sms") == 0
