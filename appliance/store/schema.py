"""The store's schema as an ordered list of migrations.

`PRAGMA user_version` holds how many migrations a database has had. A migration is a tuple of
statements applied in one transaction together with the version bump, so a database is
always at exactly one version, even if the process dies mid-migration. Never edit a
released migration; append a new one.

Migrations are backward compatible (docs/update.md, "Data across an update"): after an
update is rolled back, the older Textbridge opens the file the newer one migrated and runs on
it. So a migration only adds (tables, indexes, columns that are NULL or have a DEFAULT) and
never renames, drops or tightens what an older version writes. One that cannot be written
so goes into BREAKING, and the file then records that versions before it must not open it
(`schema_floor`): they refuse it, untouched, instead of misreading it.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE inbox (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            line_id       TEXT    NOT NULL,
            dedup_key     TEXT    NOT NULL,
            conversation  TEXT    NOT NULL,
            sender        TEXT    NOT NULL,
            body          TEXT    NOT NULL,
            sent_at       INTEGER NOT NULL,
            kind          TEXT    NOT NULL,
            raw           BLOB,
            note          TEXT,
            meta          TEXT    NOT NULL DEFAULT '{}',
            state         TEXT    NOT NULL
                          CHECK (state IN ('received', 'delivered', 'quarantined')),
            received_at   INTEGER NOT NULL,
            delivered_ref TEXT,
            UNIQUE (line_id, dedup_key)
        )
        """,
        "CREATE INDEX inbox_pending ON inbox (state, id)",
        """
        CREATE TABLE fragments (
            line_id     TEXT    NOT NULL,
            group_key   TEXT    NOT NULL,
            idx         INTEGER NOT NULL CHECK (idx >= 0),
            total       INTEGER NOT NULL CHECK (total >= 1),
            payload     TEXT    NOT NULL,
            dedup_key   TEXT    NOT NULL,
            received_at INTEGER NOT NULL,
            sent_at     INTEGER NOT NULL,
            PRIMARY KEY (line_id, group_key, idx)
        ) WITHOUT ROWID
        """,
        # Parts already folded into a stored message. A crash between the commit and the
        # modem delete makes the line read those parts again; without this they would start
        # a new group and, once it expired, a second copy of the message.
        """
        CREATE TABLE fragments_done (
            line_id   TEXT    NOT NULL,
            dedup_key TEXT    NOT NULL,
            done_at   INTEGER NOT NULL,
            PRIMARY KEY (line_id, dedup_key)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX fragments_done_at ON fragments_done (done_at)",
        """
        CREATE TABLE outbox (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id      TEXT    NOT NULL UNIQUE,
            line_id         TEXT    NOT NULL,
            conversation    TEXT    NOT NULL,
            body            TEXT    NOT NULL,
            requested_by    TEXT    NOT NULL,
            meta            TEXT    NOT NULL DEFAULT '{}',
            state           TEXT    NOT NULL CHECK (state IN ('queued', 'sending', 'sent',
                                'delivered', 'failed', 'ambiguous', 'cancelled')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            error           TEXT,
            created_at      INTEGER NOT NULL,
            updated_at      INTEGER NOT NULL,
            reported_state  TEXT
        )
        """,
        # Partial: ready() looks only at unfinished rows, which stay few however long the
        # history grows.
        """
        CREATE INDEX outbox_active ON outbox (line_id, conversation, id)
            WHERE state IN ('queued', 'sending')
        """,
        "CREATE INDEX outbox_state ON outbox (state, id)",
        "CREATE INDEX outbox_requested ON outbox (requested_by, created_at)",
        """
        CREATE INDEX outbox_unreported ON outbox (id)
            WHERE reported_state IS NULL OR reported_state <> state
        """,
        """
        CREATE TABLE outbox_parts (
            outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
            idx       INTEGER NOT NULL CHECK (idx >= 0),
            state     TEXT    NOT NULL
                      CHECK (state IN ('pending', 'sent', 'trying', 'delivered', 'failed')),
            reference INTEGER CHECK (reference BETWEEN 0 AND 255),
            sent_at   INTEGER,
            detail    TEXT,
            PRIMARY KEY (outbox_id, idx),
            CHECK ((state = 'pending') = (reference IS NULL))
        ) WITHOUT ROWID
        """,
        "CREATE INDEX outbox_parts_reference ON outbox_parts (reference, sent_at)",
        """
        CREATE INDEX outbox_parts_open ON outbox_parts (reference)
            WHERE state IN ('sent', 'trying')
        """,
    ),
    # 2: indexes settled after version 1 had been written by development builds, some of
    # which predate outbox_active/outbox_parts_open; IF [NOT] EXISTS makes every such file
    # converge. fragments_received never served a query (expired() reads the few held
    # parts in full) and only cost a write per part.
    (
        "DROP INDEX IF EXISTS fragments_received",
        "DROP INDEX IF EXISTS outbox_conversation",
        """
        CREATE INDEX IF NOT EXISTS outbox_active ON outbox (line_id, conversation, id)
            WHERE state IN ('queued', 'sending')
        """,
        """
        CREATE INDEX IF NOT EXISTS outbox_parts_open ON outbox_parts (reference)
            WHERE state IN ('sent', 'trying')
        """,
    ),
    # 3: the oldest schema version whose code may still open this file (see above).
    ("CREATE TABLE IF NOT EXISTS schema_floor (oldest_reader INTEGER NOT NULL)",),
)

SCHEMA_VERSION = len(MIGRATIONS)
# Migrations (by the version they lead to) that older code cannot run on. Version 3 is the
# first whose code knows the floor at all.
BREAKING: frozenset[int] = frozenset()
FIRST_FLOOR_VERSION = 3


def oldest_reader(version: int = SCHEMA_VERSION) -> int:
    """The floor a file at `version` records: the newest breaking migration up to it."""
    return max({n for n in BREAKING if n <= version} | {FIRST_FLOOR_VERSION})


def readable(version: int, floor: int | None) -> bool:
    """Whether this code may use a file at `version` whose recorded floor is `floor`: one it
    can migrate, or a newer one whose changes were all backward compatible."""
    return version <= SCHEMA_VERSION or (floor is not None and floor <= SCHEMA_VERSION)
