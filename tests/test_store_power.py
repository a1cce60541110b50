"""Kill -9 a process that is writing to the store, many times, and check what survived.

The child (this module run with `python -m tests.test_store_power child DB LIFE SEED`) adds
inbox rows, multipart fragments and walks outbox rows through their states in a tight loop.
Before each store call it prints `? <op>` and after the awaited call returns `! <op> <result>`.
The parent kills it with SIGKILL at random instants and then reads the database with plain
sqlite3 and compares it with a model built from the acknowledged (`!`) lines:

- PRAGMA integrity_check is ok;
- every acknowledged row is there with its acknowledged state, no row is there twice;
- the one operation in flight at the kill is either wholly applied or not at all (for
  `fragments.complete` and `recover_interrupted`, which touch several rows, this is the
  "no half-applied transaction" check).

SIGKILL is not power loss: the kernel still writes back the page cache. What it does test is
that every acknowledged commit was complete in the WAL, in order, when the call returned, and
that SQLite's recovery of a torn WAL works with our schema. docs/store.md argues the power-loss
case (synchronous=FULL fsyncs the WAL before COMMIT returns).
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("TEXTBRIDGE_STORE_KILLS", "120"))
MIN_KILLS = min(KILLS, 100)
# Past this, stop once MIN_KILLS is reached, so that a slow CI machine still stays < 60 s.
TIME_BUDGET_S = 45.0
LIFE_CAP_S = 0.3
START_CAP_S = 30.0
LINE = "sms"

if __name__ != "__main__":  # the child skips importing pytest: a fifth of its start-up
    import pytest

    pytestmark = pytest.mark.slow


# -- the child ----------------------------------------------------------------------------


async def child(db: str, life: int, seed: int) -> None:
    from appliance.store import Store
    from appliance.store.models import InboundMessage, OutboundRequest, OutboxState, PartState

    rng = random.Random(seed)

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    store = await Store.open(db)
    out("? R")
    recovered = await store.outbox.recover_interrupted()
    out("! R " + ",".join(str(r.id) for r in recovered))
    for row in await store.outbox.by_state(OutboxState.AMBIGUOUS, line_id=LINE, limit=1000):
        action = "resend" if row.id % 2 else "cancel"
        op = "Q" if action == "resend" else "X"
        out(f"? {op} {row.id}")
        await store.outbox.resolve(row.id, action)
        out(f"! {op} {row.id}")

    i = 0
    while True:
        i += 1
        key = f"{life}-{i}"
        if i % 3 == 0:  # the same message read again
            key = f"{life}-{rng.randint(1, i - 1)}"
        out(f"? I {key}")
        row, created = await store.inbox.add(
            InboundMessage(LINE, "+491", "+491", f"body {key}", 0, key, raw=os.urandom(40))
        )
        out(f"! I {key} {row.id} {int(created)}")

        if i % 4 == 0:
            group = f"g{life}-{i}"
            for idx in (1, 2):
                out(f"? F {group} {idx}")
                held = await store.fragments.add(LINE, group, idx, 2, "p", f"{group}|{idx}", 0)
                out(f"! F {group} {idx} {held}")
            out(f"? C {group}")
            row, _ = await store.fragments.complete(
                LINE, group, InboundMessage(LINE, "+492", "+492", "pp", 0, group)
            )
            out(f"! C {group} {row.id}")

        rid = f"r{life}-{i}"
        parts = 1 + i % 2
        out(f"? E {rid} {parts}")
        orow, _ = await store.outbox.enqueue(
            OutboundRequest(rid, LINE, f"+4915{i % 3}", "x", "@t"), parts
        )
        out(f"! E {rid} {parts} {orow.id}")

        for orow in (await store.outbox.ready(LINE, 2**62))[:2]:
            out(f"? S {orow.id}")
            await store.outbox.mark_sending(orow.id)
            out(f"! S {orow.id}")
            if rng.random() < 0.2:
                out(f"? Y {orow.id}")
                await store.outbox.mark_retry(orow.id, "busy", 0)
                out(f"! Y {orow.id}")
                continue
            refs = {}
            for part in orow.parts:
                ref = (orow.id * 2 + part.index) % 256
                refs[part.index] = ref
                out(f"? P {orow.id} {part.index} {ref}")
                await store.outbox.mark_part_sent(orow.id, part.index, ref)
                out(f"! P {orow.id} {part.index} {ref}")
            out(f"? T {orow.id}")
            await store.outbox.mark_sent(orow.id)
            out(f"! T {orow.id}")
            for index, ref in refs.items():
                out(f"? V {orow.id} {index} {ref}")
                got = await store.outbox.apply_status_report(
                    LINE, ref, orow.request.conversation, PartState.DELIVERED, None
                )
                assert got is not None and got.id == orow.id
                out(f"! V {orow.id} {index} {ref}")


# -- the parent's model -------------------------------------------------------------------

Parts = tuple[tuple[str, int | None], ...]


@dataclass
class Snapshot:
    inbox: dict[str, int] = field(default_factory=dict)  # dedup_key -> id
    frags: frozenset[tuple[str, int]] = frozenset()  # (group, index)
    outbox: dict[int, tuple[str, Parts]] = field(default_factory=dict)  # id -> state, parts
    requests: dict[str, int] = field(default_factory=dict)  # request_id -> id

    def copy(self) -> Snapshot:
        return replace(
            self, inbox=dict(self.inbox), outbox=dict(self.outbox), requests=dict(self.requests)
        )


def read_db(path: Path) -> Snapshot:
    conn = sqlite3.connect(path)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        assert problems == ["ok"], problems
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        snap = Snapshot()
        for key, row_id in conn.execute("SELECT dedup_key, id FROM inbox"):
            assert key not in snap.inbox, f"inbox key {key} twice"
            snap.inbox[key] = row_id
        snap.frags = frozenset(conn.execute("SELECT group_key, idx FROM fragments"))
        parts: dict[int, list[tuple[str, int | None]]] = {}
        for oid, state, ref in conn.execute(
            "SELECT outbox_id, state, reference FROM outbox_parts ORDER BY outbox_id, idx"
        ):
            parts.setdefault(oid, []).append((state, ref))
        for oid, rid, state in conn.execute("SELECT id, request_id, state FROM outbox"):
            snap.outbox[oid] = (state, tuple(parts.get(oid, ())))
            snap.requests[rid] = oid
        return snap
    finally:
        conn.close()


def apply(model: Snapshot, op: list[str], db: Snapshot, result: list[str] | None) -> Snapshot:
    """The model after `op`. For an unacknowledged op, new ids are taken from the database
    (they must be new ones); for an acknowledged op, from the child's report."""
    m = model.copy()
    kind = op[0]

    def new_id(found: int | None, reported: str | None, taken: set[int]) -> int:
        row_id = int(reported) if reported is not None else found
        assert row_id is not None
        assert row_id not in taken, f"row id {row_id} reused"
        return row_id

    if kind == "I":
        key = op[1]
        if key in m.inbox:
            if result is not None:
                assert int(result[0]) == m.inbox[key] and result[1] == "0", (op, result)
            return m
        found = db.inbox.get(key)
        if result is None and found is None:
            return m
        m.inbox[key] = new_id(found, result[0] if result else None, set(m.inbox.values()))
        if result is not None:
            assert result[1] == "1", (op, result)
    elif kind == "F":
        m.frags = m.frags | {(op[1], int(op[2]))}
        if result is not None:
            held = sum(1 for g, _ in m.frags if g == op[1])
            assert int(result[0]) == held, (op, result, held)
    elif kind == "C":
        group = op[1]
        found = db.inbox.get(group)
        if result is None and found is None:
            return m
        m.inbox[group] = new_id(found, result[0] if result else None, set(m.inbox.values()))
        m.frags = frozenset(f for f in m.frags if f[0] != group)
    elif kind == "E":
        rid, parts = op[1], int(op[2])
        found = db.requests.get(rid)
        if result is None and found is None:
            return m
        row_id = new_id(found, result[0] if result else None, set(m.outbox))
        m.requests[rid] = row_id
        m.outbox[row_id] = ("queued", (("pending", None),) * parts)
    elif kind == "R":
        sending = sorted(i for i, (s, _) in m.outbox.items() if s == "sending")
        if result is not None:
            got = sorted(int(x) for x in result[0].split(",") if x) if result else []
            assert got == sending, (got, sending)
        for i in sending:
            m.outbox[i] = ("ambiguous", m.outbox[i][1])
    else:
        row_id = int(op[1])
        state, parts = m.outbox[row_id]
        plist = list(parts)
        if kind == "S":
            state = "sending"
        elif kind == "Y":
            state = "queued"
        elif kind == "P":
            plist[int(op[2])] = ("sent", int(op[3]))
        elif kind == "T":
            state = "sent"
        elif kind == "V":
            plist[int(op[2])] = ("delivered", int(op[3]))
            if all(s == "delivered" for s, _ in plist):
                state = "delivered"
        elif kind == "Q":
            state = "queued"
            plist = [("pending", None)] * len(plist)
        elif kind == "X":
            state = "cancelled"
        else:
            raise AssertionError(f"unknown op {op}")
        m.outbox[row_id] = (state, tuple(plist))
    return m


def replay(model: Snapshot, lines: list[str], db: Snapshot) -> tuple[Snapshot, list[str] | None]:
    """Apply acknowledged ops; return the model and the op in flight at the kill, if any."""
    pending: list[str] | None = None
    for line in lines:
        mark, *rest = line.split(" ")
        if mark == "?":
            assert pending is None, f"two ops in flight: {pending} and {rest}"
            pending = rest
        elif mark == "!":
            assert pending is not None and rest[: len(pending)] == pending, (pending, rest)
            model = apply(model, pending, db, rest[len(pending) :])
            pending = None
    return model, pending


def check_life(model: Snapshot, lines: list[str], db: Snapshot) -> tuple[Snapshot, bool]:
    model, pending = replay(model, lines, db)
    if db == model:
        return model, False
    assert pending is not None, _diff(model, db)
    after = apply(model, pending, db, None)
    assert db == after, f"in flight {pending}: " + _diff(after, db)
    return after, True


def _diff(want: Snapshot, got: Snapshot) -> str:
    out = []
    for name in ("inbox", "outbox", "requests"):
        w, g = getattr(want, name), getattr(got, name)
        for k in sorted(set(w) | set(g), key=str):
            if w.get(k) != g.get(k):
                out.append(f"{name}[{k}]: want {w.get(k)} got {g.get(k)}")
    if want.frags != got.frags:
        out.append(f"frags: want-only {want.frags - got.frags}, got-only {got.frags - want.frags}")
    return "; ".join(out[:10])


# -- the test -----------------------------------------------------------------------------


def _read_lines(proc: subprocess.Popen[bytes], lines: int | None, cap_s: float | None) -> bytes:
    """Read the child's stdout until it printed `lines` lines, `cap_s` passed, or EOF."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = None if cap_s is None else time.monotonic() + cap_s
    buf = b""
    while lines is None or buf.count(b"\n") < lines:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            break
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_kill_minus_nine_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(4242)
    db_path = tmp_path / "store.db"
    model = Snapshot()
    started = time.monotonic()
    kills = in_flight_applied = acked_total = 0
    while kills < KILLS:
        if kills >= MIN_KILLS and time.monotonic() - started > TIME_BUDGET_S:
            break
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.test_store_power",
                "child",
                str(db_path),
                str(kills),
                str(rng.getrandbits(32)),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        # One kill in ten lands while the child starts and opens (or creates) the database.
        # The rest land after a random number of output lines (so at a random point of the
        # operation sequence, however fast the disk is), capped in time, plus a random
        # sub-commit delay.
        out = b""
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            want = rng.randint(1, 150)
            # The cap counts from the child's first line (the store is open), not from its
            # start: under a loaded machine (parallel tests) start-up alone can eat it.
            out = _read_lines(proc, 1, START_CAP_S)
            if out.count(b"\n") < want:
                out += _read_lines(proc, want - out.count(b"\n"), LIFE_CAP_S)
            time.sleep(rng.uniform(0.0, 0.002))
        proc.send_signal(signal.SIGKILL)
        out += _read_lines(proc, None, None)
        err = proc.stderr.read() if proc.stderr else b""
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        lines = out.decode().split("\n")[:-1]  # the piece after the last \n is torn
        if not db_path.exists():
            assert not any(line.startswith("!") for line in lines)
            kills += 1
            continue
        db = read_db(db_path)
        model, applied = check_life(model, lines, db)
        in_flight_applied += applied
        acked_total += sum(1 for line in lines if line.startswith("!"))
        kills += 1

    # A final open through the Store API: it must accept the file as it is.
    async def final() -> list[str]:
        from appliance.store import Store

        store = await Store.open(db_path)
        try:
            return await store.check()
        finally:
            await store.close()

    assert asyncio.run(final()) == []
    elapsed = time.monotonic() - started
    assert acked_total > 10 * kills, "the child did too little between kills to mean much"
    print(
        f"\nstore power test: {kills} kills in {elapsed:.1f}s, {acked_total} acknowledged "
        f"writes, {len(model.inbox)} inbox rows, {len(model.outbox)} outbox rows, "
        f"{in_flight_applied} kills landed after a commit but before its acknowledgement"
    )


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    asyncio.run(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
