"""SMS line benchmark: the line alone, as its own process, against the simulated modem.

`textbridge sms-line` (the store and the SMS line, no Matrix) runs as a child process on a
real pty; the modem simulator and the measuring run here, in the bench's process. So:
- CPU per message is the line process's alone (utime + stime from /proc/<pid>/stat: its
  event loop, the store's SQLite thread, the serial reader thread, its logging); neither the
  simulator nor the bench's polling is in it;
- bytes written per message are the line process's write_bytes (/proc/<pid>/io: WAL appends
  and the checkpoints SQLite runs in it), plus a checkpoint the bench forces after each
  phase, so WAL frames not yet copied back are counted too;
- inbound latency: from the simulator's +CMTI to the row being visible to another
  connection (committed, fsynced), and to the message being gone from the SIM. The bench
  polls its own read-only connection every 0.5 ms, so each figure includes up to that;
- outbound latency: a text queued by the bench's own Store (another process, like the CLI or
  a test) -> its PDU at the simulator. This is the cross-process wake (the store's doorbell)
  plus the line's query, mark_sending and the AT exchange;
- a backlog of N_BACKLOG texts to one conversation, with the simulator taking SUBMIT_DELAY
  per part like a modem waiting for the network: how long it drains, against the
  simulator's own N_BACKLOG x SUBMIT_DELAY.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from procfs import checkpoint_bytes, cpu_seconds, write_bytes

from appliance.sim.modem import ModemSimulator
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState

N = int(os.environ.get("TEXTBRIDGE_BENCH_N", "200"))
N_BACKLOG = 20
SUBMIT_DELAY = 0.1
ROOT = Path(__file__).resolve().parent.parent





def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="tbbench") as tmp_name:
        tmp = Path(tmp_name)
        link = tmp / "modem"
        sim = ModemSimulator(pin=None, link_path=link, storage_size=50)
        sim.start()
        data = tmp / "data"
        data.mkdir()
        db_path = data / "textbridge.db"
        config = tmp / "config.toml"
        config.write_text(
            f'[general]\ndata_dir = "{data}"\nlog_level = "warning"\n\n'
            f'[modem]\nport = "{link}"\nsweep_interval = 3600.0\nretry_delay = 0.2\n'
        )
        store = await Store.open(db_path)  # the bench's own: another process to the line's
        log = (tmp / "sms-line.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "sms-line", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
        )
        ro = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:

            def inbox_has(body: str) -> bool:
                row = ro.execute("SELECT 1 FROM inbox WHERE body = ?", (body,)).fetchone()
                return row is not None

            async def wait_inbox(body: str, timeout: float = 60.0) -> None:
                deadline = time.monotonic() + timeout
                while not inbox_has(body):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"{body!r} never committed by the line")
                    await asyncio.sleep(0.0005)

            # Warm up: the line opened the modem and took a message.
            sim.network.deliver("+4915112345678", "warm up")
            await wait_inbox("warm up", 120)
            await asyncio.sleep(1.0)

            commit_lat: list[float] = []
            delete_lat: list[float] = []
            checkpoint_bytes([db_path])
            bytes0, cpu0 = write_bytes(proc.pid), cpu_seconds(proc.pid)
            for i in range(N):
                body = f"bench message {i}"
                t0 = time.perf_counter()
                sim.network.deliver("+4915112345678", body)
                await wait_inbox(body)
                commit_lat.append(time.perf_counter() - t0)
                while sim.storage:
                    await asyncio.sleep(0.0005)
                delete_lat.append(time.perf_counter() - t0)
            in_cpu = cpu_seconds(proc.pid) - cpu0
            in_bytes = write_bytes(proc.pid) - bytes0 + checkpoint_bytes([db_path])

            out_lat: list[float] = []
            bytes0, cpu0 = write_bytes(proc.pid), cpu_seconds(proc.pid)
            for i in range(N):
                body = f"reply {i}"
                row, _ = await store.outbox.enqueue(
                    OutboundRequest(f"b{i}", "sms", f"+49151{i:08d}", body, "@bench:x"), 1
                )
                committed = time.time()
                while not sim.network.sent or sim.network.sent[-1].text != body:
                    await asyncio.sleep(0.0005)
                out_lat.append(sim.network.sent[-1].at - committed)
                while True:
                    current = await store.outbox.get(row.id)
                    assert current is not None
                    if current.state == OutboxState.SENT:
                        break
                    await asyncio.sleep(0.001)
            out_cpu = cpu_seconds(proc.pid) - cpu0
            out_bytes = write_bytes(proc.pid) - bytes0 + checkpoint_bytes([db_path])

            # A backlog to one person, the simulator as slow as a modem on a busy network.
            sim.network.submit_delay = SUBMIT_DELAY
            first = len(sim.network.sent)
            t0 = time.time()
            for i in range(N_BACKLOG):
                await store.outbox.enqueue(
                    OutboundRequest(f"k{i}", "sms", "+4915199999999", f"backlog {i}", "@b:x"), 1
                )
            while len(sim.network.sent) < first + N_BACKLOG:
                await asyncio.sleep(0.001)
            drained = sim.network.sent[-1].at - t0
            backlog = sim.network.sent[first:]
            in_order = [p.text for p in backlog] == [f"backlog {i}" for i in range(N_BACKLOG)]
            gaps = [b.at - a.at for a, b in itertools.pairwise(backlog)]
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            ro.close()
            await store.close()
            sim.stop()

    ms = 1000.0
    rows = [
        ("inbound +CMTI -> durable commit p50 (ms)", statistics.median(commit_lat) * ms),
        ("inbound +CMTI -> durable commit p99 (ms)", _pct(commit_lat, 99) * ms),
        ("inbound +CMTI -> deleted from SIM p50 (ms)", statistics.median(delete_lat) * ms),
        ("inbound CPU per message, line process (ms)", in_cpu / N * ms),
        ("inbound bytes written per message (KiB)", in_bytes / N / 1024),
        ("outbound queued by another process -> PDU p50 (ms)", statistics.median(out_lat) * ms),
        ("outbound queued by another process -> PDU p99 (ms)", _pct(out_lat, 99) * ms),
        ("outbound queued by another process -> PDU max (ms)", max(out_lat) * ms),
        ("outbound CPU per message, line process (ms)", out_cpu / N * ms),
        ("outbound bytes written per message (KiB)", out_bytes / N / 1024),
        (f"backlog of {N_BACKLOG}, one conversation: drained in (s)", drained),
        (f"  the simulator's own {N_BACKLOG} x {SUBMIT_DELAY * ms:.0f} ms (s)",
         N_BACKLOG * SUBMIT_DELAY),
        ("  gap between texts at the modem p50 (ms)", statistics.median(gaps) * ms),
        ("  gap between texts at the modem max (ms)", max(gaps) * ms),
    ]
    print(f"SMS line benchmark, {N} messages each way (`textbridge sms-line` as its own "
          "process, simulated modem on a pty)")
    print(f"{'measure':<56} {'value':>10}")
    for name, value in rows:
        print(f"{name:<56} {value:>10.2f}")
    print(f"{'  sent in the order written, once':<56} {'yes' if in_order else 'NO':>10}")


if __name__ == "__main__":
    asyncio.run(main())
