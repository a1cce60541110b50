"""One moment for the whole backup, though its databases are copied one after another.

The homeserver's database is copied first, then the store, then the bridge's database. With
that order:
- a text from Matrix that the homeserver handed to the bridge before its copy was queued in
  the store before the homeserver heard back (appliance/bridge/appservice.py), so the later
  store copy has it: it goes out once after a restore;
- an SMS that reached Matrix after the homeserver's copy may be DELIVERED in the store copy
  but missing from the restored rooms. So every inbox row that was not yet delivered when
  the homeserver's copy began goes back to RECEIVED in the store's copy, and is marked as
  attempted in the bridge's copy: after a restore the bridge looks for it in its room and
  sends it only if it is not there (appliance/bridge/inbound.py). Nothing is lost, nothing
  doubled.
- rows the bridge tried after the store's copy are not in it; their attempts are dropped
  from the bridge's copy, so a new text that gets the same row id is not mistaken for them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mark:
    """The store's inbox as it was just before the homeserver's copy."""

    max_id: int
    undelivered: frozenset[int]


def mark(store: Path) -> Mark:
    if not store.is_file():
        return Mark(0, frozenset())
    conn = sqlite3.connect(store, timeout=30.0)
    try:
        (max_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM inbox").fetchone()
        rows = conn.execute("SELECT id FROM inbox WHERE state = 'received'").fetchall()
    except sqlite3.OperationalError:  # a store not created yet has no inbox
        return Mark(0, frozenset())
    finally:
        conn.close()
    return Mark(int(max_id), frozenset(int(r[0]) for r in rows))


def apply(before: Mark, store_copy: Path, bridge_copy: Path | None) -> int:
    """Adjust the copies; returns how many rows went back to RECEIVED."""
    if not store_copy.is_file():
        return 0
    conn = sqlite3.connect(store_copy)
    try:
        delivered = conn.execute(
            "SELECT id FROM inbox WHERE state = 'delivered'"
        ).fetchall()
        back = [r[0] for r in delivered if r[0] > before.max_id or r[0] in before.undelivered]
        conn.executemany(
            "UPDATE inbox SET state = 'received', delivered_ref = NULL WHERE id = ?",
            [(row_id,) for row_id in back],
        )
        conn.commit()
        pending = [r[0] for r in conn.execute("SELECT id FROM inbox WHERE state = 'received'")]
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM inbox").fetchone()
    finally:
        conn.close()
    if bridge_copy is not None and bridge_copy.is_file():
        conn = sqlite3.connect(bridge_copy)
        try:
            # The room is looked up again by the bridge; only the row's presence matters.
            conn.executemany(
                "INSERT OR IGNORE INTO inbox_attempt (row_id, room_id) VALUES (?, '')",
                [(row_id,) for row_id in pending],
            )
            conn.execute("DELETE FROM inbox_attempt WHERE row_id > ?", (top,))
            conn.commit()
        except sqlite3.OperationalError:  # a bridge that never ran has no tables yet
            pass
        finally:
            conn.close()
    return len(back)
