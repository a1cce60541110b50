"""Parts of multipart messages, held durably until the message is whole or given up on."""

from __future__ import annotations

import sqlite3

from appliance.store import inbox
from appliance.store.db import Db
from appliance.store.models import Fragment, InboundMessage, InboxRow

# How long a completed part's dedup key is remembered. Re-reads after a crash happen within
# minutes (the next modem sweep); a week covers a modem left unplugged over a holiday.
DONE_KEEP_MS = 7 * 24 * 3600 * 1000

_COLUMNS = "line_id, group_key, idx, total, payload, dedup_key, received_at, sent_at"
# Built from constants only; every value is a bound parameter.
_INSERT = f"INSERT OR IGNORE INTO fragments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_SELECT = f"SELECT {_COLUMNS} FROM fragments"  # noqa: S608


def _fragment(r: sqlite3.Row) -> Fragment:
    return Fragment(
        line_id=r["line_id"],
        group_key=r["group_key"],
        index=r["idx"],
        total=r["total"],
        payload=r["payload"],
        dedup_key=r["dedup_key"],
        received_at=r["received_at"],
        sent_at=r["sent_at"],
    )


class Fragments:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(
        self,
        line_id: str,
        group_key: str,
        index: int,
        total: int,
        payload: str,
        dedup_key: str,
        received_at_ms: int,
        sent_at_ms: int | None = None,
    ) -> int:
        """Store one part; returns how many parts of the group are held now.

        A part seen before (same line, group and index) is ignored. A part that already went
        into a completed message returns 0 and is not held: the caller may delete it from
        the modem, and no second copy of the message is ever assembled.
        """
        if total < 1 or index < 0:
            raise ValueError(f"fragment index {index} of {total} is not a valid part number")
        async with self._db.write() as conn:
            done = await self._db.fetchone(
                "SELECT 1 FROM fragments_done WHERE line_id = ? AND dedup_key = ?",
                (line_id, dedup_key),
            )
            if done is not None:
                return 0
            await conn.execute(
                _INSERT,
                (
                    line_id,
                    group_key,
                    index,
                    total,
                    payload,
                    dedup_key,
                    received_at_ms,
                    received_at_ms if sent_at_ms is None else sent_at_ms,
                ),
            )
            r = await self._db.fetchone(
                "SELECT count(*) FROM fragments WHERE line_id = ? AND group_key = ?",
                (line_id, group_key),
            )
            return int(r[0]) if r is not None else 0

    async def get(self, line_id: str, group_key: str) -> list[Fragment]:
        """The held parts of a group, by index."""
        async with self._db.read():
            rows = await self._db.fetchall(
                _SELECT + " WHERE line_id = ? AND group_key = ? ORDER BY idx",
                (line_id, group_key),
            )
        return [_fragment(r) for r in rows]

    async def complete(
        self, line_id: str, group_key: str, msg: InboundMessage
    ) -> tuple[InboxRow, bool]:
        """In one transaction: store `msg` (deduplicated like inbox.add) and drop the parts.

        Used both when every part arrived and when an expired group is given up on (then
        `msg` carries what did arrive and a note); either way no part outlives the message
        and no message exists without its parts having been dropped.
        """
        if msg.line_id != line_id:
            raise ValueError(f"message is for line {msg.line_id!r}, fragments for {line_id!r}")
        async with self._db.write() as conn:
            row, created = await inbox.insert(self._db, conn, msg)
            now = self._db.clock()
            await conn.execute(
                "INSERT OR IGNORE INTO fragments_done (line_id, dedup_key, done_at) "
                "SELECT line_id, dedup_key, ? FROM fragments WHERE line_id = ? AND group_key = ?",
                (now, line_id, group_key),
            )
            await conn.execute(
                "DELETE FROM fragments WHERE line_id = ? AND group_key = ?", (line_id, group_key)
            )
            await conn.execute(
                "DELETE FROM fragments_done WHERE done_at < ?", (now - DONE_KEEP_MS,)
            )
            return row, created

    async def take(
        self, line_id: str, group_key: str, msg: InboundMessage
    ) -> tuple[InboxRow, bool]:
        """complete() under the name the expiry path reads best with."""
        return await self.complete(line_id, group_key, msg)

    async def expired(self, older_than_ms: int) -> list[tuple[str, str]]:
        """Groups whose first part arrived before `older_than_ms`, oldest first."""
        async with self._db.read():
            rows = await self._db.fetchall(
                "SELECT line_id, group_key FROM fragments GROUP BY line_id, group_key "
                "HAVING min(received_at) < ? ORDER BY min(received_at), line_id, group_key",
                (older_than_ms,),
            )
        return [(r["line_id"], r["group_key"]) for r in rows]
