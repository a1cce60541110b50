"""The phone line: an Android phone with Google Messages, driven over ADB.

RCS between modern phones is end-to-end encrypted and only the phone holds the keys, so the
appliance never speaks RCS itself: the phone is the endpoint and Textbridge reads and
types on it.

Inbound, a poll reads `dumpsys notification --noredact` and takes every message of every
Google Messages notification (a notification keeps the conversation's recent messages, so
several arriving between two polls are all there). Each gets a dedup key from conversation,
sender, time and a hash of its text, so reading the same notification again is harmless:
the store refuses the duplicate. Texts that arrive while their conversation is open on the
phone's screen get no notification; for SMS the phone's own store (content://sms/inbox)
fills that gap, and an open conversation is closed (back to the home screen) when found.

Outbound, a row is marked SENDING durably, then Messages' compose screen is opened with the
text (SENDTO intent), the screen is read back to check the compose box holds exactly our
text, the send button is found by id or description and tapped, and the screen is read again
to see the text leave the compose box. Anything failing before the tap puts the row back in
the queue (nothing left the phone); a failure after the tap makes it AMBIGUOUS, for a person
to decide, never a second send on our own (appliance/phone/sending.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.line import (
    Announcer,
    LineCapabilities,
    LineEventHandler,
    LineHealth,
    LineState,
    LineStatus,
    Severity,
)
from appliance.log import mask_number
from appliance.phone import mms as mms_parts
from appliance.phone.adb import AdbLink, OutputTooLarge, Target
from appliance.phone.config import PhoneConfig
from appliance.phone.device import (
    ADDR_FROM,
    LOCKED,
    Health,
    MmsPart,
    PartUnreadable,
    Phone,
    ProviderDenied,
    ProviderMms,
    ProviderSms,
)
from appliance.phone.errors import (
    MessagesMissing,
    PhoneError,
)
from appliance.phone.groups import Groups, match_thread
from appliance.phone.notifications import Notification, dedup_key, thread_id
from appliance.phone.sending import PhoneSending
from appliance.phonenum import NumberKind, normalize
from appliance.store import Store
from appliance.store.models import InboundMessage
from appliance.tasks import stop_tasks, wait_event, within

log = logging.getLogger(__name__)

LinkFactory = Callable[[PhoneConfig, Path], AdbLink]
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# A provider row and a notification message are the same text when sender and body agree
# and their times are this close (the two clocks are the phone's, but the two writes are
# not the same instant).
MATCH_WINDOW_MS = 120_000
COMMITTED_MEMORY = 5000


def default_link(config: PhoneConfig, key_path: Path) -> AdbLink:
    target = Target(config.transport, config.serial, config.host, config.port)
    return AdbLink(
        target,
        key_path,
        connect_timeout=config.connect_timeout,
        auth_timeout=config.auth_timeout,
        command_timeout=config.command_timeout,
    )


@dataclass
class _Health(LineHealth):
    summary: str = "Looking for the phone."
    model: str | None = None
    android: str | None = None
    last_poll_ms: float | None = None


@dataclass
class _Pending:
    row: ProviderSms
    first_seen: float


@dataclass
class _PendingMms:
    row: ProviderMms
    first_seen: float
    addresses: list[tuple[int, str]] | None = None


@dataclass
class _MediaNote:
    """A notification message with a picture or file: stored as its description only if
    the MMS store does not have it (RCS media, or the store cannot be read) after the grace
    time; else the MMS, with its files, is stored in its place."""

    message: InboundMessage
    first_seen: float


class PhoneLine(PhoneSending):
    """A Line (see appliance.line) through an Android phone running Google Messages."""

    _health: _Health

    kind = "phone"
    capabilities: LineCapabilities

    def __init__(
        self,
        line_id: str,
        config: PhoneConfig,
        store: Store,
        *,
        key_path: Path,
        on_event: LineEventHandler | None = None,
        link_factory: LinkFactory = default_link,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = line_id
        self.config = config
        self.capabilities = LineCapabilities(
            groups=True, media=True, rcs=True, media_max_bytes=config.media_max_bytes
        )
        self.store = store
        self.key_path = key_path
        self._link_factory = link_factory
        self._clock = clock
        self._link: AdbLink | None = None
        self._phone: Phone | None = None
        self._health = _Health()
        self._announcer = Announcer(line_id, on_event)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._connected = asyncio.Event()
        self._sendable = asyncio.Event()
        self._reconnect = asyncio.Event()
        # One person at a time on the phone's screen: a send and closing an open
        # conversation must not interleave.
        self._ui = asyncio.Lock()
        self._queue_depth = 0
        self._groups = Groups()
        self._provider_allowed = config.read_sms_provider
        self._provider_cursor = 0
        self._provider_pending: dict[int, _Pending] = {}
        # Recent notification messages, for matching provider rows: (sender, body) -> times
        self._recent: dict[tuple[str, str], list[int]] = {}
        self._started_ms = int(clock() * 1000)
        # Dedup keys the store has confirmed (stored, or already there). A notification
        # repeats its messages at every poll; asking the store each time would cost a
        # write transaction per message per poll. Bounded, oldest forgotten first.
        self._committed: dict[str, None] = {}
        self._mms_allowed = config.read_mms
        self._mms_cursor = 0
        self._mms_pending: dict[int, _PendingMms] = {}
        self._media_notes: dict[str, _MediaNote] = {}
        # MMS stored (or found stored) in this run, by (sender, date): a media notification
        # that shows up only after its MMS was taken is recognised by it.
        self._mms_taken: dict[tuple[str, int], None] = {}
        # Pushed copies the link dropped before they could be deleted: removed on reconnect.
        self._stale_files: set[str] = set()
        self.polls = 0

    # -- Line protocol -------------------------------------------------------------------

    async def start(self) -> None:
        for row in await self.store.outbox.recover_interrupted(self.id):
            log.warning("outbox row %d was interrupted mid-send; now ambiguous", row.id)
        self._stopping = False
        self._started_ms = int(self._clock() * 1000)
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"{self.id}-supervise"),
            asyncio.create_task(self._sender(), name=f"{self.id}-sender"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        await stop_tasks(self._tasks, f"phone line {self.id}")
        self._tasks = []
        await self._drop_link()

    def wake(self) -> None:
        self._wake.set()

    def poll_now(self) -> None:
        """Read the phone's notifications now instead of at the next interval."""
        self._poll_now.set()

    def status(self) -> LineStatus:
        h = self._health
        details: dict[str, str] = {"transport": self._describe_target()}
        if h.model:
            details["model"] = h.model
        if h.android:
            details["android"] = h.android
        if h.last_poll_ms is not None:
            details["last_poll_ms"] = f"{h.last_poll_ms:.1f}"
        details["sms_store"] = "readable" if self._provider_allowed else "not readable"
        for name, value in sorted(h.counters.items()):
            details[f"count_{name}"] = str(value)
        return LineStatus(
            line_id=self.id,
            kind=self.kind,
            state=h.state,
            summary=h.summary,
            registered=h.state in (LineState.READY, LineState.DEGRADED),
            queue_depth=self._queue_depth,
            last_error=h.last_error,
            last_error_at=h.last_error_at,
            details=details,
            # Locked, or Messages not running: DEGRADED, but nothing can be typed.
            can_send=self._sendable.is_set() and h.state in (LineState.READY, LineState.DEGRADED),
        )

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109 - as SmsLine
        return await wait_event(self._connected, timeout)

    def _describe_target(self) -> str:
        c = self.config
        if c.transport == "tcp":
            return f"tcp {c.host}:{c.port}"
        return f"usb {c.serial}" if c.serial else "usb"

    # -- supervision -----------------------------------------------------------------------

    async def _drop_link(self) -> None:
        self._connected.clear()
        self._sendable.clear()
        link, self._link, self._phone = self._link, None, None
        if link is not None:
            link.abort()
            with contextlib.suppress(Exception):
                # USB reads end at their own timeout; do not hold up a stop for them.
                await within(2.0, link.close())
            link.shutdown()

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._connect()
                failures = 0
                await self._run_connected()
            except asyncio.CancelledError:
                raise
            except PhoneError as exc:
                self._down(exc.plain, key=exc.key)
            except Exception as exc:  # a bug in one poll must not end the line for good
                log.exception("phone line supervisor error")
                self._down(f"The phone line failed unexpectedly ({exc}).", key="unplugged")
            await self._drop_link()
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            await wait_event(self._reconnect, delay)
            self._reconnect.clear()

    async def _connect(self) -> None:
        link = self._link_factory(self.config, self.key_path)
        self._link = link
        self._phone = Phone(link, ui_wait=self.config.ui_wait)
        await link.connect()
        self._connected.set()
        self._resolved("unauthorized", "The phone has allowed Textbridge; it is connected.")
        self._resolved("unplugged", "The phone is connected again.")
        self._resolved("offline", "The phone is answering again.")
        phone = self._phone
        with contextlib.suppress(PhoneError):
            await phone.stay_awake()
        for path in sorted(self._stale_files):
            with contextlib.suppress(PhoneError):
                await phone.remove_file(path)
                self._stale_files.discard(path)
        await self._check_health(phone)

    async def _run_connected(self) -> None:
        phone = self._phone
        assert phone is not None
        last_health = time.monotonic()
        while not self._stopping:
            await self._poll(phone)
            if time.monotonic() - last_health >= self.config.health_interval:
                last_health = time.monotonic()
                await self._check_health(phone)
            await wait_event(self._poll_now, self.config.poll_interval)
            self._poll_now.clear()

    async def _check_health(self, phone: Phone) -> Health:
        health = await phone.health()
        h = self._health
        h.model, h.android = health.model or None, health.android or None
        if not health.messages_installed:
            self._sendable.clear()
            raise MessagesMissing(
                "Google Messages is not installed on the phone. Install it from the Play "
                "Store and make it the default SMS app."
            )
        if not health.is_default_sms:
            self._sendable.clear()
            raise MessagesMissing(
                "Google Messages is not the phone's default SMS app, so texts do not reach it. "
                'Open Messages on the phone and accept "Set as default SMS app".'
            )
        self._resolved("messages", "Google Messages is set up on the phone again.")
        if not health.messages_running:
            # Messages crashed or was stopped: it posts no notifications until it runs, so
            # texts may be waiting on the phone unseen. Starting it brings them back.
            log.warning("Google Messages is not running on the phone; starting it")
            self._count("messages_restarts")
            async with self._ui:
                await phone.start_messages()
            health = await phone.health()
            if not health.messages_running:
                self._sendable.clear()
                self._set(
                    LineState.DEGRADED,
                    "Google Messages is not running on the phone; texts may wait there unseen.",
                )
                self._announce(
                    "messages-stopped",
                    Severity.ERROR,
                    "Google Messages keeps stopping on the phone, so Textbridge can't see new "
                    "texts there. Open Messages on the phone once; restart the phone if that "
                    "does not help.",
                )
                return health
        self._resolved("messages-stopped", "Google Messages is running on the phone again.")
        if health.conversation_open and self.config.leave_open_conversations:
            async with self._ui:
                # Looked at again under the lock: a send in progress had the screen open.
                if await phone.conversation_open():
                    self._announce(
                        "conversation-open",
                        Severity.INFO,
                        "A conversation was left open on the phone's screen. While one is "
                        "open, Messages shows no notification for it and Textbridge could miss "
                        "RCS chats, so it went back to the home screen.",
                    )
                    await phone.go_home()
        else:
            # Announced again the next time it happens, without a "resolved" notice.
            self._announcer.forget("conversation-open")
        if health.locked:
            self._sendable.clear()
            self._set(LineState.DEGRADED, LOCKED)
            self._announce("locked", Severity.ERROR, LOCKED)
            return health
        self._resolved("locked", "The phone is unlocked; sending works again.")
        self._sendable.set()
        where = " ".join(x for x in (health.model, f"Android {health.android}") if x)
        self._set(LineState.READY, f"Connected to the phone ({where}) through Google Messages.")
        return health

    # -- inbound ---------------------------------------------------------------------------

    async def _poll(self, phone: Phone) -> None:
        started = time.perf_counter()
        notifications = await phone.notifications()
        now_ms = int(self._clock() * 1000)
        unreadable = 0
        for n in notifications:
            if not n.is_messaging_style:
                continue
            unreadable += n.unreadable
            await self._take_notification(n, now_ms)
        if unreadable:
            self._announce(
                "unreadable",
                Severity.WARNING,
                "This phone hides the text of some message notifications from Textbridge, "
                "so those texts cannot be bridged; see docs/phone.md for supported phones.",
            )
        if self._provider_allowed:
            await self._poll_provider(phone)
        if self._mms_allowed:
            await self._poll_mms(phone)
        await self._flush_media_notes()
        self.polls += 1
        self._count("polls")
        self._health.last_poll_ms = (time.perf_counter() - started) * 1000

    def _address(self, name: str) -> str:
        """A sender as Messages names it: a number when the phone has no contact for it
        (the set-up we recommend), else the contact's display name as-is."""
        norm = normalize(name, self.config.home_country)
        if norm.kind in (NumberKind.E164, NumberKind.SHORT):
            return norm.value
        return name.strip()

    async def _take_notification(self, n: Notification, now_ms: int) -> None:
        senders = sorted({self._address(m.sender) for m in n.messages if m.sender})
        group = n.is_group
        conversation: str
        meta: dict[str, object] = {"source": "notification"}
        if group:
            conversation = thread_id(n.thread)
            # A notification lists its messages oldest first; the last is the thread's last.
            last = (n.messages[-1].text, n.messages[-1].time) if n.messages else None
            known = self._groups.saw(
                conversation, senders, n.conversation_title or n.title or "", last
            )
            if not known.complete and known.tried != known.last_time:
                # Once per new message: the phone's conversation has the whole list.
                known.tried = known.last_time
                await self._learn_group(conversation)
            meta["group_name"] = known.name
            meta["members"] = list(known.members)
            meta["members_complete"] = known.complete
        else:
            peer = n.title or (senders[0] if senders else None)
            if peer is None:
                return
            conversation = self._address(peer)
        for m in n.messages:
            if m.sender is None:
                continue  # written on the phone itself (or by us): not inbound
            sender = self._address(m.sender)
            body = m.text
            note = None
            msg_meta = dict(meta)
            if n.suspect:
                msg_meta["suspect"] = True
                note = (
                    "This text contains something that looks like the phone's own notification "
                    "data, so it may have been read wrongly; check it on the phone."
                )
            if m.mime_type is not None:
                # The note saying why only the description came is added when it is stored
                # (_flush_media_notes): by then it is known whether the MMS store had it.
                msg_meta["media_type"] = m.mime_type
                if not body:
                    body = f"[{m.mime_type.split('/')[0]}]"
            self._remember(sender, body, m.time)
            key = dedup_key(conversation, sender, m.time, body)
            if key in self._committed:
                continue
            if m.mime_type is not None and key not in self._media_notes:
                draft = InboundMessage(
                    line_id=self.id,
                    conversation=conversation,
                    sender=sender,
                    body=body,
                    sent_at=m.time,
                    dedup_key=key,
                    note=note,
                    meta=msg_meta,
                )
                self._media_notes[key] = _MediaNote(draft, time.monotonic())
                if self._mms_allowed:
                    # The MMS may be older than the start-up look-back (a notification
                    # still showing after a restart): look for it by its time.
                    await self._find_mms_near(phone_time=m.time)
                continue
            if m.mime_type is not None:
                continue  # waiting in _media_notes
            message = InboundMessage(
                line_id=self.id,
                conversation=conversation,
                sender=sender,
                body=body,
                sent_at=m.time,
                dedup_key=key,
                note=note,
                meta=msg_meta,
            )
            _, created = await self.store.inbox.add(message)
            self._mark_committed(key)
            if created:
                self._count("inbound")
                log.info(
                    "%s message from %s stored",
                    "group" if group else "1:1",
                    mask_number(sender),
                )

    async def _learn_group(self, conversation: str) -> bool:
        """Ask the phone who is in this group (its telephony thread); True when known."""
        phone, known = self._phone, self._groups.get(conversation)
        if phone is None or known is None:
            return False
        try:
            threads = await phone.threads()
        except ProviderDenied:
            log.info("the phone's conversation list is not readable; group members unknown")
            return False
        members = match_thread(threads, known, self._address)
        if members is None:
            return False
        self._groups.learn(conversation, members)
        log.info("group members learnt from the phone (%d people)", len(members))
        return True

    def _mark_committed(self, key: str) -> None:
        self._committed[key] = None
        if len(self._committed) > COMMITTED_MEMORY:
            del self._committed[next(iter(self._committed))]

    def _remember(self, sender: str, body: str, when: int) -> None:
        times = self._recent.setdefault((sender, body), [])
        if when not in times:
            times.append(when)
            del times[:-20]

    def _seen_in_notification(self, row: ProviderSms) -> bool:
        sender = self._address(row.address)
        return any(
            abs(t - row.date) <= MATCH_WINDOW_MS for t in self._recent.get((sender, row.body), [])
        )

    async def _poll_provider(self, phone: Phone) -> None:
        since = self._started_ms - int(self.config.provider_lookback * 1000)
        try:
            rows = await phone.sms_inbox(after_id=self._provider_cursor, since_ms=since)
        except ProviderDenied as exc:
            self._provider_allowed = False
            self._announce(exc.key, Severity.WARNING, exc.plain)
            return
        now = time.monotonic()
        for row in rows:
            self._provider_cursor = max(self._provider_cursor, row.id)
            self._provider_pending.setdefault(row.id, _Pending(row, now))
        for row_id, pending in sorted(self._provider_pending.items()):
            row = pending.row
            if self._seen_in_notification(row):
                del self._provider_pending[row_id]
                continue
            if now - pending.first_seen < self.config.provider_grace:
                continue
            del self._provider_pending[row_id]
            sender = self._address(row.address)
            key = dedup_key(sender, sender, row.date, row.body)
            if key in self._committed:
                continue
            # Same key as the notification path would give, so whichever path sees the
            # text first, the other is a duplicate to the store.
            message = InboundMessage(
                line_id=self.id,
                conversation=sender,
                sender=sender,
                body=row.body,
                sent_at=row.date,
                dedup_key=key,
                meta={"source": "sms-store"},
            )
            _, created = await self.store.inbox.add(message)
            self._mark_committed(key)
            if created:
                self._count("inbound_backfilled")
                log.info("SMS from %s taken from the phone's SMS store", mask_number(sender))

    # -- MMS -------------------------------------------------------------------------------

    def _mms_denied(self, exc: ProviderDenied) -> None:
        self._mms_allowed = False
        self._mms_pending.clear()
        self._announce("mms-store", Severity.WARNING, exc.plain)

    def _queue_mms(self, rows: list[ProviderMms]) -> None:
        now = time.monotonic()
        for row in rows:
            if _mms_key(row) not in self._committed:
                self._mms_pending.setdefault(row.id, _PendingMms(row, now))

    async def _find_mms_near(self, *, phone_time: int) -> None:
        phone = self._phone
        if phone is None:
            return
        try:
            rows = await phone.mms_inbox(
                since_ms=phone_time - MATCH_WINDOW_MS, until_ms=phone_time + MATCH_WINDOW_MS
            )
        except ProviderDenied as exc:
            self._mms_denied(exc)
            return
        self._queue_mms(rows)

    async def _poll_mms(self, phone: Phone) -> None:
        since = self._started_ms - int(self.config.provider_lookback * 1000)
        try:
            rows = await phone.mms_inbox(after_id=self._mms_cursor, since_ms=since)
            for row in rows:
                self._mms_cursor = max(self._mms_cursor, row.id)
            self._queue_mms(rows)
            now = time.monotonic()
            for mms_id, pending in sorted(self._mms_pending.items()):
                if await self._take_mms(phone, pending, now):
                    del self._mms_pending[mms_id]
        except ProviderDenied as exc:
            self._mms_denied(exc)

    def _match_note(self, sender: str, date: int) -> _MediaNote | None:
        best: _MediaNote | None = None
        for note in self._media_notes.values():
            m = note.message
            if m.sender != sender or abs(m.sent_at - date) > MATCH_WINDOW_MS:
                continue
            if best is None or abs(m.sent_at - date) < abs(best.message.sent_at - date):
                best = note
        return best

    async def _take_mms(self, phone: Phone, pending: _PendingMms, now: float) -> bool:
        """Store one MMS with its files; True when it needs no more looking at (stored,
        a duplicate, or text only), False to look again at the next poll."""
        row = pending.row
        key = _mms_key(row)
        if key in self._committed:
            return True
        if pending.addresses is None:
            pending.addresses = await phone.mms_addresses(row.id)
        sender_raw = next((a for t, a in pending.addresses if t == ADDR_FROM), None)
        if sender_raw is None:
            return True  # not from anyone: not inbound
        sender = self._address(sender_raw)
        note = self._match_note(sender, row.date)
        if note is None and now - pending.first_seen < self.config.provider_grace:
            return False  # its notification may show at the next poll
        if await self.store.inbox.has(self.id, key):
            self._mark_committed(key)
            self._drop_note(note)
            self._took_mms(sender, row.date)
            return True
        parts = await phone.mms_parts(row.id)
        if not any(mms_parts.is_attachment(p) for p in parts):
            # A text-only MMS (a long text, a group text): its notification carries it, as
            # before; taking it here too would store it twice.
            return True
        if note is not None:
            conversation, meta = note.message.conversation, dict(note.message.meta)
            meta.pop("media_type", None)
        else:
            conversation, meta = self._mms_conversation(sender, row, pending.addresses)
        meta["source"] = "mms"
        meta["mms_id"] = row.id
        message = await self._fetch_mms(phone, row, parts, conversation, sender, key, meta)
        _, created = await self.store.inbox.add(message)
        self._mark_committed(key)
        self._drop_note(note)
        self._took_mms(sender, row.date)
        if created:
            self._count("inbound_mms")
            log.info(
                "MMS from %s stored (%d files, %d bytes)",
                mask_number(sender),
                len(message.meta.get("attachments", [])),
                len(message.raw or b""),
            )
        return True

    def _took_mms(self, sender: str, date: int) -> None:
        self._mms_taken[(sender, date)] = None
        if len(self._mms_taken) > COMMITTED_MEMORY:
            del self._mms_taken[next(iter(self._mms_taken))]

    def _drop_note(self, note: _MediaNote | None) -> None:
        if note is not None:
            self._media_notes.pop(note.message.dedup_key, None)
            self._mark_committed(note.message.dedup_key)

    def _mms_conversation(
        self, sender: str, row: ProviderMms, addresses: list[tuple[int, str]]
    ) -> tuple[str, dict[str, object]]:
        """Where an MMS no notification showed belongs: 1:1, or the group of these people."""
        others = sorted({self._address(a) for t, a in addresses if t != ADDR_FROM} - {sender})
        if not others:
            return sender, {}
        people = sorted({sender, *others})
        known = self._groups.with_members(people)
        if known is not None:
            return known, {"members": people, "members_complete": True}
        conv = thread_id(f"mms-thread:{row.thread_id}")
        self._groups.learn(conv, people)
        return conv, {"members": people, "members_complete": True, "group": True}

    async def _fetch_mms(
        self,
        phone: Phone,
        row: ProviderMms,
        parts: list[MmsPart],
        conversation: str,
        sender: str,
        key: str,
        meta: dict[str, object],
    ) -> InboundMessage:
        limit = self.config.media_max_bytes
        caption = mms_parts.text_of(parts)
        got = mms_parts.Fetched()
        attachments = [p for p in parts if mms_parts.is_attachment(p)]
        if row.size is not None and row.size > limit:
            # The provider's own total says it is too big: nothing is fetched.
            got.too_big, got.too_big_bytes = len(attachments), row.size
        else:
            for part in attachments:
                try:
                    data = await phone.read_part(part.id, limit=limit - len(got.raw))
                except OutputTooLarge:
                    got.too_big += 1
                    continue
                except PartUnreadable as exc:
                    log.warning("MMS %d part %d unreadable: %s", row.id, part.id, exc.plain)
                    got.unreadable += 1
                    continue
                got.add(part, data)
        note = got.note(limit)
        if not got.attachments:
            return InboundMessage(
                line_id=self.id,
                conversation=conversation,
                sender=sender,
                body=caption or mms_parts.describe(parts),
                sent_at=row.date,
                dedup_key=key,
                note=note,
                meta={**meta, "media_type": attachments[0].ct},
            )
        return InboundMessage(
            line_id=self.id,
            conversation=conversation,
            sender=sender,
            body=caption,
            sent_at=row.date,
            dedup_key=key,
            kind="media",
            raw=bytes(got.raw),
            note=note,
            meta={**meta, "attachments": got.attachments},
        )

    async def _flush_media_notes(self) -> None:
        """Media notifications the MMS store did not have within the grace time: their
        description, with a note, is all that can be bridged (RCS media)."""
        now = time.monotonic()
        for key, note in list(self._media_notes.items()):
            m = note.message
            if any(
                sender == m.sender and abs(date - m.sent_at) <= MATCH_WINDOW_MS
                for sender, date in self._mms_taken
            ):
                self._drop_note(note)  # its MMS was taken before the notification showed
                continue
            if self._mms_allowed and now - note.first_seen < self.config.provider_grace:
                continue
            if self._mms_allowed and any(
                self._address(a) == note.message.sender
                for p in self._mms_pending.values()
                for t, a in (p.addresses or [])
                if t == ADDR_FROM and abs(p.row.date - note.message.sent_at) <= MATCH_WINDOW_MS
            ):
                continue  # its MMS is being fetched
            why = (
                "A picture or file arrived on the phone; it did not come by MMS (an RCS chat "
                "keeps its files inside Google Messages), so only its description can be "
                "bridged: open it on the phone."
                if self._mms_allowed
                else "A picture or file arrived on the phone; Textbridge cannot read the "
                "phone's MMS store, so only its description can be bridged: open it on the "
                "phone."
            )
            message = dataclasses.replace(m, note=f"{m.note} {why}" if m.note else why)
            _, created = await self.store.inbox.add(message)
            del self._media_notes[key]
            self._mark_committed(key)
            if created:
                self._count("inbound")
                log.info("media description from %s stored", mask_number(note.message.sender))


def _mms_key(row: ProviderMms) -> str:
    # The phone's row id with its time: ids can be reused after a conversation is deleted.
    return f"mms:{row.id}:{row.date}"
