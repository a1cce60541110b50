"""The bridge core: routes between the lines (through the store) and Matrix.

`Bridge` owns the appservice listener, the bridge's own tables and three loops: inbox ->
Matrix (inbound.py), outbox states -> the rooms (delivery.py) and line events -> the
management rooms. Matrix events arrive through appservice transactions and are handled in
order before the transaction is answered (appservice.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError, MForbidden
from mautrix.types import (
    BeeperMessageStatusEventContent,
    Event,
    EventID,
    EventType,
    Membership,
    MessageStatus,
    MessageStatusReason,
    RelatesTo,
    RelationType,
    RoomID,
    UserID,
)

from appliance.bridge.appservice import BridgeAppService, MemoryASStateStore, RetryLater
from appliance.bridge.bot import Bot
from appliance.bridge.config import BridgeConfig, validate
from appliance.bridge.db import BridgeDB
from appliance.bridge.delivery import Delivery
from appliance.bridge.encrypted import EncryptedRooms, invite_says_encrypted
from appliance.bridge.inbound import SEND_TIMEOUT, Inbound, transient
from appliance.bridge.outbound import Outbound
from appliance.bridge.portal import Portals
from appliance.bridge.route import Router, is_command
from appliance.homeserver.registration import Registration
from appliance.line import Line, LineEvent, Severity
from appliance.store import Store
from appliance.tasks import stop_tasks, within

log = logging.getLogger(__name__)

# After a reload that the homeserver could not finish (down, overloaded), it runs again.
RECONCILE_RETRY_S = 30.0

_SEVERITY_MARK = {Severity.INFO: "ℹ️", Severity.WARNING: "⚠️", Severity.ERROR: "❗"}


class Bridge:
    def __init__(
        self,
        config: BridgeConfig,
        registration: Registration,
        store: Store,
        lines: dict[str, Line],
        *,
        database: Path | None = None,
    ) -> None:
        validate(config)
        self.config = config
        self.registration = registration
        self.store = store
        self.lines = lines
        # The registration decides the ghost namespace the homeserver gives us.
        self.ghost_prefix = registration.user_prefix
        self.db = BridgeDB(database or config.database)
        self.az = BridgeAppService(
            health=self.health,
            server=config.homeserver_url,
            domain=config.server_name,
            as_token=registration.as_token,
            hs_token=registration.hs_token,
            bot_localpart=registration.sender_localpart,
            id=registration.id,
            state_store=MemoryASStateStore(),
            log=logging.getLogger("appliance.bridge.mautrix"),
        )
        self.portals = Portals(self)
        self.inbound = Inbound(self)
        self.delivery = Delivery(self)
        self.outbound = Outbound(self)
        self.router = Router(self)
        self.bot = Bot(self)
        self.encrypted = EncryptedRooms(self)
        self._line_events: asyncio.Queue[LineEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._homeserver_ok = False
        self._ping_ms: int | None = None
        self._setup_error: str | None = None
        # True once the setup is done; until then reload_config leaves the work to the
        # setup, which reconciles with whatever config is current when it gets there.
        self._set_up = False
        self._reconcile_lock = asyncio.Lock()
        self._reconcile_retry: asyncio.Task[None] | None = None
        self.unreachable: list[str] = []
        self.az.matrix_event_handler(self._on_event)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.db.start()
        await self.db.prune_handled(self.now_ms() - 14 * 24 * 3600 * 1000)
        await self.az.start(host=self.config.listen_host, port=self.config.listen_port)
        self._started = True
        self._set_up = False
        self._tasks = [
            asyncio.create_task(self._setup(), name="bridge-setup"),
            asyncio.create_task(self.inbound.run(), name="bridge-inbound"),
            asyncio.create_task(self.delivery.run(), name="bridge-delivery"),
            asyncio.create_task(self._line_event_loop(), name="bridge-line-events"),
            asyncio.create_task(self.router.run(), name="bridge-line-fallback"),
        ]
        log.info("bridge listening on %s:%d", self.config.listen_host, self.config.listen_port)

    async def stop(self) -> None:
        retry = [self._reconcile_retry] if self._reconcile_retry is not None else []
        await stop_tasks([*self._tasks, *retry], "bridge")
        self._tasks = []
        self._set_up = False
        self._reconcile_retry = None
        if self._started:
            await self.az.stop()
            await self.db.stop()
        self._started = False

    async def _setup(self) -> None:
        """Bot profile and management rooms; retried until the homeserver answers."""
        delay = 0.5
        while True:
            try:
                await within(60.0, self._setup_once())
                self._setup_error = None
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._homeserver_ok = False
                self._setup_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "bridge setup will be retried in %.0f s: %s",
                    delay,
                    self._setup_error,
                    exc_info=not transient(exc),
                )
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
        self._set_up = True
        # Members added or removed while the bridge was down get their rooms now.
        try:
            await self.reload_config()
        except Exception:
            log.exception("reconciling the lines' members with their rooms failed")

    async def _setup_once(self) -> None:
        bot = self.az.intent
        await bot.ensure_registered()
        await bot.set_displayname(self.config.bot_displayname)
        self._homeserver_ok = True
        try:
            self._ping_ms = await self.az.ping_self()
        except Exception as exc:  # older homeservers lack the ping API
            log.info("appservice ping not answered: %s", exc)
        await self._management_rooms(strict=True)
        self.az.ready = True

    async def _management_rooms(self, *, strict: bool) -> bool:
        """A management room (with the welcome) for everyone on a line who has none.
        `strict`: a homeserver error that a retry can fix is raised (the setup retries);
        otherwise everything is logged, the next person is tried, and the result says
        whether such an error happened."""
        retry = False
        people: list[str] = []
        for line in self.config.lines:
            for person in line.everyone:
                if person not in people:
                    people.append(person)
        unreachable = []
        for person in people:
            try:
                await self.bot.ensure_management_room(person)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if strict and (transient(exc) or not isinstance(exc, MatrixRequestError)):
                    raise
                # An account that does not exist (a typo in the config) must not keep the
                # rest of the family from their rooms; health() names it.
                log.warning("no management room for %s: %s", person, exc)
                unreachable.append(person)
                retry = retry or transient(exc)
        self.unreachable = unreachable
        return retry

    async def reload_config(self) -> None:
        """Make the rooms follow `self.config` after it was replaced (members.json,
        owner.json changed in the web setup), and once after the setup at start.

        Everyone on a line gets a management room; someone added to a line is invited to
        the line's existing portals, someone removed is kicked from them (with a reason).
        New owners get line events because those are addressed from the config each time.
        Idempotent and cheap when nothing changed; a room that fails is logged and does not
        hold up the others. It is retried on the next call, and if the homeserver was only
        away or busy, by itself after RECONCILE_RETRY_S."""
        try:
            validate(self.config)
        except Exception:
            log.exception("the new bridge configuration is not usable; rooms left as they are")
            return
        if not self._set_up:
            return  # the setup reconciles when it is done, with the config current then
        async with self._reconcile_lock:
            config = self.config
            retry = await self._management_rooms(strict=False)
            for line in config.lines:
                try:
                    portals = await self.db.portals(line.id)
                except Exception:
                    log.exception("portals of line %s not readable", line.id)
                    continue
                for portal in portals:
                    if not portal.ready:
                        continue  # its setup invites whoever is on the line by then
                    try:
                        await within(SEND_TIMEOUT * 3, self.portals.sync_access(line, portal))
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        retry = retry or transient(exc)
                        log.warning(
                            "members of portal %s (line %s) not updated, will retry: %s",
                            portal.room_id,
                            line.id,
                            exc,
                            exc_info=not transient(exc),
                        )
        pending = self._reconcile_retry
        if retry and (pending is None or pending.done() or pending is asyncio.current_task()):
            self._reconcile_retry = asyncio.create_task(
                self._retry_reconcile(), name="bridge-reconcile-retry"
            )

    async def _retry_reconcile(self) -> None:
        await asyncio.sleep(RECONCILE_RETRY_S)
        try:
            await self.reload_config()
        except Exception:
            log.exception("reconciling the lines' members with their rooms failed")

    # --- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        loops = {t.get_name(): not t.done() for t in self._tasks}
        setup_done = bool(self._tasks) and self._tasks[0].done()
        running = all(v for k, v in loops.items() if k != "bridge-setup")
        return {
            # running: the process does its job (listener and loops alive), even while the
            # homeserver is away; ok: also set up and talking to the homeserver.
            "running": self._started and running,
            "ok": self._started and running and setup_done and self._setup_error is None,
            "listening": self._started,
            "homeserver_reachable": self._homeserver_ok,
            "ping_ms": self._ping_ms,
            "setup_error": self._setup_error,
            "unreachable_people": list(self.unreachable),
            "loops": loops,
            "inbound_delivered": self.inbound.delivered,
            "inbound_error": self.inbound.last_error,
            "outbound_enqueued": self.outbound.enqueued,
            "outbound_refused": self.outbound.refused,
            "delivery_reported": self.delivery.reported,
            "delivery_error": self.delivery.last_error,
            "rerouted": self.router.rerouted,
            "reroute_error": self.router.last_error,
            "lines": {lid: str(line.status().state) for lid, line in self.lines.items()},
        }

    # --- helpers the parts share -----------------------------------------------------------

    def is_ours(self, user_id: str) -> bool:
        local, _, server = user_id[1:].partition(":")
        if server != self.config.server_name:
            return False
        return local == self.registration.sender_localpart or local.startswith(self.ghost_prefix)

    async def display_name(self, room_id: RoomID, user_id: UserID) -> str:
        try:
            member = await self.az.state_store.get_member(room_id, user_id)
            if member is not None and member.displayname:
                return str(member.displayname)
            name = await self.az.intent.get_displayname(user_id)
            if name:
                return str(name)
        except Exception:  # a name is a nicety; the localpart will do
            log.debug("no display name for %s", user_id, exc_info=True)
        return user_id[1:].split(":", 1)[0]

    async def notice(
        self,
        room_id: RoomID,
        text: str,
        *,
        reply_to: EventID | None = None,
        mention: str | None = None,
        txn_id: str | None = None,
        intent: IntentAPI | None = None,
    ) -> EventID:
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": text,
            "m.mentions": {"user_ids": [mention]} if mention else {},
        }
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await (intent or self.az.intent).send_message_event(
            room_id,
            EventType.ROOM_MESSAGE,
            content,  # type: ignore[arg-type]
            txn_id=txn_id,
        )

    async def send_status(
        self,
        room_id: RoomID,
        event_id: EventID,
        status: MessageStatus,
        reason: MessageStatusReason | None = None,
        message: str | None = None,
        network: str = "sms",
    ) -> None:
        """Beeper's message send status (shown by Beeper clients; Element ignores it, which
        is why failures also get a notice)."""
        content = BeeperMessageStatusEventContent(
            relates_to=RelatesTo(rel_type=RelationType.REFERENCE, event_id=event_id),
            network=network,
            status=status,
            reason=reason,
            message=message,
        )
        await self.az.intent.send_message_event(
            room_id,
            EventType.BEEPER_MESSAGE_STATUS,
            content,
            txn_id=f"tb-status-{event_id}-{status.value}",
        )

    async def tell(self, user: str, text: str, *, txn_id: str | None = None) -> None:
        """A notice in `user`'s management room; a room they left is replaced by a new one,
        because a notice nobody can read is silence."""
        room_id = await self.bot.ensure_management_room(user)
        try:
            await self.notice(room_id, text, txn_id=txn_id)
        except MForbidden:
            log.info("management room %s of %s is gone; making a new one", room_id, user)
            await self.db.forget_management_room(room_id)
            room_id = await self.bot.ensure_management_room(user)
            await self.notice(room_id, text, txn_id=txn_id)

    async def notify_line(
        self, line_id: str, text: str, *, owner_only: bool = False, txn_id: str | None = None
    ) -> None:
        line = self.config.line(line_id)
        if line is None:
            return
        people = [line.owner] if owner_only and line.owner else line.everyone
        for person in people:
            await self.tell(person, text, txn_id=f"{txn_id}-{person}" if txn_id else None)

    def owners(self) -> list[str]:
        """Whoever owns a line: the people to tell about the appliance itself."""
        people: list[str] = []
        for line in self.config.lines:
            if line.owner and line.owner not in people:
                people.append(line.owner)
        return people

    async def notify_owners(self, topic: str, key: str, severity: Severity, text: str) -> bool:
        """A notice about the appliance (not a line) for its owners, once per `key` of
        `topic` (the web service's certificate, remote access): a daily check repeating
        the same failure says it once; a new failure or the all-clear gets a new key.
        Returns whether anything was sent."""
        slot = f"notice:{topic}"
        if await self.db.line_event_key(slot) == key:
            return False
        mark = _SEVERITY_MARK.get(severity, "")
        owners = self.owners()
        for person in owners:
            await self.tell(person, f"{mark} {text}", txn_id=f"notice-{topic}-{key}-{person}")
        await self.db.set_line_event_key(slot, key)
        return bool(owners)

    # --- line events -----------------------------------------------------------------------

    async def import_contacts(
        self, vcf: str, added_by: str, home_country: str, *, rename_all: bool = False
    ) -> int:
        """Names for numbers from an address book the owner uploaded in the dashboard;
        returns how many numbers got a name. Ghosts and rooms are renamed to match (all of
        them with `rename_all`: a retry after a pass that stored names but failed)."""
        from appliance.bridge import contacts
        from appliance.phonenum import NumberKind, normalize

        added = 0
        for card in contacts.parse(vcf):
            for raw in card.numbers:
                number = normalize(raw, home_country)
                if number.kind is not NumberKind.E164:
                    continue
                if await self.db.set_contact(number.value, card.name, added_by):
                    added += 1
                    await self.portals.rename_for(number.value)
                elif rename_all:
                    await self.portals.rename_for(number.value)
        return added

    def on_line_event(self, event: LineEvent) -> None:
        """LineEventHandler: called by the lines, possibly often; shown once per change."""
        self._line_events.put_nowait(event)

    async def _line_event_loop(self) -> None:
        while True:
            event = await self._line_events.get()
            delay = 0.5
            while True:
                try:
                    await within(SEND_TIMEOUT * 3, self._show_line_event(event))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("line event notice delayed %.0f s: %s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(30.0, delay * 2)

    async def _show_line_event(self, event: LineEvent) -> None:
        if await self.db.line_event_key(event.line_id) == event.key:
            return
        mark = _SEVERITY_MARK.get(event.severity, "")
        # Everyone on the line hears of it: they are the ones whose texts are held up.
        await self.notify_line(event.line_id, f"{mark} Line {event.line_id}: {event.text}")
        await self.db.set_line_event_key(event.line_id, event.key)

    # --- Matrix events -----------------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        event_id = getattr(event, "event_id", None)
        try:
            await self._dispatch(event)
        except RetryLater:
            raise
        except Exception as exc:
            if transient(exc):
                # The homeserver is struggling: let it offer the transaction again.
                raise RetryLater(str(exc)) from exc
            log.exception("Matrix event %s not handled", event_id)

    async def _dispatch(self, event: Event) -> None:
        sender = UserID(str(getattr(event, "sender", "")))
        room_id = RoomID(str(getattr(event, "room_id", "")))
        event_id = EventID(str(getattr(event, "event_id", "")))
        if not sender or not room_id or self.is_ours(sender):
            return
        if event.type == EventType.ROOM_MEMBER:
            await self._membership(event)
            return
        event_type = event.type.t
        if event_type == "m.room.encrypted":
            # Never silent: the bridge cannot read it, so it says so (encrypted.py).
            await self.encrypted.message(room_id, event_id)
            return
        if event_type == "m.room.encryption":
            await self.encrypted.encryption_enabled(room_id)
            return
        if event_type not in ("m.room.message", "m.reaction", "m.room.redaction", "m.sticker"):
            return
        # Marked handled only when done: a crash half way means it is handled again when
        # the homeserver redelivers (sending is idempotent by event id; a command reply
        # may come twice, which beats none).
        if await self.db.event_handled(event_id):
            return  # a redelivered transaction
        await self._route(event, event_type, room_id, sender, event_id)
        await self.db.mark_event_handled(event_id)

    async def _route(
        self, event: Event, event_type: str, room_id: RoomID, sender: UserID, event_id: EventID
    ) -> None:
        content = event.content.serialize() if hasattr(event, "content") else {}
        portal = await self.db.portal_by_room(room_id)
        if portal is not None:
            line = self.config.line(portal.line_id)
            if line is None:
                # The line that made the room is gone; a line linked to it may remain.
                lines = await self.router.lines(portal)
                line = lines[0] if lines else None
            if line is None:
                await self.notice(
                    room_id,
                    f"Line {portal.line_id} is no longer set up; "
                    "texts from this room cannot go out.",
                    reply_to=event_id,
                )
                return
            args = is_command(content) if event_type == "m.room.message" else None
            if args is not None:
                await self.router.command(portal, sender, event_id, args)
                return
            await self.outbound.handle(portal, line, event_type, sender, event_id, content)
            return
        owner = await self.db.management_user(room_id)
        moved = owner is None and await self.db.encrypted_room(room_id) is not None
        if moved and event_type == "m.room.message":
            # A plain message in a room that moved: it must not vanish either.
            await self.encrypted.message(room_id, event_id)
            return
        if owner is not None and event_type == "m.room.message":
            if sender != owner:
                await self.notice(room_id, "This room belongs to someone else.", reply_to=event_id)
                return
            await self.bot.handle(room_id, sender, event_id, content)

    async def _membership(self, event: Event) -> None:
        state_key = str(getattr(event, "state_key", ""))
        content = event.content
        membership = getattr(content, "membership", None)
        room_id = RoomID(str(event.room_id))
        if state_key == self.az.bot_mxid and membership == Membership.INVITE:
            # Someone invited the bot: family members get it as their management room if
            # they have none; anyone else is told this bot serves only its family.
            sender = str(event.sender)
            family = any(sender in line.everyone for line in self.config.lines)
            await self.az.intent.join_room(room_id)
            encrypted = family and (
                invite_says_encrypted(event)
                or await self.encrypted.is_encrypted(self.az.intent, room_id)
            )
            if encrypted:
                await self.encrypted.bot_invited(room_id, UserID(sender))
            elif family and await self.db.management_room(sender) is None:
                await self.db.set_management_room(sender, room_id, ready=False)
                await self.bot.ensure_management_room(sender)
            elif not family:
                await self.notice(room_id, "This Textbridge serves only its family's accounts.")
                await self.az.intent.leave_room(room_id)
            else:
                await self.notice(
                    room_id,
                    "You already have a Textbridge room; write help there for the commands.",
                )
                await self.az.intent.leave_room(room_id)
        elif membership == Membership.INVITE and self.is_ours(state_key):
            inviter = UserID(str(event.sender))
            encrypted = invite_says_encrypted(event)
            await self._ghost_invited(room_id, UserID(state_key), inviter, encrypted)
        elif membership == Membership.JOIN and not self.is_ours(state_key):
            await self.encrypted.person_joined(room_id, UserID(state_key))

    async def _ghost_invited(
        self, room_id: RoomID, ghost_id: UserID, inviter: UserID, encrypted: bool
    ) -> None:
        """A family member started a chat with a ghost (e.g. Element's "Start chat" with
        @sms_4915112345678): that room becomes the portal for the number, or, if it is
        end-to-end encrypted (Element X's chats are), the person is moved to the portal."""
        ghost = self.az.intent.user(ghost_id)
        local = ghost_id[1:].split(":", 1)[0][len(self.ghost_prefix) :]
        lines = self.bot.lines_of(inviter)
        problem = None
        if not local.isdigit():
            problem = "This sender cannot receive texts, so a chat with it cannot be started."
        elif not lines:
            problem = "Only members of a Textbridge line can text from Matrix."
        else:
            portal = await self.db.portal(lines[0].id, f"+{local}")
            if portal is None:
                # Another line with the same people may already have this person's room.
                portal = await self.router.shared_room(lines[0], f"+{local}")
            if portal is not None and portal.room_id == room_id:
                return  # a redelivered invite into its own portal
            if portal is not None:
                problem = (
                    "You already have a chat with this number: "
                    f"https://matrix.to/#/{portal.room_id}"
                )
        await ghost.ensure_registered()
        await ghost.join_room(room_id)
        if lines and local.isdigit():
            # Looked at before the existing-chat check: an encrypted room is never adopted,
            # and whoever started it is shown (and invited back to) the real chat.
            encrypted = (
                encrypted
                or await self.db.encrypted_room(room_id) is not None
                or await self.encrypted.is_encrypted(ghost, room_id)
            )
            if encrypted:
                await self.encrypted.ghost_invited(room_id, ghost, inviter, lines[0], f"+{local}")
                return
        if problem is not None:
            await self.notice(room_id, problem, intent=ghost)
            await ghost.leave_room(room_id)
            return
        line = lines[0]
        await self.az.state_store.joined(room_id, ghost_id)
        await ghost.invite_user(room_id, self.az.bot_mxid)
        await self.db.add_portal(line.id, f"+{local}", room_id, "dm")
        await self.portals.ensure(line, f"+{local}")

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)
