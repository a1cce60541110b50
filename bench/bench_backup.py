"""Backup benchmark: size and time of a full backup, and of its restore, for a box with
10,000 texts in the store and 100 MiB of homeserver media.

The box is built with real parts: the real Store (10,000 inbox rows through inbox.add, half
delivered, in WAL mode), a bridge database and a homeserver database in WAL mode, and the
media store as 100 files of 1 MiB of random bytes (photos do not compress; neither does
this). Then `create` (SQLite online backups, tar with gzip level 1, age X25519) and
`verify` (what the nightly backup does after writing) and `restore` (decrypt, unpack into
staging, integrity_check and the web validators, swap) run as the CLI runs them.
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_backup.py
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from appliance.backup import key
from appliance.backup.create import create
from appliance.backup.layout import Layout
from appliance.backup.restore import restore, verify
from appliance.store import Store
from appliance.store.models import InboundMessage

TEXTS = int(os.environ.get("BENCH_TEXTS", "10000"))
MEDIA_MIB = int(os.environ.get("BENCH_MEDIA_MIB", "100"))


async def fill_store(path: Path) -> None:
    store = await Store.open(path)
    try:
        for i in range(TEXTS):
            row, _ = await store.inbox.add(InboundMessage(
                line_id="modem", conversation=f"+4917012{i % 50:05d}",
                sender=f"+4917012{i % 50:05d}",
                body=f"Text number {i}: see you at the station at {i % 24}:{i % 60:02d}, ok?",
                sent_at=1_700_000_000_000 + i, dedup_key=f"b{i}"))
            if i % 2 == 0:
                await store.inbox.mark_delivered(row.id, f"$event{i}")
    finally:
        await store.close()


def build(data: Path) -> Layout:
    data.mkdir(mode=0o750)
    asyncio.run(fill_store(data / "textbridge.db"))
    for name in ("bridge.db", "synapse/homeserver.db"):
        (data / name).parent.mkdir(exist_ok=True)
        db = sqlite3.connect(data / name)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE events (event_id TEXT, json TEXT)")
        db.executemany("INSERT INTO events VALUES (?, ?)",
                       [(f"$e{i}", '{"type":"m.room.message","body":"x"}' * 4)
                        for i in range(TEXTS)])
        db.commit()
        db.close()
    media = data / "synapse" / "media_store" / "local_content"
    for i in range(MEDIA_MIB):
        (media / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        (media / f"{i:02x}" / "file").write_bytes(os.urandom(1 << 20))
    layout = Layout(data, "synapse")
    key.save(layout.key_file, key.generate())
    return layout


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        layout = build(base / "data")
        built = time.perf_counter() - t0
        source = sum(p.stat().st_size for p in layout.data_dir.rglob("*") if p.is_file())
        out = base / "box.tbbackup"
        t0 = time.perf_counter()
        made = create(layout, key.load(layout.key_file), out)
        backup_s = time.perf_counter() - t0
        identity = key.load(layout.key_file).identity
        t0 = time.perf_counter()
        checked = verify(out, layout, identity)
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = restore(out, layout, identity)
        restore_s = time.perf_counter() - t0
        rows = [
            ("texts in the store", f"{TEXTS}"),
            ("homeserver media", f"{MEDIA_MIB} MiB"),
            ("data directory", f"{source / (1 << 20):.1f} MiB"),
            ("backup file", f"{made.size / (1 << 20):.1f} MiB"),
            ("files / databases", f"{made.files} / {made.databases}"),
            ("backup time", f"{backup_s:.2f} s"),
            ("verify time (nightly check)", f"{verify_s:.2f} s ({checked} files)"),
            ("restore time", f"{restore_s:.2f} s ({done.files} files)"),
            ("(building the box)", f"{built:.1f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"{'what'.ljust(width)} | value")
        print(f"{'-' * width}-|------")
        for name, value in rows:
            print(f"{name.ljust(width)} | {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
