"""The bridge bot: one management room per family member, and the commands it answers.

Anything the bot does not understand gets the help text back: a person typing into the
management room always sees an answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mautrix.types import RoomCreatePreset, RoomID, UserID

from appliance.bridge import contacts
from appliance.bridge.config import LineConfig
from appliance.line import display_name
from appliance.phonenum import NumberKind, format_display, normalize
from appliance.store.models import OutboxState

if TYPE_CHECKING:
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

# Plain text without line breaks inside a sentence (clients show each one): a line is a
# heading, a list item or a paragraph. {ghost} is a real ghost ID on this homeserver.
HELP = "\n".join(
    [
        "Textbridge commands (write them here):",
        "• help — this list",
        "• lines — the phone lines you can use",
        "• status — how your lines are doing (network, signal, queue, last error)",
        "• new <number> [line] — open a chat with a phone number, e.g. new +49 151 12345678",
        "• contacts import — add names for numbers: send a .vcf file (or paste a vCard) here",
        "• retry [n] — send again a text that failed or may not have gone out",
        "• cancel [n] — leave such a text unsent",
        "",
        "To start a chat with a phone number, write new and the number here, e.g. new +49 151 "
        "12345678. Or use Start chat in Element and enter the number's Matrix ID: "
        "{ghost} for +49 151 12345678. Element X makes that chat end-to-end encrypted, which "
        "Textbridge cannot read, so you get an invitation to the real chat at the top of your "
        "chat list; write there.",
        "",
        "Texts you write in a contact's room go out as SMS. Where the phone and the modem both "
        "reach a contact, write !line in that room to see or change the line: !line auto (the "
        "phone first, SMS through the modem when the phone cannot send), !line phone, "
        "!line sms.",
    ]
)

WELCOME = (
    "Hello! This is your Textbridge room. Textbridge puts your family's phone texts into "
    "Matrix: each contact gets a room, and what you write there goes out as SMS."
)


class Bot:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def help(self) -> str:
        ghost = self.bridge.portals.ghost_mxid("+4915112345678", "DE")
        return HELP.format(ghost=ghost)

    def lines_of(self, user: str) -> list[LineConfig]:
        return [line for line in self.bridge.config.lines if user in line.everyone]

    async def ensure_management_room(self, user: str) -> RoomID:
        db = self.bridge.db
        bot = self.bridge.az.intent
        known = await db.management_room(user)
        if known is None:
            room_id = await bot.create_room(
                name="Textbridge",
                topic="Your Textbridge room: write help for the commands.",
                preset=RoomCreatePreset.PRIVATE,
                is_direct=True,
                invitees=[UserID(user)],
            )
            await db.set_management_room(user, room_id, ready=False)
            known = (room_id, False)
        room_id = RoomID(known[0])
        if not known[1]:
            await bot.send_notice(room_id, f"{WELCOME}\n\n{self.help()}")
            await db.set_management_room(user, room_id, ready=True)
        return room_id

    async def reply(self, room_id: RoomID, text: str, event_id: str) -> None:
        await self.bridge.notice(room_id, text, txn_id=f"tb-cmd-{event_id}")

    async def handle(
        self, room_id: RoomID, user: UserID, event_id: str, content: dict[str, Any]
    ) -> None:
        msgtype = content.get("msgtype")
        if msgtype == "m.file":
            await self._import_file(room_id, user, event_id, content)
            return
        body = content.get("body")
        text = body.strip() if isinstance(body, str) else ""
        if contacts.looks_like_vcard(text):
            await self._import_text(room_id, user, event_id, text)
            return
        words = text.split()
        command = words[0].lower().lstrip("!/") if words else ""
        args = words[1:]
        if command == "help":
            await self.reply(room_id, self.help(), event_id)
        elif command == "lines":
            await self.reply(room_id, self._lines(user), event_id)
        elif command == "status":
            await self.reply(room_id, self._status(user), event_id)
        elif command == "new":
            await self._new(room_id, user, event_id, args)
        elif command == "contacts":
            await self.reply(
                room_id,
                "To import contacts, send a .vcf file here (your phone's contacts app can "
                "export one), or paste the vCard text as a message.",
                event_id,
            )
        elif command in ("retry", "cancel"):
            await self._resolve(room_id, user, event_id, command, args)
        else:
            await self.reply(room_id, f"I did not understand that.\n\n{self.help()}", event_id)

    def _lines(self, user: str) -> str:
        mine = self.lines_of(user)
        if not mine:
            return "You are not on any line yet; the owner can add you in the Textbridge setup."
        out = ["Your lines:"]
        for line in mine:
            out.append(f"• {self._name(line)}; members: {', '.join(line.everyone)}")
        return "\n".join(out)

    def _name(self, line: LineConfig) -> str:
        """"Modem, SIM +49 151 0000001 (line sms)": the name a person knows, and the id
        that `!line` and `new` take."""
        transport = self.bridge.lines.get(line.id)
        if transport is not None:
            name = display_name(transport.status())
        else:
            name = "Phone" if line.kind == "phone" else "Modem"
        return f"{name} (line {line.id})"

    def _status(self, user: str) -> str:
        mine = self.lines_of(user)
        if not mine:
            return "You are not on any line yet."
        out = []
        for line in mine:
            transport = self.bridge.lines.get(line.id)
            if transport is None:
                out.append(f"Line {line.id}: not running.")
                continue
            s = transport.status()
            parts = [f"{self._name(line)}: {s.state}. {s.summary}"]
            if s.operator:
                parts.append(f"Operator: {s.operator}.")
            if s.signal_percent is not None:
                parts.append(f"Signal: {s.signal_percent}%.")
            parts.append(f"Waiting to send: {s.queue_depth}.")
            if s.last_error:
                parts.append(f"Last error: {s.last_error}")
            out.append(" ".join(parts))
        return "\n".join(out)

    async def _new(self, room_id: RoomID, user: UserID, event_id: str, args: list[str]) -> None:
        mine = self.lines_of(user)
        if not mine:
            await self.reply(
                room_id, "You are not on any line, so you cannot open chats.", event_id
            )
            return
        line = mine[0]
        if len(args) > 1 and args[-1] in {x.id for x in mine}:
            line = next(x for x in mine if x.id == args[-1])
            args = args[:-1]
        elif len(args) > 1 and self.bridge.config.line(args[-1]) is not None:
            await self.reply(room_id, f"You are not on line {args[-1]}.", event_id)
            return
        raw = " ".join(args)
        if not raw:
            await self.reply(room_id, "Which number? For example: new 0151 12345678", event_id)
            return
        number = normalize(raw, line.home_country)
        if number.kind is not NumberKind.E164:
            await self.reply(
                room_id,
                f"{raw} is not a phone number I can text"
                f"{' (it is a short code)' if number.kind is NumberKind.SHORT else ''}.",
                event_id,
            )
            return
        if self.bridge.outbound.blocks_costly(number.value, line):
            # Said now, before a room exists whose every text would be refused.
            await self.reply(
                room_id,
                f"{format_display(number.value, line.home_country)} is a premium-rate, "
                "shared-cost or unknown kind of number, and texting it can cost a lot, so "
                "Textbridge blocks it. No chat was opened. The owner can turn this off in "
                "the dashboard (Family, Block premium-rate numbers).",
                event_id,
            )
            return
        portal = await self.bridge.portals.ensure(line, number.value)
        # Someone who left the chat earlier gets a new invite.
        await self.bridge.portals.invite_members(line, portal)
        await self.reply(
            room_id,
            f"The chat with {format_display(number.value, line.home_country)} on line "
            f"{line.id} is ready: https://matrix.to/#/{portal.room_id}",
            event_id,
        )

    async def _resolve(
        self, room_id: RoomID, user: UserID, event_id: str, action: str, args: list[str]
    ) -> None:
        store = self.bridge.store
        waiting = await self.bridge.db.attention(user)
        if not args:
            if len(waiting) == 1:
                args = [str(waiting[0])]
            elif not waiting:
                await self.reply(room_id, "No text of yours is waiting for a decision.", event_id)
                return
            else:
                listed = []
                for row_id in waiting:
                    row = await store.outbox.get(row_id)
                    if row is not None:
                        listed.append(
                            f"• {row_id}: to {row.request.conversation}, "
                            f"{row.state}: {row.request.body[:40]!r}"
                        )
                await self.reply(
                    room_id,
                    f"Several texts are waiting; say which, e.g. {action} {waiting[0]}:\n"
                    + "\n".join(listed),
                    event_id,
                )
                return
        try:
            row_id = int(args[0])
        except ValueError:
            await self.reply(
                room_id, f"{action} needs the number of the text, e.g. {action} 12.", event_id
            )
            return
        row = await store.outbox.get(row_id)
        line = self.bridge.config.line(row.request.line_id) if row is not None else None
        if row is None or line is None or (row.request.requested_by != user and user != line.owner):
            await self.reply(room_id, f"There is no text {row_id} of yours.", event_id)
            return
        if row.state not in (OutboxState.AMBIGUOUS, OutboxState.FAILED):
            await self.reply(
                room_id, f"Text {row_id} is {row.state}; there is nothing to decide.", event_id
            )
            return
        await store.outbox.resolve(row_id, "resend" if action == "retry" else "cancel")
        await self.bridge.db.drop_attention(row_id)
        transport = self.bridge.lines.get(line.id)
        if transport is not None:
            transport.wake()
        await self.reply(
            room_id,
            f"Text {row_id} will be sent again."
            if action == "retry"
            else f"Text {row_id} will not be sent.",
            event_id,
        )

    async def _import_file(
        self, room_id: RoomID, user: UserID, event_id: str, content: dict[str, Any]
    ) -> None:
        url = content.get("url")
        if not isinstance(url, str):
            await self.reply(
                room_id,
                "I could not read that file (encrypted files are not supported in this room).",
                event_id,
            )
            return
        data = await self.bridge.az.intent.download_media(url)  # type: ignore[arg-type]
        if len(data) > 5 * 1024 * 1024:
            await self.reply(room_id, "That file is too big for a contact list.", event_id)
            return
        await self._import_text(room_id, user, event_id, data.decode("utf-8", "replace"))

    async def _import_text(self, room_id: RoomID, user: UserID, event_id: str, text: str) -> None:
        cards = contacts.parse(text)
        if not cards:
            await self.reply(
                room_id,
                "I found no contact with a name and a phone number in "
                "that. Send a .vcf file exported from a contacts app.",
                event_id,
            )
            return
        lines = self.lines_of(user)
        country = lines[0].home_country if lines else "DE"
        added = 0
        skipped: list[str] = []
        for card in cards:
            for raw in card.numbers:
                number = normalize(raw, country)
                if number.kind is not NumberKind.E164:
                    skipped.append(raw)
                    continue
                if await self.bridge.db.set_contact(number.value, card.name, user):
                    added += 1
                    await self.bridge.portals.rename_for(number.value)
        text_out = f"Imported {added} number(s) from {len(cards)} contact(s)."
        if skipped:
            text_out += f" Skipped {len(skipped)} that are not phone numbers."
        await self.reply(room_id, text_out, event_id)
