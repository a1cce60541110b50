"""Phone line benchmark: what a poll of the phone costs, and how long a text waits.

Runs the simulated phone (appliance.adbsim, a real ADB server on loopback) and the phone line
with a real store in this process, through the real adb-shell client, and measures:
- CPU time per poll (`dumpsys notification --noredact` + parse + store lookups, plus the
  SMS-store query), for phones showing 0, 5 and 20 conversations of 8 messages each; the
  simulator's own CPU is measured in its threads and subtracted;
- inbound latency, from the message arriving on the phone to its durable commit, at the
  default poll interval (3 s) and at 1 s: about half the interval on average, the whole
  interval at worst, plus the cost of one poll;
- outbound enqueue -> sent through the UI path (a real phone adds its UI's own time:
  opening the compose screen and the uiautomator dumps take hundreds of milliseconds each).

The Pi's CPU is several times slower than a development machine; the table is for
comparing changes, and the poll cost times (1 / poll interval) is the share of one core the
line takes on a Pi once scaled (see docs/phone.md).
"""

from __future__ import annotations

import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.adbsim import AdbSimServer, SimPhone
from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState

POLLS = 100


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _line(tmp: Path, port: int, poll: float, n: int) -> tuple[PhoneLine, Store]:
    store = await Store.open(tmp / f"bench{n}.db")
    config = PhoneConfig(
        enabled=True,
        transport="tcp",
        port=port,
        poll_interval=poll,
        health_interval=60.0,
        ui_wait=2.0,
    )
    line = PhoneLine("phone", config, store, key_path=tmp / "adbkey")
    await line.start()
    assert await line.wait_connected(30), line.status().summary
    return line, store


async def poll_cost(tmp: Path, conversations: int) -> tuple[float, int]:
    phone = SimPhone()
    phone.auto_accept = True
    for c in range(conversations):
        for m in range(8):
            phone.receive(
                f"+49151{c:08d}",
                f"conversation {c} message {m} " + "x" * 60,
                at=1_790_000_000_000 + c * 100 + m,
                rcs=c % 2 == 0,
            )
    server = AdbSimServer(phone).start()
    line, store = await _line(tmp, server.port, 0.0, conversations)
    while line.polls < 3:  # the first polls store the messages; measure steady state
        await asyncio.sleep(0.01)
    start_polls, cpu0 = line.polls, _cpu()
    sim0 = server.cpu_seconds
    while line.polls < start_polls + POLLS:
        await asyncio.sleep(0.01)
    polls = line.polls - start_polls
    cpu = _cpu() - cpu0
    await line.stop()
    await store.close()
    server.stop()
    sim_cpu = server.cpu_seconds - sim0
    size = len(phone.run("dumpsys notification --noredact"))
    return max(0.0, cpu - sim_cpu) / polls, size


async def inbound_latency(tmp: Path, poll: float, samples: int) -> list[float]:
    phone = SimPhone()
    phone.auto_accept = True
    server = AdbSimServer(phone).start()
    line, store = await _line(tmp, server.port, poll, int(poll * 1000) + 1000)
    latencies = []
    rng = random.Random(7)
    for i in range(samples):
        await asyncio.sleep(rng.uniform(0, poll))
        t0 = time.perf_counter()
        phone.receive("+4915112345678", f"latency {i}")
        while True:
            rows = await store.inbox.pending(limit=1000)
            if any(r.message.body == f"latency {i}" for r in rows):
                break
            await store.changed.wait(0.05)
        latencies.append(time.perf_counter() - t0)
    await line.stop()
    await store.close()
    server.stop()
    return latencies


async def outbound_latency(tmp: Path, n: int) -> list[float]:
    phone = SimPhone()
    phone.auto_accept = True
    server = AdbSimServer(phone).start()
    line, store = await _line(tmp, server.port, 3.0, 99)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        row, _ = await store.outbox.enqueue(
            OutboundRequest(f"b{i}", "phone", "+4915112345678", f"reply {i}", "@bench:x"), 1
        )
        line.wake()
        while True:
            current = await store.outbox.get(row.id)
            assert current is not None
            if current.state == OutboxState.SENT:
                break
            await asyncio.sleep(0.001)
        out.append(time.perf_counter() - t0)
    await line.stop()
    await store.close()
    server.stop()
    return out


async def main() -> None:
    ms = 1000.0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        costs = [(n, *await poll_cost(tmp, n)) for n in (0, 5, 20)]
        lat3 = await inbound_latency(tmp, 3.0, 8)
        lat1 = await inbound_latency(tmp, 1.0, 20)
        out = await outbound_latency(tmp, 20)
    print("Phone line benchmark (simulated phone over ADB on loopback, real adb-shell client)")
    print(f"{'measure':<58} {'value':>10}")
    for n, cost, size in costs:
        label = f"CPU per poll, {n} conversations ({size // 1024} KiB dump) (ms)"
        print(f"{label:<58} {cost * ms:>10.2f}")
    for n, cost, _ in costs:
        label = f"share of one core at a 3 s poll, {n} conversations (%)"
        print(f"{label:<58} {cost / 3.0 * 100:>10.3f}")
    print(f"{'inbound latency at 3 s poll, p50 (ms)':<58} {statistics.median(lat3) * ms:>10.0f}")
    print(f"{'inbound latency at 3 s poll, max (ms)':<58} {max(lat3) * ms:>10.0f}")
    print(f"{'inbound latency at 1 s poll, p50 (ms)':<58} {statistics.median(lat1) * ms:>10.0f}")
    print(f"{'inbound latency at 1 s poll, p95 (ms)':<58} {_pct(lat1, 95) * ms:>10.0f}")
    print(f"{'outbound enqueue -> sent via UI, p50 (ms)':<58} {statistics.median(out) * ms:>10.1f}")
    print(f"{'outbound enqueue -> sent via UI, p95 (ms)':<58} {_pct(out, 95) * ms:>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
