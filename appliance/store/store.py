"""`Store`: the one durable place for messages between the transports and the bridge."""

from __future__ import annotations

import os
from pathlib import Path

import aiosqlite

from appliance.store.attachments import Attachments
from appliance.store.db import Clock, Db, connect, wall_clock_ms
from appliance.store.doorbell import Doorbell
from appliance.store.fragments import Fragments
from appliance.store.inbox import Inbox
from appliance.store.notify import Notifier
from appliance.store.outbox import Outbox


class Store:
    """Open with `await Store.open(path)`; see docs/store.md for schema and guarantees."""

    def __init__(self, db: Db, path: Path, interrupted: frozenset[int]) -> None:
        self.path = path
        self._db = db
        self.changed: Notifier = db.changed
        self.inbox = Inbox(db)
        self.fragments = Fragments(db)
        self.outbox = Outbox(db, interrupted)
        # Files of outbox rows, in `<db name>-files/` next to the database.
        self.attachments = Attachments(path.with_name(path.name + "-files"))
        # Lines subscribe to hear another process's commits (see store/doorbell.py).
        self.doorbell = Doorbell(path, on_ring=self.changed._wake_waiters)
        self.changed._set_ring(self.doorbell.ring)
        self.changed._set_rung(lambda: self.doorbell.listening)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], clock: Clock | None = None) -> Store:
        """Create or migrate the database at `path`.

        `clock` returns milliseconds since the epoch (tests pass a fake one).
        """
        path = Path(path)
        conn: aiosqlite.Connection = await connect(path)
        db = Db(conn, clock or wall_clock_ms, Notifier())
        try:
            rows = await db.fetchall("SELECT id FROM outbox WHERE state = 'sending'")
            await db.other_process_committed()
        except BaseException:
            await conn.close()
            raise
        db.changed._set_probe(db.other_process_committed)
        return cls(db, path, frozenset(int(r[0]) for r in rows))

    async def close(self) -> None:
        """Close the connection; later calls raise StoreError. Closing twice is harmless."""
        self.changed._set_probe(None)
        self.changed._set_ring(None)
        self.doorbell.close()
        async with self._db.lock:
            if not self._db.closed:
                self._db.closed = True
                await self._db.conn.close()

    async def check(self) -> list[str]:
        """Problems PRAGMA integrity_check and foreign_key_check find; empty when healthy."""
        async with self._db.read():
            rows = await self._db.fetchall("PRAGMA integrity_check")
            problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
            for r in await self._db.fetchall("PRAGMA foreign_key_check"):
                # WITHOUT ROWID tables (outbox_parts) report no rowid.
                row = "a row" if r[1] is None else f"row {r[1]}"
                problems.append(f"foreign key: {row} of {r[0]} points at a missing {r[2]} row")
        return problems

    async def schema_version(self) -> int:
        async with self._db.read():
            r = await self._db.fetchone("PRAGMA user_version")
        return int(r[0]) if r is not None else 0
