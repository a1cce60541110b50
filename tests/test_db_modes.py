"""The message databases are private: 0600, with their -wal and -shm files, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bridge.db import BridgeDB
from appliance.store import Store
from appliance.store.models import InboundMessage


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual one, which gives 0644 files
    yield
    os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


async def test_store_database_and_its_wal_and_shm_are_0600(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "data" / "textbridge.db"
    store = await Store.open(path)
    try:
        await store.inbox.add(InboundMessage("sms", "+491", "+491", "hi", 1, "k1"))
        found = modes(path.parent)
        assert {"textbridge.db", "textbridge.db-wal", "textbridge.db-shm"} <= set(found)
        assert found == dict.fromkeys(found, 0o600)
    finally:
        await store.close()


async def test_a_store_left_0644_by_an_older_version_is_tightened(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "textbridge.db"
    store = await Store.open(path)
    await store.close()
    path.chmod(0o644)
    store = await Store.open(path)
    try:
        await store.inbox.add(InboundMessage("sms", "+491", "+491", "hi", 1, "k1"))
        found = modes(tmp_path)
        assert found == dict.fromkeys(found, 0o600)
    finally:
        await store.close()


async def test_bridge_database_is_0600(tmp_path: Path, open_umask: None) -> None:
    db = BridgeDB(tmp_path / "bridge.db")
    await db.start()
    try:
        await db.db.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        await db.db.execute("INSERT INTO probe VALUES (1)")
        found = modes(tmp_path)
        assert "bridge.db" in found
        assert found == dict.fromkeys(found, 0o600)
    finally:
        await db.stop()
