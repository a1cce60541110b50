"""A simulated Android phone with Google Messages: the model behind the adb server.

What it keeps: conversations and their unread messages (each conversation with unread
messages has one notification, as Messages does), the SMS provider's inbox, what is on the
screen (home, lock screen, or a conversation with its compose box), what was sent, and the
faults a test turns on. Commands arrive as the command line adbd would hand to
/system/bin/sh; `Shell` parses it the way sh does for the constructs that matter (quotes,
backslashes, `;`, `&&`, `$(...)`, backticks, `$VAR`, `>` redirection), so a text that is
quoted wrongly has the effect it would have on a phone -- recorded in `executed`.

Thread-safe: the server runs each connection in its own thread, tests change the model from
theirs; every public method takes the model's lock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.adbsim import formats
from appliance.adbsim.formats import MESSAGES
from appliance.adbsim.shell import Disconnect, Shell, _canonical, _split

CONVERSATION_ACTIVITY = f"{MESSAGES}/{MESSAGES}.ui.conversation.ConversationActivity"
LIST_ACTIVITY = f"{MESSAGES}/{MESSAGES}.ui.ConversationListActivity"
LAUNCHER_ACTIVITY = f"{formats.LAUNCHER}/{formats.LAUNCHER}.NexusLauncherActivity"
KEYGUARD_WINDOW = "NotificationShade"


@dataclass
class SimMessage:
    sender: str | None  # None: written on the phone
    text: str
    time: int
    mime: str | None = None


@dataclass
class SimPart:
    ct: str
    data: bytes = b""
    name: str | None = None
    text: str | None = None  # text/plain parts carry their text in the row, no file
    id: int = 0


@dataclass
class SimMms:
    id: int
    thread: int
    date_s: int  # MMS dates are seconds
    sender: str
    to: tuple[str, ...]  # the other recipients (a group MMS), as Addr type 151 rows
    parts: list[SimPart]
    subject: str | None = None

    @property
    def size(self) -> int:
        return sum(len(p.data) + len((p.text or "").encode()) for p in self.parts)


@dataclass
class Conversation:
    thread: int
    members: tuple[str, ...]  # as Messages shows them (numbers when there are no contacts)
    title: str | None  # group name
    rcs: bool
    unread: list[SimMessage] = field(default_factory=list)
    history: list[SimMessage] = field(default_factory=list)

    @property
    def group(self) -> bool:
        return len(self.members) > 1 or self.title is not None

    @property
    def display(self) -> str:
        return self.title or ", ".join(self.members)


@dataclass(frozen=True)
class Sent:
    recipients: tuple[str, ...]
    text: str
    rcs: bool
    time: int
    attachment: tuple[str, bytes] | None = None  # (MIME type, bytes) Messages read


@dataclass(frozen=True)
class Shared:
    """A share intent Messages received: what it was asked to attach, and for whom."""

    mime: str
    uri: str
    address: str
    resolved: bool  # the URI named a file Messages could read


@dataclass
class Faults:
    offline: bool = False  # accepts the connection, never answers CNXN
    messages_installed: bool = True
    messages_crashed: bool = False  # process gone: no notifications until started
    crash_again: bool = False  # starting it does not help
    default_sms: str = MESSAGES
    layout_changed: bool = False  # send control renamed
    provider_denied: bool = False
    tap_ignored: bool = False  # the tap lands but the button does nothing
    tap_goes_home: bool = False  # the tap lands on something else: Messages is left unsent
    parcelled_notifications: bool = False
    # Drop the connection when a command containing this text arrives; `after_effect`
    # says whether the command took effect first (the tap reached the phone, the reply
    # did not reach us).
    disconnect_on: str | None = None
    after_effect: bool = False
    disconnect_once: bool = True
    # A command containing this text never answers (adbd stuck, phone frozen) until
    # `SimPhone.release()`.
    hang_on: str | None = None
    # A push fails with this FAIL text (adbd sends the errno's words, e.g. "No space left
    # on device").
    push_fail: str | None = None
    # The share opens the compose screen without the attachment (Messages could not read
    # it, or its layout changed).
    share_without_preview: bool = False
    # MMS parts whose file is gone (`content read` fails with FileNotFoundException).
    missing_parts: set[int] = field(default_factory=set)
    # Messages keeps its RCS conversations out of the telephony provider's threads table
    # (whether it writes them there is for the HIL test to find out): an RCS group's
    # members cannot be read from ADB then.
    rcs_threads_hidden: bool = False


class SimPhone:
    def __init__(
        self,
        *,
        model: str = "Pixel 7",
        android: str = "14",
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.model = model
        self.android = android
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.faults = Faults()
        self.locked = False
        self.awake = True
        self.stay_on = False
        self.conversations: list[Conversation] = []
        self.provider: list[formats.ProviderRow] = []
        self.provider_sent: list[formats.ProviderRow] = []
        self.mms: list[SimMms] = []
        self.storage: dict[str, bytes] = {}  # files on shared storage (pushed, by path)
        self.received_pushes: list[tuple[str, bytes]] = []
        self.media_store: dict[int, str] = {}  # MediaStore _id -> path of an indexed file
        self._next_media = 1000
        self.shares: list[Shared] = []
        self.attachment: tuple[str, bytes] | None = None  # in the compose box
        self._next_mms = 7
        self._next_part = 30
        self.sent: list[Sent] = []
        self.executed: list[list[str]] = []  # every command run, as argv
        self.rebooted = 0
        self.files: dict[str, str] = {}
        self.screen = "home"  # home | conversation
        self.open_thread: int | None = None
        self.compose = ""
        self.undelivered: list[tuple[Conversation, SimMessage]] = []
        self._next_thread = 3
        self._next_provider = 40
        self.messages_pid = 8812
        self.authorized_keys: list[bytes] = []  # public key payloads, as adb_keys holds them
        self.pending_key: bytes | None = None
        self.auto_accept = False
        self.accepted = threading.Condition(self.lock)
        self.hanging = 0
        self._unhang = threading.Event()

    # -- what a test does to the phone -----------------------------------------------------

    def now(self) -> int:
        return self._clock_ms()

    def accept_pending_key(self) -> None:
        """The owner taps "Allow" with "Always allow from this computer" ticked."""
        with self.lock:
            if self.pending_key is not None:
                self.authorized_keys.append(self.pending_key)
                self.pending_key = None
            self.accepted.notify_all()

    def revoke_keys(self) -> None:
        with self.lock:
            self.authorized_keys.clear()

    def receive(
        self,
        sender: str,
        text: str,
        *,
        group: str | None = None,
        members: tuple[str, ...] | None = None,
        rcs: bool = True,
        at: int | None = None,
        mime: str | None = None,
    ) -> SimMessage:
        """A message arrives. SMS also lands in content://sms/inbox; a notification shows
        unless its conversation is open on screen (or Messages is not running)."""
        with self.lock:
            when = self.now() if at is None else at
            who = members if members is not None else (sender,)
            conv = self._conversation(tuple(who), group, rcs)
            msg = SimMessage(sender, text, when, mime)
            conv.history.append(msg)
            if not rcs:
                self.provider.append(
                    formats.ProviderRow(self._next_provider, sender, when, text, conv.thread)
                )
                self._next_provider += 1
            if (
                self.screen == "conversation"
                and self.open_thread == conv.thread
                and not self.locked
            ):
                return msg  # read on screen: Messages posts nothing
            if self.faults.messages_crashed:
                self.undelivered.append((conv, msg))
                return msg
            conv.unread.append(msg)
            return msg

    def receive_mms(
        self,
        sender: str,
        parts: list[SimPart],
        *,
        group: str | None = None,
        members: tuple[str, ...] | None = None,
        at: int | None = None,
        caption: str | None = None,
    ) -> SimMms:
        """An MMS arrives and is downloaded: a row in content://mms (inbox, retrieve-conf)
        with its parts and addresses, and a notification as Messages posts one for media: the
        message's text is the caption (or empty), its type the first attachment's MIME type
        and its uri a content:// of Messages' own (not readable from ADB)."""
        with self.lock:
            when = self.now() if at is None else at
            who = members if members is not None else (sender,)
            conv = self._conversation(tuple(who), group, False)
            for part in parts:
                part.id = self._next_part
                self._next_part += 1
            row = SimMms(
                self._next_mms,
                conv.thread,
                when // 1000,
                sender,
                tuple(m for m in who if m != sender),
                parts,
            )
            self._next_mms += 1
            # Every MMS Messages sends or receives carries a SMIL layout part first.
            smil = SimPart("application/smil", name="smil.xml", text=_smil(parts))
            smil.id = self._next_part
            self._next_part += 1
            parts.insert(0, smil)
            self.mms.append(row)
            media = next(
                (p.ct for p in parts if not p.ct.startswith(("text/", "application/smil"))), None
            )
            text = caption if caption is not None else ""
            msg = SimMessage(sender, text, when, media)
            conv.history.append(msg)
            if (
                self.screen == "conversation"
                and self.open_thread == conv.thread
                and not self.locked
            ):
                return row
            if self.faults.messages_crashed:
                self.undelivered.append((conv, msg))
                return row
            conv.unread.append(msg)
            return row

    def read_on_phone(self, thread: int) -> None:
        """Someone reads the conversation on the phone: its notification goes away."""
        with self.lock:
            for conv in self.conversations:
                if conv.thread == thread:
                    conv.unread.clear()

    def open_conversation(self, members: tuple[str, ...], title: str | None = None) -> Conversation:
        with self.lock:
            conv = self._conversation(members, title, True)
            self.screen, self.open_thread = "conversation", conv.thread
            conv.unread.clear()
            return conv

    def crash_messages(self) -> None:
        with self.lock:
            self.faults.messages_crashed = True

    def conversation_of(self, *members: str, title: str | None = None) -> Conversation | None:
        with self.lock:
            for conv in self.conversations:
                if conv.members == tuple(members) and conv.title == title:
                    return conv
        return None

    def telephony_threads(
        self,
    ) -> tuple[list[dict[str, str | int | None]], list[dict[str, str | int | None]]]:
        """The telephony provider's view of the conversations (MmsSmsProvider): the threads
        table (`content://mms-sms/conversations?simple=true`), whose recipient_ids name
        rows of canonical_addresses (`content://mms-sms/canonical-addresses`). A thread
        lists the other people only, never the phone's own number."""
        with self.lock:
            addresses: dict[str, int] = {}
            threads: list[dict[str, str | int | None]] = []
            for conv in self.conversations:
                if conv.rcs and self.faults.rcs_threads_hidden:
                    continue
                ids = [addresses.setdefault(m, len(addresses) + 1) for m in conv.members]
                last = conv.history[-1] if conv.history else None
                threads.append(
                    {
                        "_id": conv.thread,
                        "date": last.time if last else 0,
                        "message_count": len(conv.history),
                        "recipient_ids": " ".join(str(i) for i in ids),
                        "snippet": last.text if last else None,
                        "read": 0 if conv.unread else 1,
                    }
                )
            canonical: list[dict[str, str | int | None]] = [
                {"_id": i, "address": a} for a, i in addresses.items()
            ]
            return threads, canonical

    def _conversation(self, members: tuple[str, ...], title: str | None, rcs: bool) -> Conversation:
        for conv in self.conversations:
            if (title is not None and conv.title == title) or (
                title is None and conv.title is None and set(conv.members) == set(members)
            ):
                return conv
        conv = Conversation(self._next_thread, members, title, rcs)
        self._next_thread += 1
        self.conversations.append(conv)
        return conv

    # -- the phone's side of the shell -----------------------------------------------------

    def release(self) -> None:
        self.faults.hang_on = None
        self._unhang.set()

    def run(self, command: str) -> bytes:
        hang = self.faults.hang_on
        if hang is not None and hang in command:
            self.hanging += 1
            self._unhang.wait(60.0)
        with self.lock:
            f = self.faults
            if f.disconnect_on is not None and f.disconnect_on in command:
                if f.disconnect_once:
                    f.disconnect_on = None
                partial = b""
                if f.after_effect:
                    out = Shell(self).run(command).encode("utf-8")
                    partial = out[: len(out) // 2]
                raise Disconnect(partial)
            return Shell(self).run(command).encode("utf-8")

    def pushed(self, path: str, data: bytes, mtime: int) -> str | None:
        """A file arrived through the sync service; an error text for FAIL, or None."""
        with self.lock:
            if self.faults.push_fail is not None:
                return self.faults.push_fail
            if not path.startswith(("/sdcard/", "/storage/emulated/0/", "/data/local/tmp/")):
                return "couldn't create file: Permission denied"
            self.storage[_canonical(path)] = data
            self.received_pushes.append((path, data))
            if int(self.android.split(".")[0]) >= 11:
                # Android 11+: shared storage is a FUSE file system run by MediaProvider,
                # which indexes a file created through it when it is closed.
                self._index(_canonical(path))
            return None

    def _index(self, path: str) -> None:
        if path in self.storage and path not in self.media_store.values():
            self.media_store[self._next_media] = path
            self._next_media += 1

    def _media_path(self, uri: str) -> str | None:
        m = re.fullmatch(
            r"content://media/external(?:_primary)?/(?:images/media|video/media|"
            r"audio/media|file|downloads)/(\d+)",
            uri,
        )
        if m is not None:
            return self.media_store.get(int(m.group(1)))
        return None

    def stat(self, path: str) -> tuple[int, int, int]:
        with self.lock:
            data = self.storage.get(_canonical(path))
            return (0o100660, len(data), 0) if data is not None else (0, 0, 0)

    def exec(self, command: str) -> bytes:
        """adbd's `exec:` service: the command's output as raw bytes (no pty, so a file's
        bytes arrive unchanged), stderr on the same stream."""
        argv = _split(command)
        if argv[:2] == ["content", "read"]:
            with self.lock:
                self.executed.append(argv)
                return self._content_read(argv[2:])
        return self.run(command)

    def _content_read(self, args: list[str]) -> bytes:
        opts = dict(zip(args[::2], args[1::2], strict=False))
        uri = opts.get("--uri", "")
        if self.faults.provider_denied:
            return formats.PROVIDER_DENIED.encode()
        prefix = "content://mms/part/"
        if uri.startswith(prefix) and uri[len(prefix) :].isdigit():
            part_id = int(uri[len(prefix) :])
            for mms in self.mms:
                for part in mms.parts:
                    if part.id == part_id and part_id not in self.faults.missing_parts:
                        return part.data if part.text is None else part.text.encode()
        return formats.part_missing(uri).encode()

    def focus(self) -> str:
        if self.locked:
            return KEYGUARD_WINDOW
        if self.screen == "conversation":
            return CONVERSATION_ACTIVITY
        return LAUNCHER_ACTIVITY

    def _notification_records(self) -> list[formats.NoteRecord]:
        if self.faults.messages_crashed or not self.faults.messages_installed:
            return []
        records = []
        for conv in self.conversations:
            if not conv.unread:
                continue
            # Messages keeps up to the last few messages in the notification.
            shown = conv.unread[-8:]
            records.append(
                formats.NoteRecord(
                    id=conv.thread,
                    uid=10172,
                    title=conv.display if conv.group else conv.members[0],
                    conversation_title=conv.title if conv.group else None,
                    group=conv.group,
                    messages=[formats.NoteMessage(m.sender, m.text, m.time, m.mime) for m in shown],
                    parcelled=self.faults.parcelled_notifications,
                )
            )
        return records

    def _ui_xml(self) -> str:
        if self.locked:
            return formats.ui_dump(screen="keyguard")
        if self.screen != "conversation" or self.open_thread is None:
            return formats.ui_dump(screen="home")
        conv = next(c for c in self.conversations if c.thread == self.open_thread)
        bubbles = [formats.Bubble(m.text, m.sender is None) for m in conv.history]
        if self.faults.layout_changed:
            send_id, send_desc = f"{MESSAGES}:id/compose_send_fab", "Send"
        elif conv.rcs:
            send_id, send_desc = (
                f"{MESSAGES}:id/send_message_button_icon",
                "Send end-to-end encrypted message",
            )
        else:
            send_id, send_desc = f"{MESSAGES}:id/send_message_button_icon", "Send SMS"
        attached = self.attachment is not None and not self.faults.share_without_preview
        return formats.ui_dump(
            screen="conversation",
            title=conv.display,
            bubbles=bubbles,
            compose=self.compose,
            attachment=attached,
            hint="RCS message" if conv.rcs else "Text message",
            send_id=send_id,
            send_desc=send_desc,
        )

    def _start_messages(self) -> None:
        if self.faults.crash_again or not self.faults.messages_installed:
            return
        self.faults.messages_crashed = False
        self.messages_pid += 1
        for conv, msg in self.undelivered:
            conv.unread.append(msg)
        self.undelivered.clear()

    def _sendto(self, data: str, body: str) -> str:
        if not self.faults.messages_installed:
            return (
                "Error: Activity not started, unable to resolve Intent { "
                "act=android.intent.action.SENDTO dat=smsto:xxxxxxxxxx flg=0x10000000 "
                "(has extras) }\n"
            )
        if self.faults.messages_crashed:
            self._start_messages()
        recipients = tuple(r for r in data.removeprefix("smsto:").split(";") if r)
        if self.locked:
            # The activity starts behind the lock screen; nothing to see or tap.
            return _starting(data)
        known = None
        for conv in self.conversations:
            if set(conv.members) == set(recipients):
                known = conv
        conv = known or self._conversation(recipients, None, True)
        self.screen, self.open_thread = "conversation", conv.thread
        conv.unread.clear()
        self.compose = body
        return _starting(data)

    def _share(self, mime: str, uri: str, address: str) -> str:
        """ACTION_SEND to Messages with EXTRA_STREAM and an `address` extra: its compose
        screen for those recipients, the file attached (if it can read it)."""
        if not self.faults.messages_installed:
            return (
                "Error: Activity not started, unable to resolve Intent "
                "{ act=android.intent.action.SEND }\n"
            )
        if self.faults.messages_crashed:
            self._start_messages()
        path = self._media_path(uri)
        data = self.storage.get(path) if path is not None else None
        self.shares.append(Shared(mime, uri, address, data is not None))
        started = (
            f"Starting: Intent {{ act=android.intent.action.SEND typ={mime} flg=0x1 "
            f"pkg={MESSAGES} (has extras) }}\n"
        )
        if self.locked:
            return started
        recipients = tuple(r for r in address.split(";") if r)
        known = next((c for c in self.conversations if set(c.members) == set(recipients)), None)
        conv = known or self._conversation(recipients, None, True)
        self.screen, self.open_thread = "conversation", conv.thread
        conv.unread.clear()
        self.compose = ""
        self.attachment = (mime, data) if data is not None else None
        return started

    def _tap(self, x: int, y: int) -> None:
        if self.locked or self.screen != "conversation" or self.open_thread is None:
            return
        x1, y1, x2, y2 = formats.SEND_BOUNDS
        if not (x1 <= x < x2 and y1 <= y < y2):
            return
        if self.attachment is not None and not self.faults.share_without_preview:
            if self.faults.tap_ignored:
                return
            conv = next(c for c in self.conversations if c.thread == self.open_thread)
            attachment, self.attachment = self.attachment, None
            now = self.now()
            conv.history.append(SimMessage(None, self.compose, now, attachment[0]))
            self.sent.append(Sent(conv.members, self.compose, conv.rcs, now, attachment))
            self.compose = ""
            return
        if not self.compose:
            return
        if self.faults.tap_ignored:
            return
        if self.faults.tap_goes_home:
            self.screen, self.open_thread = "home", None
            return
        conv = next(c for c in self.conversations if c.thread == self.open_thread)
        text, self.compose = self.compose, ""
        now = self.now()
        conv.history.append(SimMessage(None, text, now))
        self.sent.append(Sent(conv.members, text, conv.rcs, now))
        if not conv.rcs:
            self.provider_sent.append(
                formats.ProviderRow(
                    self._next_provider, ";".join(conv.members), now, text, conv.thread
                )
            )
            self._next_provider += 1


def _smil(parts: list[SimPart]) -> str:
    body = "".join(
        f"<{p.ct.split('/')[0] if p.ct.split('/')[0] in ('image', 'audio', 'video') else 'ref'}"
        f' src="{p.name or "part"}" region="Image"/>'
        if not p.ct.startswith("text/")
        else f'<text src="{p.name or "text"}" region="Text"/>'
        for p in parts
    )
    return f'<smil><head><layout/></head><body><par dur="5000ms">{body}</par></body></smil>'


def _starting(data: str) -> str:
    masked = "smsto:" + "x" * len(data.removeprefix("smsto:"))
    return (
        f"Starting: Intent {{ act=android.intent.action.SENDTO dat={masked} "
        f"pkg={MESSAGES} (has extras) }}\n"
    )
