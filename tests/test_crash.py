"""The crash test: kill -9 the SMS line hundreds of times mid-traffic, then count.

A real `textbridge sms-line` process talks to the modem simulator over a pty while inbound
texts arrive and outbound texts are queued; it is killed with SIGKILL at random instants
(while opening the modem, sweeping, committing, deleting, sending). After the last kill one
final run drains everything, and the counts must show:

- every inbound text in the store exactly once, none left on the SIM;
- no outbound part sent twice; every message either sent (exactly once) or marked
  ambiguous (sent at most once) because a kill hit it between the modem and the commit.

TEXTBRIDGE_CRASH_KILLS sets the number of kills (default 500).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appliance.sms import pdu
from appliance.store import Store
from appliance.store.models import InboxState, OutboundRequest, OutboxState

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("TEXTBRIDGE_CRASH_KILLS", "500"))
REPO = Path(__file__).resolve().parent.parent


def _inbound_text(i: int, rng: random.Random) -> str:
    kind = i % 6
    if kind == 0:  # three parts of GSM-7 with extension characters
        return f"in-{i} long " + ("[€] {x} " * 45)
    if kind == 1:  # UCS-2 with emoji, two parts
        return f"in-{i} 😀 " + ("Grüße 🎉 " * 12)
    return f"in-{i} " + rng.choice(["hello", "Wie geht's?", "ok 👍", "see you at 5"])


def _outbound_text(i: int) -> str:
    if i % 5 == 0:
        return f"out-{i} " + ("a longer reply that needs two parts " * 6)
    return f"out-{i} short reply"


async def test_kill_minus_nine(tmp_path: Path, modem_sim_factory) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261123)
    link = tmp_path / "modem"
    sim = modem_sim_factory(pin=None, storage_size=25, link_path=link)
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[general]
data_dir = "{data}"
log_level = "warning"

[modem]
port = "{link}"
command_timeout = 3.0
sweep_interval = 2.0
retry_delay = 0.2
multipart_timeout = 3600.0
"""
    )
    store = await Store.open(data / "textbridge.db")
    stderr_log = (tmp_path / "sms-line.log").open("wb")
    cmd = [sys.executable, "-m", "appliance", "sms-line", "--config", str(config)]

    injected: list[str] = []
    outbound: dict[str, str] = {}  # dest -> body
    n_in = n_out = 0
    started = time.monotonic()
    try:
        for kill in range(KILLS):
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=stderr_log
            )
            # Traffic for this life of the process, at random moments within it.
            life = rng.uniform(0.05, 0.7)
            deadline = time.monotonic() + life
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if rng.random() < 0.5 and len(sim.storage) < 15:
                    text = _inbound_text(n_in, rng)
                    sender = f"+49151{n_in % 97:08d}" if n_in % 7 else "ACMEBANK"
                    sim.network.deliver(sender, text)
                    injected.append(text)
                    n_in += 1
                if rng.random() < 0.35:
                    dest = f"+4915190{n_out:06d}"
                    body = _outbound_text(n_out)
                    parts = len(pdu.split(body)[1])
                    await store.outbox.enqueue(
                        OutboundRequest(
                            request_id=f"req-{n_out}",
                            line_id="sms",
                            conversation=dest,
                            body=body,
                            requested_by="@crash:test",
                        ),
                        parts,
                    )
                    outbound[dest] = body
                    n_out += 1
                await asyncio.sleep(min(deadline - time.monotonic(), rng.uniform(0.02, 0.3)))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            if kill % 50 == 0:
                print(f"kill {kill}: {n_in} in, {n_out} out, {time.monotonic() - started:.0f}s")

        # The last life: run until the SIM is empty and nothing is queued or mid-send.
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=stderr_log
        )
        settle_deadline = time.monotonic() + 180
        while time.monotonic() < settle_deadline:
            await asyncio.sleep(1.0)
            rows = [await store.outbox.by_request(f"req-{i}") for i in range(n_out)]
            unfinished = (OutboxState.QUEUED, OutboxState.SENDING)
            busy = [r for r in rows if r is None or r.state in unfinished]
            inbox_count = len(await _all_inbox(store))
            drained = not sim.storage and sim.network.pending == 0
            if not busy and drained and inbox_count >= len(injected):
                break
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        stderr_log.close()

    # Inbound: every text exactly once, nothing left on the SIM.
    rows = await _all_inbox(store)
    bodies = Counter(r.message.body for r in rows if r.message.kind == "text")
    duplicated = [b for b, c in bodies.items() if c > 1]
    missing = [t for t in injected if t not in bodies]
    quarantined = [r for r in rows if r.state == InboxState.QUARANTINED]

    # Outbound: count what reached the network side, per destination and part.
    sent_parts: Counter[tuple[str, int]] = Counter()
    for part in sim.network.sent:
        seq = part.concat.seq if part.concat else 1
        sent_parts[(part.dest, seq)] += 1
    twice = [key for key, c in sent_parts.items() if c > 1]
    states: Counter[str] = Counter()
    unmarked_loss = []
    for i in range(n_out):
        row = await store.outbox.by_request(f"req-{i}")
        assert row is not None
        states[row.state.value] += 1
        dest = row.request.conversation
        parts = len(pdu.split(row.request.body)[1])
        got = [sent_parts[(dest, s)] for s in range(1, parts + 1)]
        if row.state in (OutboxState.SENT, OutboxState.DELIVERED) and got != [1] * parts:
            unmarked_loss.append((i, row.state.value, got))
    await store.close()

    print(
        f"\ncrash test: {KILLS} kills in {time.monotonic() - started:.0f}s; "
        f"inbound {len(injected)} injected, {sum(bodies.values())} stored, "
        f"{len(missing)} lost, {len(duplicated)} duplicated, {len(quarantined)} quarantined; "
        f"outbound {n_out} queued, states {dict(states)}, "
        f"{len(twice)} parts sent twice, {len(unmarked_loss)} sent-state mismatches"
    )
    assert not missing, missing[:5]
    assert not duplicated, duplicated[:5]
    assert not quarantined
    assert not twice, twice[:5]
    assert not unmarked_loss, unmarked_loss[:5]
    assert not sim.storage
    assert states.get("queued", 0) == 0 and states.get("sending", 0) == 0


async def _all_inbox(store: Store) -> list:  # type: ignore[type-arg]
    rows = []
    row_id = 1
    while True:
        row = await store.inbox.get(row_id)
        if row is None:
            # Ids are dense (one connection inserts); a gap means the end.
            break
        rows.append(row)
        row_id += 1
    return rows
