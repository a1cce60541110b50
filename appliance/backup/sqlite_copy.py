"""Copies of live SQLite databases, taken with SQLite's online backup API.

A file copy of a database in WAL mode can miss committed pages still in the -wal file or
catch a checkpoint half-way; the backup API reads a consistent snapshot through SQLite's own
locking while the bridge and the homeserver keep writing. Pages are copied in steps so that
a writer is never held up for the whole copy.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.backup.errors import BackupError

PAGES_PER_STEP = 1024


def snapshot(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"The database {source.name} is missing.")
    try:
        # Read-write, though only read: a read-only connection cannot take a WAL snapshot
        # when the -shm file is missing.
        src = sqlite3.connect(source, timeout=30.0)
    except sqlite3.Error as exc:
        raise BackupError(f"The database {source.name} could not be opened: {exc}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
            # The copy is a plain rollback-journal file: it is read back alone, without a -wal.
            dst.execute("PRAGMA journal_mode = DELETE")
            dst.commit()
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"The database {source.name} could not be copied: {exc}") from None
    finally:
        src.close()
    target.chmod(0o600)


def integrity(path: Path) -> str:
    """"ok", or what SQLite found wrong."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "; ".join(str(r[0]) for r in rows[:3])
