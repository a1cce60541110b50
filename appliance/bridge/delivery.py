"""Delivery state in the room, driven by the outbox's unreported rows.

  SENT       -> com.beeper.message_send_status SUCCESS on the member's event
  DELIVERED  -> a read receipt from the contact's ghost on that event (clients show the
                contact's avatar under the message)
  FAILED     -> send status FAIL_PERMANENT and a notice with the reason and how to retry
  AMBIGUOUS  -> send status FAIL_RETRIABLE and a notice: it may or may not have gone out;
                the sender decides with `retry <n>` or `cancel <n>`
  CANCELLED  -> a notice that it will not be sent
  QUEUED/SENDING after a `retry` -> send status PENDING

A row is marked reported only after the room shows its state; if the homeserver is away
the row stays unreported and is shown when it is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from mautrix.errors import MatrixRequestError
from mautrix.types import EventID, MessageStatus, MessageStatusReason, RoomID, UserID

from appliance.bridge.inbound import MAX_BACKOFF, SEND_TIMEOUT, transient
from appliance.bridge.text import quote
from appliance.store.models import OutboxRow, OutboxState
from appliance.tasks import within

if TYPE_CHECKING:
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)


class Delivery:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.last_error: str | None = None
        self.reported = 0

    async def run(self) -> None:
        backoff = 0.0
        while True:
            seen = self.bridge.store.changed.version
            try:
                rows = await self.bridge.store.outbox.unreported(limit=100)
                for row in rows:
                    try:
                        await within(SEND_TIMEOUT, self.report(row))
                    except MatrixRequestError as exc:
                        if transient(exc):
                            raise
                        # The room is gone or the bot was thrown out: the state cannot be
                        # shown there, and retrying would hold up every other row.
                        log.warning("outbox row %d: state not shown: %s", row.id, exc)
                        await self.bridge.store.outbox.mark_reported(row.id, row.state)
                self.last_error = None
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                log.log(
                    logging.WARNING if transient(exc) else logging.ERROR,
                    "delivery reports paused %.1f s: %s",
                    backoff,
                    self.last_error,
                    exc_info=not transient(exc),
                )
                await asyncio.sleep(backoff)
                continue
            if not rows:
                await self.bridge.store.changed.wait(5.0, since=seen)

    def network(self, row: OutboxRow) -> str:
        """What carried the text, for the send status: "rcs" or "sms" once the phone line
        has seen which (its send button says), "phone" before that, "sms" on the modem."""
        said = row.request.meta.get("network")
        if isinstance(said, str):
            return said
        line = self.bridge.config.line(row.request.line_id)
        return "phone" if line is not None and line.kind == "phone" else "sms"

    async def report(self, row: OutboxRow) -> None:
        meta = row.request.meta
        room = meta.get("room_id")
        event = meta.get("event_id")
        if not isinstance(room, str) or not isinstance(event, str):
            await self.bridge.store.outbox.mark_reported(row.id, row.state)
            return
        room_id, event_id = RoomID(room), EventID(event)
        state, before = row.state, row.reported_state
        sender = UserID(row.request.requested_by)
        excerpt = quote(row.request.body)
        send_status = functools.partial(self.bridge.send_status, network=self.network(row))
        if state in (OutboxState.QUEUED, OutboxState.SENDING):
            if before is not None and before not in (OutboxState.QUEUED, OutboxState.SENDING):
                await send_status(
                    room_id, event_id, MessageStatus.PENDING, message="Sending again."
                )
        elif state == OutboxState.SENT:
            await send_status(room_id, event_id, MessageStatus.SUCCESS)
            await self._fallback_note(row, room_id, event_id)
        elif state == OutboxState.DELIVERED:
            if before != OutboxState.SENT:
                await send_status(room_id, event_id, MessageStatus.SUCCESS)
                await self._fallback_note(row, room_id, event_id)
            await self._receipt(row, room_id, event_id)
        elif state == OutboxState.FAILED:
            reason = row.error or "the phone network refused it"
            await send_status(
                room_id, event_id, MessageStatus.FAIL, MessageStatusReason.NETWORK_ERROR, reason
            )
            await self._notice(
                row,
                room_id,
                event_id,
                sender,
                f"Your text {excerpt} was not sent: {reason}. To try again, write "
                f"`retry {row.id}` in your Textbridge room (or `cancel {row.id}`).",
            )
            await self.bridge.db.add_attention(row.id, sender)
        elif state == OutboxState.AMBIGUOUS:
            await send_status(
                room_id,
                event_id,
                MessageStatus.RETRIABLE,
                MessageStatusReason.NETWORK_ERROR,
                "It may or may not have been sent.",
            )
            await self._notice(
                row,
                room_id,
                event_id,
                sender,
                f"Your text {excerpt} was interrupted while sending: it may or may not have "
                "reached the phone. Textbridge does not send it again on its own, so it "
                f"cannot arrive twice. Write `retry {row.id}` in your Textbridge room to send "
                f"it again, or `cancel {row.id}` to leave it.",
            )
            await self.bridge.db.add_attention(row.id, sender)
        elif state == OutboxState.CANCELLED:
            await send_status(
                room_id, event_id, MessageStatus.FAIL, message="Cancelled."
            )
            await self._notice(
                row, room_id, event_id, sender, f"Your text {excerpt} will not be sent."
            )
        await self.bridge.store.outbox.mark_reported(row.id, state)
        self.reported += 1

    async def _fallback_note(self, row: OutboxRow, room_id: RoomID, event_id: EventID) -> None:
        """A text that went out through another line than the room's first says so."""
        fallback = row.request.meta.get("fallback")
        line = self.bridge.config.line(row.request.line_id)
        if not isinstance(fallback, dict) or line is None:
            return
        how = "as SMS through the modem" if line.kind == "modem" else "through the phone"
        reason = str(fallback.get("reason") or "the first line could not send")
        await self.bridge.notice(
            room_id,
            f"Sent {how} (line {line.id}): {reason}.",
            reply_to=event_id,
            txn_id=f"tb-fallback-{row.id}",
        )

    async def _notice(
        self, row: OutboxRow, room_id: RoomID, event_id: EventID, sender: UserID, text: str
    ) -> None:
        await self.bridge.notice(
            room_id,
            text,
            reply_to=event_id,
            mention=sender,
            txn_id=f"tb-outbox-{row.id}-{row.state}-{row.attempts}",
        )
        # The sender may not be looking at this room; their own room gets it too.
        await self.bridge.tell(
            sender, text, txn_id=f"tb-outbox-{row.id}-{row.state}-{row.attempts}-mgmt"
        )

    async def _receipt(self, row: OutboxRow, room_id: RoomID, event_id: EventID) -> None:
        line = self.bridge.config.line(row.request.line_id)
        portal = await self.bridge.db.portal_by_room(room_id)
        kind, conversation = (portal.kind, portal.conversation) if portal else ("", "")
        if portal is None:
            # A portal replaced when encryption was turned on: its queued texts still get
            # their receipts there (encrypted.py keeps what the room was).
            moved = await self.bridge.db.encrypted_room(room_id)
            if moved is not None and moved.kind == "portal" and moved.conversation:
                kind, conversation = moved.person or "", moved.conversation
        if line is None or not kind:
            return
        if kind == "dm":
            ghost = self.bridge.az.intent.user(
                self.bridge.portals.ghost_mxid(conversation, line.home_country)
            )
        else:
            # No single recipient in a group; the bot stands in.
            ghost = self.bridge.az.intent
        await ghost.send_receipt(room_id, event_id)
