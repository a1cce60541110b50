"""Hardware in the loop: the SMS line against a real USB modem with a real SIM.

Needs, on the machine running it (a Pi with the appliance image, or any Linux host with the
stick plugged in and ModemManager kept off it, see overlays/etc/udev/rules.d):
  TEXTBRIDGE_HIL_MODEM        the modem's AT port, by a stable path
                              (/dev/textbridge-modem on the appliance, or /dev/serial/by-id/...)
optional:
  TEXTBRIDGE_HIL_PIN_FILE     a file holding the SIM PIN (0600), if the SIM has one. The test
                              never guesses: a wrong PIN fails the run after one try.
  TEXTBRIDGE_HIL_OWN_NUMBER   the SIM's own number (E.164): texts to itself test both
                              directions with no person needed (multipart, emoji, status reports)
  TEXTBRIDGE_HIL_PEER         another phone's number: a text goes there (a person checks it)
  TEXTBRIDGE_HIL_ASK          "1": a person is asked (on stdout) to text the SIM from a phone
                              and to unplug and replug the stick
  TEXTBRIDGE_HIL_WAIT         seconds to wait for the network or a person (default 180)
  TEXTBRIDGE_HIL_BAUD, TEXTBRIDGE_HIL_RTSCTS  serial settings (default 115200, off)

The line takes every text stored on the SIM into the test's own store and deletes it from
the SIM, as the appliance does: use a SIM whose stored texts you do not need.
Texts cost money: at most 4 SMS are sent per run (3 parts to itself, 1 to the peer).
Everything is skipped, with the reason, when no modem is configured or present.
Run: .venv/bin/python -m pytest hil/test_modem_hil.py -v -s
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from appliance.config import ModemConfig
from appliance.line import LineEvent, LineState
from appliance.sms import pdu
from appliance.sms.line import SmsLine
from appliance.store import Store
from appliance.store.models import InboxRow, OutboundRequest, OutboxRow, OutboxState
from tests.waiting import until

PORT = os.environ.get("TEXTBRIDGE_HIL_MODEM", "")
PIN_FILE = os.environ.get("TEXTBRIDGE_HIL_PIN_FILE", "")
OWN = os.environ.get("TEXTBRIDGE_HIL_OWN_NUMBER", "")
PEER = os.environ.get("TEXTBRIDGE_HIL_PEER", "")
ASK = os.environ.get("TEXTBRIDGE_HIL_ASK", "") == "1"
WAIT = float(os.environ.get("TEXTBRIDGE_HIL_WAIT", "180"))
BAUD = int(os.environ.get("TEXTBRIDGE_HIL_BAUD", "115200"))
RTSCTS = os.environ.get("TEXTBRIDGE_HIL_RTSCTS", "") == "1"


def _why_skip() -> str | None:
    if not PORT:
        return "TEXTBRIDGE_HIL_MODEM is not set (the modem's AT port, e.g. /dev/textbridge-modem)"
    if not Path(PORT).exists():
        return f"no modem at {PORT}"
    if PIN_FILE and not Path(PIN_FILE).is_file():
        return f"TEXTBRIDGE_HIL_PIN_FILE {PIN_FILE} is not a file"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


def _say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)




class Rig:
    def __init__(self, line: SmsLine, store: Store, events: list[LineEvent]) -> None:
        self.line, self.store, self.events = line, store, events

    async def send(self, to: str, body: str) -> int:
        row, _ = await self.store.outbox.enqueue(
            OutboundRequest(f"hil-{uuid.uuid4().hex}", self.line.id, to, body, "@hil:test"),
            len(pdu.split(body)[1]),
        )
        self.line.wake()
        return row.id

    async def reach(self, row_id: int, *states: OutboxState, timeout: float = WAIT
                    ) -> OutboxRow:
        async def reached() -> OutboxRow | None:
            row = await self.store.outbox.get(row_id)
            assert row is not None
            assert row.state not in (OutboxState.FAILED, OutboxState.AMBIGUOUS), row.error
            return row if row.state in states else None

        row: OutboxRow = await until(reached, timeout, f"text {row_id} in {states}")
        return row

    async def received(self, check: Callable[[InboxRow], bool], timeout: float = WAIT
                       ) -> list[InboxRow]:
        async def found() -> list[InboxRow] | None:
            rows = [r for r in await self.store.inbox.pending(limit=1000) if check(r)]
            return rows or None

        rows: list[InboxRow] = await until(found, timeout, "the text to arrive")
        return rows


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = ModemConfig(
        port=PORT,
        baudrate=BAUD,
        rtscts=RTSCTS,
        pin_file=Path(PIN_FILE) if PIN_FILE else None,
        sweep_interval=20.0,
        status_reports=True,
    )
    store = await Store.open(tmp_path / "store.db")
    events: list[LineEvent] = []
    line = SmsLine("sms", config, store, on_event=events.append)
    await line.start()
    try:
        assert await line.wait_ready(WAIT), (
            f"the modem did not become ready: {line.status().summary}; events: "
            + "; ".join(e.text for e in events)
        )
        yield Rig(line, store, events)
    finally:
        await line.stop()
        await store.close()


async def test_modem_comes_up_and_reports_itself(rig: Rig) -> None:
    status = rig.line.status()
    _say(f"modem: {status.summary} | {status.details}")
    assert status.state in (LineState.READY, LineState.DEGRADED)
    assert status.registered
    assert status.operator, "no operator name"
    assert status.signal_percent is not None
    assert status.details.get("model"), "no model reported"
    assert status.details.get("storage"), "no SIM storage figures"


@pytest.mark.skipif(not OWN, reason="TEXTBRIDGE_HIL_OWN_NUMBER is not set")
async def test_texts_to_itself_arrive_once_whole_and_are_reported_delivered(rig: Rig) -> None:
    tag = uuid.uuid4().hex[:6]
    short = f"Textbridge HIL {tag}: GSM-7 with € and [brackets]"
    # 67 UCS-2 characters per part: this one needs 2 parts, one emoji on the split point.
    long = f"HIL {tag} 🙂 " + "ü" * 55 + "😀" + "ö" * 20
    assert len(pdu.split(long)[1]) == 2
    ids = [await rig.send(OWN, short), await rig.send(OWN, long)]
    for row_id in ids:
        row = await rig.reach(row_id, OutboxState.SENT, OutboxState.DELIVERED)
        _say(f"text {row_id}: {row.state}, parts {[p.reference for p in row.parts]}")
    rows = await rig.received(lambda r: tag in r.message.body and r.message.body == long)
    assert len(rows) == 1, "the two-part text arrived more than once"
    rows = await rig.received(lambda r: r.message.body == short)
    assert len(rows) == 1
    assert rows[0].message.conversation == OWN
    # Status reports: every part delivered makes the message delivered.
    for row_id in ids:
        row = await rig.reach(row_id, OutboxState.DELIVERED)
        assert all(p.state == "delivered" for p in row.parts)
    # Each part is deleted from the SIM after the store committed it: its storage empties
    # again, and nothing is taken twice.
    await until(lambda: rig.line.status().details.get("storage", "").startswith("0 of"),
                 WAIT, "the SIM's storage to be empty again")
    rows = await rig.store.inbox.pending(limit=1000)
    assert sum(1 for r in rows if tag in r.message.body) == 2


@pytest.mark.skipif(not PEER, reason="TEXTBRIDGE_HIL_PEER is not set")
async def test_text_to_another_phone(rig: Rig) -> None:
    tag = uuid.uuid4().hex[:6]
    row_id = await rig.send(PEER, f"Textbridge HIL {tag}: hello from the modem 👋")
    row = await rig.reach(row_id, OutboxState.SENT, OutboxState.DELIVERED)
    _say(f"sent to {PEER} ({row.state}); check that it shows 'Textbridge HIL {tag}' and 👋")


@pytest.mark.skipif(not ASK, reason="TEXTBRIDGE_HIL_ASK is not 1 (no person at the desk)")
async def test_a_person_texts_the_sim_and_replugs_the_stick(rig: Rig) -> None:
    tag = uuid.uuid4().hex[:4]
    _say(f"Please text '{tag} hello 🙂' to the SIM from a phone (waiting {WAIT:.0f} s)")
    rows = await rig.received(lambda r: tag in r.message.body)
    assert len(rows) == 1 and "🙂" in rows[0].message.body
    _say(f"received from {rows[0].message.sender}. Now unplug the modem stick, "
         "wait 5 seconds and plug it back in.")
    await until(lambda: rig.line.status().state == LineState.DOWN, WAIT, "the unplug")
    _say("unplugged seen; plug it back in")
    assert await rig.line.wait_ready(WAIT), rig.line.status().summary
    _say(f"back: {rig.line.status().summary}. Text '{tag} again' to the SIM once more")
    rows = await rig.received(lambda r: f"{tag} again" in r.message.body)
    assert len(rows) == 1
    texts = [e.text for e in rig.events]
    assert any("unplugged" in t.lower() or "not answering" in t.lower() for t in texts), texts
