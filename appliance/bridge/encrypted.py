"""End-to-end encrypted rooms: the bridge cannot read them, so it moves the chat.

Element X makes every new direct chat encrypted and cannot turn that off, and anyone can
turn encryption on in an existing room. The bridge has no keys (docs/bridge.md, "Encrypted
rooms"), so a text written in such a room would never leave. Instead:

- every encrypted message gets a FAIL send status, and the room a notice in plain words
  (at most one per NOTICE_EVERY_S, so a long paste does not flood it);
- a ghost or the bot invited into an encrypted room opens (or reuses) the unencrypted
  portal or management room, invites the person there, says so in the encrypted room and
  leaves it once the person has joined the real chat (until then it answers there);
- a portal or management room in which encryption is turned on is replaced by a fresh
  unencrypted one, linked from the old; the bot stays in the old room so that texts queued
  from it still get their delivery states shown there.

Every step is recorded in bridge.db (`encrypted_room`), so a restart or a redelivered
event finishes a move instead of starting a second one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError, MNotFound
from mautrix.types import (
    BeeperMessageStatusEventContent,
    Event,
    EventID,
    EventType,
    Membership,
    MessageStatus,
    MessageStatusReason,
    PaginationDirection,
    RelatesTo,
    RelationType,
    RoomID,
    UserID,
)

from appliance.bridge.db import EncryptedRoom

if TYPE_CHECKING:
    from appliance.bridge.config import LineConfig
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

# One notice per room in this time; every message still gets its FAIL status.
NOTICE_EVERY_S = 60.0

# Encrypted messages written before the ghost or the bot joined get their FAIL on joining.
_CATCH_UP = 50

STATUS_TEXT = "Not sent: this chat is end-to-end encrypted, and Textbridge cannot read it."

WHY = (
    "Textbridge cannot read end-to-end encrypted messages, so nothing written here is sent. "
    "Texts to phone numbers are not end-to-end encrypted in any case: the phone network and "
    "this Textbridge see them."
)


def link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"


def invite_says_encrypted(event: Event) -> bool:
    """Whether an invite's stripped room state (what the inviter's server shares with the
    invitee before it joins) has m.room.encryption."""
    unsigned = getattr(event, "unsigned", None)
    for state in getattr(unsigned, "invite_room_state", None) or []:
        if getattr(state, "type", None) == EventType.ROOM_ENCRYPTION:
            return True
    return False


class EncryptedRooms:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        # For rooms without a row (none should remain, but a notice must not flood there).
        self._noticed: dict[str, float] = {}
        self.failed = 0

    def _intent(self, mxid: str) -> IntentAPI:
        bot = self.bridge.az.intent
        return bot if mxid == bot.mxid else bot.user(UserID(mxid))

    async def is_encrypted(self, intent: IntentAPI, room_id: RoomID) -> bool:
        try:
            await intent.get_state_event(room_id, EventType.ROOM_ENCRYPTION)
        except MNotFound:
            return False
        return True

    async def _joined(self, room_id: str, user: str) -> bool:
        members = await self.bridge.az.intent.get_members(RoomID(room_id))
        return any(
            m.state_key == user and getattr(m.content, "membership", None) == Membership.JOIN
            for m in members
        )

    # --- started encrypted ----------------------------------------------------------------

    async def ghost_invited(
        self, room_id: RoomID, ghost: IntentAPI, inviter: UserID, line: LineConfig, number: str
    ) -> None:
        """A family member started an encrypted chat with a ghost (Element X's "Start
        chat"); the ghost has joined it. The person gets the number's unencrypted portal."""
        row = await self.bridge.db.add_encrypted_room(
            room_id,
            speaker=ghost.mxid,
            kind="ghost",
            person=inviter,
            line_id=line.id,
            conversation=number,
        )
        if row.told:
            await self._again(row)
            return
        portals = self.bridge.portals
        portal = await portals.ensure(line, number)
        # The portal may be older and the person may have left it since: invite again.
        await portals.invite_members(line, portal, only=[inviter])
        await self.bridge.db.update_encrypted_room(room_id, moved_to=portal.room_id)
        await self._fail_earlier(room_id, ghost)
        who = await portals.display_name(number, line.home_country)
        await self.bridge.notice(
            room_id,
            f"This chat is end-to-end encrypted. {WHY} Your chat with {who} is here instead: "
            f"{link(portal.room_id)} (accept the invitation at the top of your chat list, "
            "and write there).",
            intent=ghost,
            txn_id=f"tb-e2ee-moved-{room_id}",
        )
        await self.bridge.db.update_encrypted_room(room_id, told=1)
        log.info("encrypted room %s: chat with a ghost moved to %s", room_id, portal.room_id)
        if await self._joined(portal.room_id, inviter):
            await self._leave(await self._row(room_id))

    async def bot_invited(self, room_id: RoomID, inviter: UserID) -> None:
        """A family member started an encrypted chat with the bot; the bot has joined it.
        They get their (unencrypted) management room."""
        bot = self.bridge.az.intent
        row = await self.bridge.db.add_encrypted_room(
            room_id, speaker=bot.mxid, kind="bot", person=inviter
        )
        if row.told:
            await self._again(row)
            return
        target = await self.bridge.bot.ensure_management_room(inviter)
        if not await self._joined(target, inviter):
            try:
                await bot.invite_user(target, inviter)
            except MatrixRequestError as exc:  # invited already, most likely
                log.info("management room %s: invite of %s: %s", target, inviter, exc)
        await self.bridge.db.update_encrypted_room(room_id, moved_to=target)
        await self._fail_earlier(room_id, bot)
        await self.bridge.notice(
            room_id,
            f"This chat is end-to-end encrypted, and Textbridge cannot read encrypted "
            f"messages, so I cannot answer here. Your Textbridge room is here instead: "
            f"{link(target)} (accept the invitation at the top of your chat list). To text "
            "a phone number, write new followed by the number there, e.g. new +4915112345678.",
            txn_id=f"tb-e2ee-moved-{room_id}",
        )
        await self.bridge.db.update_encrypted_room(room_id, told=1)
        log.info("encrypted room %s: chat with the bot moved to %s", room_id, target)
        if await self._joined(target, inviter):
            await self._leave(await self._row(room_id))

    async def _again(self, row: EncryptedRoom) -> None:
        """Invited again into a room that moved: point there once more and leave. (A
        redelivered invite finds the ghost still in the room: nothing to repeat.)"""
        if not row.left_room or row.moved_to is None:
            return
        await self.bridge.notice(
            RoomID(row.room_id),
            f"This chat is end-to-end encrypted. {WHY} The chat is here: {link(row.moved_to)}",
            intent=self._intent(row.speaker),
        )
        await self._leave(row)

    async def person_joined(self, room_id: RoomID, user: UserID) -> None:
        """Someone joined a room: encrypted rooms of theirs that moved here are left now,
        since the person has found the real chat."""
        for row in await self.bridge.db.encrypted_rooms_moved_to(room_id):
            if (
                row.person == user
                and row.told
                and not row.left_room
                and row.kind
                in (
                    "ghost",
                    "bot",
                )
            ):
                await self._leave(row)

    async def _leave(self, row: EncryptedRoom) -> None:
        intent = self._intent(row.speaker)
        try:
            await intent.leave_room(
                RoomID(row.room_id), reason="This chat continues in an unencrypted room."
            )
        except MatrixRequestError as exc:
            log.info("encrypted room %s: leaving: %s", row.room_id, exc)
        await self.bridge.db.update_encrypted_room(row.room_id, left_room=1)

    async def _row(self, room_id: str) -> EncryptedRoom:
        row = await self.bridge.db.encrypted_room(room_id)
        assert row is not None
        return row

    # --- turned on later ------------------------------------------------------------------

    async def encryption_enabled(self, room_id: RoomID) -> EncryptedRoom | None:
        """m.room.encryption in a portal or management room (or the first encrypted message
        in one, for rooms adopted before the bridge knew better): replace the room. Returns
        the room's record, or None if it is not one of ours."""
        db = self.bridge.db
        bot = self.bridge.az.intent
        row = await db.encrypted_room(room_id)
        if row is None:
            portal = await db.portal_by_room(room_id)
            owner = await db.management_user(room_id)
            if portal is not None:
                row = await db.add_encrypted_room(
                    room_id,
                    speaker=bot.mxid,
                    kind="portal",
                    line_id=portal.line_id,
                    conversation=portal.conversation,
                    person=portal.kind,  # "dm" | "group": what the new room must be
                )
            elif owner is not None:
                row = await db.add_encrypted_room(
                    room_id, speaker=bot.mxid, kind="management", person=owner
                )
            else:
                return None
        if row.told or row.kind not in ("portal", "management"):
            return row
        if row.kind == "portal":
            target = await self._replace_portal(row)
        else:
            assert row.person is not None
            await db.forget_management_room(room_id)
            target = await self.bridge.bot.ensure_management_room(row.person)
        if target is None:
            await self.bridge.notice(
                room_id,
                "End-to-end encryption was turned on in this room. Textbridge cannot read "
                "encrypted messages, and the line of this chat is no longer set up, so texts "
                "from this room cannot go out.",
                txn_id=f"tb-e2ee-on-{room_id}",
            )
        else:
            await db.update_encrypted_room(room_id, moved_to=target)
            what = "This chat" if row.kind == "portal" else "Your Textbridge room"
            await self.bridge.notice(
                room_id,
                f"End-to-end encryption was turned on in this room. Textbridge cannot read "
                f"encrypted messages, so texts written here can no longer be sent. {what} "
                f"continues here: {link(target)}. Texts already waiting here still go out, "
                "and their state is shown here.",
                txn_id=f"tb-e2ee-on-{room_id}",
            )
            await self.bridge.notice(
                RoomID(target),
                f"This room replaces {link(room_id)}, where end-to-end encryption was turned "
                "on. Textbridge cannot read encrypted rooms, and SMS is not end-to-end "
                "encrypted anyway.",
                txn_id=f"tb-e2ee-continued-{room_id}",
            )
        await db.update_encrypted_room(room_id, told=1)
        log.info("encryption turned on in %s (%s); moved to %s", room_id, row.kind, target)
        return await self._row(room_id)

    async def _replace_portal(self, row: EncryptedRoom) -> str | None:
        db = self.bridge.db
        assert row.line_id is not None and row.conversation is not None
        room_id = RoomID(row.room_id)
        preference, _ = await db.route(row.room_id)
        group = row.person == "group"
        meta: dict[str, Any] = {}
        if group:
            try:
                name = await self.bridge.az.intent.get_state_event(room_id, EventType.ROOM_NAME)
                meta["group_name"] = getattr(name, "name", None)
            except MatrixRequestError:
                pass
        # From here on the conversation has no room, so the next step (or an inbound text
        # arriving meanwhile) makes the new one; queued rows keep the old room in their
        # meta and are reported there.
        await db.forget_portal(row.room_id)
        line = self.bridge.config.line(row.line_id)
        if line is None:
            return None
        portal = await self.bridge.portals.ensure(line, row.conversation, group=group, meta=meta)
        if preference != "auto":
            await db.set_route(portal.room_id, preference, self.bridge.az.intent.mxid)
        return portal.room_id

    # --- any encrypted event --------------------------------------------------------------

    async def message(self, room_id: RoomID, event_id: EventID) -> None:
        """An encrypted message (or any message in a room that moved): FAIL, and a
        notice unless one was given just now."""
        db = self.bridge.db
        row = await db.encrypted_room(room_id)
        if row is None or row.kind in ("portal", "management"):
            row = await self.encryption_enabled(room_id) or row
        speaker = self._intent(row.speaker) if row is not None else self.bridge.az.intent
        await self._fail(speaker, room_id, event_id)
        now_ms = int(time.time() * 1000)
        last = row.noticed_at / 1000 if row is not None else self._noticed.get(room_id, 0.0)
        if now_ms / 1000 - last < NOTICE_EVERY_S:
            return
        where = f" Write in {link(row.moved_to)} instead." if row and row.moved_to else ""
        await self.bridge.notice(
            room_id,
            f"Not sent: this chat is end-to-end encrypted. {WHY}{where}",
            reply_to=event_id,
            intent=speaker,
            txn_id=f"tb-e2ee-notice-{event_id}",
        )
        if row is not None:
            await db.update_encrypted_room(room_id, noticed_at=now_ms)
        else:
            self._noticed[room_id] = now_ms / 1000

    async def _fail(self, intent: IntentAPI, room_id: RoomID, event_id: EventID) -> None:
        content = BeeperMessageStatusEventContent(
            relates_to=RelatesTo(rel_type=RelationType.REFERENCE, event_id=event_id),
            network="sms",
            status=MessageStatus.FAIL,
            reason=MessageStatusReason.UNDECRYPTABLE,
            message=STATUS_TEXT,
        )
        await intent.send_message_event(
            room_id,
            EventType.BEEPER_MESSAGE_STATUS,
            content,
            txn_id=f"tb-status-{event_id}-FAIL",
        )
        self.failed += 1

    async def _fail_earlier(self, room_id: RoomID, intent: IntentAPI) -> None:
        """Element X lets a person type before the invitee has joined; those messages
        never came to the bridge as events, so they get their FAIL here."""
        try:
            page = await intent.get_messages(room_id, PaginationDirection.BACKWARD, limit=_CATCH_UP)
        except MatrixRequestError as exc:
            log.info("encrypted room %s: history not readable: %s", room_id, exc)
            return
        # A NamedTuple made with keywords, which mypy cannot see into.
        events: list[Event] = page.events  # type: ignore[attr-defined]
        for event in events:
            sender = str(getattr(event, "sender", ""))
            if event.type == EventType.ROOM_ENCRYPTED and not self.bridge.is_ours(sender):
                await self._fail(intent, room_id, EventID(str(event.event_id)))
