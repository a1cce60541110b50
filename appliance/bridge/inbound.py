"""SMS -> Matrix: every RECEIVED inbox row becomes a message from its ghost in its portal.

Rows go strictly in id order. A row is marked DELIVERED only after the homeserver returned
the event id; until then it stays RECEIVED and is retried with backoff, and nothing behind
it overtakes it, so a conversation never shows texts out of order.

A retry cannot duplicate: the event is sent with a transaction id derived from the row
("tb-inbox-<id>"), which the homeserver deduplicates while it runs, and a row whose send
was started before (recorded in bridge.db first) is looked for in the room before it is
sent again, which covers a homeserver restart in between.

Inbound text is sent as plain m.text with an empty m.mentions: no formatted_body, so
nothing in an SMS can become HTML, a mention, a pill or a command. A media row (an MMS
through the phone) becomes one uploaded m.image / m.audio / m.video / m.file per
attachment (appliance/bridge/media.py), then its words as m.text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from mautrix.errors import IntentError, MatrixConnectionError, MatrixRequestError
from mautrix.types import EventID, EventType, MessageType, PaginationDirection, RoomID

from appliance.bridge import media
from appliance.bridge.text import quote
from appliance.store.models import InboxRow
from appliance.tasks import within

if TYPE_CHECKING:
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

# The homeserver is asked about one row for at most this long; a paused or wedged server
# must not stall the loop forever (the retry carries the same transaction id).
SEND_TIMEOUT = 20.0
MAX_BACKOFF = 30.0
# The homeserver is on the same box: while it is merely away (restarting, stopped), asking
# every few seconds costs nothing and brings the backlog in soon after it returns.
TRANSIENT_MAX_BACKOFF = 4.0
ROW_KEY = "fi.textbridge.inbox_row"
LINE_KEY = "fi.textbridge.line"  # which line the text came through
PART_KEY = "fi.textbridge.part"  # which part of a media row an event is


def transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: the homeserver is down, restarting,
    overloaded or rate limiting."""
    if isinstance(exc, IntentError) and exc.__cause__ is not None:
        return transient(exc.__cause__)
    if isinstance(exc, MatrixConnectionError | TimeoutError | OSError | ConnectionError):
        return True
    if isinstance(exc, MatrixRequestError):
        return exc.http_status >= 500 or exc.http_status in (0, 429)
    return False


class Inbound:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.delivered = 0
        self.last_error: str | None = None
        self.backoff = 0.0

    async def run(self) -> None:
        store = self.bridge.store
        while True:
            seen = store.changed.version
            try:
                progressed = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                cap = TRANSIENT_MAX_BACKOFF if transient(exc) else MAX_BACKOFF
                self.backoff = min(cap, max(0.5, self.backoff * 2))
                level = logging.WARNING if transient(exc) else logging.ERROR
                log.log(
                    level,
                    "inbound delivery paused %.1f s: %s",
                    self.backoff,
                    self.last_error,
                    exc_info=not transient(exc),
                )
                await asyncio.sleep(self.backoff)
                continue
            self.backoff = 0.0
            if not progressed:
                await store.changed.wait(5.0, since=seen)

    async def pass_once(self) -> bool:
        """Deliver what is pending; True if anything was done."""
        store = self.bridge.store
        done = False
        await self._quarantined()
        rows: list[InboxRow] = []
        # Per configured line: rows of a line the bridge does not know (nobody could be
        # told of them) must not fill every batch and starve the others.
        for line in self.bridge.config.lines:
            rows.extend(await store.inbox.pending(limit=100, line_id=line.id))
        rows.sort(key=lambda r: r.id)
        for row in rows:
            try:
                await within(SEND_TIMEOUT, self.deliver(row))
            except (MatrixRequestError, IntentError) as exc:
                if transient(exc) or not await self._abandon_portal(row):
                    raise
                await within(SEND_TIMEOUT, self.deliver(row))
            done = True
            self.last_error = None
        return done

    async def deliver(self, row: InboxRow) -> None:
        msg = row.message
        line = self.bridge.config.line(msg.line_id)
        assert line is not None
        if msg.kind == "quarantine":
            await self._tell_quarantine(row)
            await self.bridge.store.inbox.mark_delivered(row.id, "quarantine-notice")
            return
        # The store's contract: sender equals conversation in a 1:1 chat (compared as
        # numbers, in case a transport spells them differently).
        canonical = self.bridge.portals.canonical
        group = bool(msg.meta.get("group")) or canonical(
            msg.conversation, line.home_country
        ) != canonical(msg.sender, line.home_country)
        conversation = (
            msg.conversation
            if group
            else self.bridge.portals.canonical(msg.conversation, line.home_country)
        )
        portal = await self.bridge.portals.ensure(line, conversation, group=group, meta=msg.meta)
        room_id = RoomID(portal.room_id)
        ghost = await self.bridge.portals.ghost(msg.sender, line.home_country)
        await ghost.ensure_joined(room_id)
        txn = f"tb-inbox-{row.id}"
        await self.bridge.router.mark_inbound(portal, line, txn, msg.sent_at)
        sent: dict[str, EventID] = {}
        if await self.bridge.db.inbox_attempted(row.id):
            sent = await self._find_sent(room_id, row.id)
        else:
            await self.bridge.db.record_inbox_attempt(row.id, portal.room_id)
        if msg.kind == "media" and msg.raw is None:
            full = await self.bridge.store.inbox.get(row.id)  # pending() leaves the bytes out
            msg = full.message if full is not None else msg
        # One event per attachment, then the words: each with its own transaction id and
        # marked with the row and its place, so a retry sends only what is missing.
        files = (
            media.split(msg.raw or b"", msg.meta.get("attachments")) if msg.kind == "media" else []
        )
        event_id: EventID | None = None
        for index, attachment in enumerate(files):
            part = f"file{index}"
            found = sent.get(part)
            if found is None:
                content = media.content(attachment, index, "")
                url = await ghost.upload_media(
                    attachment.data,
                    mime_type=content["info"]["mimetype"],
                    filename=content["filename"],
                    size=len(attachment.data),
                )
                content.update(
                    {"url": str(url), ROW_KEY: row.id, PART_KEY: part, LINE_KEY: line.id}
                )
                found = await ghost.send_message_event(
                    room_id,
                    EventType.ROOM_MESSAGE,
                    content,  # type: ignore[arg-type]
                    txn_id=txn if index == 0 else f"{txn}-{part}",
                    timestamp=msg.sent_at,
                )
            event_id = event_id or found
        if not files or msg.body:
            found = sent.get("text")
            if found is None:
                content = {
                    "msgtype": str(MessageType.TEXT),
                    "body": msg.body if msg.body else "(empty text)",
                    "m.mentions": {},
                    ROW_KEY: row.id,
                    LINE_KEY: line.id,
                }
                if files:
                    content[PART_KEY] = "text"
                found = await ghost.send_message_event(
                    room_id,
                    EventType.ROOM_MESSAGE,
                    content,  # type: ignore[arg-type]
                    txn_id=f"{txn}-text" if files else txn,
                    timestamp=msg.sent_at,
                )
            event_id = event_id or found
        if msg.note:
            await self.bridge.az.intent.send_message_event(
                room_id,
                EventType.ROOM_MESSAGE,
                {"msgtype": "m.notice", "body": msg.note, "m.mentions": {}},  # type: ignore[arg-type]
                txn_id=f"{txn}-note",
                timestamp=msg.sent_at,
            )
        await self.bridge.store.inbox.mark_delivered(row.id, str(event_id))
        self.delivered += 1

    async def _abandon_portal(self, row: InboxRow) -> bool:
        """The portal room refuses the bridge (the bot or the ghost was removed, the room
        was left by all): forget it, so the text opens a new room instead of waiting
        forever. True if there was a portal to forget."""
        msg = row.message
        line = self.bridge.config.line(msg.line_id)
        if line is None:
            return False
        canonical = self.bridge.portals.canonical
        conversation = msg.conversation
        if canonical(conversation, line.home_country) == canonical(msg.sender, line.home_country):
            conversation = canonical(conversation, line.home_country)
        portal = await self.bridge.db.portal(line.id, conversation)
        if portal is None:
            return False
        log.warning("portal %s no longer usable; a new room is made", portal.room_id)
        await self.bridge.db.forget_portal(portal.room_id)
        return True

    async def _find_sent(self, room_id: RoomID, row_id: int) -> dict[str, EventID]:
        """Search the room's recent history for the events of an earlier attempt, by part
        ("text" for a text row or a media row's words, "file<n>" for its attachments)."""
        bot = self.bridge.az.intent
        resp = await bot.get_messages(room_id, direction=PaginationDirection.BACKWARD, limit=100)
        events: list[Any] = getattr(resp, "events", [])
        found: dict[str, EventID] = {}
        for event in events:
            content = getattr(event, "content", None)
            if content is None:
                continue
            try:
                value = content[ROW_KEY]
            except (KeyError, TypeError):
                continue
            if value == row_id:
                try:
                    part = content[PART_KEY]
                except (KeyError, TypeError):
                    part = "text"
                found.setdefault(str(part), EventID(event.event_id))
        return found

    async def _quarantined(self) -> None:
        # The store lists a quarantined row until mark_delivered records who was told.
        for line in self.bridge.config.lines:
            for row in await self.bridge.store.inbox.quarantined(line_id=line.id):
                await within(SEND_TIMEOUT, self._tell_quarantine(row))
                await self.bridge.store.inbox.mark_delivered(row.id, "quarantine-notice")

    async def _tell_quarantine(self, row: InboxRow) -> None:
        msg = row.message
        line = self.bridge.config.line(msg.line_id)
        if line is None:
            return
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row.received_at / 1000))
        parts = [f"Line {line.id}: a text received {when} could not be read."]
        if msg.sender and msg.sender != "unknown":
            parts.append(f"It came from {msg.sender}.")
        if msg.body:
            parts.append(f"What could be read: {quote(msg.body, 200)}")
        if msg.note:
            parts.append(msg.note)
        parts.append(f"It is kept in the store as inbox row {row.id}.")
        await self.bridge.notify_line(
            line.id, " ".join(parts), owner_only=True, txn_id=f"tb-quarantine-{row.id}"
        )
