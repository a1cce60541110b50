"""The SMS line's outbound queue: at the modem's pace, and woken by other processes.

The simulator (pty, real pyserial) takes `submit_delay` seconds per part, like a modem
waiting for the network; the line must send the next text as soon as the previous one is
confirmed, and a text queued by another process's store must wake it without a poll.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ModemConfig
from appliance.sms import line as sms_line
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState
from tests.waiting import until

REPO = Path(__file__).resolve().parent.parent
DEST = "+4915112345678"


@pytest.fixture
async def line(tmp_path: Path, modem_sim_factory: Any) -> AsyncIterator[tuple[Any, Store, SmsLine]]:
    link = tmp_path / "modem"
    sim = modem_sim_factory(link_path=link)
    store = await Store.open(tmp_path / "data" / "textbridge.db")
    config = ModemConfig(port=str(link), sweep_interval=600.0, retry_delay=0.2,
                         command_timeout=3.0)
    sms = SmsLine("sms", config, store)
    await sms.start()
    try:
        assert await sms.wait_ready(20), sms.status().summary
        yield sim, store, sms
    finally:
        await sms.stop()
        await store.close()


async def _all_sent(store: Store, n: int) -> bool:
    rows = await store.outbox.by_state(OutboxState.SENT)
    return len(rows) >= n


async def test_backlog_of_one_conversation_drains_at_the_modems_pace(line: Any) -> None:
    """20 texts to one person: each goes out when the modem confirmed the one before, in
    order, once. The gaps between parts at the simulator follow its own submit delay; a
    sender that paused between passes (it waited a second per text) shows gaps of more than
    a second each, so even the median gap tells them apart on a loaded machine."""
    sim, store, sms = line
    sim.network.submit_delay = 0.15
    for i in range(20):
        await store.outbox.enqueue(OutboundRequest(f"r{i}", "sms", DEST, f"text {i}", "@m:t"), 1)
    sms.wake()
    await until(lambda: _all_sent(store, 20), 60, "20 texts sent")
    sent = list(sim.network.sent)
    assert [p.text for p in sent] == [f"text {i}" for i in range(20)]
    gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
    assert statistics.median(gaps) < 0.15 + 0.5, gaps


async def test_a_text_queued_by_another_process_wakes_the_line(
    line: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another process's store rings the doorbell after its commit. The sender's safety-net
    look is pushed out of reach here, so only the ring can make the text go out."""
    sim, store, sms = line
    monkeypatch.setattr(sms_line, "IDLE_LOOK_S", 3600.0)
    sms.wake()  # the sender's next wait uses the long look
    await until(lambda: sms._wake.is_set() is False, 5, "the sender idle")
    assert store.doorbell.listening
    code = (
        "import asyncio, sys\n"
        "from appliance.store import Store\n"
        "from appliance.store.models import OutboundRequest\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        f"    await store.outbox.enqueue(OutboundRequest('x1', 'sms', '{DEST}', 'from the CLI',"
        " '@m:t'), 1)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(store.path)], cwd=REPO, check=True,
                   timeout=60)
    await until(lambda: _all_sent(store, 1), 30, "the CLI's text sent")
    assert [p.text for p in sim.network.sent] == ["from the CLI"]
