"""The connection, its pragmas, migrations and the one transaction helper every write uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from appliance.files import private_database
from appliance.store.errors import StoreError
from appliance.store.notify import Notifier
from appliance.store.schema import MIGRATIONS, SCHEMA_VERSION, oldest_reader, readable

Clock = Callable[[], int]

# Each commit appends every page it touched to the WAL. The store's rows are small (an SMS),
# so with 1 KiB pages a commit writes less than half the bytes it does with SQLite's default
# 4 KiB (bench/bench_store.py: 10 KB instead of 22 KB per inbound text, counted in the
# kernel's 4 KiB units), which is SD-card wear, at no measurable CPU cost. Only applies
# when the file is created; SQLite keeps an existing database's page size.
PAGE_SIZE = 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def fsync_dir(path: Path) -> None:
    # A new file's directory entry is only durable once the directory itself is fsynced;
    # without this a power cut right after creation can leave no database at all.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Db:
    """One aiosqlite connection shared by the inbox, outbox and fragments.

    aiosqlite runs every statement on one thread, but a transaction spans several awaits;
    the lock keeps another coroutine's statements from landing inside it.
    """

    def __init__(self, conn: aiosqlite.Connection, clock: Clock, changed: Notifier) -> None:
        self.conn = conn
        self.clock = clock
        self.changed = changed
        self.lock = asyncio.Lock()
        self.closed = False
        self._data_version: int | None = None

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError("the store is closed")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back on any exception, including cancellation.

        IMMEDIATE takes the write lock up front, so a transaction that reads and then writes
        never fails half-way with SQLITE_BUSY because another process wrote in between.
        """
        async with self.lock:
            self._check_open()
            try:
                # Inside the try: a cancelled BEGIN still runs on aiosqlite's thread.
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self.conn
                await self.conn.execute("COMMIT")
            except BaseException:
                # The lock is held until the rollback has run, through any number of further
                # cancellations: otherwise the next caller's BEGIN or statements would land
                # in this half-done transaction and be rolled back with it.
                rollback = asyncio.ensure_future(self._rollback())
                while not rollback.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(rollback)
                if not rollback.result():
                    # Nothing was left to roll back: a cancelled COMMIT went through.
                    self.changed.notify()
                raise
        self.changed.notify()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self.lock:
            self._check_open()
            yield self.conn

    async def _rollback(self) -> bool:
        """False if there was no transaction to roll back.

        That happens when a cancelled COMMIT still ran on aiosqlite's thread.
        """
        try:
            await self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return False
        return True

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self.conn.execute(sql, tuple(params)) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    async def other_process_committed(self) -> bool:
        """True if another connection committed since the last look (PRAGMA data_version)."""
        if self.closed:
            return False
        try:
            row = await self.fetchone("PRAGMA data_version")
        except (sqlite3.Error, ValueError):
            return False
        if row is None:
            return False
        version = int(row[0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed


def _prepare(path: Path) -> bool:
    """Make the parent directory and the file, 0600; True if the database is new (no file,
    or the empty one a process killed right after creating it left behind)."""
    private_database(path)
    return path.stat().st_size == 0


async def connect(path: Path) -> aiosqlite.Connection:
    created = await asyncio.to_thread(_prepare, path)
    # isolation_level=None: the sqlite3 module must not open transactions behind our back;
    # every write goes through Db.write's explicit BEGIN IMMEDIATE.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout = 10000")
        if created:
            await conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        async with conn.execute("PRAGMA journal_mode = WAL") as cur:
            mode = await cur.fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (got {mode and mode[0]!r})")
        # FULL: in WAL mode NORMAL skips the fsync of the WAL at commit, so the last
        # transactions can vanish on power loss. An acknowledged inbound SMS is deleted from
        # the modem right after its commit, so the commit must reach the disk first.
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await _check_pragma(conn, "synchronous", 2)
        await _check_pragma(conn, "foreign_keys", 1)
        await migrate(conn, path)
        if created:
            await asyncio.to_thread(fsync_dir, path.parent)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _check_pragma(conn: aiosqlite.Connection, name: str, want: int) -> None:
    async with conn.execute(f"PRAGMA {name}") as cur:
        row = await cur.fetchone()
    if row is None or int(row[0]) != want:
        raise StoreError(f"PRAGMA {name} is {row and row[0]!r}, need {want}")


async def _floor(conn: aiosqlite.Connection) -> int | None:
    try:
        async with conn.execute("SELECT max(oldest_reader) FROM schema_floor") as cur:
            row = await cur.fetchone()
    except sqlite3.OperationalError:  # no such table: written before floors existed
        return None
    return int(row[0]) if row is not None and row[0] is not None else None


async def migrate(conn: aiosqlite.Connection, path: Path) -> None:
    # The version is read inside the write transaction: two processes opening a new
    # database at once must not both run the same migration.
    try:
        await conn.execute("BEGIN IMMEDIATE")
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            # A newer Textbridge migrated this file, and an update was rolled back: use it
            # as it is when its changes were backward compatible, and never lower it.
            floor = await _floor(conn)
            if not readable(version, floor):
                raise StoreError(
                    f"{path} has schema version {version}, but this Textbridge knows only up "
                    f"to {SCHEMA_VERSION}; it was written by a newer version and is left "
                    "untouched"
                )
            await conn.execute("COMMIT")
            return
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                await conn.execute(statement)
        if version != SCHEMA_VERSION:
            await conn.execute("DELETE FROM schema_floor")
            await conn.execute("INSERT INTO schema_floor (oldest_reader) VALUES (?)",
                               (oldest_reader(),))
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.OperationalError):
            await conn.execute("ROLLBACK")
        raise
