"""Data across an update and a rollback (docs/update.md): store migrations are backward
compatible, so the old version, back after a failed update, opens and runs on the store the
newer one migrated and wrote to. Nothing is lost or doubled: texts the newer version stored
are there once, a send it was cut off in is AMBIGUOUS as after any crash, and the newer
version finds everything again on the next try. A migration marked breaking makes the older
version refuse the file and leave it untouched, in plain words.

The newer version is a real copy of this package with one more migration appended, run in
its own process."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.store import Store
from appliance.store.errors import StoreError
from appliance.store.models import InboundMessage, OutboundRequest, OutboxState
from appliance.store.schema import SCHEMA_VERSION
from appliance.update.health import _open_db

TOP = Path(__file__).resolve().parent.parent
CONV = "+4915112345678"


def _newer(tmp: Path, *, breaking: bool) -> Path:
    root = tmp / ("breaking" if breaking else "compatible")
    shutil.copytree(TOP / "appliance", root / "appliance",
                    ignore=shutil.ignore_patterns("__pycache__"))
    schema = root / "appliance" / "store" / "schema.py"
    text = schema.read_text()
    end = "\n)\n\nSCHEMA_VERSION = len(MIGRATIONS)"
    assert end in text
    # What a later release may add: a nullable column and a table of its own.
    text = text.replace(end, textwrap.indent(textwrap.dedent('''
        (
            "ALTER TABLE inbox ADD COLUMN reaction TEXT",
            "CREATE TABLE IF NOT EXISTS read_marks (conversation TEXT PRIMARY KEY, at INTEGER)",
        ),'''), "    ") + end)
    if breaking:
        text = text.replace("BREAKING: frozenset[int] = frozenset()",
                            f"BREAKING: frozenset[int] = frozenset({{{SCHEMA_VERSION + 1}}})")
    schema.write_text(text)
    return root


NEWER_RUN = f"""
import asyncio, os, sys
from appliance.store import Store
from appliance.store.models import InboundMessage, OutboundRequest
from appliance.store.schema import SCHEMA_VERSION

async def main(path, tag):
    store = await Store.open(path)
    assert await store.schema_version() == SCHEMA_VERSION
    await store.inbox.add(InboundMessage(line_id="sms", conversation="{CONV}",
        sender="{CONV}", body="in " + tag, sent_at=1, dedup_key="in-" + tag))
    row, _ = await store.outbox.enqueue(OutboundRequest("out-" + tag, "sms", "{CONV}",
        "out " + tag, "@anna:test"), 1)
    await store.outbox.mark_sending(row.id, line_id="sms")
    # Cut off mid-send, as by the failed check's reboot.
    os._exit(0)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _run_newer(root: Path, db: Path, tag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NEWER_RUN, str(db), tag], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120, check=False)


def _rows(db: Path) -> tuple[list[str], list[tuple[str, str]], int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        inbox = [str(r[0]) for r in conn.execute("SELECT dedup_key FROM inbox ORDER BY id")]
        outbox = [(str(r[0]), str(r[1])) for r in
                  conn.execute("SELECT request_id, state FROM outbox ORDER BY id")]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return inbox, outbox, version


def _content(db: Path) -> str:
    """Everything the file holds, read-only (the bytes move when SQLite folds its WAL in)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        dump = "\n".join(conn.iterdump())
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return hashlib.sha256(f"{version}\n{dump}".encode()).hexdigest()


async def _old_version_writes(db: Path, tag: str) -> None:
    store = await Store.open(db)
    try:
        await store.inbox.add(InboundMessage(line_id="sms", conversation=CONV, sender=CONV,
                                             body="in " + tag, sent_at=1,
                                             dedup_key="in-" + tag))
        await store.outbox.enqueue(OutboundRequest("out-" + tag, "sms", CONV, "out " + tag,
                                                   "@anna:test"), 1)
    finally:
        await store.close()


async def test_the_old_version_runs_on_a_store_the_newer_one_migrated(tmp_path: Path) -> None:
    db = tmp_path / "textbridge.db"
    await _old_version_writes(db, "before")
    newer = _newer(tmp_path, breaking=False)
    done = _run_newer(newer, db, "trial")
    assert done.returncode == 0, done.stderr
    assert _rows(db)[2] == SCHEMA_VERSION + 1

    # The rollback: the old version opens the file as it is.
    assert _open_db(db, "PRAGMA user_version") is None
    store = await Store.open(db)
    try:
        cut_off = await store.outbox.recover_interrupted()
        assert [r.request.request_id for r in cut_off] == ["out-trial"]
        assert (await store.outbox.by_request("out-trial")).state == OutboxState.AMBIGUOUS  # type: ignore[union-attr]
        # The modem shows the newer version's text again (not yet deleted): not a second copy.
        _, created = await store.inbox.add(InboundMessage(
            line_id="sms", conversation=CONV, sender=CONV, body="in trial", sent_at=1,
            dedup_key="in-trial"))
        assert not created
        ready = await store.outbox.ready("sms", int(time.time() * 1000) + 1)
        assert [r.request.request_id for r in ready] == ["out-before"]
    finally:
        await store.close()
    await _old_version_writes(db, "after")
    inbox, outbox, version = _rows(db)
    assert version == SCHEMA_VERSION + 1  # never lowered
    assert inbox == ["in-before", "in-trial", "in-after"]
    assert outbox == [("out-before", "queued"), ("out-trial", "ambiguous"),
                      ("out-after", "queued")]

    # The update is tried again later: the newer version finds everything once.
    done = _run_newer(newer, db, "again")
    assert done.returncode == 0, done.stderr
    inbox, outbox, _ = _rows(db)
    assert inbox == ["in-before", "in-trial", "in-after", "in-again"]
    assert [r for r, _ in outbox] == ["out-before", "out-trial", "out-after", "out-again"]


async def test_a_breaking_migration_is_refused_by_the_old_version_untouched(
        tmp_path: Path) -> None:
    db = tmp_path / "textbridge.db"
    await _old_version_writes(db, "before")
    done = _run_newer(_newer(tmp_path, breaking=True), db, "trial")
    assert done.returncode == 0, done.stderr
    digest = _content(db)
    with pytest.raises(StoreError, match="written by a newer version and is left untouched"):
        await Store.open(db)
    assert _content(db) == digest
    problem = _open_db(db, "PRAGMA user_version")
    assert problem == f"has schema version {SCHEMA_VERSION + 1}, which this version cannot use"


async def test_the_old_bridge_opens_a_bridge_database_the_newer_one_migrated(
        tmp_path: Path) -> None:
    from appliance.bridge.db import BridgeDB, upgrade_table

    path = tmp_path / "bridge.db"
    db = BridgeDB(path)
    await db.start()
    await db.stop()
    newest = len(upgrade_table.upgrades)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        # What a newer bridge's additive migration leaves.
        conn.execute("CREATE TABLE read_marks (room_id TEXT PRIMARY KEY, at INTEGER)")
        conn.execute("UPDATE bridge_version SET version = ?", (newest + 1,))
    again = BridgeDB(path)
    try:
        await again.start()
        assert await again.management_room("@anna:test") is None
    finally:
        await again.stop()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM bridge_version").fetchone()[0] == newest + 1
