"""Fuzzed inbound PDUs never crash the SMS line; what cannot be read is quarantined.

10,000 mutations of real deliver and status-report PDUs (bit flips, truncations, corrupted
length fields, random tails, random bytes) go through the line's decode-and-commit step with
a real store; then a few hundred travel the whole way, from the simulator's storage over the
pty, and the line must keep working afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from appliance.config import ModemConfig
from appliance.sms import pdu
from appliance.sms.line import SmsLine
from appliance.store import Store

N_CASES = 10_000


def _seeds() -> list[bytes]:
    ts = 1_790_000_000_000
    seeds: list[bytes] = []
    seeds += pdu.encode_deliver("+4915112345678", "Hallo [€]", timestamp_ms=ts)
    seeds += pdu.encode_deliver("ACMEBANK", "Code 1234 😀", timestamp_ms=ts, tz_quarters=-20)
    seeds += pdu.encode_deliver("+4915112345678", "long " * 80, timestamp_ms=ts, concat_ref=9)
    seeds += pdu.encode_deliver("12345", "", timestamp_ms=ts, encoding="8bit", data=b"\x00\xff")
    seeds.append(pdu.encode_status_report(7, "+4915112345678", 0x00, scts_ms=ts, discharge_ms=ts))
    seeds.append(pdu.encode_status_report(8, "+4915112345678", 0x41, scts_ms=ts, discharge_ms=ts))
    return seeds


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    how = rng.randrange(6)
    if how == 0:  # bit flips
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif how == 1:  # truncation
        del data[rng.randrange(1, len(data)) :]
    elif how == 2:  # a length field (SMSC, address, UDL, UDH) set to anything
        spots = [0, min(len(data) - 1, data[0] + 2), len(data) // 2, rng.randrange(len(data))]
        i = rng.choice(spots)
        data[i] = rng.randrange(256)
    elif how == 3:  # random tail
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif how == 4:  # spliced with another seed
        other = rng.choice(_SEEDS)
        cut = rng.randrange(len(data))
        data = data[:cut] + other[rng.randrange(len(other)) :]
    else:  # pure noise
        data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 180)))
    return bytes(data)


_SEEDS = _seeds()


async def test_ten_thousand_fuzzed_pdus_are_stored_or_quarantined(tmp_path: Path) -> None:
    rng = random.Random(4711)
    store = await Store.open(tmp_path / "fuzz.db")
    line = SmsLine("sms", ModemConfig(port="/dev/null"), store)  # never started: no modem
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for _ in range(N_CASES):
            case = _mutate(rng, rng.choice(_SEEDS))
            outcomes[await line.commit_pdu(case.hex())] += 1
        quarantined = await store.inbox.quarantined(limit=N_CASES)
        assert all(r.message.raw is not None and r.message.note for r in quarantined)
        assert sum(outcomes.values()) == N_CASES
        # Distinct undecodable inputs are each kept (identical ones are one row).
        assert 0 < len(quarantined) <= outcomes["quarantined"]
        assert outcomes["message"] > 0 and outcomes["report"] > 0
        assert await store.check() == []
    finally:
        await store.close()
    print(f"\nfuzz: {N_CASES} PDUs in {time.monotonic() - started:.1f}s -> {dict(outcomes)}")


async def test_fuzzed_pdus_over_the_serial_line_keep_the_line_alive(
    tmp_path: Path, modem_sim_factory: Any
) -> None:
    rng = random.Random(815)
    link = tmp_path / "modem"
    sim = modem_sim_factory(pin=None, link_path=link, storage_size=50)
    store = await Store.open(tmp_path / "line.db")
    line = SmsLine("sms", ModemConfig(port=str(link), sweep_interval=600.0), store)
    await line.start()
    try:
        assert await line.wait_ready(20)
        for _ in range(300):
            while len(sim.storage) > 40:
                await asyncio.sleep(0.01)
            sim.network.deliver_pdu(_mutate(rng, rng.choice(_SEEDS)).hex())
        deadline = time.monotonic() + 60
        while sim.storage and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not sim.storage, "fuzzed PDUs left on the SIM"
        sim.network.deliver("+4915100000009", "still alive")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            bodies = [r.message.body for r in await store.inbox.pending(limit=10_000)]
            if "still alive" in bodies:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the line stopped taking messages after the fuzz")
    finally:
        await line.stop()
        await store.close()
