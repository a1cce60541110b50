"""Parts of multipart messages, held durably until the message is whole or given up on."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

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


# A part whose index is taken, in its group, by a part with other content is held in a
# variant group "<group>#2", "#3", ...: two texts that share a concatenation reference both
# survive, and the transport decides later which parts belong together.
_VARIANT = re.compile(r"#(\d+)$")


def variant_base(group_key: str) -> str:
    """The group a variant group key belongs to (a plain group key is its own base)."""
    return _VARIANT.sub("", group_key)


@dataclass(frozen=True)
class Held:
    """Where fragments.hold() put a part."""

    group_key: str  # the group or variant group now holding it
    count: int  # parts held in that group; 0: the part was folded into a message before
    variants: int  # groups held under the same base, this one included


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
        """Store one part; returns how many parts of its group are held now (see hold())."""
        held = await self.hold(
            line_id, group_key, index, total, payload, dedup_key, received_at_ms, sent_at_ms
        )
        return held.count

    async def hold(
        self,
        line_id: str,
        group_key: str,
        index: int,
        total: int,
        payload: str,
        dedup_key: str,
        received_at_ms: int,
        sent_at_ms: int | None = None,
    ) -> Held:
        """Store one part durably, whatever else is held.

        A part seen before (same line and dedup key) is not stored twice. A part whose index
        is already held with another dedup key goes to the first variant group of
        `group_key` that lacks that index (`family()` lists them all). A part that already
        went into a completed message returns count 0 and is not held: the caller may
        delete it from the modem, and no second copy of the message is ever assembled.
        """
        if total < 1 or index < 0:
            raise ValueError(f"fragment index {index} of {total} is not a valid part number")
        async with self._db.write() as conn:
            done = await self._db.fetchone(
                "SELECT 1 FROM fragments_done WHERE line_id = ? AND dedup_key = ?",
                (line_id, dedup_key),
            )
            if done is not None:
                return Held(group_key, 0, 0)
            base = variant_base(group_key)
            family = await self._family(line_id, base)
            seen = next((f.group_key for f in family if f.dedup_key == dedup_key), None)
            keys = sorted({f.group_key for f in family}, key=_variant_number)
            if seen is not None:
                target = seen
            else:
                taken = {(f.group_key, f.index) for f in family}
                n = 1
                while (_variant_key(base, n), index) in taken:
                    n += 1
                target = _variant_key(base, n)
                await conn.execute(
                    _INSERT,
                    (
                        line_id,
                        target,
                        index,
                        total,
                        payload,
                        dedup_key,
                        received_at_ms,
                        received_at_ms if sent_at_ms is None else sent_at_ms,
                    ),
                )
                if target not in keys:
                    keys.append(target)
            count = 1 + sum(1 for f in family if f.group_key == target and f.dedup_key != dedup_key)
            return Held(target, count, len(keys))

    async def family(self, line_id: str, group_key: str) -> list[Fragment]:
        """The held parts of a group and of its variant groups, in the order they arrived."""
        async with self._db.read():
            return await self._family(line_id, group_key)

    async def _family(self, line_id: str, group_key: str) -> list[Fragment]:
        base = variant_base(group_key)
        prefix = base + "#"
        rows = await self._db.fetchall(
            _SELECT + " WHERE line_id = ? AND (group_key = ? OR substr(group_key, 1, ?) = ?)"
            " ORDER BY received_at, group_key, idx",
            (line_id, base, len(prefix), prefix),
        )
        return [
            f
            for f in map(_fragment, rows)
            if f.group_key == base or _VARIANT.fullmatch(f.group_key[len(base) :])
        ]

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

    async def complete_family(
        self, line_id: str, group_key: str, messages: list[InboundMessage]
    ) -> list[tuple[InboxRow, bool]]:
        """complete() for a group with its variant groups: in one transaction, store every
        message (the texts the parts were sorted into, or one quarantined row) and drop the
        parts of them all."""
        if any(m.line_id != line_id for m in messages):
            raise ValueError(f"a message is for another line than {line_id!r}")
        async with self._db.write() as conn:
            stored = [await inbox.insert(self._db, conn, m) for m in messages]
            now = self._db.clock()
            for frag in await self._family(line_id, group_key):
                await conn.execute(
                    "INSERT OR IGNORE INTO fragments_done (line_id, dedup_key, done_at) "
                    "VALUES (?, ?, ?)",
                    (line_id, frag.dedup_key, now),
                )
                await conn.execute(
                    "DELETE FROM fragments WHERE line_id = ? AND group_key = ? AND idx = ?",
                    (line_id, frag.group_key, frag.index),
                )
            return stored

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


def _variant_key(base: str, n: int) -> str:
    return base if n == 1 else f"{base}#{n}"


def _variant_number(group_key: str) -> int:
    match = _VARIANT.search(group_key)
    return int(match.group(1)) if match else 1
