"""What the benches read of a process from /proc, and the WAL checkpoint they charge to it:
one copy, so that every bench counts CPU and bytes written the same way."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (every thread), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def write_bytes(pid: int | str = "self") -> int:
    """Bytes the process sent to the block layer (dirtied pages and direct writes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def checkpoint_bytes(paths: list[Path]) -> int:
    """Copy what is left in each database's WAL back into the database (what the process
    that wrote it would do at its next auto-checkpoint) and return the bytes that took."""
    before = write_bytes()
    for path in paths:
        if not path.exists():
            continue
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    return write_bytes() - before
