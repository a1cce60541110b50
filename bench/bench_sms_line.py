"""SMS line benchmark: +CMTI on the serial line to the durable commit, and cost per message.

Runs the modem simulator (a pty, real pyserial) and the SMS line with a real store in this
process, injects messages one at a time and measures:
- latency from the moment the simulator writes +CMTI to the inbox row being committed
  (p50/p99), and to the message being deleted from the SIM;
- CPU time per message (this process: line, driver thread, store, and the simulator thread,
  so it is an upper bound for the line alone);
- bytes written to disk per message, from /proc/self/io (write_bytes, which counts what
  reaches the block layer, fsyncs included), inbound and outbound.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.config import ModemConfig
from appliance.sim.modem import ModemSimulator
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState

N = 200


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        link = Path(tmp) / "modem"
        sim = ModemSimulator(pin=None, link_path=link, storage_size=50)
        sim.start()
        store = await Store.open(Path(tmp) / "bench.db")
        config = ModemConfig(port=str(link), sweep_interval=3600.0, retry_delay=0.2)
        line = SmsLine("sms", config, store)
        await line.start()
        assert await line.wait_ready(30), line.status().summary

        commit_lat: list[float] = []
        delete_lat: list[float] = []
        bytes0, cpu0 = _write_bytes(), _cpu()
        for i in range(N):
            seen = store.changed
            t0 = time.perf_counter()
            sim.network.deliver("+4915112345678", f"bench message {i}")
            while True:
                await seen.wait(1.0)
                if (await store.inbox.pending(limit=1000))[-1:] and any(
                    r.message.body == f"bench message {i}"
                    for r in await store.inbox.pending(limit=1000)
                ):
                    commit_lat.append(time.perf_counter() - t0)
                    break
            while sim.storage:
                await asyncio.sleep(0.0005)
            delete_lat.append(time.perf_counter() - t0)
            for row in await store.inbox.pending(limit=1000):
                await store.inbox.mark_delivered(row.id, "bench")
        in_bytes, in_cpu = _write_bytes() - bytes0, _cpu() - cpu0

        bytes0, cpu0 = _write_bytes(), _cpu()
        out_lat: list[float] = []
        for i in range(N):
            t0 = time.perf_counter()
            row, _ = await store.outbox.enqueue(
                OutboundRequest(f"b{i}", "sms", "+4915112345678", f"reply {i}", "@bench:x"), 1
            )
            line.wake()
            while True:
                current = await store.outbox.get(row.id)
                assert current is not None
                if current.state == OutboxState.SENT:
                    break
                await asyncio.sleep(0.0005)
            out_lat.append(time.perf_counter() - t0)
        out_bytes, out_cpu = _write_bytes() - bytes0, _cpu() - cpu0

        await line.stop()
        await store.close()
        sim.stop()

    ms = 1000.0
    rows = [
        ("inbound +CMTI -> durable commit p50 (ms)", statistics.median(commit_lat) * ms),
        ("inbound +CMTI -> durable commit p99 (ms)", _pct(commit_lat, 99) * ms),
        ("inbound +CMTI -> deleted from SIM p50 (ms)", statistics.median(delete_lat) * ms),
        ("inbound CPU per message (ms)", in_cpu / N * ms),
        ("inbound bytes written per message", in_bytes / N),
        ("outbound enqueue -> sent p50 (ms)", statistics.median(out_lat) * ms),
        ("outbound enqueue -> sent p99 (ms)", _pct(out_lat, 99) * ms),
        ("outbound CPU per message (ms)", out_cpu / N * ms),
        ("outbound bytes written per message", out_bytes / N),
    ]
    print(f"SMS line benchmark, {N} messages each way (simulated modem on a pty)")
    print(f"{'measure':<48} {'value':>12}")
    for name, value in rows:
        print(f"{name:<48} {value:>12.2f}")

if __name__ == "__main__":
    asyncio.run(main())
