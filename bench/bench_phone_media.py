"""Phone line media benchmark: how long an MMS picture takes to come in, and a file to go out.

The simulated phone (appliance.adbsim, a real ADB server on loopback) and the phone line
with a real store, through the real adb-shell client:
- MMS in: from the MMS arriving on the phone to its durable commit with its bytes, for a
  100 KiB, 1 MiB and 10 MiB picture (queries of content://mms, addr, part, then `content
  read` over the exec: service at adb's payload size);
- file out: from the row being queued to SENT, for the same sizes (adb sync push, media
  store lookup, share intent, two or more uiautomator dumps, tap, confirm).

Loopback TCP is faster than USB 2 (about 30-40 MB/s in practice for adb) and a real phone's
`content read`, MediaProvider and Messages add their own time; the table is for comparing
changes, and the bytes-per-second column shows what adb-shell itself manages.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.adbsim import AdbSimServer, SimPhone
from appliance.adbsim.device import SimPart
from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState

SIZES = (100 * 1024, 1024 * 1024, 10 * 1024 * 1024 - 4096)


async def _wait(check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def main() -> None:
    phone = SimPhone()
    phone.auto_accept = True
    with AdbSimServer(phone) as server, tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        line = PhoneLine(
            "phone",
            PhoneConfig(
                enabled=True,
                transport="tcp",
                port=server.port,
                poll_interval=0.05,
                health_interval=60.0,
                provider_grace=0.0,
                ui_wait=5.0,
                command_timeout=60.0,
            ),
            store,
            key_path=Path(tmp) / "adbkey",
        )
        await line.start()
        assert await line.wait_connected(20)
        rows_in: list[tuple[int, float]] = []
        for n, size in enumerate(SIZES):
            data = b"\xff\xd8\xff" + os.urandom(size - 3)
            before = len(await store.inbox.pending(limit=100))
            started = time.perf_counter()
            phone.receive_mms("+4915112345678", [SimPart("image/jpeg", data, f"p{n}.jpg")])

            async def stored(before: int = before) -> bool:
                return len(await store.inbox.pending(limit=100)) > before

            await _wait(stored)
            rows_in.append((size, time.perf_counter() - started))
            row = (await store.inbox.pending(limit=100))[-1]
            full = await store.inbox.get(row.id)
            assert full is not None and full.message.raw == data, "bytes differ"
        rows_out: list[tuple[int, float]] = []
        for n, size in enumerate(SIZES):
            data = os.urandom(size)
            name = await store.attachments.put(data)
            started = time.perf_counter()
            row, _ = await store.outbox.enqueue(
                OutboundRequest(
                    f"out{n}",
                    "phone",
                    "+4915112345678",
                    "x.jpg",
                    "@bench:test",
                    meta={"attachment": {"file": name, "type": "image/jpeg", "name": "x.jpg"}},
                ),
                1,
            )
            line.wake()

            async def sent(row_id: int = row.id) -> bool:
                r = await store.outbox.get(row_id)
                return r is not None and r.state == OutboxState.SENT

            await _wait(sent)
            rows_out.append((size, time.perf_counter() - started))
            got = phone.sent[-1].attachment
            assert (
                got is not None and hashlib.sha256(got[1]).digest() == hashlib.sha256(data).digest()
            )
        await line.stop()
        await store.close()
    print("| size | MMS in: arrival -> stored | MB/s | file out: queued -> sent | MB/s |")
    print("|---|---|---|---|---|")
    for (size, t_in), (_, t_out) in zip(rows_in, rows_out, strict=True):
        print(
            f"| {size / 1048576:.1f} MiB | {t_in * 1000:.0f} ms | {size / t_in / 1e6:.1f} "
            f"| {t_out * 1000:.0f} ms | {size / t_out / 1e6:.1f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
