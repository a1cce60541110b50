"""Bridge benchmark: an SMS on the serial line to a Matrix client, and back, and memory.

The appliance runs as it does on the Pi, as its own process (`python -m appliance run`):
store, SMS line and bridge. Around it, in this process: the modem simulator on a pty (real
pyserial on the appliance's side), a real Synapse with the bridge's registration, and a
matrix-nio client as the family member, long-polling /sync. Measured from outside:

- inbound end to end: from `sim.network.deliver` (the simulator queues +CMTI on the line at
  once) to the event arriving in the member's /sync, p50/p99 over N_LATENCY texts sent one
  at a time;
- the parts of that: +CMTI -> inbox row committed is the SMS line's; row committed -> row
  DELIVERED is the bridge's (the row turns DELIVERED right after the homeserver returned the
  event id). A reader thread polls the store file read-only every ms and notes when each row
  first shows up and when it turns DELIVERED, so both include up to 1 ms of polling; the
  bridge's share is split further with Synapse's access log, which says how long Synapse
  spent on each event PUT (transaction id tb-inbox-<row id>);
- outbound: nio sends a message -> outbox row enqueued (created_at; includes Synapse pushing
  the appservice transaction), and row enqueued -> PDU at the simulator (its SentSms.at). The
  simulator adds no delay of its own (no `slow` fault; it answers AT+CMGS as it reads it),
  so the second figure is the line's own overhead plus the AT exchange over the pty;
- the bridge's own share per text: +CMTI -> row DELIVERED (the homeserver accepted the event
  PUT) minus Synapse's own time for that PUT, event by event, so neither the homeserver nor the
  client's /sync is in it (but the SMS line's commit and the AT exchange are);
- whole-process CPU per text (utime + stime from /proc/<pid>/stat), for the appliance's `run`
  process and for Synapse, over the inbound burst (N_BURST texts) and an outbound backlog
  (N_OUT_BURST messages sent by the client to one conversation); each includes everything
  the process does meanwhile (the line, the bridge, logging, timers; for Synapse also the
  client's /sync);
- bytes written per text both ways: the run process's write_bytes (/proc/<pid>/io: the store's
  and bridge.db's WAL appends, the checkpoints SQLite runs in that process, the log), plus a
  checkpoint this bench forces at the end of each phase so that WAL frames not yet copied
  back into the databases are counted too;
- the appliance process's RSS (/proc/<pid>/status VmRSS): idle, the peak during a burst of
  N_BURST texts, and after the burst; plus how long that burst took to reach the client.

Sizes: N_LATENCY, N_OUT, N_BURST and N_OUT_BURST, or TEXTBRIDGE_BENCH_SCALE (e.g. 0.2) for a
quick run on a loaded machine. TEXTBRIDGE_BENCH_PYSPY=<py-spy binary> records the run process
during the inbound burst and the outbound backlog (collapsed stacks, next to the bench's
output as profile-inbound.txt and profile-outbound.txt in TEXTBRIDGE_BENCH_PROFILES or /tmp).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import nio
from procfs import checkpoint_bytes, cpu_seconds, write_bytes

from appliance.homeserver.api import random_password
from appliance.homeserver.registration import Registration
from appliance.homeserver.synapse import SynapseAdapter, SynapseServer, free_port
from appliance.sim.modem import ModemSimulator

_SCALE = float(os.environ.get("TEXTBRIDGE_BENCH_SCALE", "1"))
N_LATENCY = max(10, int(120 * _SCALE))
N_OUT = max(10, int(100 * _SCALE))
N_BURST = max(20, int(500 * _SCALE))
N_OUT_BURST = max(20, int(200 * _SCALE))
SERVER_NAME = "textbridge.bench"
NUMBER = "+4915112345678"
ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]







class Meter:
    """CPU seconds of the run process and Synapse, and the bytes the run process wrote,
    from one mark to the next."""

    def __init__(self, run_pid: int, synapse_pid: int, databases: list[Path]) -> None:
        self.pids = {"run": run_pid, "synapse": synapse_pid}
        self.databases = databases
        self._cpu: dict[str, float] = {}
        self._bytes = 0

    def start(self) -> None:
        checkpoint_bytes(self.databases)  # earlier phases' frames are not this phase's
        self._cpu = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self._bytes = write_bytes(self.pids["run"])

    def stop(self) -> tuple[dict[str, float], int]:
        cpu = {k: cpu_seconds(p) - self._cpu[k] for k, p in self.pids.items()}
        written = write_bytes(self.pids["run"]) - self._bytes
        return cpu, written + checkpoint_bytes(self.databases)


class Profiler:
    """py-spy on the run process for one phase, if asked for (a developer's tool, not a
    dependency)."""

    def __init__(self, pid: int, name: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        spy = os.environ.get("TEXTBRIDGE_BENCH_PYSPY")
        if not spy:
            return
        out = Path(os.environ.get("TEXTBRIDGE_BENCH_PROFILES", "/tmp")) / f"profile-{name}.txt"
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--nonblocking",
             "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attached before the phase starts

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


class InboxWatcher(threading.Thread):
    """Reads the store file (read-only, its own connection) every millisecond and notes when
    each inbox row was first seen DELIVERED. Runs in a thread so the event loop's work on the
    client side does not delay the observation."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(name="inbox-watcher", daemon=True)
        self.db_path = db_path
        self.rows: dict[int, dict[str, Any]] = {}  # id -> body, received_at (s), delivered (s)
        self.by_body: dict[str, int] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.db_path.exists() and not self._halt.is_set():
            time.sleep(0.05)
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)
        floor = 0  # every row below this is known delivered
        try:
            while not self._halt.is_set():
                try:
                    found = conn.execute(
                        "SELECT id, state, received_at FROM inbox WHERE id > ? ORDER BY id "
                        "LIMIT 600",
                        (floor,),
                    ).fetchall()
                except sqlite3.OperationalError:  # e.g. the schema is being created
                    time.sleep(0.01)
                    continue
                now = time.time()
                new_ids = [r[0] for r in found if r[0] not in self.rows]
                bodies: dict[int, str] = {}
                if new_ids:
                    marks = ",".join("?" * len(new_ids))
                    bodies = dict(
                        conn.execute(
                            f"SELECT id, body FROM inbox WHERE id IN ({marks})",
                            new_ids,
                        ).fetchall()
                    )
                with self._lock:
                    for row_id, state, received_at in found:
                        row = self.rows.get(row_id)
                        if row is None:
                            # First seen by another connection: committed, fsynced.
                            row = {
                                "id": row_id,
                                "body": bodies.get(row_id),
                                "received": received_at / 1000,
                                "committed": now,
                            }
                            self.rows[row_id] = row
                            self.by_body[str(row["body"])] = row_id
                        if state != "received" and "delivered" not in row:
                            row["delivered"] = now
                    while floor + 1 in self.rows and "delivered" in self.rows[floor + 1]:
                        floor += 1
                time.sleep(0.001)
        finally:
            conn.close()

    def row(self, body: str) -> dict[str, Any] | None:
        with self._lock:
            row_id = self.by_body.get(body)
            return None if row_id is None else dict(self.rows[row_id])

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Client:
    """The family member: matrix-nio, long-polling /sync, noting when each text arrives."""

    def __init__(self, url: str, mxid: str, token: str, ghost: str) -> None:
        self.client = nio.AsyncClient(url, mxid)
        self.client.access_token = token
        self.client.user_id = mxid
        self.ghost = ghost
        self.seen: dict[str, float] = {}
        self.rooms: dict[str, str] = {}  # body -> room
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Without a big timeline limit a sync after a burst is "limited" and skips events.
        self._filter = {"room": {"timeline": {"limit": 1000}, "state": {"lazy_load_members": True}}}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        since: str | None = None
        while True:
            resp = await self.client.sync(timeout=30000, since=since, sync_filter=self._filter)
            now = time.time()
            if not isinstance(resp, nio.SyncResponse):
                await asyncio.sleep(0.5)
                continue
            since = resp.next_batch
            for room_id, room in resp.rooms.join.items():
                for event in room.timeline.events:
                    src = event.source
                    content = src.get("content", {})
                    if src.get("sender") == self.ghost and content.get("msgtype") == "m.text":
                        self.seen.setdefault(content.get("body", ""), now)
                        self.rooms[content.get("body", "")] = room_id
            for room_id in resp.rooms.invite:
                await self.client.join(room_id)
            self.changed.set()

    async def wait_seen(self, body: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while body not in self.seen:
            self.changed.clear()
            if body in self.seen:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{body!r} never reached the client")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return self.seen[body]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()


SEND_LOG = re.compile(
    r"Processed request: (?P<secs>[0-9.]+)sec/(?P<send>[0-9.]+)sec .*"
    r"\"PUT \S*/send/m\.room\.message/tb-inbox-(?P<row>\d+)\?"
)


def synapse_send_times(log_path: Path) -> dict[int, float]:
    """inbox row id -> seconds Synapse spent on the PUT that sent its event (the bridge's
    transaction id is tb-inbox-<row id>), from Synapse's access log."""
    times: dict[int, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = SEND_LOG.search(line)
            if match:
                times.setdefault(int(match["row"]), float(match["secs"]) + float(match["send"]))
    return times


async def control_status(socket_path: Path) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get("http://appliance/v1/status") as resp,
    ):
        result: dict[str, Any] = await resp.json()
        return result


async def line_counter(socket_path: Path, name: str) -> int:
    status = await control_status(socket_path)
    return int(status["lines"][0].get("details", {}).get(f"count_{name}", 0))


async def wait_ready(proc: subprocess.Popen[bytes], socket_path: Path, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the appliance exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, aiohttp.ClientError, ValueError):
            status = await control_status(socket_path)
            states = [line["state"] for line in status["lines"]]
            if status["bridge"]["health"].get("ok") and states == ["ready"]:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the appliance did not get ready:\n{log.read_text()}")
        await asyncio.sleep(0.2)


async def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="tbbench") as tmp_name:
        tmp = Path(tmp_name)
        bridge_port = free_port()
        registration = Registration.generate(url=f"http://127.0.0.1:{bridge_port}")
        reg_path = tmp / "registration.yaml"
        registration.save(reg_path, SERVER_NAME)
        server = SynapseServer(
            tmp / "synapse", server_name=SERVER_NAME, appservice_files=[reg_path]
        )
        sim = ModemSimulator(pin=None, link_path=tmp / "modem", storage_size=50)
        proc: subprocess.Popen[bytes] | None = None
        watcher: InboxWatcher | None = None
        client: Client | None = None
        print("starting Synapse…", file=sys.stderr, flush=True)
        await server.start(180)
        try:
            adapter = SynapseAdapter.for_server(server)
            password = random_password()
            mxid = await adapter.create_user("fam", password)
            token = await adapter.login("fam", password)
            sim.start()
            data = tmp / "data"
            config = tmp / "config.toml"
            config.write_text(
                f"""
[general]
data_dir = {json.dumps(str(data))}
log_level = "warning"

[modem]
port = {json.dumps(str(sim.port))}

[bridge]
homeserver_url = {json.dumps(server.url)}
server_name = {json.dumps(SERVER_NAME)}
registration = {json.dumps(str(reg_path))}
listen_port = {bridge_port}

[bridge.caps]
daily_per_user = 0

[[bridge.lines]]
id = "sms"
members = [{json.dumps(mxid)}]
owner = {json.dumps(mxid)}
""",
                encoding="utf-8",
            )
            log = tmp / "appliance.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "appliance", "run", "--config", str(config)],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            print("starting the appliance…", file=sys.stderr, flush=True)
            await wait_ready(proc, data / "control.sock", log)
            watcher = InboxWatcher(data / "textbridge.db")
            watcher.start()
            ghost = f"@{registration.user_prefix}{NUMBER.lstrip('+')}:{SERVER_NAME}"
            client = Client(server.url, mxid, token, ghost)
            client.start()

            # Warm up: the portal room is made and joined, the ghost registered.
            sim.network.deliver(NUMBER, "warm up")
            await client.wait_seen("warm up", 120)
            room_id = client.rooms["warm up"]
            for i in range(5):
                sim.network.deliver(NUMBER, f"warm up {i}")
                await client.wait_seen(f"warm up {i}")
            await asyncio.sleep(5)
            idle_rss, _ = rss_kib(proc.pid)

            # Inbound latency, one text at a time.
            print(f"inbound latency, {N_LATENCY} texts…", file=sys.stderr, flush=True)
            e2e: list[float] = []
            line_part: list[float] = []
            bridge_part: list[float] = []
            rest_part: list[float] = []
            latency_rows: list[tuple[int, float, float]] = []
            for i in range(N_LATENCY):
                body = f"latency {i:04d}"
                t0 = time.time()
                sim.network.deliver(NUMBER, body)
                seen = await client.wait_seen(body)
                e2e.append(seen - t0)
                row = None
                deadline = time.monotonic() + 5
                while (row is None or "delivered" not in row) and time.monotonic() < deadline:
                    row = watcher.row(body)
                    await asyncio.sleep(0.002)
                assert row is not None and "delivered" in row, f"no store row for {body}"
                line_part.append(row["committed"] - t0)
                bridge_part.append(row["delivered"] - row["committed"])
                latency_rows.append(
                    (row["id"], row["delivered"] - row["committed"], row["delivered"] - t0)
                )
                rest_part.append(seen - row["delivered"])
                await asyncio.sleep(0.05)

            # Outbound overhead, one message at a time.
            print(f"outbound, {N_OUT} messages…", file=sys.stderr, flush=True)
            db = sqlite3.connect(f"file:{data / 'textbridge.db'}?mode=ro", uri=True)
            to_enqueue: list[float] = []
            to_pdu: list[float] = []
            nio_rtt: list[float] = []
            for i in range(N_OUT):
                body = f"outbound {i:04d}"
                t0 = time.time()
                resp = await client.client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                )
                returned = time.time()
                assert isinstance(resp, nio.RoomSendResponse), resp
                deadline = time.monotonic() + 30
                part = None
                while part is None:
                    part = next((p for p in reversed(sim.network.sent) if p.text == body), None)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{body!r} never reached the simulator")
                    await asyncio.sleep(0.002)
                created = db.execute(
                    "SELECT created_at FROM outbox WHERE request_id = ?", (resp.event_id,)
                ).fetchone()
                assert created is not None, body
                nio_rtt.append(returned - t0)
                to_enqueue.append(created[0] / 1000 - t0)
                to_pdu.append(part.at - created[0] / 1000)
                # Let the row reach SENT before the next one, so that sends do not queue.
                while True:
                    state = db.execute(
                        "SELECT state FROM outbox WHERE request_id = ?", (resp.event_id,)
                    ).fetchone()[0]
                    if state != "sending":
                        break
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0.05)
            db.close()
            after_latency_rss, _ = rss_kib(proc.pid)

            # A burst: N_BURST texts as fast as the network hands them to the modem (the SIM
            # holds 50; the network keeps the rest until slots are free, as a real one does).
            print(f"burst of {N_BURST}…", file=sys.stderr, flush=True)
            peak = 0
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_kib(proc.pid)[0])  # type: ignore[union-attr]
                    await asyncio.sleep(0.1)

            assert server.pid is not None
            meter = Meter(proc.pid, server.pid, [data / "textbridge.db", data / "bridge.db"])
            sampler = asyncio.create_task(sample())
            sweeps_before = await line_counter(data / "control.sock", "sweeps")
            profiler = Profiler(proc.pid, "inbound")
            meter.start()
            t0 = time.time()
            bodies = [f"burst {i:04d}" for i in range(N_BURST)]
            for body in bodies:
                sim.network.deliver(NUMBER, body)
            delivered = time.time()
            for body in bodies:
                await client.wait_seen(body, 600)
            burst_done = time.time() - t0
            burst_lat = [client.seen[b] - t0 for b in bodies]
            while not all((r := watcher.row(b)) and "delivered" in r for b in bodies):
                await asyncio.sleep(0.05)
            in_cpu, in_bytes = meter.stop()
            profiler.stop()
            sampling = False
            await sampler
            after_burst_rss, hwm = rss_kib(proc.pid)
            await asyncio.sleep(10)
            settled_rss, _ = rss_kib(proc.pid)
            sweeps = await line_counter(data / "control.sock", "sweeps") - sweeps_before
            burst_rows = [watcher.row(b) for b in bodies]
            store_ids = [r["id"] for r in burst_rows if r]
            store_misordered = sum(
                1 for i in range(1, len(store_ids)) if store_ids[i] < max(store_ids[:i])
            )
            committed_all = max(r["committed"] for r in burst_rows if r) - t0
            # An outbound backlog: the client sends N_OUT_BURST messages to one conversation
            # as fast as Synapse takes them; the line sends each when the modem confirmed the
            # one before.
            print(f"outbound backlog of {N_OUT_BURST}…", file=sys.stderr, flush=True)
            out_bodies = [f"backlog {i:04d}" for i in range(N_OUT_BURST)]
            profiler = Profiler(proc.pid, "outbound")
            meter.start()
            t_out = time.time()
            for body in out_bodies:
                resp = await client.client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                )
                assert isinstance(resp, nio.RoomSendResponse), resp
            out_sent_at = time.time()
            db = sqlite3.connect(f"file:{data / 'textbridge.db'}?mode=ro", uri=True)
            deadline = time.monotonic() + 600
            while True:
                left = db.execute(
                    "SELECT count(*) FROM outbox WHERE request_id IS NOT NULL AND state IN "
                    "('queued', 'sending')"
                ).fetchone()[0]
                reached = {p.text for p in sim.network.sent}
                if left == 0 and all(b in reached for b in out_bodies):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the outbound backlog did not drain")
                await asyncio.sleep(0.01)
            db.close()
            backlog_done = time.time() - t_out
            out_cpu, out_bytes = meter.stop()
            profiler.stop()
            backlog_at = [p.at for p in sim.network.sent if p.text in set(out_bodies)]
            backlog_gaps = [b - a for a, b in itertools.pairwise(backlog_at)]
            backlog_order = [p.text for p in sim.network.sent if p.text in set(out_bodies)]

            # Synapse's own account of each event the bridge sent (its access log), to split
            # the bridge's share into the homeserver's time and the bridge's own.
            handled = synapse_send_times(server.log_path)
            synapse_part = [handled[i] for i, _, _ in latency_rows if i in handled]
            bridge_own = [d - handled[i] for i, d, _ in latency_rows if i in handled]
            # +CMTI -> PUT accepted, minus the homeserver's time for that event.
            own_share = [whole - handled[i] for i, _, whole in latency_rows if i in handled]
            order_ok = sorted(bodies, key=lambda b: client.seen[b]) == bodies
        finally:
            # The processes first: nothing may outlive the run, whatever fails below.
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            await server.stop()
            sim.stop()
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
            if watcher is not None:
                watcher.stop()

    ms = 1000.0

    def row(name: str, values: list[float]) -> str:
        return (
            f"{name:<52} {statistics.median(values) * ms:>9.1f} {_pct(values, 99) * ms:>9.1f}"
            f" {max(values) * ms:>9.1f}"
        )

    print()
    print(
        f"Bridge benchmark: {N_LATENCY} inbound one at a time, {N_OUT} outbound, a burst of "
        f"{N_BURST}; appliance as its own process, Synapse on loopback, simulated modem on a pty"
    )
    print(f"{'latency (ms)':<52} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("inbound +CMTI -> event in the client's /sync", e2e))
    print(row("  SMS line: +CMTI -> inbox row committed (fsynced)", line_part))
    print(row("  bridge: row committed -> event sent, row DELIVERED", bridge_part))
    if synapse_part:
        print(row("    of which Synapse handling the event PUT", synapse_part))
        print(row("    of which the bridge's own (the rest)", bridge_own))
    print(row("  Synapse -> /sync long-poll -> nio", rest_part))
    if own_share:
        print(row("bridge's own share: +CMTI -> PUT ok, - Synapse", own_share))
    print(row("outbound nio room_send round trip", nio_rtt))
    print(row("outbound nio send -> outbox row enqueued", to_enqueue))
    print(row("outbound row enqueued -> PDU at the modem", to_pdu))
    print(row(f"burst: deliver -> in the client, all {N_BURST}", burst_lat))
    if backlog_gaps:
        print(row("outbound backlog: gap between texts at the modem", backlog_gaps))
    print()
    print(f"{'cost per text (whole processes)':<52} {'run':>9} {'Synapse':>9}")
    print(f"{f'inbound CPU per text, burst of {N_BURST} (ms)':<52} "
          f"{in_cpu['run'] / N_BURST * ms:>9.2f} {in_cpu['synapse'] / N_BURST * ms:>9.2f}")
    out_run, out_syn = (out_cpu[k] / N_OUT_BURST * ms for k in ("run", "synapse"))
    print(f"{f'outbound CPU per text, backlog of {N_OUT_BURST} (ms)':<52} "
          f"{out_run:>9.2f} {out_syn:>9.2f}")
    print(f"{'inbound bytes written per text, WAL + checkpoints (KiB)':<52} "
          f"{in_bytes / N_BURST / 1024:>9.1f}")
    print(f"{'outbound bytes written per text, WAL + checkpoints (KiB)':<52} "
          f"{out_bytes / N_OUT_BURST / 1024:>9.1f}")
    print()
    print(f"{'throughput and memory':<52} {'value':>9}")
    print(f"{'burst: handed to the network in (s)':<52} {delivered - t0:>9.2f}")
    print(f"{'burst: all committed to the store after (s)':<52} {committed_all:>9.1f}")
    print(f"{'burst: all in the client after (s)':<52} {burst_done:>9.1f}")
    print(f"{'burst: texts per second end to end':<52} {N_BURST / burst_done:>9.1f}")
    print(f"{'burst: arrived in the client in network order':<52} {'yes' if order_ok else 'NO':>9}")
    print(f"{'burst: texts stored behind a later one':<52} {store_misordered:>9}")
    print(f"{'burst: AT+CMGL sweeps by the line meanwhile':<52} {sweeps:>9}")
    print(f"{f'outbound backlog: {N_OUT_BURST} taken by Synapse in (s)':<52} "
          f"{out_sent_at - t_out:>9.2f}")
    print(f"{'outbound backlog: all at the modem after (s)':<52} {backlog_done:>9.2f}")
    in_order = backlog_order == out_bodies
    print(f"{'outbound backlog: sent in the order written, once':<52} "
          f"{'yes' if in_order else 'NO':>9}")
    print(f"{'appliance RSS idle, after warm-up (MiB)':<52} {idle_rss / 1024:>9.1f}")
    print(f"{'appliance RSS after latency runs (MiB)':<52} {after_latency_rss / 1024:>9.1f}")
    print(f"{'appliance RSS peak during the burst (MiB)':<52} {peak / 1024:>9.1f}")
    print(f"{'appliance RSS right after the burst (MiB)':<52} {after_burst_rss / 1024:>9.1f}")
    print(f"{'appliance RSS 10 s after the burst (MiB)':<52} {settled_rss / 1024:>9.1f}")
    print(f"{'appliance VmHWM, whole run (MiB)':<52} {hwm / 1024:>9.1f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
