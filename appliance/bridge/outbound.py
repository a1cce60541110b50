"""Matrix -> SMS: a line member's message in a portal becomes an outbox row.

The outbox is idempotent by request id and the request id is the Matrix event id, so an
appservice transaction the homeserver sends twice (it does, after a bridge crash) cannot
send a text twice. Everything that is not sent gets a visible notice, never silence:
people who are not on the line, media on an SMS line, edits, reactions and redactions,
a daily cap reached, a premium or short-code number. A picture, video, voice message or
file for a line that sends media (the phone) is fetched from the homeserver first, into
the store's attachments, and queued with it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from mautrix.types import (
    EventID,
    EventType,
    MessageStatus,
    MessageStatusReason,
    RoomID,
    UserID,
)

from appliance.bridge import media as media_info
from appliance.bridge.appservice import RetryLater
from appliance.bridge.db import Portal
from appliance.bridge.inbound import transient
from appliance.bridge.text import plain_text, quote
from appliance.phonenum import NumberKind, is_international, is_premium_or_short, normalize
from appliance.sms import pdu
from appliance.store.models import OutboundRequest

if TYPE_CHECKING:
    from appliance.bridge.config import LineConfig
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
DEFAULT_MEDIA_MAX = 10 * 1024 * 1024
TEXT_TYPES = frozenset({"m.text", "m.notice", "m.emote"})
MEDIA_TYPES = frozenset({"m.image", "m.video", "m.audio", "m.file"})


def sms_parts(body: str) -> int:
    _encoding, parts = pdu.split(body)
    return max(1, len(parts))


class Outbound:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.enqueued = 0
        self.refused = 0

    async def refuse(self, room_id: RoomID, event_id: EventID, sender: UserID, text: str) -> None:
        """A notice in reply to the event it is about, mentioning its sender."""
        self.refused += 1
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": text,
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
            "m.mentions": {"user_ids": [sender]},
        }
        await self.bridge.az.intent.send_message_event(
            room_id,
            EventType.ROOM_MESSAGE,
            content,  # type: ignore[arg-type]
            txn_id=f"tb-refuse-{event_id}",
        )
        await self.bridge.send_status(
            room_id, event_id, MessageStatus.FAIL, MessageStatusReason.NO_PERMISSION, text
        )

    async def handle(
        self,
        portal: Portal,
        line: LineConfig,
        event_type: str,
        sender: UserID,
        event_id: EventID,
        content: dict[str, Any],
    ) -> None:
        room_id = RoomID(portal.room_id)
        # Which of the room's lines carries the text is decided when it is queued (_send);
        # here: is the sender on any of them at all.
        lines = await self.bridge.router.lines(portal)
        if not any(sender in x.everyone for x in lines or [line]):
            ids = " or ".join(x.id for x in lines) or line.id
            await self.refuse(
                room_id,
                event_id,
                sender,
                f"Not sent: {sender} is not a member of line {ids}, so texts from this "
                "account do not go out. The line's owner can add you in the Textbridge setup.",
            )
            return
        relates = content.get("m.relates_to")
        rel_type = relates.get("rel_type") if isinstance(relates, dict) else None
        if event_type == "m.reaction":
            await self._reaction(portal, line, sender, event_id, content)
            return
        if event_type == "m.room.redaction":
            await self.refuse(
                room_id,
                event_id,
                sender,
                "Deleting does not reach the phone: a text that was sent stays on the "
                "recipient's phone.",
            )
            return
        if event_type == "m.sticker":
            await self.refuse(room_id, event_id, sender, self._no_media(line))
            return
        msgtype = content.get("msgtype")
        if rel_type == "m.replace":
            new = content.get("m.new_content")
            new_text = plain_text(new) if isinstance(new, dict) else ""
            if self.bridge.config.edits == "render" and new_text:
                await self._send(portal, line, sender, event_id, f"* {new_text}")
            else:
                await self.refuse(
                    room_id,
                    event_id,
                    sender,
                    "Edits cannot be sent by SMS: the recipient still has the first version. "
                    "Send the correction as a new message.",
                )
            return
        if msgtype in MEDIA_TYPES:
            await self._send(portal, line, sender, event_id, "", media=content)
            return
        if msgtype not in TEXT_TYPES:
            await self.refuse(room_id, event_id, sender, self._no_media(line))
            return
        text = plain_text(content)
        if not text:
            await self.refuse(room_id, event_id, sender, "Not sent: the message has no text.")
            return
        if msgtype == "m.emote":
            text = f"* {await self.bridge.display_name(room_id, sender)} {text}"
        await self._send(portal, line, sender, event_id, text)

    def _no_media(self, line: LineConfig) -> str:
        transport = self.bridge.lines.get(line.id)
        if transport is not None and transport.capabilities.media:
            return (
                f"Not sent: Textbridge cannot send stickers or locations through line "
                f"{line.id}. Send a picture or the words as a text."
            )
        return (
            f"Not sent: line {line.id} carries text only (SMS), so pictures, files, voice "
            "messages, stickers and locations cannot go out. Send the words as a text."
        )

    async def _attachment(
        self,
        room_id: RoomID,
        event_id: EventID,
        sender: UserID,
        line: LineConfig,
        choice: Any,
        content: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Fetch the event's file from the homeserver into the store's attachments (durable
        before the row is queued); None when it cannot go out (and the room was told).
        A file row never moves to another line: it has no "route" in its meta."""
        transport = self.bridge.lines.get(line.id)
        if transport is None or not transport.capabilities.media:
            why = self._no_media(line)
            if choice.fallback:
                why += f" ({choice.fallback})"
            await self.refuse(room_id, event_id, sender, why)
            return None
        limit = transport.capabilities.media_max_bytes or DEFAULT_MEDIA_MAX
        url = content.get("url")
        raw_info = content.get("info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        if not isinstance(url, str) or not url.startswith("mxc://"):
            await self.refuse(
                room_id,
                event_id,
                sender,
                "Not sent: this file is end-to-end encrypted or has no address Textbridge "
                "can fetch it from.",
            )
            return None
        declared = info.get("size")
        too_big = (
            f"Not sent: the file is bigger than the {limit // (1024 * 1024)} MiB the phone "
            f"line sends (line {line.id})."
        )
        if isinstance(declared, int) and declared > limit:
            await self.refuse(room_id, event_id, sender, too_big)
            return None
        try:
            data = await self.bridge.az.intent.download_media(url)  # type: ignore[arg-type]
        except Exception as exc:
            if transient(exc):
                raise RetryLater("the homeserver did not hand out the file") from exc
            await self.refuse(
                room_id,
                event_id,
                sender,
                "Not sent: Textbridge could not fetch the file from the homeserver.",
            )
            return None
        if len(data) > limit:
            await self.refuse(room_id, event_id, sender, too_big)
            return None
        try:
            name = await self.bridge.store.attachments.put(data)
        except Exception as exc:
            raise RetryLater("the store did not take the file") from exc
        mimetype = media_info.safe_mime(str(info.get("mimetype", "")))
        filename = content.get("filename") or content.get("body") or ""
        return {
            "file": name,
            "type": mimetype,
            "name": media_info.safe_name(str(filename), mimetype, 0),
            "size": len(data),
        }

    async def _reaction(
        self,
        portal: Portal,
        line: LineConfig,
        sender: UserID,
        event_id: EventID,
        content: dict[str, Any],
    ) -> None:
        room_id = RoomID(portal.room_id)
        relates = content.get("m.relates_to")
        key = relates.get("key") if isinstance(relates, dict) else None
        target = relates.get("event_id") if isinstance(relates, dict) else None
        if self.bridge.config.reactions == "render" and isinstance(key, str) and target:
            about = ""
            try:
                original = await self.bridge.az.intent.get_event(room_id, EventID(str(target)))
                about = plain_text(original.content.serialize())
            except Exception:  # the reaction goes out without the quote
                log.info("reacted-to event not readable", exc_info=True)
            text = f"{key} to {quote(about)}" if about else key
            await self._send(portal, line, sender, event_id, text)
            return
        await self.refuse(
            room_id,
            event_id,
            sender,
            f"Reactions cannot be sent by SMS, so the recipient will not see {key or 'it'}. "
            "Send a message instead.",
        )

    def number_problem(self, portal: Portal, line: LineConfig) -> str | None:
        """Why a 1:1 text to this portal's number may not go through `line`, or None."""
        if portal.kind != "dm":
            return None
        number = normalize(portal.conversation, line.home_country)
        if number.kind is NumberKind.ALPHANUMERIC:
            return (
                f"Not sent: {portal.conversation} is a sender name, not a number; "
                "it cannot receive replies."
            )
        if self.bridge.config.caps.block_premium and is_premium_or_short(
            portal.conversation, line.home_country
        ):
            return (
                f"Not sent: {portal.conversation} is a premium-rate, shared-cost, short or "
                "unknown kind of number, and texting it can cost a lot. Textbridge blocks "
                "such numbers."
            )
        if not self.bridge.config.caps.international_allowed and is_international(
            portal.conversation, line.home_country
        ):
            return (
                f"Not sent: {portal.conversation} is a number abroad, and texts abroad are "
                "turned off on this Textbridge (the owner can allow them in the dashboard)."
            )
        return None

    async def _send(
        self,
        portal: Portal,
        line: LineConfig,
        sender: UserID,
        event_id: EventID,
        text: str,
        *,
        media: dict[str, Any] | None = None,
    ) -> None:
        room_id = RoomID(portal.room_id)
        store = self.bridge.store
        try:
            if await store.outbox.by_request(str(event_id)) is not None:
                return  # a redelivered transaction: already queued
        except Exception as exc:
            raise RetryLater("the store is not available") from exc
        router = self.bridge.router
        if portal.kind == "dm":
            # Texts of this chat still waiting on a line that cannot send move on first,
            # so this one does not overtake them.
            try:
                await router.fallback_once(portal.conversation)
            except Exception as exc:
                raise RetryLater("the store is not available") from exc
        choice = await router.choose(portal, sender)
        if choice.line is None:
            await self.refuse(room_id, event_id, sender, choice.refusal or "Not sent.")
            return
        line = choice.line
        problem = self.number_problem(portal, line)
        if problem is not None:
            await self.refuse(room_id, event_id, sender, problem)
            return
        cap = self.bridge.config.caps.daily_for(str(sender))
        if cap > 0:
            since = int(time.time() * 1000) - DAY_MS
            try:
                used = await store.outbox.count_requested(str(sender), since)
            except Exception as exc:
                raise RetryLater("the store is not available") from exc
            if used >= cap:
                await self.refuse(
                    room_id,
                    event_id,
                    sender,
                    f"Not sent: you have sent {used} texts in the last 24 hours, which is your "
                    f"limit ({cap}). Ask the owner to raise it, or try again later.",
                )
                return
        meta: dict[str, Any] = {"room_id": str(room_id), "event_id": str(event_id)}
        if media is not None:
            attachment = await self._attachment(room_id, event_id, sender, line, choice, media)
            if attachment is None:
                return
            meta["attachment"] = attachment
            text = str(attachment["name"])
        body = text
        if line.shared and line.relay_prefix and media is None:
            body = f"{await self.bridge.display_name(room_id, sender)}: {text}"
        if choice.route is not None and media is None:
            # Read by the router (route "auto" may move on to the next line) and by the
            # delivery report (a text that went through the fallback says so).
            meta["route"] = choice.route
        if choice.fallback is not None:
            meta["fallback"] = {"from": None, "reason": choice.fallback}
        request = OutboundRequest(
            request_id=str(event_id),
            line_id=line.id,
            conversation=portal.conversation,
            body=body,
            requested_by=str(sender),
            meta=meta,
        )
        try:
            _row, created = await store.outbox.enqueue(request, sms_parts(body))
        except Exception as exc:
            raise RetryLater("the store did not take the message") from exc
        if created:
            self.enqueued += 1
        transport = self.bridge.lines.get(line.id)
        if transport is not None:
            transport.wake()
        if created and choice.waits:
            await self.bridge.notice(
                room_id,
                choice.waits,
                reply_to=event_id,
                mention=sender,
                txn_id=f"tb-waits-{event_id}",
            )
