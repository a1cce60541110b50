"""Inbound messages: RECEIVED until the bridge hands them on, QUARANTINED if unreadable."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import aiosqlite

from appliance.store.db import Db
from appliance.store.errors import StoreNotFound
from appliance.store.models import InboundMessage, InboxRow, InboxState

_COLUMNS = (
    "id, line_id, dedup_key, conversation, sender, body, sent_at, kind, raw, note, meta, "
    "state, received_at, delivered_ref"
)
# Built from constants only; every value is a bound parameter.
_SELECT = f"SELECT {_COLUMNS} FROM inbox"  # noqa: S608
_INSERT = f"""
    INSERT INTO inbox (line_id, dedup_key, conversation, sender, body, sent_at, kind, raw,
                       note, meta, state, received_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    RETURNING {_COLUMNS}
"""  # noqa: S608
# pending() leaves a media row's raw out: its files (up to the phone line's media cap each)
# are read with get() one row at a time, not a hundred rows at once.
_LEAN_COLUMNS = _COLUMNS.replace("raw,", "CASE WHEN kind = 'media' THEN NULL ELSE raw END AS raw,")
_SELECT_LEAN = f"SELECT {_LEAN_COLUMNS} FROM inbox"  # noqa: S608
_DELIVER = f"UPDATE inbox SET state = ?, delivered_ref = ? WHERE id = ? RETURNING {_COLUMNS}"  # noqa: S608


def _row(r: sqlite3.Row) -> InboxRow:
    meta: dict[str, Any] = json.loads(r["meta"])
    return InboxRow(
        id=r["id"],
        message=InboundMessage(
            line_id=r["line_id"],
            conversation=r["conversation"],
            sender=r["sender"],
            body=r["body"],
            sent_at=r["sent_at"],
            dedup_key=r["dedup_key"],
            kind=r["kind"],
            raw=r["raw"],
            note=r["note"],
            meta=meta,
        ),
        state=InboxState(r["state"]),
        received_at=r["received_at"],
        delivered_ref=r["delivered_ref"],
    )


async def insert(db: Db, conn: aiosqlite.Connection, msg: InboundMessage) -> tuple[InboxRow, bool]:
    """Insert inside the caller's transaction; (existing row, False) for a duplicate."""
    existing = await db.fetchone(
        _SELECT + " WHERE line_id = ? AND dedup_key = ?",
        (msg.line_id, msg.dedup_key),
    )
    if existing is not None:
        return _row(existing), False
    state = InboxState.QUARANTINED if msg.kind == "quarantine" else InboxState.RECEIVED
    # Serialised before the INSERT so that meta a JSON encoder rejects fails the call
    # instead of storing something unreadable.
    meta = json.dumps(msg.meta, ensure_ascii=False, sort_keys=True)
    async with conn.execute(
        _INSERT,
        (
            msg.line_id,
            msg.dedup_key,
            msg.conversation,
            msg.sender,
            msg.body,
            msg.sent_at,
            msg.kind,
            msg.raw,
            msg.note,
            meta,
            state.value,
            db.clock(),
        ),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None  # RETURNING always yields the inserted row
    return _row(row), True


class Inbox:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, msg: InboundMessage) -> tuple[InboxRow, bool]:
        """Durable (committed with synchronous=FULL) before it returns."""
        async with self._db.write() as conn:
            return await insert(self._db, conn, msg)

    async def has(self, line_id: str, dedup_key: str) -> bool:
        """Whether the message is stored already: lets a transport skip fetching a large
        payload (an MMS picture) it would only hand in as a duplicate."""
        async with self._db.read():
            r = await self._db.fetchone(
                "SELECT 1 FROM inbox WHERE line_id = ? AND dedup_key = ?", (line_id, dedup_key)
            )
        return r is not None

    async def get(self, row_id: int) -> InboxRow | None:
        async with self._db.read():
            r = await self._db.fetchone(_SELECT + " WHERE id = ?", (row_id,))
        return None if r is None else _row(r)

    async def pending(self, limit: int = 100, line_id: str | None = None) -> list[InboxRow]:
        """RECEIVED rows in id order, which is arrival order within every conversation.
        A `kind="media"` row comes without its `raw` (None): `get(row.id)` has it."""
        return await self._by_state(
            InboxState.RECEIVED, limit, line_id, unreported_only=False, lean=True
        )

    async def quarantined(
        self, limit: int = 100, line_id: str | None = None, *, include_reported: bool = False
    ) -> list[InboxRow]:
        """QUARANTINED rows not yet reported to a person (mark_delivered records the report).

        With include_reported=True, all of them, for the dashboard.
        """
        return await self._by_state(
            InboxState.QUARANTINED, limit, line_id, unreported_only=not include_reported
        )

    async def _by_state(
        self,
        state: InboxState,
        limit: int,
        line_id: str | None,
        *,
        unreported_only: bool,
        lean: bool = False,
    ) -> list[InboxRow]:
        sql = (_SELECT_LEAN if lean else _SELECT) + " WHERE state = ?"
        params: list[Any] = [state.value]
        if line_id is not None:
            sql += " AND line_id = ?"
            params.append(line_id)
        if unreported_only:
            sql += " AND delivered_ref IS NULL"
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        async with self._db.read():
            rows = await self._db.fetchall(sql, params)
        return [_row(r) for r in rows]

    async def mark_delivered(self, row_id: int, ref: str) -> InboxRow:
        """RECEIVED -> DELIVERED. Idempotent: a second call keeps the first ref.

        On a QUARANTINED row it records that a person was told (ref says where); the row
        stays QUARANTINED so that it is never mistaken for a readable message.
        """
        async with self._db.write():
            r = await self._db.fetchone(_SELECT + " WHERE id = ?", (row_id,))
            if r is None:
                raise StoreNotFound(f"inbox row {row_id} does not exist")
            row = _row(r)
            if row.delivered_ref is not None:
                return row
            state = InboxState.DELIVERED if row.state == InboxState.RECEIVED else row.state
            r = await self._db.fetchone(
                _DELIVER,
                (state.value, ref, row_id),
            )
            assert r is not None
            return _row(r)
