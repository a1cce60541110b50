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
        return formats.ui_dump(
            screen="conversation",
            title=conv.display,
            bubbles=bubbles,
            compose=self.compose,
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

    def _tap(self, x: int, y: int) -> None:
        if self.locked or self.screen != "conversation" or self.open_thread is None:
            return
        x1, y1, x2, y2 = formats.SEND_BOUNDS
        if not (x1 <= x < x2 and y1 <= y < y2) or not self.compose:
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


def _starting(data: str) -> str:
    masked = "smsto:" + "x" * len(data.removeprefix("smsto:"))
    return (
        f"Starting: Intent {{ act=android.intent.action.SENDTO dat={masked} "
        f"pkg={MESSAGES} (has extras) }}\n"
    )


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
        if name == "reboot":
            p.rebooted += 1
            raise Disconnect(b"")
        return f"/system/bin/sh: {name}: inaccessible or not found\n", False

    def _am_start(self, args: list[str]) -> tuple[str, bool]:
        action = data = pkg = None
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
                i += 2
            elif a in ("--es", "--ez", "--ei") and i + 2 < len(args):
                extras[args[i + 1]] = args[i + 2]
                i += 3
            elif a in ("-W", "-S"):
                i += 1
            else:
                return f"Error: Unknown option: {a}\n", False
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
