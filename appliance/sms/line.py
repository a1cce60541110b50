"""The SMS line: the modem driver and the durable store, glued so that nothing is lost.

Inbound, one worker handles every stored message in turn (a +CMTI, a +CDSI, or a periodic
AT+CMGL sweep that catches notifications the modem or the library swallowed): decode, commit
to the store (fsynced), and only then delete it from the modem. A crash between the commit
and the delete leaves the message on the SIM; the next sweep finds it again and the store
recognises the duplicate, so the delete is simply done then.

Outbound, a sender loop takes each conversation's oldest due row, marks it SENDING durably
before the first byte goes out, and records every part's TP-MR as the modem accepts it. A
crash in between leaves the row SENDING, which the store turns into AMBIGUOUS at the next
start: it is never sent a second time without a person saying so.

Everything a person must know (PIN needed, modem unplugged, no network, storage full,
a message failed) leaves as a LineEvent in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import ModemConfig
from appliance.line import (
    Announcer,
    LineCapabilities,
    LineEventHandler,
    LineHealth,
    LineReporting,
    LineState,
    LineStatus,
    Severity,
)
from appliance.log import mask_number
from appliance.sms import multipart
from appliance.sms import pdu as pdus
from appliance.sms.errors import (
    CmsError,
    ModemError,
    ModemUnavailable,
    PortLost,
    PromptTimeout,
    SimLocked,
)
from appliance.sms.modem import (
    Disconnected,
    MessageStored,
    Modem,
    ModemEvent,
    ModemInfo,
    Reconnected,
    RegistrationChanged,
    StatusReportPdu,
    StatusReportStored,
    StoredPdu,
)
from appliance.store import Store
from appliance.store.errors import StoreStateError
from appliance.store.fragments import variant_base
from appliance.store.models import InboundMessage, OutboxRow, PartState
from appliance.tasks import stop_tasks, wait_event

log = logging.getLogger(__name__)

ModemFactory = Callable[..., Modem]

# The sender sleeps until woken (a text queued, in this process or through the store's
# doorbell) or the line's next retry comes due; this slow look is only a safety net.
IDLE_LOOK_S = 5.0

# How long a retryable send error waits before the next attempt grows with each attempt,
# up to this ceiling (a congested network or a lost registration usually clears in minutes).
MAX_RETRY_DELAY = 3600.0
# How long to wait after a fault before trying the modem again.
REOPEN_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# Trouble that holds texts up for less than this is not worth a message in the family's
# chat (a hang, a missed registration, one refused send); longer trouble is told once, and
# its end once (docs/modem.md, "What the family is told").
NOTICE_AFTER = 60.0
UNPLUGGED = "Textbridge is reconnecting; texts wait on the SIM and in the queue meanwhile."
NO_NETWORK = "The SIM is not connected to a mobile network; messages wait until it is."


@dataclass
class _Health(LineHealth):
    summary: str = "Starting the SMS modem."
    info: ModemInfo | None = None
    operator: str | None = None
    signal: int | None = None
    registered: bool = False
    storage: tuple[int, int] | None = None
    sim_state: str | None = None
    sim_attempts: int | None = None


class SmsLine(LineReporting):
    """A Line (see appliance.line) over a USB modem."""

    _health: _Health

    kind = "modem"
    capabilities = LineCapabilities(groups=False, media=False, rcs=False)

    def __init__(
        self,
        line_id: str,
        config: ModemConfig,
        store: Store,
        *,
        on_event: LineEventHandler | None = None,
        pin: str | None = None,
        modem_factory: ModemFactory = Modem,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = line_id
        self.config = config
        self.store = store
        self._pin = pin
        self._modem_factory = modem_factory
        self._clock = clock
        self._modem: Modem | None = None
        self._health = _Health()
        self._inbound: asyncio.Queue[ModemEvent | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._announcer = Announcer(line_id, on_event)
        self._sweep_now = asyncio.Event()
        self._reopen_now = asyncio.Event()
        self._pin_lock = asyncio.Lock()
        self._catch_up = False
        self._queue_depth = 0
        # Storage index -> the order its +CMTI arrived in: within one SMSC timestamp second
        # only that tells which text came first (the modem reuses freed slots).
        self._arrivals: dict[int, int] = {}
        self._arrival_count = 0
        self.notice_after = NOTICE_AFTER
        self._notice_timers: dict[str, asyncio.TimerHandle] = {}
        self._due_task: asyncio.Task[None] | None = None

    # -- Line protocol -------------------------------------------------------------------

    async def start(self) -> None:
        for row in await self.store.outbox.recover_interrupted(self.id):
            log.warning("outbox row %d was interrupted mid-send; now ambiguous", row.id)
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"{self.id}-supervise"),
            asyncio.create_task(self._inbound_worker(), name=f"{self.id}-inbound"),
            asyncio.create_task(self._sender(), name=f"{self.id}-sender"),
            asyncio.create_task(self._housekeeping(), name=f"{self.id}-housekeeping"),
        ]
        # Texts queued by another process (the CLI, a test) wake the sender at once.
        self.store.doorbell.subscribe(self.wake)

    async def stop(self) -> None:
        self._stopping = True
        self.store.doorbell.unsubscribe(self.wake)
        due = [self._due_task] if self._due_task is not None else []
        await stop_tasks([*self._tasks, *due], f"SMS line {self.id}")
        self._tasks = []
        self._due_task = None
        for timer in self._notice_timers.values():
            timer.cancel()
        self._notice_timers.clear()
        if self._modem is not None:
            with contextlib.suppress(Exception):
                await self._modem.close()
            self._modem = None
        self._ready.clear()

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> LineStatus:
        h = self._health
        details: dict[str, str] = {"port": self.config.port}
        if h.info is not None:
            details["model"] = f"{h.info.manufacturer} {h.info.model}".strip()
            details["imei"] = f"…{h.info.imei[-4:]}" if h.info.imei else ""
        if h.storage is not None:
            details["storage"] = f"{h.storage[0]} of {h.storage[1]} used"
        if h.sim_state is not None:
            details["sim"] = h.sim_state
        if h.sim_attempts is not None:
            details["sim_attempts"] = str(h.sim_attempts)
        for name, value in sorted(h.counters.items()):
            details[f"count_{name}"] = str(value)
        return LineStatus(
            line_id=self.id,
            kind=self.kind,
            state=h.state,
            summary=h.summary,
            operator=h.operator,
            signal_percent=h.signal,
            registered=h.registered,
            own_number=h.info.own_number if h.info else None,
            queue_depth=self._queue_depth,
            last_error=h.last_error,
            last_error_at=h.last_error_at,
            details=details,
            # DEGRADED with a full SIM store still sends; without a network it does not.
            can_send=h.state in (LineState.READY, LineState.DEGRADED) and h.registered,
        )

    # -- for the web setup and the bot ---------------------------------------------------

    @property
    def modem(self) -> Modem | None:
        return self._modem

    async def sim_state(self) -> tuple[str, int | None]:
        if self._modem is None:
            return (self._health.sim_state or "unknown", self._health.sim_attempts)
        return await self._modem.sim_state()

    async def enter_pin(self, pin: str) -> None:
        """Enter the PIN once (from the setup page); the supervisor then opens the line.

        The PIN is kept (for re-entry after a modem reset, which locks the SIM again) only
        when the SIM accepted it: a wrong PIN is never tried a second time by us.
        """
        async with self._pin_lock:
            if self._modem is not None:
                state, _ = await self.sim_state()
                if state == "READY":
                    return
                await self._close_modem()
            modem = self._modem_factory(self.config, on_event=lambda _event: None, pin=pin)
            try:
                await modem.open()
            except SimLocked as exc:
                self._health.sim_state = exc.needs
                self._health.sim_attempts = exc.attempts_left
                raise
            finally:
                with contextlib.suppress(Exception):
                    await modem.close()
            self._pin = pin
            self._health.sim_state = "READY"
            self._health.sim_attempts = None
        self._sweep_now.set()
        self._reopen_now.set()

    async def wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        return await wait_event(self._ready, timeout)

    # -- supervision: open, watch, recover -----------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            delay: float
            try:
                await self._open()
                failures = 0
                await self._watch()
                delay = 0.0
            except asyncio.CancelledError:
                raise
            except _Reopen:
                delay = 0.0
            except SimLocked as exc:
                self._health.sim_state = exc.needs
                self._health.sim_attempts = exc.attempts_left
                self._down(str(exc), key="sim-locked", severity=Severity.ERROR)
                # A PIN is entered once by a person; retrying on our own could burn attempts.
                self._pin = None
                delay = 300.0
            except ModemError as exc:
                self._down_later(
                    "The SMS modem is not answering "
                    f"({exc}). Check that it is plugged in; Textbridge keeps trying.",
                    key="unavailable",
                    severity=Severity.ERROR,
                )
                delay = REOPEN_DELAYS[min(failures, len(REOPEN_DELAYS) - 1)]
                failures += 1
            except Exception as exc:  # a driver bug must not end the line for good
                log.exception("SMS line supervisor error")
                self._down_later(
                    f"The SMS modem failed unexpectedly ({exc}).", key="unavailable"
                )
                delay = REOPEN_DELAYS[min(failures, len(REOPEN_DELAYS) - 1)]
                failures += 1
            # Closed on every path, so the port is free for enter_pin() and the next open.
            await self._close_modem()
            await self._wait_reopen(delay)

    async def _close_modem(self) -> None:
        self._ready.clear()
        modem, self._modem = self._modem, None
        if modem is not None:
            with contextlib.suppress(Exception):
                await modem.close()

    async def _wait_reopen(self, delay: float) -> None:
        await wait_event(self._reopen_now, delay)
        self._reopen_now.clear()

    async def _open(self) -> None:
        modem = self._modem_factory(self.config, on_event=self._on_modem_event, pin=self._pin)
        self._modem = modem
        info = await modem.open()
        self._health.info = info
        self._health.sim_state = "READY"
        self._health.sim_attempts = None
        registered = await modem.wait_registered(timeout=30.0)
        await self._refresh(modem, registered=registered)
        # Catch up on anything that arrived while we were away, before any +CMTI that came
        # in during the open: those texts are newer than what waits on the SIM.
        self._catch_up = True
        self._ready.set()
        self._clear("unavailable", "The SMS modem is working again.")
        self._clear("sim-locked", "The SIM card is unlocked.")
        await self._inbound.put(None)
        self._wake.set()

    async def _refresh(self, modem: Modem, *, registered: bool | None = None) -> None:
        h = self._health
        if registered is None:
            registered = await modem.wait_registered(timeout=0.5)
        h.registered = registered
        h.signal = await modem.signal_percent()
        h.operator = await modem.operator()
        with contextlib.suppress(ModemError):
            h.storage = await modem.storage_usage()
        storage_full = h.storage is not None and h.storage[1] > 0 and h.storage[0] >= h.storage[1]
        if storage_full:
            self._announce_after(
                "storage-full",
                Severity.WARNING,
                "The SIM's message storage is full, so new texts wait at the mobile network "
                "and do not arrive. Textbridge keeps emptying it; if this stays, the SIM "
                "may hold texts it cannot read: restart the modem.",
            )
        else:
            self._clear("storage-full", "The SIM has room for texts again; they arrive.")
        if not registered:
            # The modem answered this check, so it is up whatever the state said before.
            self._set(LineState.DEGRADED, NO_NETWORK)
            self._no_network()
            return
        self._clear("no-network", "The SMS line has a mobile network again.")
        if storage_full:
            self._set(
                LineState.DEGRADED,
                "The SIM's message storage is full; new texts wait at the network.",
            )
        else:
            self._set(LineState.READY, self._ready_summary())

    def _no_network(self) -> None:
        if self._health.state == LineState.READY:
            self._set(LineState.DEGRADED, NO_NETWORK)
        self._announce_after(
            "no-network",
            Severity.WARNING,
            "The SMS line has no mobile network. Messages wait and go out when it is back.",
        )

    # -- what the family is told ---------------------------------------------------------

    def _announce_after(self, key: str, severity: Severity, text: str) -> None:
        """Announce `key` once it has lasted notice_after seconds (cleared before: never)."""
        if key in self._announcer.active or key in self._notice_timers:
            return
        self._notice_timers[key] = asyncio.get_running_loop().call_later(
            self.notice_after, self._announce_due, key, severity, text
        )

    def _announce_due(self, key: str, severity: Severity, text: str) -> None:
        self._notice_timers.pop(key, None)
        self._announce(key, severity, text)

    def _clear(self, key: str, text: str) -> None:
        """The condition is over: told as over if it was announced, else never told."""
        timer = self._notice_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._resolved(key, text)

    def _down_later(self, text: str, *, key: str, severity: Severity = Severity.ERROR) -> None:
        self._set(LineState.DOWN, text)
        self._record_error(text)
        self._announce_after(key, severity, text)

    def _ready_summary(self) -> str:
        h = self._health
        op = h.operator or "the mobile network"
        if h.signal is None:
            return f"Connected to {op}."
        bars = max(1, min(5, round(h.signal / 20)))
        words = "weak" if bars <= 1 else "fair" if bars <= 2 else "good"
        return f"Connected to {op}, signal {words} ({bars} of 5)."

    async def _watch(self) -> None:
        """While the modem is open: refresh health, and sweep storage now and then."""
        assert self._modem is not None
        modem = self._modem
        last_sweep = 0.0
        while not self._stopping:
            now = time.monotonic()
            if now - last_sweep >= self.config.sweep_interval or self._sweep_now.is_set():
                self._sweep_now.clear()
                last_sweep = now
                await self._inbound.put(None)
            try:
                await self._refresh(modem)
            except ModemUnavailable:
                raise
            except ModemError as exc:
                log.warning("modem health check failed (%s); recovering", exc)
                # The ladder can take minutes (a reset, a reopen); said at once on the
                # status page, and in the chat if it takes longer than a minute.
                if isinstance(exc, PortLost):
                    # Gone, not slow: as the Disconnected event says (if it was not lost).
                    self._down(
                        f"The SMS modem disconnected (unplugged, or it reset). {UNPLUGGED}",
                        key="unavailable",
                        severity=Severity.WARNING,
                    )
                else:
                    self._down_later(
                        "The SMS modem stopped answering; Textbridge is resetting it. Texts "
                        "wait on the SIM and in the queue meanwhile.",
                        key="unavailable",
                        severity=Severity.ERROR,
                    )
                rung = await modem.recover()
                log.info("modem recovered by %s", rung)
            await wait_event(self._reopen_now, min(30.0, self.config.sweep_interval))
            if self._reopen_now.is_set():
                self._reopen_now.clear()
                raise _Reopen

    def _on_modem_event(self, event: ModemEvent) -> None:
        if isinstance(event, MessageStored):
            self._arrival_count += 1
            self._arrivals[event.index] = self._arrival_count
        if isinstance(event, MessageStored | StatusReportStored | StatusReportPdu):
            self._inbound.put_nowait(event)
        elif isinstance(event, Disconnected):
            self._ready.clear()
            self._down(
                f"The SMS modem disconnected ({event.reason}). {UNPLUGGED}",
                key="unavailable",
                severity=Severity.WARNING,
            )
        elif isinstance(event, Reconnected):
            if self._modem is not None and not self._modem.connected:
                return  # pulled again just after it came back: still down
            self._catch_up = True
            self._ready.set()
            self._set(LineState.READY, self._ready_summary())
            self._clear("unavailable", "The SMS modem is working again.")
            self._inbound.put_nowait(None)
            self._wake.set()
        elif isinstance(event, RegistrationChanged):
            # Acted on at once: the next health check may be half a minute away, and a
            # loss shorter than that must still stop the line claiming it can send.
            was_registered, self._health.registered = self._health.registered, event.registered
            if event.registered:
                if not was_registered and (self._due_task is None or self._due_task.done()):
                    # Texts refused for want of network wait out a growing retry delay
                    # (minutes); the reason is gone, so they go now.
                    self._due_task = asyncio.create_task(self._retry_now())
                self._clear("no-network", "The SMS line has a mobile network again.")
                if self._health.state == LineState.DEGRADED and self._health.summary == NO_NETWORK:
                    self._set(LineState.READY, self._ready_summary())
                self._wake.set()
            else:
                self._no_network()

    async def _retry_now(self) -> None:
        try:
            if await self.store.outbox.due_now(self.id):
                self._wake.set()
        except Exception:
            log.exception("making waiting texts due failed; they go at their retry time")

    # -- inbound ---------------------------------------------------------------------------

    async def _inbound_worker(self) -> None:
        # One consumer: a message index is never read by one path while another deletes it,
        # which matters because the modem reuses an index as soon as it is free.
        while True:
            event = await self._inbound.get()
            await self._ready.wait()
            modem = self._modem
            if modem is None:
                continue
            try:
                if self._catch_up:
                    self._catch_up = False
                    await self._sweep(modem)
                    # The sweep took whatever this notification was about.
                    if not isinstance(event, StatusReportPdu):
                        continue
                if event is None or isinstance(event, MessageStored):
                    # A +CMTI means "look at the SIM", not "take this one": a text whose
                    # notification was late (inside another response, held back by a hang)
                    # or lost is still on it, and may be older than this one.
                    await self._sweep(modem)
                elif isinstance(event, StatusReportStored):
                    stored = await modem.read(event.index)
                    if stored is not None:
                        await self._take(modem, stored)
                elif isinstance(event, StatusReportPdu):
                    await self._status_report_pdu(event.pdu)
            except asyncio.CancelledError:
                raise
            except ModemError as exc:
                # The sweep after recovery finds whatever was not taken.
                log.warning("inbound handling interrupted (%s); will sweep again", exc)
                self._sweep_now.set()
            except Exception:
                log.exception("inbound handling failed; will sweep again")
                self._sweep_now.set()

    async def _sweep(self, modem: Modem) -> None:
        stored = await modem.list_stored()
        # The modem reuses freed slots, so slot order is not arrival order: take texts in
        # the order the network stamped them, then in the order the modem announced them
        # (texts found without a +CMTI first: theirs was lost, so they waited longest).
        stored.sort(key=lambda item: _arrival_order(item, self._arrivals.get(item.index, 0)))
        for item in stored:
            await self._take(modem, item)
        self._health.counters["sweeps"] = self._health.counters.get("sweeps", 0) + 1

    async def _take(self, modem: Modem, stored: StoredPdu) -> None:
        """Commit one stored PDU durably, then delete it from the modem."""
        pdu_hex = stored.pdu
        if not _decodes(pdu_hex):
            # Read it once more before quarantining and deleting: a line garbled on the way
            # (rather than a malformed message) reads differently the second time.
            again = await modem.read(stored.index)
            if again is not None and again.pdu != pdu_hex and _decodes(again.pdu):
                pdu_hex = again.pdu
        await self.commit_pdu(pdu_hex)
        # Forgotten before the delete: once the slot is free the modem may fill it again,
        # and that text's +CMTI can be handled before this coroutine resumes.
        arrival = self._arrivals.pop(stored.index, None)
        try:
            await modem.delete(stored.index)
        except BaseException:
            if arrival is not None:
                self._arrivals.setdefault(stored.index, arrival)
            raise
        self._health.counters["inbound_parts"] = self._health.counters.get("inbound_parts", 0) + 1

    async def commit_pdu(self, pdu_hex: str) -> str:
        """Decode one PDU as the modem stored it and commit what it holds, durably.

        Returns what became of it: "message", "part", "report" or "quarantined". Nothing in
        the PDU can make this raise: whatever cannot be decoded is kept, raw, in quarantine.
        """
        now_ms = int(self._clock() * 1000)
        try:
            decoded = pdus.decode(pdu_hex)
        except pdus.PduError as exc:
            await self._quarantine(pdu_hex, str(exc), now_ms)
            return "quarantined"
        if isinstance(decoded, pdus.StatusReport):
            await self._apply_report(decoded)
            return "report"
        return await self._deliver(decoded, pdu_hex, now_ms)

    async def _quarantine(self, raw_hex: str, reason: str, now_ms: int) -> None:
        raw = _hex_bytes(raw_hex)
        digest = hashlib.sha256(raw).hexdigest()[:32]
        message = InboundMessage(
            line_id=self.id,
            conversation="unknown",
            sender="unknown",
            body="",
            sent_at=now_ms,
            dedup_key=f"raw:{digest}",
            kind="quarantine",
            raw=raw,
            note=f"A text arrived that could not be read ({reason}). It is kept for inspection.",
        )
        _, created = await self.store.inbox.add(message)
        if created:
            log.warning("quarantined an undecodable PDU (%s)", reason)

    async def _deliver(self, d: pdus.Deliver, raw_hex: str, now_ms: int) -> str:
        raw = _hex_bytes(raw_hex)
        # An empty originating address is legal in a PDU; a conversation needs a name.
        sender = d.sender or "unknown"
        text = d.text if d.encoding != "8bit" else _describe_binary(d.data)
        body_hash = hashlib.sha256(raw[_smsc_len(raw) :]).hexdigest()[:16]
        if d.concat is None or d.concat.total <= 1:
            message = InboundMessage(
                line_id=self.id,
                conversation=sender,
                sender=sender,
                body=text,
                sent_at=d.timestamp_ms,
                dedup_key=f"{sender}|{d.timestamp_ms}|single|{body_hash}",
                raw=raw,
                meta={"sender_type": d.sender_type, "encoding": d.encoding},
            )
            _, created = await self.store.inbox.add(message)
            if created:
                log.info("SMS from %s stored", mask_number(sender))
            return "message"
        c = d.concat
        group = f"{sender}|{c.bits}|{c.ref}|{c.total}"
        # The content is part of a part's identity: two texts that share a reference and a
        # timestamp second must not pass for re-reads of each other (one would be deleted
        # from the SIM unstored).
        held = await self.store.fragments.hold(
            self.id,
            group,
            c.seq,
            c.total,
            text,
            f"{group}|{c.seq}|{d.timestamp_ms}|{body_hash}",
            now_ms,
            d.timestamp_ms,
        )
        if held.count == 0:
            return "part"
        if held.variants == 1:
            if held.count >= c.total:
                await self._complete(group, d.sender_type, incomplete=False)
                return "message"
            return "part"
        family = await self.store.fragments.family(self.id, group)
        counts: dict[str, int] = {}
        for frag in family:
            counts[frag.group_key] = counts.get(frag.group_key, 0) + 1
        if all(n >= c.total for n in counts.values()):
            await self._settle_collision(group, d.sender_type, incomplete=False)
            return "message"
        return "part"

    async def _complete(self, group: str, sender_type: str, *, incomplete: bool) -> None:
        fragments = await self.store.fragments.get(self.id, group)
        if not fragments:
            return
        message = multipart.assemble(self.id, group, fragments, sender_type, incomplete=incomplete)
        await self.store.fragments.complete(self.id, group, message)
        log.info("%s-part SMS from %s stored", message.meta["parts"], mask_number(message.sender))

    async def _settle_collision(self, group: str, sender_type: str, *, incomplete: bool) -> None:
        """Two or more texts sent parts with the same (sender, reference, part number):
        store the texts they sort into, or quarantine them all (multipart.sort_collision)."""
        family = await self.store.fragments.family(self.id, group)
        if not family:
            return
        messages, apart = multipart.sort_collision(
            self.id, group, family, sender_type, incomplete=incomplete
        )
        await self.store.fragments.complete_family(self.id, group, messages)
        log.warning(
            "%d multipart SMS from %s shared a reference; %s",
            len({f.group_key for f in family}),
            mask_number(messages[0].sender),
            "told apart by timestamp" if apart else "quarantined",
        )

    async def _expire_fragments(self) -> None:
        older_than = int((self._clock() - self.config.multipart_timeout) * 1000)
        seen: set[str] = set()
        for line_id, group in await self.store.fragments.expired(older_than):
            base = variant_base(group)
            if line_id != self.id or base in seen:
                continue
            seen.add(base)
            family = await self.store.fragments.family(self.id, base)
            if len({f.group_key for f in family}) > 1:
                await self._settle_collision(base, "unknown", incomplete=True)
            else:
                await self._complete(group, "unknown", incomplete=True)

    async def _status_report_pdu(self, pdu_hex: str) -> None:
        try:
            decoded = pdus.decode(pdu_hex)
        except pdus.PduError as exc:
            log.warning("unreadable status report ignored (%s)", exc)
            return
        if isinstance(decoded, pdus.StatusReport):
            await self._apply_report(decoded)

    async def _apply_report(self, report: pdus.StatusReport) -> None:
        state = {
            "delivered": PartState.DELIVERED,
            "trying": PartState.TRYING,
            "failed": PartState.FAILED,
        }[report.state]
        row = await self.store.outbox.apply_status_report(
            self.id, report.reference, report.recipient, state, report.detail
        )
        if row is None:
            log.info("status report for unknown reference %d ignored", report.reference)

    # -- outbound --------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            await self._ready.wait()
            # Cleared before the look, so a text queued while this pass sends is not missed.
            self._wake.clear()
            now_ms = int(self._clock() * 1000)
            rows = await self.store.outbox.ready(self.id, now_ms)
            self._queue_depth = len(rows)
            progressed = False
            for row in rows:
                if self._stopping or not self._ready.is_set():
                    break
                try:
                    progressed = await self._send(row) or progressed
                except ModemError as exc:
                    # The row is already marked (retry or ambiguous); the modem needs the
                    # recovery ladder before anything else is sent.
                    log.warning("sending stopped (%s); reopening the modem", exc)
                    self._ready.clear()
                    self._reopen_now.set()
                    break
            if progressed:
                # Each conversation's next text may go now: the modem has confirmed the one
                # before it, and that is the only pace a backlog needs.
                continue
            await wait_event(self._wake, await self._idle_wait())

    async def _idle_wait(self) -> float:
        """Until the earliest retry of this line comes due; IDLE_LOOK_S at most, a safety
        net for anything that did not wake us."""
        due_ms = await self.store.outbox.next_due(self.id)
        if due_ms is None:
            return IDLE_LOOK_S
        # The floor: a due row this pass could not take must not make the loop spin.
        return min(IDLE_LOOK_S, max(0.05, due_ms / 1000 - self._clock()))

    async def _send(self, row: OutboxRow) -> bool:
        """Send one row; True if it left the queue or moved on (sent, failed, retry)."""
        modem = self._modem
        if modem is None:
            return False
        req = row.request
        dest = req.conversation
        try:
            parts = pdus.encode_submit(
                dest,
                req.body,
                concat_ref=row.id & 0xFF,
                request_status=self.config.status_reports,
                smsc=self.config.smsc,
            )
        except pdus.PduError as exc:
            await self.store.outbox.mark_failed(
                row.id, f"This can't be sent as a text message: {exc}."
            )
            return True
        already = {p.index for p in row.parts if p.state != PartState.PENDING}
        try:
            await self.store.outbox.mark_sending(row.id, line_id=self.id)
        except StoreStateError:
            # The bridge handed it to another line (or it was cancelled) meanwhile.
            log.info("outbox row %d is no longer this line's to send", row.id)
            return False
        todo = [i for i in range(len(parts)) if i not in already]
        for index, part in enumerate(parts):
            if index in already:
                continue
            try:
                reference = await modem.send_pdu(part)
            except CmsError as exc:
                await self._send_failed(row, exc)
                return True
            except PromptTimeout as exc:
                # No "> " prompt, so the PDU was never written: safe to try again later.
                await self.store.outbox.mark_retry(
                    row.id, "The modem did not accept the text just now; trying again.",
                    self.config.retry_delay,
                )
                self._record_error(f"The modem did not take a text ({exc}).")
                raise
            except ModemError as exc:
                # The PDU may or may not have left; the store's recovery makes it ambiguous
                # rather than risk a second send.
                log.warning("send interrupted (%s); outbox row %d is ambiguous", exc, row.id)
                await self.store.outbox.mark_ambiguous(
                    row.id,
                    "The modem stopped answering while sending this, so it may or may not "
                    "have gone out. Say retry to send it again, or cancel.",
                )
                self._record_error(f"Sending stopped half-way: {exc}.")
                raise
            # The last part's reference and the row's SENT go in one commit.
            await self.store.outbox.mark_part_sent(
                row.id, index, reference, last=index == todo[-1]
            )
        if not todo:
            await self.store.outbox.mark_sent(row.id)
        self._clear("send-retrying", "Texts are going out again.")
        self._health.counters["sent"] = self._health.counters.get("sent", 0) + 1
        log.info("SMS to %s sent in %d part(s)", mask_number(dest), len(parts))
        return True

    async def _send_failed(self, row: OutboxRow, exc: CmsError) -> None:
        attempts = row.attempts + 1
        if exc.retryable and attempts < self.config.max_send_attempts:
            delay = min(self.config.retry_delay * (2 ** (attempts - 1)), MAX_RETRY_DELAY)
            await self.store.outbox.mark_retry(
                row.id, f"{exc.reason} Trying again in {_human_seconds(delay)}.", delay
            )
            self._announce_after(
                "send-retrying",
                Severity.WARNING,
                f"Texts are not going out just now: {exc.reason} Textbridge keeps trying.",
            )
            return
        reason = exc.reason
        if exc.retryable:
            reason = f"{reason} Gave up after {attempts} attempts."
        await self.store.outbox.mark_failed(row.id, reason)
        self._record_error(reason)

    # -- housekeeping ----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.config.multipart_timeout / 4))
            try:
                await self._expire_fragments()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiring multipart fragments failed")


class _Reopen(Exception):
    """Someone (enter_pin) asked for the modem to be opened afresh."""


def _arrival_order(stored: StoredPdu, announced: int) -> tuple[int, int, int]:
    # SCTS has whole seconds: texts of one second are told apart by `announced`.
    try:
        decoded = pdus.decode(stored.pdu)
    except pdus.PduError:
        return (0, announced, stored.index)
    if isinstance(decoded, pdus.Deliver):
        return (decoded.timestamp_ms // 1000, announced, stored.index)
    return (0, announced, stored.index)


def _decodes(pdu_hex: str) -> bool:
    try:
        pdus.decode(pdu_hex)
    except pdus.PduError:
        return False
    return True


def _hex_bytes(value: str) -> bytes:
    try:
        return bytes.fromhex("".join(value.split()))
    except ValueError:
        return value.encode("utf-8", "replace")


def _smsc_len(raw: bytes) -> int:
    return 1 + raw[0] if raw else 0


def _describe_binary(data: bytes) -> str:
    return f"[a data message of {len(data)} bytes that is not text]"


def _human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{round(seconds / 3600)} hours"
