"""Portals (one Matrix room per line and conversation) and ghosts (one Matrix user per
phone number).

A ghost is @<prefix><E.164 digits>:server, e.g. @sms_4915112345678, so the same person is
the same ghost whichever way the network spelled the number. Senders that are not numbers
(short codes, "ACMEBANK") get @<prefix>x.<escaped name>. The ghost's display name is the
contact's name once known (vCard import), else the readable number.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError, MForbidden
from mautrix.types import Membership, RoomCreatePreset, RoomID, UserID

from appliance.bridge.db import Portal
from appliance.bridge.text import clean_name
from appliance.phonenum import NumberKind, format_display, normalize

if TYPE_CHECKING:
    from appliance.bridge.config import LineConfig
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[a-z0-9.\-]")

E2EE_WARNING = (
    "Texts in this room go out as SMS. SMS is not end-to-end encrypted: the phone network "
    "can read them, and so can anyone with access to this Textbridge."
)

# A phone line's room: Google Messages picks RCS or SMS per contact, so the SMS warning
# would be wrong for most of its texts and the right words say both.
PHONE_WARNING = (
    "Texts in this room go out through the phone's Google Messages: as RCS chat, end-to-end "
    "encrypted, where the contact has it, else as SMS, which the phone network can read."
)

# The reason shown to someone the owner took off a line, on the kick from each portal.
REMOVED_REASON = "You no longer have access to this line"


def escape_localpart(value: str) -> str:
    out = []
    for ch in value.lower():
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.append("".join(f"={b:02x}" for b in ch.encode("utf-8")))
    return "".join(out)


class Portals:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    # --- ghosts ----------------------------------------------------------------------

    def canonical(self, number: str, home_country: str) -> str:
        return normalize(number, home_country).value

    def ghost_mxid(self, number: str, home_country: str) -> UserID:
        n = normalize(number, home_country)
        if n.kind is NumberKind.E164:
            local = n.value.lstrip("+")
        else:
            local = "x." + escape_localpart(n.value)
        return UserID(f"@{self.bridge.ghost_prefix}{local}:{self.bridge.config.server_name}")

    async def display_name(self, number: str, home_country: str) -> str:
        n = normalize(number, home_country)
        name = clean_name(await self.bridge.db.contact_name(n.value) or "")
        return name or clean_name(format_display(n.value, home_country)) or "Unknown sender"

    async def ghost(self, number: str, home_country: str) -> IntentAPI:
        mxid = self.ghost_mxid(number, home_country)
        intent = self.bridge.az.intent.user(mxid)
        await intent.ensure_registered()
        name = await self.display_name(number, home_country)
        if await self.bridge.db.ghost_displayname(mxid) != name:
            await intent.set_displayname(name, check_current=False)
            await self.bridge.db.set_ghost_displayname(mxid, name)
        return intent

    # --- portals ---------------------------------------------------------------------

    async def ensure(
        self,
        line: LineConfig,
        conversation: str,
        *,
        group: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Portal:
        """The portal for (line, conversation), created and set up if need be.

        The mapping is saved as soon as the room exists and marked ready only when members
        and the encryption notice are in it, so a crash in between finishes the same room
        instead of making a second one."""
        portal = await self.bridge.db.portal(line.id, conversation)
        if portal is None and not group:
            portal = await self.bridge.router.shared_room(line, conversation)
        # A new room says one thing (its first notice); its route is in the topic.
        new = portal is None
        if portal is None:
            room_id = await self._create(line, conversation, group=group, meta=meta or {})
            await self.bridge.db.add_portal(
                line.id, conversation, room_id, "group" if group else "dm"
            )
            portal = await self.bridge.db.portal(line.id, conversation)
            assert portal is not None
        if not portal.ready:
            home = self.bridge.config.line(portal.line_id) or line
            await self._finish(home, portal)
            portal = Portal(
                portal.line_id, portal.conversation, portal.room_id, portal.kind, ready=True
            )
        if portal.kind == "dm":
            # One room per person: other lines that reach this number share it.
            await self.bridge.router.link(portal, announce=not new)
        return portal

    async def people(self, line: LineConfig, portal: Portal) -> list[str]:
        """Everyone who belongs in the room: the people of its line and of the lines
        linked to it (line selection), in that order."""
        people = list(line.everyone)
        if portal.kind == "dm":
            for line_id in await self.bridge.db.linked_lines(portal.room_id):
                other = self.bridge.config.line(line_id)
                if other is not None:
                    people.extend(p for p in other.everyone if p not in people)
        return people

    def _topic(self, line: LineConfig, conversation: str, group: bool, meta: dict[str, Any]) -> str:
        how = (
            "RCS where everyone has it, else SMS/MMS, which is not end-to-end encrypted."
            if line.kind == "phone"
            else "SMS is not end-to-end encrypted."
        )
        if not group:
            who = format_display(conversation, line.home_country)
            return (
                f"{'Texts' if line.kind == 'phone' else 'SMS'} with {who} via line {line.id}. {how}"
            )
        name = clean_name(str(meta.get("group_name") or "")) or "a group"
        raw = meta.get("members")
        members = [format_display(str(m), line.home_country) for m in raw or []]
        who = ", ".join(members)
        if members and not meta.get("members_complete", True):
            who += " and others the phone does not name"
        with_whom = f" with {who}" if who else ""
        return f"Group {name}{with_whom}, via line {line.id}. {how}"

    async def _create(
        self, line: LineConfig, conversation: str, *, group: bool, meta: dict[str, Any]
    ) -> RoomID:
        # Members are invited one by one afterwards (invite_members): a createRoom with a
        # member that does not exist (a typo in the config) would fail as a whole and hold
        # up every text behind it.
        bot = self.bridge.az.intent
        if group:
            name = clean_name(str(meta.get("group_name") or "")) or f"Group {conversation}"
            room_id = await bot.create_room(
                name=name,
                topic=self._topic(line, conversation, True, meta),
                preset=RoomCreatePreset.PRIVATE,
            )
        else:
            # The ghost creates and invites, so clients show a chat with that person, not
            # with the bridge bot.
            ghost = await self.ghost(conversation, line.home_country)
            room_id = await ghost.create_room(
                name=await self.display_name(conversation, line.home_country),
                topic=self._topic(line, conversation, False, meta),
                preset=RoomCreatePreset.PRIVATE,
                invitees=[bot.mxid],
            )
            await self.bridge.az.state_store.joined(room_id, ghost.mxid)
        log.info("portal %s created for line %s", room_id, line.id)
        return room_id

    async def _finish(self, line: LineConfig, portal: Portal) -> None:
        room_id = RoomID(portal.room_id)
        bot = self.bridge.az.intent
        await bot.ensure_joined(room_id)
        if portal.kind == "dm":
            ghost = await self.ghost(portal.conversation, line.home_country)
            await ghost.ensure_joined(room_id)
        await self.invite_members(line, portal)
        await bot.send_notice(room_id, PHONE_WARNING if line.kind == "phone" else E2EE_WARNING)
        await self.bridge.db.portal_ready(portal.room_id)

    async def invite_members(
        self, line: LineConfig, portal: Portal, *, only: Collection[str] | None = None
    ) -> list[str]:
        """Invite the line's people (or those of them in `only`) not yet in the room;
        returns who could not be invited. Everyone else is recorded as having access, so
        a later reload leaves alone a member who then left the chat on purpose."""
        room_id = RoomID(portal.room_id)
        bot = self.bridge.az.intent
        inviter = bot
        extra: dict[str, Any] | None = None
        if portal.kind == "dm":
            inviter = self.bridge.az.intent.user(
                self.ghost_mxid(portal.conversation, line.home_country)
            )
            extra = {"is_direct": True}
        people = [p for p in await self.people(line, portal) if only is None or p in only]
        if not people:
            return []
        members = await bot.get_members(room_id)
        present = {
            m.state_key
            for m in members
            if getattr(m.content, "membership", None) in (Membership.JOIN, Membership.INVITE)
        }
        failed = []
        for member in people:
            if member in present:
                continue
            try:
                await inviter.invite_user(room_id, UserID(member), extra_content=extra)
            except MatrixRequestError as exc:
                if exc.http_status >= 500 or exc.http_status == 429:
                    raise
                # No such account, or banned: a person must fix the config; the room and
                # the rest of the family carry on.
                log.warning("could not invite %s to %s: %s", member, room_id, exc)
                failed.append(member)
        await self.bridge.db.grant_access(portal.room_id, [p for p in people if p not in failed])
        return failed

    async def sync_access(self, line: LineConfig, portal: Portal) -> None:
        """Bring the room in line with the line's people: whoever was added since the
        bridge last looked is invited, whoever was removed is kicked. Cheap when nothing
        changed (one bridge.db read), so a reload can call it for every portal."""
        granted = await self.bridge.db.portal_access(portal.room_id)
        wanted = await self.people(line, portal)
        added = [p for p in wanted if p not in granted]
        removed = sorted(p for p in granted if p not in wanted)
        if removed:
            room_id = RoomID(portal.room_id)
            members = await self.bridge.az.intent.get_members(room_id)
            membership = {m.state_key: getattr(m.content, "membership", None) for m in members}
            for person in removed:
                if membership.get(person) in (Membership.JOIN, Membership.INVITE):
                    await self.kick(line, portal, UserID(person))
                    log.info("%s removed from portal %s (line %s)", person, room_id, line.id)
                await self.bridge.db.revoke_access(portal.room_id, person)
        if added:
            failed = await self.invite_members(line, portal, only=added)
            log.info(
                "portal %s (line %s): invited %s",
                portal.room_id,
                line.id,
                ", ".join(p for p in added if p not in failed) or "nobody",
            )

    async def kick(self, line: LineConfig, portal: Portal, user: UserID) -> None:
        """Kick `user` as the bot. A 1:1 room is the ghost's, and the bot may lack the
        power to kick there: the ghost raises the bot's power level first."""
        room_id = RoomID(portal.room_id)
        bot = self.bridge.az.intent
        try:
            await bot.kick_user(room_id, user, reason=REMOVED_REASON)
            return
        except MForbidden:
            if portal.kind != "dm":
                raise
        ghost = self.bridge.az.intent.user(self.ghost_mxid(portal.conversation, line.home_country))
        levels = await ghost.get_power_levels(room_id, ignore_cache=True)
        levels.users[bot.mxid] = 100
        await ghost.set_power_levels(room_id, levels)
        await bot.kick_user(room_id, user, reason=REMOVED_REASON)

    async def rename_for(self, number: str) -> None:
        """After a contact import: the ghost's name and its 1:1 rooms' names follow."""
        for line in self.bridge.config.lines:
            canonical = self.canonical(number, line.home_country)
            portal = await self.bridge.db.portal(line.id, canonical)
            mxid = self.ghost_mxid(canonical, line.home_country)
            if portal is None and await self.bridge.db.ghost_displayname(mxid) is None:
                continue  # no ghost yet: it gets the name when it first appears
            await self.ghost(canonical, line.home_country)
            if portal is not None and portal.kind == "dm":
                name = await self.display_name(canonical, line.home_country)
                ghost = self.bridge.az.intent.user(self.ghost_mxid(canonical, line.home_country))
                await ghost.set_room_name(RoomID(portal.room_id), name)
