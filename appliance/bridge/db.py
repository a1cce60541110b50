"""The bridge's own tables: which room belongs to which conversation, who has which
management room, contact names, and what the bridge has already done.

They live in their own SQLite file (bridge.db), not in the store: the store is the
transports' durable queue and knows nothing of Matrix. Losing a mapping would make a second
room for the same contact, so writes are synchronous=FULL like the store's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mautrix.util.async_db import Connection, Database, UpgradeTable

from appliance.files import private_database

# allow_unsupported: after an update is rolled back, the older bridge runs on the file the
# newer one migrated. So bridge migrations, like the store's, only add (docs/update.md).
upgrade_table = UpgradeTable(version_table_name="bridge_version", database_name="bridge",
                             allow_unsupported=True)


async def _upgrade_v1(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE portal (
            line_id      TEXT NOT NULL,
            conversation TEXT NOT NULL,
            room_id      TEXT NOT NULL UNIQUE,
            kind         TEXT NOT NULL,
            -- 0 until the members are invited and the first notice is in the room, so a
            -- crash half way through setting up a room is finished on the next start
            ready        INTEGER NOT NULL DEFAULT 0,
            created_at   INTEGER NOT NULL,
            PRIMARY KEY (line_id, conversation)
        )"""
    )
    await conn.execute(
        """CREATE TABLE management_room (
            user_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL UNIQUE,
            ready   INTEGER NOT NULL DEFAULT 0
        )"""
    )
    await conn.execute(
        """CREATE TABLE contact (
            number   TEXT PRIMARY KEY,
            name     TEXT NOT NULL,
            added_by TEXT NOT NULL,
            added_at INTEGER NOT NULL
        )"""
    )
    await conn.execute("CREATE TABLE ghost (mxid TEXT PRIMARY KEY, displayname TEXT NOT NULL)")
    # An inbox row whose send was started: after a crash the room is searched for it
    # before sending again, because the homeserver's transaction-id memory does not
    # survive its own restart.
    await conn.execute(
        "CREATE TABLE inbox_attempt (row_id INTEGER PRIMARY KEY, room_id TEXT NOT NULL)"
    )
    # Bot commands already carried out, so a redelivered appservice transaction does not
    # resend or cancel twice.
    await conn.execute("CREATE TABLE handled_event (event_id TEXT PRIMARY KEY, at INTEGER)")
    # Sends that failed or may not have gone, waiting for a person's `retry` or `cancel`.
    await conn.execute(
        "CREATE TABLE attention (row_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, at INTEGER)"
    )
    # The last condition shown per line, so a line repeating itself is not a notice storm.
    await conn.execute(
        "CREATE TABLE line_event (line_id TEXT PRIMARY KEY, key TEXT NOT NULL, at INTEGER)"
    )


upgrade_table.register(_upgrade_v1, description="portals, ghosts, management rooms, contacts")


async def _upgrade_v2(conn: Connection) -> None:
    # Who the bridge has given access to each portal (invited, or found already in it).
    # A reload compares this with the line's people: someone added to the line is invited
    # once, someone removed is kicked, and a member who left a chat on purpose is not
    # pulled back in by every reload. Portals from before v2 have no rows, so everyone on
    # their line is invited once (that is the fix for members added after a room existed).
    await conn.execute(
        """CREATE TABLE portal_access (
            room_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            PRIMARY KEY (room_id, user_id)
        )"""
    )


upgrade_table.register(_upgrade_v2, description="who has access to which portal")


async def _upgrade_v3(conn: Connection) -> None:
    # Line selection. A contact's 1:1 room can serve several lines: the portal row stays
    # keyed by the line that made the room, and each further line that reaches the same
    # number gets a link to that room, so its texts land there instead of in a second room.
    await conn.execute(
        """CREATE TABLE portal_link (
            line_id      TEXT NOT NULL,
            conversation TEXT NOT NULL,
            room_id      TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            PRIMARY KEY (line_id, conversation)
        )"""
    )
    await conn.execute("CREATE INDEX portal_link_room ON portal_link (room_id)")
    # How texts leave a room with several lines (auto | phone | sms), who set it, and the
    # line the last inbound text came through (the room is told when that changes).
    await conn.execute(
        """CREATE TABLE portal_route (
            room_id           TEXT PRIMARY KEY,
            preference        TEXT NOT NULL DEFAULT 'auto',
            set_by            TEXT,
            set_at            INTEGER,
            last_inbound_line TEXT
        )"""
    )


upgrade_table.register(_upgrade_v3, description="line selection: linked lines, routes")


async def _upgrade_v4(conn: Connection) -> None:
    # Rooms that are end-to-end encrypted (started that way from Element X, or turned on
    # later), which the bridge cannot read: who of ours answers there, the unencrypted
    # room that took over, and the steps done, so a restart half way finishes the move
    # instead of making a second room, and the room is never adopted as a portal.
    await conn.execute(
        """CREATE TABLE encrypted_room (
            room_id      TEXT PRIMARY KEY,
            speaker      TEXT NOT NULL,
            person       TEXT,
            line_id      TEXT,
            conversation TEXT,
            kind         TEXT NOT NULL,
            moved_to     TEXT,
            told         INTEGER NOT NULL DEFAULT 0,
            left_room    INTEGER NOT NULL DEFAULT 0,
            noticed_at   INTEGER NOT NULL DEFAULT 0,
            created_at   INTEGER NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX encrypted_room_moved ON encrypted_room (moved_to)")


upgrade_table.register(_upgrade_v4, description="encrypted rooms and where they moved")


@dataclass(frozen=True)
class EncryptedRoom:
    room_id: str
    speaker: str  # the ghost or the bot: who of ours is in the room and answers there
    person: str | None  # who started it (a chat from Element X) or owns it (management)
    line_id: str | None
    conversation: str | None
    kind: str  # "ghost" | "bot" (started encrypted) | "portal" | "management" (turned on)
    moved_to: str | None
    told: bool
    left_room: bool
    noticed_at: int


@dataclass(frozen=True)
class Portal:
    line_id: str
    conversation: str
    room_id: str
    kind: str  # "dm" | "group"
    ready: bool


def _now_ms() -> int:
    return int(time.time() * 1000)


class BridgeDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = self._database()

    def _database(self) -> Database:
        return Database.create(
            f"sqlite:{self.path}",
            upgrade_table=upgrade_table,
            db_args={"init_commands": ["PRAGMA synchronous = FULL"]},
        )

    async def start(self) -> None:
        # 0600 (and its -wal/-shm with it): it holds who texts whom.
        await asyncio.to_thread(private_database, self.path)
        # mautrix's pool cannot be started twice; a bridge stopped and started again (the
        # CLI does on reload) gets a fresh one.
        self.db = self._database()
        await self.db.start()

    async def stop(self) -> None:
        await self.db.stop()

    # --- portals ---------------------------------------------------------------------

    async def portal(self, line_id: str, conversation: str) -> Portal | None:
        """The room for this line's conversation: its own, or the one it is linked to (a
        contact's room shared with another line; `line_id` of the result is the line
        that made the room)."""
        row = await self.db.fetchrow(
            "SELECT line_id, conversation, room_id, kind, ready FROM portal "
            "WHERE line_id=$1 AND conversation=$2",
            line_id,
            conversation,
        )
        if row:
            return _portal(row)
        room_id = await self.db.fetchval(
            "SELECT room_id FROM portal_link WHERE line_id=$1 AND conversation=$2",
            line_id,
            conversation,
        )
        return await self.portal_by_room(str(room_id)) if room_id is not None else None

    async def link_portal(self, line_id: str, conversation: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO portal_link (line_id, conversation, room_id, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (line_id, conversation) DO NOTHING",
            line_id,
            conversation,
            room_id,
            _now_ms(),
        )

    async def linked_lines(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT line_id FROM portal_link WHERE room_id=$1 ORDER BY created_at, line_id",
            room_id,
        )
        return [str(r["line_id"]) for r in rows]

    async def route(self, room_id: str) -> tuple[str, str | None]:
        """(preference, line of the last inbound text) of a room; ("auto", None) if unset."""
        row = await self.db.fetchrow(
            "SELECT preference, last_inbound_line FROM portal_route WHERE room_id=$1", room_id
        )
        if not row:
            return "auto", None
        last = row["last_inbound_line"]
        return str(row["preference"]), str(last) if last is not None else None

    async def set_route(self, room_id: str, preference: str, set_by: str) -> None:
        await self.db.execute(
            "INSERT INTO portal_route (room_id, preference, set_by, set_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET "
            "preference=excluded.preference, set_by=excluded.set_by, set_at=excluded.set_at",
            room_id,
            preference,
            set_by,
            _now_ms(),
        )

    async def set_last_inbound_line(self, room_id: str, line_id: str) -> None:
        await self.db.execute(
            "INSERT INTO portal_route (room_id, last_inbound_line) VALUES ($1, $2) "
            "ON CONFLICT (room_id) DO UPDATE SET last_inbound_line=excluded.last_inbound_line",
            room_id,
            line_id,
        )

    async def portal_by_room(self, room_id: str) -> Portal | None:
        row = await self.db.fetchrow(
            "SELECT line_id, conversation, room_id, kind, ready FROM portal WHERE room_id=$1",
            room_id,
        )
        return _portal(row) if row else None

    async def portals(self, line_id: str | None = None) -> list[Portal]:
        rows = await self.db.fetch(
            "SELECT line_id, conversation, room_id, kind, ready FROM portal "
            "WHERE $1 IS NULL OR line_id=$1 ORDER BY created_at",
            line_id,
        )
        return [_portal(r) for r in rows]

    async def add_portal(self, line_id: str, conversation: str, room_id: str, kind: str) -> None:
        await self.db.execute(
            "INSERT INTO portal (line_id, conversation, room_id, kind, ready, created_at) "
            "VALUES ($1, $2, $3, $4, 0, $5)",
            line_id,
            conversation,
            room_id,
            kind,
            _now_ms(),
        )

    async def portal_ready(self, room_id: str) -> None:
        await self.db.execute("UPDATE portal SET ready=1 WHERE room_id=$1", room_id)

    async def forget_portal(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM portal WHERE room_id=$1", room_id)
        await self.db.execute("DELETE FROM portal_access WHERE room_id=$1", room_id)
        await self.db.execute("DELETE FROM portal_link WHERE room_id=$1", room_id)
        await self.db.execute("DELETE FROM portal_route WHERE room_id=$1", room_id)

    async def portal_access(self, room_id: str) -> set[str]:
        rows = await self.db.fetch("SELECT user_id FROM portal_access WHERE room_id=$1", room_id)
        return {str(r["user_id"]) for r in rows}

    async def grant_access(self, room_id: str, user_ids: list[str]) -> None:
        for user_id in user_ids:
            await self.db.execute(
                "INSERT INTO portal_access (room_id, user_id) VALUES ($1, $2) "
                "ON CONFLICT (room_id, user_id) DO NOTHING",
                room_id,
                user_id,
            )

    async def revoke_access(self, room_id: str, user_id: str) -> None:
        await self.db.execute(
            "DELETE FROM portal_access WHERE room_id=$1 AND user_id=$2", room_id, user_id
        )

    # --- encrypted rooms ---------------------------------------------------------------

    async def encrypted_room(self, room_id: str) -> EncryptedRoom | None:
        row = await self.db.fetchrow("SELECT * FROM encrypted_room WHERE room_id=$1", room_id)
        return _encrypted(row) if row else None

    async def add_encrypted_room(
        self,
        room_id: str,
        *,
        speaker: str,
        kind: str,
        person: str | None = None,
        line_id: str | None = None,
        conversation: str | None = None,
    ) -> EncryptedRoom:
        await self.db.execute(
            "INSERT INTO encrypted_room (room_id, speaker, person, line_id, conversation, kind,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id) DO NOTHING",
            room_id,
            speaker,
            person,
            line_id,
            conversation,
            kind,
            _now_ms(),
        )
        row = await self.encrypted_room(room_id)
        assert row is not None
        return row

    async def update_encrypted_room(self, room_id: str, **values: str | int) -> None:
        for column, value in values.items():
            await self.db.execute(_ENCRYPTED_UPDATES[column], value, room_id)

    async def encrypted_rooms_moved_to(self, room_id: str) -> list[EncryptedRoom]:
        rows = await self.db.fetch(
            "SELECT * FROM encrypted_room WHERE moved_to=$1 ORDER BY created_at", room_id
        )
        return [_encrypted(r) for r in rows]

    # --- management rooms --------------------------------------------------------------

    async def management_room(self, user_id: str) -> tuple[str, bool] | None:
        row = await self.db.fetchrow(
            "SELECT room_id, ready FROM management_room WHERE user_id=$1", user_id
        )
        return (str(row["room_id"]), bool(row["ready"])) if row else None

    async def management_user(self, room_id: str) -> str | None:
        value = await self.db.fetchval(
            "SELECT user_id FROM management_room WHERE room_id=$1", room_id
        )
        return str(value) if value is not None else None

    async def set_management_room(self, user_id: str, room_id: str, ready: bool) -> None:
        await self.db.execute(
            "INSERT INTO management_room (user_id, room_id, ready) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id) DO UPDATE SET room_id=excluded.room_id, ready=excluded.ready",
            user_id,
            room_id,
            int(ready),
        )

    async def forget_management_room(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM management_room WHERE room_id=$1", room_id)

    # --- contacts and ghosts -----------------------------------------------------------

    async def contact_name(self, number: str) -> str | None:
        value = await self.db.fetchval("SELECT name FROM contact WHERE number=$1", number)
        return str(value) if value is not None else None

    async def set_contact(self, number: str, name: str, added_by: str) -> bool:
        """Returns True if the name is new or changed."""
        old = await self.contact_name(number)
        if old == name:
            return False
        await self.db.execute(
            "INSERT INTO contact (number, name, added_by, added_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (number) DO UPDATE SET name=excluded.name, added_by=excluded.added_by,"
            " added_at=excluded.added_at",
            number,
            name,
            added_by,
            _now_ms(),
        )
        return True

    async def ghost_displayname(self, mxid: str) -> str | None:
        value = await self.db.fetchval("SELECT displayname FROM ghost WHERE mxid=$1", mxid)
        return str(value) if value is not None else None

    async def set_ghost_displayname(self, mxid: str, displayname: str) -> None:
        await self.db.execute(
            "INSERT INTO ghost (mxid, displayname) VALUES ($1, $2) "
            "ON CONFLICT (mxid) DO UPDATE SET displayname=excluded.displayname",
            mxid,
            displayname,
        )

    # --- what was already done -----------------------------------------------------------

    async def inbox_attempted(self, row_id: int) -> bool:
        value = await self.db.fetchval("SELECT 1 FROM inbox_attempt WHERE row_id=$1", row_id)
        return value is not None

    async def record_inbox_attempt(self, row_id: int, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO inbox_attempt (row_id, room_id) VALUES ($1, $2) "
            "ON CONFLICT (row_id) DO NOTHING",
            row_id,
            room_id,
        )

    async def event_handled(self, event_id: str) -> bool:
        value = await self.db.fetchval("SELECT 1 FROM handled_event WHERE event_id=$1", event_id)
        return value is not None

    async def mark_event_handled(self, event_id: str) -> None:
        await self.db.execute(
            "INSERT INTO handled_event (event_id, at) VALUES ($1, $2) "
            "ON CONFLICT (event_id) DO NOTHING",
            event_id,
            _now_ms(),
        )

    async def prune_handled(self, older_than_ms: int) -> None:
        # A homeserver redelivers within minutes or hours, not weeks.
        await self.db.execute("DELETE FROM handled_event WHERE at < $1", older_than_ms)

    async def add_attention(self, row_id: int, user_id: str) -> None:
        await self.db.execute(
            "INSERT INTO attention (row_id, user_id, at) VALUES ($1, $2, $3) "
            "ON CONFLICT (row_id) DO NOTHING",
            row_id,
            user_id,
            _now_ms(),
        )

    async def attention(self, user_id: str | None = None) -> list[int]:
        rows = await self.db.fetch(
            "SELECT row_id FROM attention WHERE $1 IS NULL OR user_id=$1 ORDER BY row_id",
            user_id,
        )
        return [int(r["row_id"]) for r in rows]

    async def drop_attention(self, row_id: int) -> None:
        await self.db.execute("DELETE FROM attention WHERE row_id=$1", row_id)

    async def line_event_key(self, line_id: str) -> str | None:
        value = await self.db.fetchval("SELECT key FROM line_event WHERE line_id=$1", line_id)
        return str(value) if value is not None else None

    async def set_line_event_key(self, line_id: str, key: str) -> None:
        await self.db.execute(
            "INSERT INTO line_event (line_id, key, at) VALUES ($1, $2, $3) "
            "ON CONFLICT (line_id) DO UPDATE SET key=excluded.key, at=excluded.at",
            line_id,
            key,
            _now_ms(),
        )


def _portal(row: object) -> Portal:
    r = row  # sqlite3.Row: indexable by column name
    return Portal(
        line_id=str(r["line_id"]),  # type: ignore[index]
        conversation=str(r["conversation"]),  # type: ignore[index]
        room_id=str(r["room_id"]),  # type: ignore[index]
        kind=str(r["kind"]),  # type: ignore[index]
        ready=bool(r["ready"]),  # type: ignore[index]
    )


_ENCRYPTED_UPDATES = {
    column: f"UPDATE encrypted_room SET {column}=$1 WHERE room_id=$2"  # noqa: S608 (fixed names)
    for column in ("moved_to", "told", "left_room", "noticed_at")
}


def _encrypted(row: object) -> EncryptedRoom:
    r: Any = row  # sqlite3.Row
    return EncryptedRoom(
        room_id=str(r["room_id"]),
        speaker=str(r["speaker"]),
        person=None if r["person"] is None else str(r["person"]),
        line_id=None if r["line_id"] is None else str(r["line_id"]),
        conversation=None if r["conversation"] is None else str(r["conversation"]),
        kind=str(r["kind"]),
        moved_to=None if r["moved_to"] is None else str(r["moved_to"]),
        told=bool(r["told"]),
        left_room=bool(r["left_room"]),
        noticed_at=int(r["noticed_at"]),
    )
