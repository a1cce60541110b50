"""Line selection benchmark: what routing between the phone and the modem costs.

The router scans the QUEUED rows of every line after each store commit (and every 2 s),
and once more before each text from a contact's room is queued, so its scan is on the
path of every message. This prints, on the real store and the real bridge.db (files in
--dir, fsynced as on the Pi):

- `choose` (which line a new text takes: two bridge.db reads and the lines' status);
- one fallback scan with N texts waiting on the phone while the phone can send (nothing
  moves: the steady cost), for several N;
- handing N waiting texts to the modem after the phone went away (one fsynced commit
  each), per text.

The lines' status is the input here, so they are fixed objects that answer `status()`;
the routing code, the store and bridge.db are the appliance's own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.bridge.config import BridgeConfig, LineConfig
from appliance.bridge.db import BridgeDB, Portal
from appliance.bridge.route import Router
from appliance.line import LineCapabilities, LineState, LineStatus
from appliance.store import Store
from appliance.store.models import OutboundRequest, OutboxState

NUMBER = "+4915112345678"
ROOM = "!room:bench"


@dataclass
class FixedLine:
    id: str
    kind: str
    state: LineState = LineState.READY
    woken: int = 0
    capabilities: LineCapabilities = field(default_factory=LineCapabilities)

    def status(self) -> LineStatus:
        return LineStatus(self.id, self.kind, self.state, "bench")

    def wake(self) -> None:
        self.woken += 1


@dataclass
class Holder:
    """What Router reads from the Bridge: config, lines, store, db, outbound checks."""

    config: BridgeConfig
    lines: dict[str, Any]
    store: Store
    db: BridgeDB
    outbound: Any = None


class Checks:
    def number_problem(self, portal: Portal, line: LineConfig) -> str | None:
        return None


async def run(directory: Path, sizes: list[int], repeat: int) -> None:
    people = {"owner": "@anna:bench", "members": ["@ben:bench"]}
    config = BridgeConfig(
        lines=[
            LineConfig(id="phone", kind="phone", **people),  # type: ignore[arg-type]
            LineConfig(id="modem", kind="modem", **people),  # type: ignore[arg-type]
        ]
    )
    phone, modem = FixedLine("phone", "phone"), FixedLine("modem", "modem")
    store = await Store.open(directory / "textbridge.db")
    db = BridgeDB(directory / "bridge.db")
    await db.start()
    holder = Holder(config, {"phone": phone, "modem": modem}, store, db, Checks())
    router = Router(holder)  # type: ignore[arg-type]
    await db.add_portal("phone", NUMBER, ROOM, "dm")
    await db.portal_ready(ROOM)
    await db.link_portal("modem", NUMBER, ROOM)
    portal = await db.portal("phone", NUMBER)
    assert portal is not None
    rows: list[tuple[str, str]] = []

    t = []
    for _ in range(repeat * 20):
        start = time.perf_counter()
        await router.choose(portal, "@anna:bench")  # type: ignore[arg-type]
        t.append((time.perf_counter() - start) * 1000)
    rows.append(("choose (a new text's line)", f"{statistics.median(t):.2f} ms"))

    queued = 0
    for n in sizes:
        while queued < n:
            await store.outbox.enqueue(
                OutboundRequest(
                    f"$e{queued}",
                    "phone",
                    NUMBER,
                    "Kommst du heute?",
                    "@anna:bench",
                    meta={"room_id": ROOM, "event_id": f"$e{queued}", "route": "auto"},
                ),
                1,
            )
            queued += 1
        t = []
        for _ in range(repeat):
            start = time.perf_counter()
            moved = await router.fallback_once()
            t.append((time.perf_counter() - start) * 1000)
            assert moved == 0
        rows.append((f"fallback scan, {n} waiting, phone up", f"{statistics.median(t):.2f} ms"))

    phone.state = LineState.DOWN
    start = time.perf_counter()
    moved = await router.fallback_once()
    took = (time.perf_counter() - start) * 1000
    left = await store.outbox.by_state(OutboxState.QUEUED, line_id="phone", limit=10_000)
    assert moved == queued and not left, (moved, queued, len(left))
    rows.append((f"hand {moved} texts to the modem", f"{took / max(1, moved):.2f} ms per text"))
    await db.stop()
    await store.close()

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where the databases go (the real medium)")
    parser.add_argument("--sizes", default="0,10,50,200")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.dir, sizes, args.repeat))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), sizes, args.repeat))


if __name__ == "__main__":
    main()
