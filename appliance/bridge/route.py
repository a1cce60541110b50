"""Line selection: which line a text written in a contact's room goes out through.

A contact (a 1:1 conversation with an E.164 number) that several lines reach has one room.
The portal row stays keyed by the line that made the room; every other line with the same
people gets a link to it (`portal_link` in bridge.db), so that line's texts from the number
land in the same room and replies can leave through either line. Group rooms and rooms
of lines with different people keep one line (the modem has no RCS groups, and a room must
not show one person's line to people who are not on it).

Each such room has a preference (`portal_route`): `auto` (the line the contact last wrote
through, the phone if they have not written yet; the other line when that one cannot send),
`phone` or `sms`.
`choose` picks the line when a member writes; `run` hands texts that wait on a line that
cannot send (or whose send failed before anything left) to the next line. Only a QUEUED
row with every part PENDING may move (`Outbox.reroute`), and the old line can no longer
start it afterwards (`mark_sending(line_id=...)`): a text that may have left is never
sent a second time through another line; it stays AMBIGUOUS for a person to decide.

Routing lives here, in the bridge: the lines and the store know nothing of it beyond
`LineStatus.sending` and `reroute`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mautrix.errors import MatrixRequestError
from mautrix.types import EventID, EventType, RoomID, UserID

from appliance.bridge.db import Portal
from appliance.bridge.inbound import transient
from appliance.line import LineState
from appliance.phonenum import NumberKind, format_display, normalize
from appliance.store.models import OutboxRow, OutboxState, PartState

if TYPE_CHECKING:
    from appliance.bridge.config import LineConfig
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

# What people may write after !line, and what it means.
PREFERENCES = {"auto": "auto", "phone": "phone", "rcs": "phone", "sms": "sms", "modem": "sms"}
ROUTE_STATE = EventType.find("fi.textbridge.route", EventType.Class.STATE)
# A line's status is not a store change: waiting texts are looked at this often too.
FALLBACK_INTERVAL = 2.0
_KIND_ORDER = {"phone": 0, "modem": 1}


def describe(line: LineConfig) -> str:
    if line.kind == "phone":
        return f"the phone (line {line.id})"
    return f"SMS through the modem (line {line.id})"


def route_words(preference: str) -> str:
    if preference == "phone":
        return "through the phone only; texts wait while it cannot send"
    if preference == "sms":
        return "as SMS through the modem only"
    return (
        "through the line the contact last wrote through (at first the phone, with RCS "
        "where the contact has it), or the other line when that one cannot send"
    )


def is_command(content: dict[str, Any]) -> list[str] | None:
    """The words after `!line` if the message is that command, else None."""
    body = content.get("body")
    if content.get("msgtype") not in ("m.text", "m.notice") or not isinstance(body, str):
        return None
    words = body.strip().split()
    if not words or words[0].lower() not in ("!line", "/line", "!route") or len(words) > 2:
        return None
    return words[1:]


@dataclass(frozen=True)
class Choice:
    line: LineConfig | None
    route: str | None = None  # the room's preference, when the room has several lines
    fallback: str | None = None  # why not the room's first line; shown when it is sent
    waits: str | None = None  # shown at once: no line the sender may use can send now
    refusal: str | None = None


class Router:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.rerouted = 0
        self.last_error: str | None = None

    # --- which lines a room has ---------------------------------------------------------

    async def lines(self, portal: Portal) -> list[LineConfig]:
        """The configured lines of a room, the phone first."""
        config = self.bridge.config
        out: list[LineConfig] = []
        home = config.line(portal.line_id)
        if home is not None:
            out.append(home)
        if portal.kind == "dm":
            for line_id in await self.bridge.db.linked_lines(portal.room_id):
                line = config.line(line_id)
                if line is not None and all(x.id != line.id for x in out):
                    out.append(line)
        return sorted(out, key=lambda x: _KIND_ORDER.get(x.kind, 2))

    async def shared_room(self, line: LineConfig, conversation: str) -> Portal | None:
        """The room another line with the same people already has for this number (made
        before this line was set up, or before line selection): this line's texts join it
        instead of opening a second room for the same person."""
        if not line.everyone:
            return None
        if normalize(conversation, line.home_country).kind is not NumberKind.E164:
            return None
        for other in self.bridge.config.lines:
            if other.id == line.id or set(other.everyone) != set(line.everyone):
                continue
            portal = await self.bridge.db.portal(other.id, conversation)
            if portal is not None and portal.kind == "dm":
                return portal
        return None

    async def link(self, portal: Portal, *, announce: bool = True) -> list[str]:
        """Link every other line that reaches this contact and has the same people to the
        room, so one person has one room. Returns the lines linked now. `announce`: say so
        in the room (not in a room made just now, which has its first notice already)."""
        home = self.bridge.config.line(portal.line_id)
        if home is None or portal.kind != "dm" or not home.everyone:
            return []
        if normalize(portal.conversation, home.home_country).kind is not NumberKind.E164:
            return []  # a sender name reaches one line only
        linked = set(await self.bridge.db.linked_lines(portal.room_id))
        new: list[LineConfig] = []
        for other in self.bridge.config.lines:
            if other.id == home.id or other.id in linked:
                continue
            if set(other.everyone) != set(home.everyone):
                continue  # texts of one line must not reach people who are not on it
            if await self.bridge.db.portal(other.id, portal.conversation) is not None:
                continue  # it has its own room (made before line selection existed)
            new.append(other)
        if not new:
            return []
        lines = sorted([*await self.lines(portal), *new], key=lambda x: _KIND_ORDER.get(x.kind, 2))
        preference, _ = await self.bridge.db.route(portal.room_id)
        ids = [x.id for x in new]
        # Shown before the links are written: if the homeserver is away, the next text
        # tries again (transaction ids keep the notice single). A room that refuses (the
        # ghost lost its power) still gets its lines; only the topic is stale.
        try:
            await self.show(portal, lines, preference)
            if announce:
                await self.bridge.notice(
                    RoomID(portal.room_id),
                    "This chat goes through "
                    + " and ".join(describe(x) for x in lines)
                    + f". Texts you write here go out {route_words(preference)}. Write !line "
                    "to see or change this.",
                    txn_id=f"tb-link-{portal.room_id}-{'-'.join(ids)}",
                )
        except MatrixRequestError as exc:
            if transient(exc):
                raise
            log.warning("portal %s: its route could not be shown: %s", portal.room_id, exc)
        for other in new:
            await self.bridge.db.link_portal(other.id, portal.conversation, portal.room_id)
        log.info("portal %s linked to line(s) %s", portal.room_id, ", ".join(ids))
        return ids
        return new

    def usable(self, line_id: str, *, starting: bool = False) -> bool:
        """Whether the line can send now. `starting`: a line still starting counts as
        usable (it is about to say; after a restart the phone takes a second to connect,
        and texts waiting for it must not all go to the modem in that second)."""
        transport = self.bridge.lines.get(line_id)
        if transport is None:
            return False
        status = transport.status()
        return status.sending or (starting and status.state == LineState.STARTING)

    def why_not(self, line: LineConfig) -> str:
        transport = self.bridge.lines.get(line.id)
        if transport is None:
            return f"line {line.id} is not running"
        status = transport.status()
        summary = status.summary.rstrip(".")
        if line.kind == "phone":
            if status.state == LineState.DOWN:
                return "the phone is not connected"
            if status.state == LineState.STARTING:
                return "the phone is not connected yet"
            return f"the phone cannot send right now ({summary})"
        return f"line {line.id} cannot send right now ({summary})"

    @staticmethod
    def candidates(lines: list[LineConfig], preference: str) -> list[LineConfig]:
        if len(lines) < 2 or preference == "auto":
            return lines
        kind = "phone" if preference == "phone" else "modem"
        return [x for x in lines if x.kind == kind] or lines

    @staticmethod
    def reply_order(lines: list[LineConfig], last_inbound: str | None) -> list[LineConfig]:
        """`auto` answers through the line the contact last wrote through: the phone and the
        modem have different numbers, and a reply from the other one would reach the
        contact as a stranger's text (and, from the modem, without RCS). A contact who has
        not written yet gets the phone first."""
        first = [x for x in lines if x.id == last_inbound]
        return first + [x for x in lines if x.id != last_inbound]

    # --- choosing a line for a text -------------------------------------------------------

    async def choose(self, portal: Portal, sender: UserID) -> Choice:
        lines = await self.lines(portal)
        if len(lines) < 2:
            if not lines or sender not in lines[0].everyone:
                line_id = lines[0].id if lines else portal.line_id
                return Choice(None, refusal=_not_member(sender, [line_id]))
            return Choice(lines[0])
        preference, last = await self.bridge.db.route(portal.room_id)
        wanted = self.candidates(lines, preference)
        if preference == "auto":
            wanted = self.reply_order(wanted, last)
        allowed = [x for x in wanted if sender in x.everyone]
        if not allowed:
            ids = [x.id for x in wanted]
            if any(sender in x.everyone for x in lines):
                return Choice(
                    None,
                    refusal=f"Not sent: this chat sends {route_words(preference)}, and {sender} "
                    f"is not a member of line {' or '.join(ids)}. Write !line to see the "
                    "choices.",
                )
            return Choice(None, refusal=_not_member(sender, [x.id for x in lines]))
        first = wanted[0]
        if preference == "auto":
            follow = await self._still_going(portal, allowed, first)
            if follow is not None:
                return Choice(
                    follow,
                    route=preference,
                    fallback=f"earlier texts of this chat were still on their way through "
                    f"line {follow.id}; this one follows them to keep their order",
                )
        for line in allowed:
            if self.usable(line.id, starting=True):
                fallback = None
                if line is not first:
                    fallback = (
                        self.why_not(first)
                        if sender in first.everyone
                        else f"{sender} is not a member of line {first.id}"
                    )
                return Choice(line, route=preference, fallback=fallback)
        line = allowed[0]
        waits = f"{_sentence(self.why_not(line))}; this text waits for it and goes out then."
        others = [x for x in lines if x not in allowed]
        if preference != "auto":
            waits += " This chat is set to one line: write !line auto to let texts take another."
        elif others:
            waits += (
                f" {sender} is not a member of line {' or '.join(x.id for x in others)}, so it "
                "cannot go through there."
            )
        return Choice(line, route=preference, waits=waits)

    async def _still_going(
        self, portal: Portal, allowed: list[LineConfig], first: LineConfig
    ) -> LineConfig | None:
        """A line other than the first that still has texts of this chat queued or in
        flight (handed to it while the first could not send) and can send: a new text
        goes after them there, so the contact gets them in the order they were written."""
        for line in allowed:
            if line is first or not self.usable(line.id):
                continue
            rows = await self.bridge.store.outbox.by_state(
                OutboxState.QUEUED, OutboxState.SENDING, line_id=line.id, limit=500
            )
            if any(r.request.conversation == portal.conversation for r in rows):
                return line
        return None

    # --- handing waiting texts to the next line -----------------------------------------------

    async def run(self) -> None:
        store = self.bridge.store
        while True:
            seen = store.changed.version
            try:
                await self.fallback_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("line fallback paused: %s", self.last_error, exc_info=True)
            await store.changed.wait(FALLBACK_INTERVAL, since=seen)

    async def fallback_once(self, conversation: str | None = None) -> int:
        """Move every text that waits on a line that cannot send (or whose send through it
        failed before anything left) to the room's next line; returns how many moved."""
        moved = 0
        for line in list(self.bridge.config.lines):
            rows = await self.bridge.store.outbox.by_state(
                OutboxState.QUEUED, line_id=line.id, limit=200
            )
            for row in rows:
                if row.request.meta.get("route") != "auto":
                    continue  # one line only, or a person chose the line
                if conversation is not None and row.request.conversation != conversation:
                    continue
                if await self._fallback(row, line):
                    moved += 1
        return moved

    async def _fallback(self, row: OutboxRow, current: LineConfig) -> bool:
        if any(p.state != PartState.PENDING for p in row.parts):
            return False
        broken = not self.usable(current.id, starting=True)
        failed = row.attempts > 0 and bool(row.error)
        if not broken and not failed:
            return False
        room = row.request.meta.get("room_id")
        portal = await self.bridge.db.portal_by_room(room) if isinstance(room, str) else None
        if portal is None:
            return False
        preference, last = await self.bridge.db.route(portal.room_id)
        if preference != "auto":
            return False  # changed since the text was written: it waits for its line
        # Forward in the order `choose` tried them, never back.
        lines = self.reply_order(await self.lines(portal), last)
        ids = [x.id for x in lines]
        if current.id not in ids:
            return False
        sender = row.request.requested_by
        for target in lines[ids.index(current.id) + 1 :]:
            if sender not in target.everyone or not self.usable(target.id):
                continue
            if self.bridge.outbound.number_problem(portal, target) is not None:
                continue
            if broken:
                reason = self.why_not(current)
            else:
                error = (row.error or "").replace(" Trying again soon.", "").rstrip(".")
                reason = f"sending through {describe(current)} did not work ({error})"
            fallback = {"from": current.id, "reason": reason}
            if await self.bridge.store.outbox.reroute(
                row.id, current.id, target.id, {"fallback": fallback}
            ):
                self.rerouted += 1
                log.info(
                    "outbox row %d handed from line %s to %s: %s",
                    row.id,
                    current.id,
                    target.id,
                    reason,
                )
                transport = self.bridge.lines.get(target.id)
                if transport is not None:
                    transport.wake()
                return True
            return False
        return False

    # --- the room shows its route --------------------------------------------------------

    async def show(self, portal: Portal, lines: list[LineConfig], preference: str) -> None:
        """Topic and a `fi.textbridge.route` state event with the room's current route.
        A 1:1 room is its ghost's (the ghost has the power to change it)."""
        room_id = RoomID(portal.room_id)
        home = lines[0]
        intent = self.bridge.az.intent
        if portal.kind == "dm":
            intent = intent.user(
                self.bridge.portals.ghost_mxid(portal.conversation, home.home_country)
            )
        who = format_display(portal.conversation, home.home_country)
        topic = (
            f"Texts with {who} via line {', '.join(x.id for x in lines)}. Route: "
            f"{preference}, {route_words(preference)} (write !line to change). SMS is not "
            "end-to-end encrypted."
        )
        await intent.set_room_topic(room_id, topic)
        content: dict[str, Any] = {
            "preference": preference,
            "description": route_words(preference),
            "lines": [{"id": x.id, "kind": x.kind} for x in lines],
        }
        await intent.send_state_event(room_id, ROUTE_STATE, content, state_key="")

    async def command(
        self, portal: Portal, sender: UserID, event_id: EventID, args: list[str]
    ) -> None:
        """`!line [auto|phone|sms]` in a portal: show or change the room's route."""
        room_id = RoomID(portal.room_id)
        lines = await self.lines(portal)
        if not any(sender in x.everyone for x in lines):
            await self.bridge.outbound.refuse(
                room_id, event_id, sender, _not_member(sender, [x.id for x in lines])
            )
            return
        if len(lines) < 2 and portal.kind == "dm":
            await self.link(portal)
            lines = await self.lines(portal)
        if len(lines) < 2:
            why = (
                "a group stays on the line it came from"
                if portal.kind != "dm"
                else "no other line with the same people reaches this contact"
            )
            only = describe(lines[0]) if lines else f"line {portal.line_id}"
            await self._reply(room_id, event_id, f"This chat has one line, {only}: {why}.")
            return
        preference, _ = await self.bridge.db.route(portal.room_id)
        states = "; ".join(
            f"{describe(x)}: {'can send' if self.usable(x.id) else self.why_not(x)}" for x in lines
        )
        usage = "Write !line auto, !line phone or !line sms to change it."
        if not args:
            await self._reply(
                room_id,
                event_id,
                f"Texts from this chat go out {route_words(preference)} ({preference}). "
                f"Now: {states}. {usage}",
            )
            return
        want = PREFERENCES.get(args[0].lower())
        if want is None:
            await self._reply(room_id, event_id, f"I do not know the line {args[0]!r}. {usage}")
            return
        if want == preference:
            await self._reply(
                room_id, event_id, f"This chat already sends {route_words(want)} ({want})."
            )
            return
        await self.bridge.db.set_route(portal.room_id, want, sender)
        try:
            await self.show(portal, lines, want)
        except MatrixRequestError as exc:
            if transient(exc):
                raise
            log.warning("portal %s: its route could not be shown: %s", portal.room_id, exc)
        name = await self.bridge.display_name(room_id, sender)
        await self._reply(
            room_id,
            event_id,
            f"{name} set this chat's route to {want}: texts go out {route_words(want)}.",
        )
        # Texts already waiting follow the new choice from now on (auto lets them move).
        await self.fallback_once(portal.conversation)

    async def _reply(self, room_id: RoomID, event_id: EventID, text: str) -> None:
        await self.bridge.notice(room_id, text, reply_to=event_id, txn_id=f"tb-line-{event_id}")

    async def mark_inbound(
        self, portal: Portal, line: LineConfig, txn: str, timestamp: int
    ) -> None:
        """In a room with several lines, say which line the texts come through whenever it
        changes (the message itself carries `fi.textbridge.line`)."""
        if portal.kind != "dm":
            return
        lines = await self.lines(portal)
        if len(lines) < 2:
            return
        _, last = await self.bridge.db.route(portal.room_id)
        if last == line.id:
            return
        # Only a change is news: the room's first text needs no notice before it.
        if last is not None:
            await self.bridge.az.intent.send_message_event(
                RoomID(portal.room_id),
                EventType.ROOM_MESSAGE,
                {  # type: ignore[arg-type]
                    "msgtype": "m.notice",
                    "body": f"↓ Received as {describe(line)}."
                    if line.kind != "phone"
                    else f"↓ Received through {describe(line)}.",
                    "m.mentions": {},
                },
                txn_id=f"{txn}-via",
                timestamp=timestamp,
            )
        await self.bridge.db.set_last_inbound_line(portal.room_id, line.id)


def _not_member(sender: str, line_ids: list[str]) -> str:
    return (
        f"Not sent: {sender} is not a member of line {' or '.join(line_ids)}, so texts from "
        "this account do not go out. The line's owner can add you in the Textbridge setup."
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
