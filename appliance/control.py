"""The running bridge's control API, for the web service on the same machine.

`textbridge run` serves this on a unix socket ({data_dir}/control.sock, mode 0660, group
shared with the web service): a local socket needs no passwords or TLS, and file permissions
decide who may ask. Every answer is JSON; errors carry a plain-words `error` for a person.

  GET  /v1/status                  bridge health and every line's LineStatus
  GET  /v1/lines/{id}/sim          {"state", "attempts_left", "needs_puk"}
  POST /v1/lines/{id}/pin          {"pin"}: enter the SIM PIN (never when a PUK is wanted)
  POST /v1/lines/{id}/test-sms     {"to", "text"}: queue a test SMS -> {"request_id"}
  GET  /v1/outbox/{request_id}     {"state", "error"}
  GET  /v1/stats                   messages per day and signal history per line
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from appliance.line import Line, LineStatus, Severity, display_name
from appliance.log import mask_number
from appliance.phonenum import is_premium_or_short
from appliance.store.models import OutboundRequest, OutboxRow
from appliance.tasks import stop_tasks

log = logging.getLogger(__name__)

SIGNAL_SAMPLE_INTERVAL = 60.0
SIGNAL_HISTORY = 24 * 60  # a day of samples per line at the default interval
TEST_SMS_REQUESTER = "web:owner"
E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
PIN_RE = re.compile(r"[0-9]{4,8}")


@runtime_checkable
class SimControl(Protocol):
    """What the SIM of a modem line offers a person at the setup page."""

    async def sim_state(self) -> tuple[str, int | None]:
        """(+CPIN state such as "READY", "SIM PIN", "SIM PUK"; attempts left if known)."""
        ...

    async def enter_pin(self, pin: str) -> None:
        """Enter the PIN once; raises with plain words when the SIM refuses it."""
        ...


class _Outbox(Protocol):
    async def enqueue(self, req: OutboundRequest, parts: int) -> tuple[OutboxRow, bool]: ...

    async def by_request(self, request_id: str) -> OutboxRow | None: ...


class ControlStore(Protocol):
    @property
    def outbox(self) -> _Outbox: ...


@dataclasses.dataclass(frozen=True)
class DayCount:
    day: str  # ISO date, UTC
    inbound: int
    outbound: int


# Messages per day for the last `days` days, oldest first.
MessageCounter = Callable[[int], Awaitable[list[DayCount]]]
# The bridge core's self-check (Bridge.health): {"ok": bool, ...plain JSON values}.
HealthProbe = Callable[[], Mapping[str, Any]]


def sqlite_message_counter(db_path: Path) -> MessageCounter:
    """Messages per day read from the store's file over a separate read-only connection:
    WAL lets it read beside the store's writer, and read-only means a mistake here can
    never touch a message."""

    def count(days: int) -> list[DayCount]:
        today = dt.datetime.now(dt.UTC).date()
        first = today - dt.timedelta(days=days - 1)
        since_ms = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp() * 1000)
        uri = f"file:{db_path}?mode=ro"
        inbound: dict[str, int] = {}
        outbound: dict[str, int] = {}
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            for table, column, into in (
                ("inbox", "received_at", inbound),
                ("outbox", "created_at", outbound),
            ):
                rows = conn.execute(
                    f"SELECT date({column} / 1000, 'unixepoch') AS d, count(*) "  # noqa: S608
                    f"FROM {table} WHERE {column} >= ? GROUP BY d",
                    (since_ms,),
                ).fetchall()
                into.update({str(d): int(n) for d, n in rows})
        result = []
        for n in range(days):
            day = (first + dt.timedelta(days=n)).isoformat()
            result.append(DayCount(day, inbound.get(day, 0), outbound.get(day, 0)))
        return result

    async def counter(days: int) -> list[DayCount]:
        return await asyncio.to_thread(count, days)

    return counter


def needs_puk(state: str) -> bool:
    return "PUK" in state.upper()


def status_dict(status: LineStatus) -> dict[str, Any]:
    data = dataclasses.asdict(status)
    data["state"] = str(status.state)
    data["name"] = display_name(status)
    return data


def sms_parts(text: str) -> int:
    try:
        from appliance.sms import pdu
    except ImportError:  # pragma: no cover - the SMS line ships with the appliance
        return max(1, -(-len(text) // 153))
    return len(pdu.split(text)[1])


class SignalHistory:
    def __init__(self, size: int = SIGNAL_HISTORY) -> None:
        self._size = size
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def add(self, line_id: str, when: float, percent: int | None) -> None:
        if percent is None:
            return
        self._samples.setdefault(line_id, deque(maxlen=self._size)).append((when, percent))

    def as_dict(self) -> dict[str, list[list[float]]]:
        return {k: [[t, float(p)] for t, p in v] for k, v in self._samples.items()}


class Control:
    def __init__(
        self,
        *,
        lines: Mapping[str, Line],
        store: ControlStore,
        sim_control: SimControl | Mapping[str, SimControl] | None,
        message_counts: MessageCounter | None = None,
        sample_interval: float = SIGNAL_SAMPLE_INTERVAL,
    ) -> None:
        self.lines = lines
        self.store = store
        self.sim_control = sim_control
        self.message_counts = message_counts
        self.sample_interval = sample_interval
        self.signal = SignalHistory()
        self.started = time.time()

    def sim_for(self, line_id: str) -> SimControl | None:
        line = self.lines.get(line_id)
        if line is None or self.sim_control is None:
            return None
        if isinstance(self.sim_control, SimControl):
            # One SIM control serves the one modem line.
            return self.sim_control if line.kind == "modem" else None
        return self.sim_control.get(line_id)

    def sample(self) -> None:
        now = time.time()
        for line_id, line in self.lines.items():
            with contextlib.suppress(Exception):
                self.signal.add(line_id, now, line.status().signal_percent)

    async def sampler(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.sample_interval)


def _error(status: int, text: str, **extra: Any) -> web.Response:
    return web.json_response({"error": text, **extra}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "The request was not JSON."}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "Expected a JSON object."}', content_type="application/json"
        )
    return body


CONTROL_KEY = web.AppKey("control", Control)


# Tells the appliance's owners something in their chat: (topic, key, severity, text) ->
# whether it was sent (False: the same key was told already). The bridge's notify_owners.
OwnerNotifier = Callable[[str, str, Severity, str], Awaitable[bool]]
NOTICE_TOPIC_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
NOTICE_KEY_RE = re.compile(r"[A-Za-z0-9:._-]{1,128}")


def make_control_app(
    *,
    lines: Mapping[str, Line],
    store: ControlStore,
    sim_control: SimControl | Mapping[str, SimControl] | None,
    message_counts: MessageCounter | None = None,
    sample_interval: float = SIGNAL_SAMPLE_INTERVAL,
    bridge_health: HealthProbe | None = None,
    notify_owners: OwnerNotifier | None = None,
) -> web.Application:
    if message_counts is None:
        # The real Store exposes the path of its SQLite file.
        db_path = getattr(store, "path", None)
        if isinstance(db_path, Path):
            message_counts = sqlite_message_counter(db_path)
    control = Control(
        lines=lines,
        store=store,
        sim_control=sim_control,
        message_counts=message_counts,
        sample_interval=sample_interval,
    )
    app = web.Application(client_max_size=64 * 1024)
    app[CONTROL_KEY] = control

    async def run_sampler(app: web.Application) -> Any:
        task = asyncio.create_task(control.sampler(), name="control-signal-sampler")
        yield
        await stop_tasks([task], "control API")

    app.cleanup_ctx.append(run_sampler)

    def line_or_404(request: web.Request) -> Line:
        line = control.lines.get(request.match_info["line_id"])
        if line is None:
            raise web.HTTPNotFound(
                text='{"error": "There is no such line."}', content_type="application/json"
            )
        return line

    async def status(request: web.Request) -> web.Response:
        statuses = []
        for line in control.lines.values():
            try:
                statuses.append(status_dict(line.status()))
            except Exception as exc:  # one broken line must not hide the others
                statuses.append({"line_id": line.id, "name": line.id, "kind": line.kind,
                                 "state": "down",
                                 "summary": f"The line could not report its state ({exc})."})
        lines_ok = any(s.get("state") in ("ready", "degraded") for s in statuses)
        # Also looked up by its plain name: `textbridge run` may attach it after building.
        probe = bridge_health or request.app.get("bridge_health")
        health: dict[str, Any] = {}
        if callable(probe):
            try:
                health = json.loads(json.dumps(dict(probe()), default=str))
            except Exception as exc:  # a failing probe is itself a health finding
                health = {"ok": False, "setup_error": f"health check failed: {exc}"}
        healthy = lines_ok and bool(health.get("ok", True))
        return web.json_response(
            {
                "bridge": {
                    "running": True,
                    "healthy": healthy,
                    "lines_ok": lines_ok,
                    "health": health,
                    "pid": os.getpid(),
                    "started_at": control.started,
                    "uptime_s": time.time() - control.started,
                },
                "lines": statuses,
            }
        )

    async def sim(request: web.Request) -> web.Response:
        line = line_or_404(request)
        sim_control = control.sim_for(line.id)
        if sim_control is None:
            return _error(404, "This line has no SIM card to manage.")
        try:
            state, attempts = await sim_control.sim_state()
        except Exception as exc:
            return _error(503, f"The modem did not answer about its SIM ({exc}).")
        return web.json_response(
            {"state": state, "attempts_left": attempts, "needs_puk": needs_puk(state)}
        )

    async def pin(request: web.Request) -> web.Response:
        line = line_or_404(request)
        sim_control = control.sim_for(line.id)
        if sim_control is None:
            return _error(404, "This line has no SIM card to manage.")
        body = await _json_body(request)
        value = body.get("pin")
        if not isinstance(value, str) or not PIN_RE.fullmatch(value):
            return _error(400, "A SIM PIN is 4 to 8 digits.")
        try:
            state, attempts = await sim_control.sim_state()
        except Exception as exc:
            return _error(503, f"The modem did not answer about its SIM ({exc}).")
        if needs_puk(state):
            # A wrong PUK guess can destroy the SIM; only the carrier should give it.
            return _error(
                409,
                "The SIM is blocked and needs its PUK code. Call your mobile carrier; "
                "Textbridge never guesses a PUK.",
                state=state,
                attempts_left=attempts,
                needs_puk=True,
            )
        if state.upper() == "READY":
            return web.json_response({"state": state, "attempts_left": attempts, "ok": True})
        try:
            await sim_control.enter_pin(value)
        except Exception as exc:
            with contextlib.suppress(Exception):
                state, attempts = await sim_control.sim_state()
            return _error(400, str(exc) or "The SIM refused the PIN.", state=state,
                          attempts_left=attempts, needs_puk=needs_puk(state))
        with contextlib.suppress(Exception):
            state, attempts = await sim_control.sim_state()
        log.info("SIM PIN accepted on line %s", line.id)
        return web.json_response({"state": state, "attempts_left": attempts, "ok": True})

    async def test_sms(request: web.Request) -> web.Response:
        line = line_or_404(request)
        body = await _json_body(request)
        to, text = body.get("to"), body.get("text")
        if not isinstance(to, str) or not E164_RE.fullmatch(to):
            return _error(400, "The number must be international, like +491701234567.")
        if is_premium_or_short(to, "ZZ"):
            # A test text is a test: never one that may cost more than a normal text.
            return _error(400, "That is a premium-rate, shared-cost or unknown kind of "
                               "number; Textbridge does not send test texts to it.")
        if not isinstance(text, str) or not text.strip() or len(text) > 480:
            return _error(400, "The message must have 1 to 480 characters.")
        request_id = f"web-test-{uuid.uuid4()}"
        req = OutboundRequest(
            request_id=request_id,
            line_id=line.id,
            conversation=to,
            body=text,
            requested_by=TEST_SMS_REQUESTER,
        )
        await control.store.outbox.enqueue(req, sms_parts(text))
        line.wake()
        log.info("test SMS queued on line %s to %s", line.id, mask_number(to))
        return web.json_response({"request_id": request_id}, status=201)

    async def outbox(request: web.Request) -> web.Response:
        row = await control.store.outbox.by_request(request.match_info["request_id"])
        if row is None:
            return _error(404, "There is no such message.")
        return web.json_response(
            {
                "state": str(row.state),
                "error": row.error,
                "attempts": row.attempts,
                "parts": [str(p.state) for p in row.parts],
            }
        )

    async def stats(request: web.Request) -> web.Response:
        try:
            days = int(request.query.get("days", "14"))
        except ValueError:
            days = 14
        days = max(1, min(days, 90))
        counts: list[DayCount] = []
        if control.message_counts is not None:
            counts = await control.message_counts(days)
        return web.json_response(
            {
                "messages_per_day": [dataclasses.asdict(c) for c in counts],
                "signal": control.signal.as_dict(),
                "now": time.time(),
                "today": dt.datetime.now(dt.UTC).date().isoformat(),
            }
        )

    async def notice(request: web.Request) -> web.Response:
        """The web service tells the owners in their chat (a certificate that could not be
        renewed). Plain text only: the bridge sends it as a notice, never as HTML."""
        body = await _json_body(request)
        topic, key, text = body.get("topic"), body.get("key"), body.get("text")
        severity = body.get("severity", "warning")
        if not isinstance(topic, str) or not NOTICE_TOPIC_RE.fullmatch(topic):
            return _error(400, "The topic must be a short lowercase name.")
        if not isinstance(key, str) or not NOTICE_KEY_RE.fullmatch(key):
            return _error(400, "The key must be 1 to 128 letters, digits or :._-")
        if not isinstance(text, str) or not text.strip() or len(text) > 2000:
            return _error(400, "The text must have 1 to 2000 characters.")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            return _error(400, "The text must not contain control characters.")
        if severity not in {s.value for s in Severity}:
            return _error(400, "The severity must be info, warning or error.")
        if notify_owners is None:
            return _error(503, "The bridge is not running.")
        try:
            sent = await notify_owners(topic, key, Severity(severity), text.strip())
        except Exception as exc:
            log.warning("owner notice %s/%s not sent: %s", topic, key, exc)
            return _error(503, "The notice could not be sent now; the homeserver may be away.")
        return web.json_response({"sent": sent})

    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/notices", notice)
    app.router.add_get("/v1/lines/{line_id}/sim", sim)
    app.router.add_post("/v1/lines/{line_id}/pin", pin)
    app.router.add_post("/v1/lines/{line_id}/test-sms", test_sms)
    app.router.add_get("/v1/outbox/{request_id}", outbox)
    app.router.add_get("/v1/stats", stats)
    add_activity_route(app, getattr(store, "path", None))
    return app


def add_activity_route(app: web.Application, db_path: object) -> None:
    """GET /v1/activity?limit=N: the last texts' states for the dashboard, never bodies."""
    from appliance.activity import sqlite_recent_texts

    recent = sqlite_recent_texts(db_path) if isinstance(db_path, Path) else None

    async def activity(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            limit = 10
        try:
            items = await recent(limit) if recent is not None else []
        except sqlite3.Error as exc:
            log.warning("recent texts could not be read: %s", exc)
            return _error(503, "The message store could not be read just now.")
        return web.json_response({"texts": [dataclasses.asdict(a) for a in items]})

    app.router.add_get("/v1/activity", activity)


async def serve_control(app: web.Application, socket_path: Path) -> web.AppRunner:
    """Serve on a unix socket, group-writable (0660) so the web service's group may talk.
    The caller keeps the runner and calls `cleanup()` at stop."""
    await asyncio.to_thread(socket_path.unlink, missing_ok=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(socket_path))
    await site.start()
    os.chmod(socket_path, 0o660)
    return runner
