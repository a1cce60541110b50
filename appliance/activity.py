"""The dashboard's recent activity: the last texts in and out and their states, read from the
store's SQLite file over a read-only connection (as the message counts in control.py are).

The queries name only the columns shown: no body, no file, never a whole row, so a text's
words cannot reach the page by accident. Numbers are masked as in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.log import mask_number

MAX_ITEMS = 50


@dataclass(frozen=True)
class Activity:
    at: float  # unix time of the last change
    direction: str  # "in" | "out"
    line_id: str
    state: str  # the store's state: queued, sending, sent, delivered, failed, ... / received
    who: str  # the masked number, or "a group"


RecentTexts = Callable[[int], Awaitable[list[Activity]]]


def _who(conversation: str) -> str:
    if conversation.startswith("group:"):
        return "a group"
    return mask_number(conversation)


def sqlite_recent_texts(db_path: Path) -> RecentTexts:
    def read(limit: int) -> list[Activity]:
        limit = max(1, min(limit, MAX_ITEMS))
        uri = f"file:{db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            out = conn.execute(
                "SELECT updated_at, line_id, state, conversation FROM outbox "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            inbound = conn.execute(
                "SELECT received_at, line_id, state, conversation FROM inbox "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        items = [Activity(at / 1000, "out", line, state, _who(who)) for at, line, state, who in out]
        for at, line, state, who in inbound:
            shown = "quarantined" if state == "quarantined" else "received"
            items.append(Activity(at / 1000, "in", line, shown, _who(who)))
        items.sort(key=lambda a: a.at, reverse=True)
        return items[:limit]

    async def recent(limit: int) -> list[Activity]:
        return await asyncio.to_thread(read, limit)

    return recent
