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
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.adbsim import formats
from appliance.adbsim.formats import MESSAGES

CONVERSATION_ACTIVITY = f"{MESSAGES}/{MESSAGES}.ui.conversation.ConversationActivity"
LIST_ACTIVITY = f"{MESSAGES}/{MESSAGES}.ui.ConversationListActivity"
LAUNCHER_ACTIVITY = f"{formats.LAUNCHER}/{formats.LAUNCHER}.NexusLauncherActivity"
KEYGUARD_WINDOW = "NotificationShade"


class Disconnect(Exception):
    """Raised inside a command to make the server drop the connection (a pulled cable)."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__("disconnect")
        self.partial = partial


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


def _canonical(path: str) -> str:
    # /sdcard is a link to /storage/emulated/0 (the primary user's shared storage).
    return "/sdcard/" + path.removeprefix("/storage/emulated/0/").removeprefix("/sdcard/")


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


class ShellSyntaxError(Exception):
    pass


class Shell:
    """The part of /system/bin/sh (mksh) a command line from adbd goes through."""

    def __init__(self, phone: SimPhone, depth: int = 0) -> None:
        self.phone = phone
        self.depth = depth

    def run(self, line: str) -> str:
        try:
            commands = self._parse(line)
        except ShellSyntaxError as exc:
            return f"/system/bin/sh: syntax error: {exc}\n"
        out: list[str] = []
        ok = True
        for sep, argv, redirect in commands:
            if sep == "&&" and not ok:
                continue
            if not argv:
                continue
            text, ok = self._exec(argv)
            if redirect is None:
                out.append(text)
        return "".join(out)

    # A small sh parser: words, quotes, separators, substitutions.
    def _parse(self, line: str) -> list[tuple[str, list[str], str | None]]:
        commands: list[tuple[str, list[str], str | None]] = []
        argv: list[str] = []
        word: list[str] = []
        in_word = False
        sep = ";"
        redirect: str | None = None
        expect_redirect = False
        i = 0
        n = len(line)

        def end_word() -> None:
            nonlocal word, in_word, expect_redirect, redirect
            if in_word:
                value = "".join(word)
                if expect_redirect:
                    redirect = value
                    expect_redirect = False
                else:
                    argv.append(value)
            word, in_word = [], False

        def end_command(next_sep: str) -> None:
            nonlocal argv, sep, redirect
            end_word()
            commands.append((sep, argv, redirect))
            argv, sep, redirect = [], next_sep, None

        while i < n:
            c = line[i]
            if c in " \t":
                end_word()
                i += 1
            elif c == "\n" or c == ";":
                end_command(";")
                i += 1
            elif c == "&" and line.startswith("&&", i):
                end_command("&&")
                i += 2
            elif c == "|" or c == "&":
                raise ShellSyntaxError(f"'{c}' is not supported by the simulator")
            elif c == ">":
                end_word()
                expect_redirect = True
                i += 1
            elif c == "#" and not in_word:
                while i < n and line[i] != "\n":
                    i += 1
            elif c == "'":
                end = line.find("'", i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated '")
                word.append(line[i + 1 : end])
                in_word = True
                i = end + 1
            elif c == '"':
                i += 1
                in_word = True
                while True:
                    if i >= n:
                        raise ShellSyntaxError('unterminated "')
                    d = line[i]
                    if d == '"':
                        i += 1
                        break
                    if d == "\\" and i + 1 < n and line[i + 1] in '$`"\\\n':
                        word.append(line[i + 1])
                        i += 2
                    elif d in "$`":
                        value, i = self._substitute(line, i)
                        word.append(value)
                    else:
                        word.append(d)
                        i += 1
            elif c == "\\":
                if i + 1 < n:
                    if line[i + 1] != "\n":
                        word.append(line[i + 1])
                    in_word = True
                i += 2
            elif c in "$`":
                value, i = self._substitute(line, i)
                word.append(value)
                in_word = True
            else:
                word.append(c)
                in_word = True
                i += 1
        end_command(";")
        return commands

    def _substitute(self, line: str, i: int) -> tuple[str, int]:
        if line[i] == "`":
            end = line.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated `")
            return self._subshell(line[i + 1 : end]), end + 1
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                if line[j] == "(":
                    depth += 1
                elif line[j] == ")":
                    depth -= 1
                j += 1
            if depth:
                raise ShellSyntaxError("unterminated $(")
            return self._subshell(line[i + 2 : j - 1]), j
        j = i + 1
        if j < len(line) and line[j] == "{":
            end = line.find("}", j)
            if end < 0:
                raise ShellSyntaxError("bad substitution")
            return "", end + 1
        while j < len(line) and (line[j].isalnum() or line[j] == "_"):
            j += 1
        if j == i + 1:
            return "$", j
        return "", j  # no variables are set in adbd's shell that the line would use

    def _subshell(self, inner: str) -> str:
        if self.depth > 4:
            return ""
        return Shell(self.phone, self.depth + 1).run(inner).rstrip("\n")

    def _exec(self, argv: list[str]) -> tuple[str, bool]:
        p = self.phone
        p.executed.append(list(argv))
        name, args = argv[0], argv[1:]
        f = p.faults
        if name == "echo":
            return " ".join(args) + "\n", True
        if name == "getprop":
            props = {
                "ro.product.model": p.model,
                "ro.build.version.release": p.android,
                "ro.product.manufacturer": "Google",
            }
            return (props.get(args[0], "") if args else "") + "\n", True
        if name == "pm" and args[:1] == ["path"]:
            if args[1:] == [MESSAGES] and f.messages_installed:
                return f"package:/data/app/~~Qx3v==/{MESSAGES}-9fA==/base.apk\n", True
            return "", False
        if name == "pidof":
            if args == [MESSAGES] and f.messages_installed and not f.messages_crashed:
                return f"{p.messages_pid}\n", True
            return "", False
        if name == "settings" and args == ["get", "secure", "sms_default_application"]:
            return (f.default_sms or "null") + "\n", True
        if name == "svc" and args == ["power", "stayon", "usb"]:
            p.stay_on = True
            return "", True
        if name == "input" and args[:1] == ["keyevent"]:
            key = args[1] if len(args) > 1 else ""
            if key in ("KEYCODE_HOME", "3") and not p.locked:
                p.screen, p.open_thread = "home", None
            elif key in ("KEYCODE_WAKEUP", "224"):
                p.awake = True
            elif key in ("KEYCODE_SLEEP", "223", "KEYCODE_POWER", "26"):
                p.awake = key in ("KEYCODE_POWER", "26") and not p.awake
            return "", True
        if name == "input" and args[:1] == ["tap"] and len(args) == 3:
            try:
                x, y = int(float(args[1])), int(float(args[2]))
            except ValueError:
                return "Error: Invalid arguments for command: tap\n", False
            p._tap(x, y)
            return "", True
        if name == "monkey":
            if MESSAGES in args and f.messages_installed:
                p._start_messages()
                p.screen, p.open_thread = "home", None
                return "  bash arg: -p\n  bash arg: " + MESSAGES + "\nEvents injected: 1\n", True
            return "** No activities found to run, monkey aborted.\n", False
        if name == "dumpsys" and args[:1] == ["notification"]:
            records = p._notification_records()
            if "--noredact" not in args:
                # Without --noredact, text extras print as their length only.
                records = [
                    formats.NoteRecord(r.id, r.uid, "", None, r.group, [], parcelled=True)
                    for r in records
                ]
            return formats.notification_dump(records), True
        if name == "dumpsys" and args[:1] == ["window"]:
            return formats.window_dump(locked=p.locked, focus=p.focus()), True
        if name == "am" and args[:1] == ["start"]:
            return self._am_start(args[1:])
        if name == "am" and args[:1] == ["broadcast"]:
            return self._am_broadcast(args[1:])
        if name == "rm":
            paths = [a for a in args if not a.startswith("-")]
            for path in paths:
                c = _canonical(path)
                if not path.startswith(("/sdcard/", "/storage/emulated/0/")):
                    return f"rm: {path}: Permission denied\n", False
                if p.storage.pop(c, None) is None and "-f" not in args:
                    return f"rm: {path}: No such file or directory\n", False
                for media_id, indexed in list(p.media_store.items()):
                    if indexed == c:
                        del p.media_store[media_id]  # MediaProvider sees the unlink (FUSE)
            return "", True
        if name == "uiautomator" and args[:1] == ["dump"]:
            if not p.awake:
                return "ERROR: null root node returned by UiTestAutomationBridge.\n", False
            path = args[1] if len(args) > 1 else "/sdcard/window_dump.xml"
            p.files[path] = p._ui_xml()
            return f"UI hierchary dumped to: {path}\n", True
        if name == "cat":
            out = []
            for path in args:
                if path not in p.files:
                    return f"cat: {path}: No such file or directory\n", False
                out.append(p.files[path])
            return "".join(out), True
        if name == "content" and args[:1] == ["query"]:
            return self._content_query(args[1:])
        if name == "content" and args[:1] == ["read"]:
            # Through `shell:` the bytes would pass a pty on a phone; text is what arrives.
            return p._content_read(args[1:]).decode("utf-8", "replace"), True
        if name == "reboot":
            p.rebooted += 1
            raise Disconnect(b"")
        return f"/system/bin/sh: {name}: inaccessible or not found\n", False

    def _am_broadcast(self, args: list[str]) -> tuple[str, bool]:
        # MediaScannerReceiver (Android <= 10) / MediaService (11+) scan the file.
        if args[:2] == ["-a", "android.intent.action.MEDIA_SCANNER_SCAN_FILE"] and "-d" in args:
            uri = args[args.index("-d") + 1]
            if uri.startswith("file://"):
                self.phone._index(_canonical(uri.removeprefix("file://")))
            return (
                "Broadcasting: Intent { act=android.intent.action.MEDIA_SCANNER_SCAN_FILE "
                "dat=file:///sdcard/... flg=0x400000 }\nBroadcast completed: result=0\n",
                True,
            )
        return "Broadcast completed: result=0\n", True

    def _am_start(self, args: list[str]) -> tuple[str, bool]:
        action = data = pkg = mime = None
        extras: dict[str, str] = {}
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-a", "-d", "-p", "-n", "-c", "-t") and i + 1 < len(args):
                if a == "-a":
                    action = args[i + 1]
                elif a == "-d":
                    data = args[i + 1]
                elif a == "-p":
                    pkg = args[i + 1]
                elif a == "-t":
                    mime = args[i + 1]
                i += 2
            elif a in ("--es", "--ez", "--ei", "--eu") and i + 2 < len(args):
                extras[args[i + 1]] = args[i + 2]
                i += 3
            elif a in ("-W", "-S", "--grant-read-uri-permission"):
                i += 1
            else:
                return f"Error: Unknown option: {a}\n", False
        if action == "android.intent.action.SEND" and pkg == MESSAGES and mime:
            stream = extras.get("android.intent.extra.STREAM", "")
            out = self.phone._share(mime, stream, extras.get("address", ""))
            return out, not out.startswith("Error")
        if action != "android.intent.action.SENDTO" or not data or not data.startswith("smsto:"):
            return "Error: Activity not started, unable to resolve Intent\n", False
        if pkg not in (None, MESSAGES):
            return "Error: Activity not started, unable to resolve Intent\n", False
        out = self.phone._sendto(data, extras.get("sms_body", ""))
        return out, not out.startswith("Error")

    def _content_query(self, args: list[str]) -> tuple[str, bool]:
        p = self.phone
        opts: dict[str, str] = {}
        for k, v in zip(args[::2], args[1::2], strict=False):
            opts[k] = v
        uri = opts.get("--uri", "")
        if p.faults.provider_denied:
            return formats.PROVIDER_DENIED, False
        if uri.startswith("content://mms"):
            return self._mms_query(uri, opts)
        if uri == "content://media/external/file":
            m = re.fullmatch(r"_data='([^']*)'", opts.get("--where", ""))
            if m is None:
                return "Error while accessing provider:media\nunsupported where\n", False
            path = _canonical(m.group(1))
            found: list[dict[str, str | int | None]] = [
                {"_id": k, "_data": "/storage/emulated/0/" + v.removeprefix("/sdcard/")}
                for k, v in p.media_store.items()
                if v == path
            ]
            projection = opts.get("--projection", "_id:_data").split(":")
            return formats.query_rows(found, projection), True
        if uri == "content://sms/inbox":
            rows = list(p.provider)
        elif uri == "content://sms/sent":
            rows = list(p.provider_sent)
        else:
            return f"Error while accessing provider:{uri}\n", False
        where = opts.get("--where", "")
        for clause in filter(None, (c.strip() for c in where.split(" AND "))):
            for op in (">", "<", "="):
                if op in clause:
                    col, value = clause.split(op, 1)
                    col, value = col.strip(), value.strip()
                    if col not in ("_id", "date") or not value.lstrip("-").isdigit():
                        return (
                            f"Error while accessing provider:sms\nunsupported where {clause}\n",
                            False,
                        )
                    bound = int(value)
                    key: Callable[[formats.ProviderRow], int] = (
                        (lambda r: r.id) if col == "_id" else (lambda r: r.date)
                    )
                    if op == ">":
                        rows = [r for r in rows if key(r) > bound]
                    elif op == "<":
                        rows = [r for r in rows if key(r) < bound]
                    else:
                        rows = [r for r in rows if key(r) == bound]
                    break
        projection = opts.get("--projection", "_id:address:date:body:thread_id").split(":")
        return formats.content_query(rows, projection), True

    def _mms_query(self, uri: str, opts: dict[str, str]) -> tuple[str, bool]:
        p = self.phone
        table: list[dict[str, str | int | None]]
        m = re.fullmatch(r"content://mms/(\d+)/addr", uri)
        if uri in ("content://mms", "content://mms/inbox"):
            table = [
                {
                    "_id": x.id,
                    "thread_id": x.thread,
                    "date": x.date_s,
                    "date_sent": x.date_s - 2,
                    "msg_box": 1,
                    "m_type": 132,
                    "read": 0,
                    "sub": x.subject,
                    "m_size": x.size,
                    "ct_t": "application/vnd.wap.multipart.related",
                }
                for x in p.mms
            ]
            default = ["_id", "thread_id", "date", "msg_box", "m_type", "sub", "m_size"]
        elif uri == "content://mms/part":
            table = [
                {
                    "_id": part.id,
                    "mid": x.id,
                    "seq": 0 if part.ct == "application/smil" else -1,
                    "ct": part.ct,
                    "name": part.name,
                    "cl": part.name,
                    "chset": 106 if part.text is not None else None,
                    "text": part.text,
                    "_data": None if part.text is not None else formats.part_file(part.id),
                }
                for x in p.mms
                for part in x.parts
            ]
            default = ["_id", "mid", "ct", "name", "text", "_data"]
        elif m is not None:
            mid = int(m.group(1))
            table = []
            n = 100
            for x in p.mms:
                if x.id != mid:
                    continue
                addrs = [(x.sender, 137), *((a, 151) for a in x.to), ("insert-address-token", 151)]
                for address, kind in addrs:
                    table.append(
                        {"_id": n, "msg_id": mid, "address": address, "type": kind, "charset": 106}
                    )
                    n += 1
            default = ["_id", "msg_id", "address", "type", "charset"]
        else:
            return f"Error while accessing provider:{uri}\n", False
        where = opts.get("--where", "")
        for clause in filter(None, (c.strip() for c in where.split(" AND "))):
            c = re.fullmatch(r"(\w+)\s*(>|<|=)\s*(-?\d+)", clause)
            if c is None or not table or c.group(1) not in table[0]:
                if c is not None and not table:
                    continue
                return f"Error while accessing provider:mms\nunsupported where {clause}\n", False
            col, op, bound = c.group(1), c.group(2), int(c.group(3))

            def keep(
                r: dict[str, str | int | None], col: str = col, op: str = op, bound: int = bound
            ) -> bool:
                v = r.get(col)
                if not isinstance(v, int):
                    return False
                return v > bound if op == ">" else v < bound if op == "<" else v == bound

            table = [r for r in table if keep(r)]
        projection = opts["--projection"].split(":") if "--projection" in opts else default
        return formats.query_rows(table, projection), True
