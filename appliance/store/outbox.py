"""Outbound messages and their parts, with the state machine enforced on every write.

    QUEUED --mark_sending--> SENDING --mark_sent--> SENT --reports--> DELIVERED | FAILED
      ^  |                    | | |
      |  +--mark_failed--+    | | +--mark_ambiguous / recover_interrupted--> AMBIGUOUS
      |                  v    | |                                              |
      |                FAILED <-+--mark_failed                                 |
      |                  |      |                                              |
      +--mark_retry------|------+                                              |
      +--resolve(resend)-+----------------------------------resolve(resend)---+
                         +--resolve(cancel)--> CANCELLED <--resolve(cancel)----+

docs/store.md explains the states; the point of AMBIGUOUS is that nothing that may already
have gone out is ever sent again without a person saying so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from appliance.store.db import Db
from appliance.store.errors import StoreNotFound, StoreStateError
from appliance.store.models import OutboundRequest, OutboxPart, OutboxRow, OutboxState, PartState

Q = OutboxState

INTERRUPTED_ERROR = (
    "Textbridge restarted while sending this; it may or may not have been sent. "
    "Say retry to send it again or cancel."
)
FAILED_BY_REPORT = "The network reported that this text could not be delivered."

# Every transition any method may make; anything else raises StoreStateError.
ALLOWED: dict[OutboxState, frozenset[OutboxState]] = {
    Q.QUEUED: frozenset({Q.SENDING, Q.FAILED}),
    # DELIVERED/FAILED straight from SENDING: status reports can overtake mark_sent.
    Q.SENDING: frozenset({Q.SENT, Q.DELIVERED, Q.FAILED, Q.QUEUED, Q.AMBIGUOUS}),
    Q.SENT: frozenset({Q.DELIVERED, Q.FAILED}),
    Q.AMBIGUOUS: frozenset({Q.QUEUED, Q.CANCELLED}),
    Q.FAILED: frozenset({Q.QUEUED, Q.CANCELLED}),
    Q.DELIVERED: frozenset(),
    Q.CANCELLED: frozenset(),
}

_COLUMNS = (
    "id, request_id, line_id, conversation, body, requested_by, meta, state, attempts, "
    "next_attempt_at, error, created_at, updated_at, reported_state"
)
_SELECT = f"SELECT {_COLUMNS} FROM outbox"  # noqa: S608 - constant column list
_SELECT_PARTS = "SELECT outbox_id, idx, state, reference, detail FROM outbox_parts"
_FROM_QUEUED = frozenset({Q.QUEUED})
_FROM_SENDING = frozenset({Q.SENDING})
_FROM_SENT = frozenset({Q.SENT})
_FAILABLE = frozenset({Q.QUEUED, Q.SENDING})
_RESOLVABLE = frozenset({Q.AMBIGUOUS, Q.FAILED})
_SELECT_REPORTED = (
    "SELECT p.outbox_id, p.idx, p.state, o.conversation FROM outbox_parts p "
    "JOIN outbox o ON o.id = p.outbox_id WHERE p.reference = ? AND o.line_id = ?"
)
# INDEXED BY: without it the planner walks every part ever sent with this reference; the
# partial index holds only the few still awaiting a report.
_SELECT_OPEN = (
    "SELECT p.outbox_id, p.idx, p.state, o.conversation "
    "FROM outbox_parts p INDEXED BY outbox_parts_open "
    "JOIN outbox o ON o.id = p.outbox_id WHERE p.reference = ? AND o.line_id = ? "
    "AND p.state IN ('sent', 'trying')"
)
_NEWEST_FIRST = " ORDER BY p.sent_at DESC, p.outbox_id DESC, p.idx DESC"


def _same_recipient(a: str, b: str) -> bool:
    """Compare a status report's recipient with a conversation.

    Reports may carry the national form (0151...) of an international number (+49151...),
    so numbers match on their last nine digits; alphanumeric ones match case-insensitively.
    """
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    if not da or not db:
        return a.strip().casefold() == b.strip().casefold()
    if da == db:
        return True
    return len(da) >= 9 and len(db) >= 9 and da[-9:] == db[-9:]


def derive(current: OutboxState, parts: Sequence[OutboxPart]) -> OutboxState:
    """A sent message's state from its parts: all delivered, any failed, or still SENT."""
    if parts and all(p.state == PartState.DELIVERED for p in parts):
        return Q.DELIVERED
    if any(p.state == PartState.FAILED for p in parts):
        return Q.FAILED
    return current


class Outbox:
    def __init__(self, db: Db, interrupted: frozenset[int]) -> None:
        self._db = db
        # Rows that were SENDING when the store was opened: only those were interrupted by
        # a restart. Rows that went SENDING since are in flight in this process, and making
        # them AMBIGUOUS (say when a second line starts) would be wrong.
        self._interrupted = interrupted

    # -- reading -------------------------------------------------------------------------

    async def _load(self, where: str, params: Iterable[Any] = ()) -> list[OutboxRow]:
        # `where` is always a literal from this module; values are bound parameters.
        rows = await self._db.fetchall(_SELECT + " " + where, params)
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        parts: dict[int, list[OutboxPart]] = {i: [] for i in ids}
        # Chunked: SQLite limits bound parameters (999 on older builds).
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for p in await self._db.fetchall(
                _SELECT_PARTS + f" WHERE outbox_id IN ({marks}) ORDER BY outbox_id, idx",
                chunk,
            ):
                parts[p["outbox_id"]].append(
                    OutboxPart(p["idx"], PartState(p["state"]), p["reference"], p["detail"])
                )
        return [self._row(r, parts[r["id"]]) for r in rows]

    @staticmethod
    def _row(r: sqlite3.Row, parts: list[OutboxPart]) -> OutboxRow:
        meta: dict[str, Any] = json.loads(r["meta"])
        return OutboxRow(
            id=r["id"],
            request=OutboundRequest(
                request_id=r["request_id"],
                line_id=r["line_id"],
                conversation=r["conversation"],
                body=r["body"],
                requested_by=r["requested_by"],
                meta=meta,
            ),
            state=OutboxState(r["state"]),
            attempts=r["attempts"],
            next_attempt_at=r["next_attempt_at"],
            error=r["error"],
            parts=tuple(parts),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            reported_state=None if r["reported_state"] is None else Q(r["reported_state"]),
        )

    async def _one(self, row_id: int) -> OutboxRow:
        rows = await self._load("WHERE id = ?", (row_id,))
        if not rows:
            raise StoreNotFound(f"outbox row {row_id} does not exist")
        return rows[0]

    async def get(self, row_id: int) -> OutboxRow | None:
        async with self._db.read():
            rows = await self._load("WHERE id = ?", (row_id,))
        return rows[0] if rows else None

    async def by_request(self, request_id: str) -> OutboxRow | None:
        async with self._db.read():
            rows = await self._load("WHERE request_id = ?", (request_id,))
        return rows[0] if rows else None

    async def by_state(
        self, *states: OutboxState, line_id: str | None = None, limit: int = 100
    ) -> list[OutboxRow]:
        """Rows in any of `states`, oldest first (e.g. AMBIGUOUS ones for the bot to list)."""
        if not states:
            return []
        sql = f"WHERE state IN ({','.join('?' * len(states))})"
        params: list[Any] = [s.value for s in states]
        if line_id is not None:
            sql += " AND line_id = ?"
            params.append(line_id)
        params.append(limit)
        async with self._db.read():
            return await self._load(sql + " ORDER BY id LIMIT ?", params)

    async def ready(self, line_id: str, now_ms: int) -> list[OutboxRow]:
        """Per conversation of the line, its head if QUEUED and due; oldest first.

        A conversation's head is its oldest QUEUED or SENDING row, so a message waiting for
        a retry (or in flight) holds back later ones to the same person: texts arrive in
        the order they were written. AMBIGUOUS and final rows do not block.
        """
        async with self._db.read():
            return await self._load(
                """
                WHERE id IN (SELECT min(id) FROM outbox
                             WHERE line_id = ? AND state IN ('queued', 'sending')
                             GROUP BY conversation)
                  AND state = 'queued' AND next_attempt_at <= ?
                ORDER BY id
                """,
                (line_id, now_ms),
            )

    async def next_due(self, line_id: str) -> int | None:
        """When the line's earliest waiting head (see `ready`) comes due, in ms; None if
        there is none."""
        async with self._db.read():
            r = await self._db.fetchone(
                """
                SELECT min(next_attempt_at) FROM outbox
                WHERE id IN (SELECT min(id) FROM outbox
                             WHERE line_id = ? AND state IN ('queued', 'sending')
                             GROUP BY conversation)
                  AND state = 'queued'
                """,
                (line_id,),
            )
        return None if r is None or r[0] is None else int(r[0])

    async def unreported(self, limit: int = 100) -> list[OutboxRow]:
        """Rows whose state the bridge has not yet shown in the room, oldest first."""
        async with self._db.read():
            return await self._load(
                "WHERE reported_state IS NULL OR reported_state <> state ORDER BY id LIMIT ?",
                (limit,),
            )

    async def count_requested(self, requested_by: str, since_ms: int) -> int:
        """Messages this requester enqueued since `since_ms`, cancelled ones not counted."""
        async with self._db.read():
            r = await self._db.fetchone(
                "SELECT count(*) FROM outbox WHERE requested_by = ? AND created_at >= ? "
                "AND state <> 'cancelled'",
                (requested_by, since_ms),
            )
        return int(r[0]) if r is not None else 0

    # -- writing -------------------------------------------------------------------------

    async def enqueue(self, req: OutboundRequest, parts: int) -> tuple[OutboxRow, bool]:
        """Idempotent by request_id: a repeat returns the first row and created=False."""
        if parts < 1:
            raise ValueError(f"a message has at least one part, not {parts}")
        meta = json.dumps(req.meta, ensure_ascii=False, sort_keys=True)
        async with self._db.write() as conn:
            existing = await self._load("WHERE request_id = ?", (req.request_id,))
            if existing:
                return existing[0], False
            now = self._db.clock()
            async with conn.execute(
                """
                INSERT INTO outbox (request_id, line_id, conversation, body, requested_by, meta,
                                    state, attempts, next_attempt_at, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?) RETURNING id
                """,
                (
                    req.request_id,
                    req.line_id,
                    req.conversation,
                    req.body,
                    req.requested_by,
                    meta,
                    now,
                    now,
                    now,
                ),
            ) as cur:
                r = await cur.fetchone()
            assert r is not None
            row_id = int(r[0])
            await conn.executemany(
                "INSERT INTO outbox_parts (outbox_id, idx, state) VALUES (?, ?, 'pending')",
                [(row_id, i) for i in range(parts)],
            )
            return await self._one(row_id), True

    async def _move(
        self,
        row: OutboxRow,
        to: OutboxState,
        what: str,
        sources: frozenset[OutboxState],
        **columns: Any,
    ) -> OutboxRow:
        # `sources` is what this particular method may start from; ALLOWED is the machine.
        if row.state not in sources or to not in ALLOWED[row.state]:
            raise StoreStateError(
                f"outbox row {row.id}: cannot {what} a {row.state.value} message "
                f"({row.state.value} -> {to.value} is not allowed)"
            )
        columns["state"] = to.value
        columns["updated_at"] = self._db.clock()
        # Column names come from this module's keyword arguments, never from callers' data.
        assigns = ", ".join(f"{name} = ?" for name in columns)
        sql = "UPDATE outbox SET " + assigns + " WHERE id = ?"  # noqa: S608
        await self._db.conn.execute(sql, (*columns.values(), row.id))
        return await self._one(row.id)

    async def mark_sending(self, row_id: int, *, line_id: str | None = None) -> OutboxRow:
        """Durable before the first byte goes to the modem: a crash after it is AMBIGUOUS.

        `line_id`: the line that is about to send. If the row was handed to another line
        (`reroute`) since that line read it, this raises StoreStateError and nothing is
        written, so a message can never go out through two lines."""
        async with self._db.write():
            row = await self._one(row_id)
            if line_id is not None and row.request.line_id != line_id:
                raise StoreStateError(
                    f"outbox row {row_id} belongs to line {row.request.line_id} now, "
                    f"not {line_id}"
                )
            return await self._move(row, Q.SENDING, "start sending", _FROM_QUEUED)

    async def reroute(
        self, row_id: int, from_line: str, to_line: str, meta: dict[str, Any]
    ) -> OutboxRow | None:
        """Hand a waiting message to another line; None (and nothing written) unless it is
        QUEUED on `from_line` and no part of it has left.

        Only a message that certainly did not go out may move: a QUEUED row with every part
        PENDING was never accepted by any network (SENDING, AMBIGUOUS and partly sent rows
        stay where they are, so the ambiguous-send policy holds across lines). `meta` is
        merged into the request's meta; attempts and the error start again for the new
        line, and it is due at once. With `mark_sending(line_id=...)` the old line cannot
        start it any more after this commits."""
        async with self._db.write() as conn:
            row = await self._one(row_id)
            if (
                row.state != Q.QUEUED
                or row.request.line_id != from_line
                or any(p.state != PartState.PENDING for p in row.parts)
            ):
                return None
            merged = json.dumps({**row.request.meta, **meta}, ensure_ascii=False, sort_keys=True)
            now = self._db.clock()
            await conn.execute(
                "UPDATE outbox SET line_id = ?, meta = ?, attempts = 0, next_attempt_at = ?, "
                "error = NULL, updated_at = ? WHERE id = ?",
                (to_line, merged, now, now, row_id),
            )
            return await self._one(row_id)

    async def mark_part_sent(
        self, row_id: int, index: int, reference: int, *, last: bool = False
    ) -> OutboxRow:
        """The modem accepted part `index` (0-based) and returned TP-MR `reference`.

        `last`: it was the last part to go, and the row is marked sent in the same commit
        (one fsync instead of two). Durability is the same: a crash before this commit
        leaves the row SENDING, which becomes AMBIGUOUS, whether or not it was merged."""
        if not 0 <= reference <= 255:
            raise ValueError(f"TP-MR reference {reference} is outside 0..255")
        async with self._db.write() as conn:
            row = await self._one(row_id)
            if row.state != Q.SENDING:
                raise StoreStateError(
                    f"outbox row {row_id}: a part can only be sent while sending, "
                    f"not while {row.state.value}"
                )
            if not 0 <= index < len(row.parts):
                raise StoreStateError(
                    f"outbox row {row_id} has {len(row.parts)} part(s); there is no part {index}"
                )
            part = row.parts[index]
            if part.state != PartState.PENDING:
                raise StoreStateError(
                    f"outbox row {row_id}: part {index} is already {part.state.value} "
                    f"(reference {part.reference}); sending it again would duplicate it"
                )
            now = self._db.clock()
            await conn.execute(
                "UPDATE outbox_parts SET state = 'sent', reference = ?, sent_at = ?, "
                "detail = NULL WHERE outbox_id = ? AND idx = ?",
                (reference, now, row_id, index),
            )
            await conn.execute("UPDATE outbox SET updated_at = ? WHERE id = ?", (now, row_id))
            if not last:
                return await self._one(row_id)
            # The row as just written (not read back), then SENT as mark_sent would.
            sent = OutboxPart(index, PartState.SENT, reference, None)
            parts = tuple(sent if p.index == index else p for p in row.parts)
            pending = [p.index for p in parts if p.state == PartState.PENDING]
            if pending:
                raise StoreStateError(
                    f"outbox row {row_id}: part(s) {pending} were never sent, so the message "
                    "cannot be marked sent"
                )
            to = derive(Q.SENT, parts)
            return await self._move(
                dataclasses.replace(row, parts=parts), to, "mark sent", _FROM_SENDING,
                error=self._part_error(parts, to),
            )

    async def mark_sent(self, row_id: int, *, meta: dict[str, Any] | None = None) -> OutboxRow:
        """Every part accepted. Reports that arrived meanwhile decide DELIVERED/FAILED.
        `meta` (what the line learnt sending it, e.g. the network) joins the request's."""
        async with self._db.write():
            row = await self._one(row_id)
            if meta:
                merged = {**row.request.meta, **meta}
                await self._db.conn.execute(
                    "UPDATE outbox SET meta = ? WHERE id = ?",
                    (json.dumps(merged, ensure_ascii=False, sort_keys=True), row_id),
                )
                row = await self._one(row_id)
            return await self._sent(row)

    async def _sent(self, row: OutboxRow) -> OutboxRow:
        pending = [p.index for p in row.parts if p.state == PartState.PENDING]
        if pending and row.state == Q.SENDING:
            raise StoreStateError(
                f"outbox row {row.id}: part(s) {pending} were never sent, so the message "
                "cannot be marked sent"
            )
        to = derive(Q.SENT, row.parts)
        error = self._part_error(row.parts, to)
        return await self._move(row, to, "mark sent", _FROM_SENDING, error=error)

    async def mark_retry(self, row_id: int, error: str, delay_s: float) -> OutboxRow:
        """Back to QUEUED after a retryable error; parts already sent stay sent."""
        if delay_s < 0:
            raise ValueError(f"retry delay {delay_s} is negative")
        async with self._db.write():
            row = await self._one(row_id)
            due = self._db.clock() + round(delay_s * 1000)
            return await self._move(
                row,
                Q.QUEUED,
                "retry",
                _FROM_SENDING,
                attempts=row.attempts + 1,
                next_attempt_at=due,
                error=error,
            )

    async def due_now(self, line_id: str) -> int:
        """Make the line's QUEUED rows that wait for a retry due now (its network is back,
        so the reason they wait is gone); returns how many. Order is unaffected: ready()
        still returns each conversation's oldest row."""
        async with self._db.write() as conn:
            now = self._db.clock()
            cur = await conn.execute(
                "UPDATE outbox SET next_attempt_at = ?, updated_at = ? "
                "WHERE line_id = ? AND state = 'queued' AND next_attempt_at > ?",
                (now, now, line_id, now),
            )
            return int(cur.rowcount)

    async def mark_failed(self, row_id: int, error: str) -> OutboxRow:
        async with self._db.write():
            return await self._move(
                await self._one(row_id), Q.FAILED, "fail", _FAILABLE, error=error
            )

    async def mark_ambiguous(self, row_id: int, error: str = INTERRUPTED_ERROR) -> OutboxRow:
        """Sending stopped where a part may have left without its reference being stored."""
        async with self._db.write():
            return await self._move(
                await self._one(row_id), Q.AMBIGUOUS, "mark ambiguous", _FROM_SENDING, error=error
            )

    async def recover_interrupted(self, line_id: str | None = None) -> list[OutboxRow]:
        """At start: rows left SENDING by an interrupted run become AMBIGUOUS, never resent.

        Without `line_id`, only rows that were already SENDING when this store was opened
        are touched: a second line starting in the same process must not turn the first
        line's send in flight into AMBIGUOUS. With `line_id`, the caller (that line,
        starting) says none of its sends is in flight, so every SENDING row of the line is
        touched, including one left by a line stopped mid-send in this process.
        """
        async with self._db.write():
            if line_id is None:
                rows = await self._load("WHERE state = 'sending' ORDER BY id")
                rows = [r for r in rows if r.id in self._interrupted]
            else:
                rows = await self._load(
                    "WHERE state = 'sending' AND line_id = ? ORDER BY id", (line_id,)
                )
            return [
                await self._move(r, Q.AMBIGUOUS, "recover", _FROM_SENDING, error=INTERRUPTED_ERROR)
                for r in rows
            ]

    async def resolve(self, row_id: int, action: Literal["resend", "cancel"]) -> OutboxRow:
        """A person decided about an AMBIGUOUS or FAILED message.

        resend: the whole message goes again (every part back to PENDING, references
        dropped, attempts restarted); cancel: it is left alone for good.
        """
        async with self._db.write() as conn:
            row = await self._one(row_id)
            if action == "cancel":
                return await self._move(row, Q.CANCELLED, "cancel", _RESOLVABLE)
            if action != "resend":
                raise ValueError(f"resolve action must be 'resend' or 'cancel', not {action!r}")
            if row.state not in _RESOLVABLE:
                raise StoreStateError(
                    f"outbox row {row_id}: only an ambiguous or failed message can be resent, "
                    f"this one is {row.state.value}"
                )
            await conn.execute(
                "UPDATE outbox_parts SET state = 'pending', reference = NULL, sent_at = NULL, "
                "detail = NULL WHERE outbox_id = ?",
                (row_id,),
            )
            return await self._move(
                row,
                Q.QUEUED,
                "resend",
                _RESOLVABLE,
                attempts=0,
                next_attempt_at=self._db.clock(),
                error=None,
            )

    async def apply_status_report(
        self,
        line_id: str,
        reference: int,
        recipient: str | None,
        part_state: PartState,
        detail: str | None,
    ) -> OutboxRow | None:
        """Apply an SMS status report to the part it is about, then re-derive the message.

        TP-MR references wrap at 256, so the part matched is the most recently sent one
        with that reference on that line that is still awaiting a report (SENT or TRYING)
        and, if the report names a recipient, was sent to that recipient. A repeated report
        (the part already has that final state) returns the row unchanged; a report that
        matches nothing returns None.
        """
        if part_state not in (PartState.TRYING, PartState.DELIVERED, PartState.FAILED):
            raise ValueError(f"a status report cannot set a part to {part_state.value}")
        async with self._db.write() as conn:
            open_parts = await self._db.fetchall(_SELECT_OPEN + _NEWEST_FIRST, (reference, line_id))
            match = next((c for c in open_parts if self._for(recipient, c)), None)
            if match is None:
                # A repeat of a report already applied names the row but changes nothing.
                recent = await self._db.fetchall(
                    _SELECT_REPORTED + _NEWEST_FIRST + " LIMIT 50", (reference, line_id)
                )
                last = next((c for c in recent if self._for(recipient, c)), None)
                if last is not None and last["state"] == part_state.value:
                    return await self._one(last["outbox_id"])
                return None
            row_id, index = int(match["outbox_id"]), int(match["idx"])
            now = self._db.clock()
            await conn.execute(
                "UPDATE outbox_parts SET state = ?, detail = ? WHERE outbox_id = ? AND idx = ?",
                (part_state.value, detail, row_id, index),
            )
            await conn.execute("UPDATE outbox SET updated_at = ? WHERE id = ?", (now, row_id))
            row = await self._one(row_id)
            # Only a message that has finished sending takes its state from the reports;
            # while SENDING, mark_sent applies them; an AMBIGUOUS one waits for a person.
            if row.state != Q.SENT:
                return row
            to = derive(row.state, row.parts)
            if to == row.state:
                return row
            error = self._part_error(row.parts, to)
            return await self._move(row, to, "apply a report to", _FROM_SENT, error=error)

    @staticmethod
    def _for(recipient: str | None, candidate: sqlite3.Row) -> bool:
        return not recipient or _same_recipient(recipient, candidate["conversation"])

    @staticmethod
    def _part_error(parts: Sequence[OutboxPart], state: OutboxState) -> str | None:
        if state != Q.FAILED:
            return None
        failed = next(p for p in parts if p.state == PartState.FAILED)
        return failed.detail or FAILED_BY_REPORT

    async def mark_reported(self, row_id: int, state: OutboxState) -> OutboxRow:
        """The bridge showed `state` in the room. Idempotent; if the row moved on since,
        it stays in unreported()."""
        async with self._db.write() as conn:
            row = await self._one(row_id)
            await conn.execute(
                "UPDATE outbox SET reported_state = ? WHERE id = ?", (Q(state).value, row.id)
            )
            return await self._one(row_id)
