"""Store benchmark: what one message costs in latency, disk writes and CPU.

On the Pi the SD card is the scarce resource: every inbound text is one fsynced commit
before the modem may delete it, and every outbound text is a handful of commits
(enqueue, sending, each part, sent, status reports, reported). This prints, for N messages:

- latency of `inbox.add` (p50/p99/max, ms): how long the line waits before deleting;
- bytes the process caused to be written to storage per message (`/proc/self/io`
  write_bytes, which includes WAL appends and checkpoints), and the growth of the
  database plus WAL files;
- CPU time per message (process time: the event loop and aiosqlite's thread together).

Use a directory on the real medium (--dir); on tmpfs write_bytes is zero.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.store import Store
from appliance.store.models import InboundMessage, OutboundRequest, PartState

BODY = "Kommst du heute zum Abendessen? Oma bringt Kuchen mit, bitte sag bis 5 Bescheid. 😀"
RAW = bytes(range(140))  # about one PDU


def write_bytes() -> int:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return -1


def files_size(db: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = db.with_name(db.name + suffix)
        if p.exists() and suffix != "-shm":
            total += p.stat().st_size
    return total


@dataclass
class Result:
    name: str
    n: int
    latencies_ms: list[float]
    written: int
    growth: int
    cpu_s: float
    commits: int

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        per_written = f"{self.written / self.n:9.0f}" if self.written >= 0 else "      n/a"
        return (
            f"{self.name:<34} {self.n:6d} {self.commits:8d} {p50:8.2f} {p99:8.2f} "
            f"{lat[-1]:8.2f} {per_written} {self.growth / self.n:9.0f} "
            f"{self.cpu_s / self.n * 1e3:8.3f}"
        )


async def checkpoint(store: Store) -> None:
    # Through the store's own connection (and its lock): the WAL is copied into the database
    # and truncated, so that a phase's writes include putting its pages in their final place.
    async with store._db.read() as conn:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def measure(
    name: str,
    store: Store,
    n: int,
    commits: int,
    one: Callable[[int], Awaitable[float]],
) -> Result:
    await checkpoint(store)
    latencies = []
    w0, g0, c0 = write_bytes(), files_size(store.path), time.process_time()
    for i in range(n):
        latencies.append(await one(i))
    await checkpoint(store)
    written = write_bytes() - w0 if w0 >= 0 else -1
    growth = files_size(store.path) - g0
    return Result(name, n, latencies, written, growth, time.process_time() - c0, commits)


async def run(n: int, directory: Path) -> list[Result]:
    path = directory / "bench.db"
    store = await Store.open(path)
    results = []
    try:

        async def inbound(i: int) -> float:
            msg = InboundMessage(
                "sms",
                f"+49151{i % 50:08d}",
                f"+49151{i % 50:08d}",
                BODY,
                1_767_225_600_000 + i,
                f"k{i}",
                raw=RAW,
                meta={"encoding": "ucs2"},
            )
            start = time.perf_counter()
            await store.inbox.add(msg)
            return (time.perf_counter() - start) * 1e3

        results.append(await measure("inbound: inbox.add", store, n, 1, inbound))

        async def delivered(i: int) -> float:
            start = time.perf_counter()
            await store.inbox.mark_delivered(i + 1, f"$event{i}")
            return (time.perf_counter() - start) * 1e3

        results.append(await measure("inbound: mark_delivered", store, n, 1, delivered))

        async def outbound(i: int) -> float:
            # The whole life of a 2-part text: the latency column is per commit.
            ob = store.outbox
            start = time.perf_counter()
            row, _ = await ob.enqueue(
                OutboundRequest(f"$req{i}", "sms", f"+49151{i % 50:08d}", BODY * 2, "@mum:x"), 2
            )
            await ob.mark_sending(row.id)
            await ob.mark_part_sent(row.id, 0, (2 * i) % 256)
            await ob.mark_part_sent(row.id, 1, (2 * i + 1) % 256)
            await ob.mark_sent(row.id)
            for ref in ((2 * i) % 256, (2 * i + 1) % 256):
                await ob.apply_status_report("sms", ref, None, PartState.DELIVERED, None)
            await ob.mark_reported(row.id, (await ob.get(row.id)).state)  # type: ignore[union-attr]
            return (time.perf_counter() - start) * 1e3 / 8

        results.append(await measure("outbound: 2-part text, 8 commits", store, n, 8, outbound))

        async def ready(i: int) -> float:
            start = time.perf_counter()
            await store.outbox.ready("sms", 2**62)
            return (time.perf_counter() - start) * 1e3

        results.append(
            await measure("outbox.ready, 1000 rows done (read)", store, min(n, 200), 0, ready)
        )
    finally:
        await store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="messages per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        results = asyncio.run(run(args.n, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"store benchmark, N={args.n}, database in {args.dir or tempfile.gettempdir()}")
    print(
        f"{'operation':<34} {'N':>6} {'commits':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'disk B/msg':>9} {'file B/msg':>9} {'CPU ms/msg':>8}"
    )
    for r in results:
        print(r.row())
    print(
        "latency is per commit (outbound: the 8 commits of one text averaged); disk B/msg is "
        "/proc/self/io write_bytes per message (WAL appends and checkpoints, including one at "
        "the end of each phase); file B/msg is the growth of the database file per message."
    )
    if results and results[0].written == 0:
        print("warning: nothing reached a block device (tmpfs?); use --dir on the real disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
