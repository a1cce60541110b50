"""What the line asks of the phone, as shell commands over one AdbLink.

Every argument that comes from a message (a number, a text) goes through shlex.quote:
adbd hands the command line to /system/bin/sh, so an unquoted `;` or `$(...)` in a text
would run on the phone.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from dataclasses import dataclass

from appliance.phone.adb import AdbLink
from appliance.phone.errors import (
    LayoutChanged,
    MessagesMissing,
    PhoneError,
    PhoneLocked,
    SendNotConfirmed,
)
from appliance.phone.notifications import MESSAGES_PACKAGE, Notification, parse_dump
from appliance.phone.ui import Screen, parse_screen

DUMP_PATH = "/sdcard/tb.xml"
_KEYGUARD_TRUE = re.compile(
    r"\b(?:mDreamingLockscreen|mShowingLockscreen|isKeyguardShowing|isStatusBarKeyguard)=true\b"
)
_KEYGUARD_DELEGATE = re.compile(r"KeyguardServiceDelegate\s*\n(?:\s+\S.*\n)*?\s+showing=true")
_FOCUS = re.compile(r"mCurrentFocus=Window\{[0-9a-f]+ u\d+ (?P<window>[^}\s]+)\}")
_ROW = re.compile(r"^Row: \d+ ", re.M)
_PROVIDER_FIELDS = re.compile(
    r"^_id=(?P<id>\d+), address=(?P<address>.*?), date=(?P<date>\d+), body=(?P<body>.*)$", re.S
)


@dataclass(frozen=True)
class Health:
    model: str
    android: str
    messages_installed: bool
    messages_running: bool
    default_sms: str | None
    locked: bool
    focus: str | None  # the window in front, e.g. "com.google.android.apps.messaging/...Activity"

    @property
    def is_default_sms(self) -> bool:
        return self.default_sms == MESSAGES_PACKAGE

    @property
    def conversation_open(self) -> bool:
        return _is_conversation(self.focus)


@dataclass(frozen=True)
class ProviderSms:
    id: int
    address: str
    date: int
    body: str


class ProviderDenied(PhoneError):
    key = "provider"


@dataclass(frozen=True)
class ProviderMms:
    """One downloaded MMS in the phone's inbox (content://mms; `date` in seconds there,
    milliseconds here)."""

    id: int
    thread_id: int
    date: int  # ms
    size: int | None  # m_size, the parts' total as the provider recorded it


@dataclass(frozen=True)
class MmsPart:
    id: int
    ct: str  # as the sender declared it: not to be trusted for anything but a hint
    name: str
    text: str | None  # text/plain parts carry their text in the row


MMS_COLUMNS = ("_id", "thread_id", "date", "m_size")
PART_COLUMNS = ("_id", "ct", "name", "cl", "text")  # `text` last: it may hold anything
ADDR_COLUMNS = ("type", "address")
ADDR_FROM, ADDR_TO, ADDR_CC = 137, 151, 130
SELF_ADDRESS = "insert-address-token"


@dataclass(frozen=True)
class Thread:
    """A conversation as the telephony provider keeps it: the other people in it (never
    the phone's own number), its last message's time and text."""

    id: int
    recipients: tuple[str, ...]
    date: int  # ms
    snippet: str


THREAD_COLUMNS = ("_id", "date", "recipient_ids", "snippet")  # snippet last: free text
THREADS_URI = "content://mms-sms/conversations?simple=true"
ADDRESSES_URI = "content://mms-sms/canonical-addresses"


@dataclass(frozen=True)
class SendOutcome:
    confirmed_by: str  # what showed the message leaving ("compose box cleared", ...)


class Phone:
    def __init__(self, link: AdbLink, *, ui_wait: float = 8.0, ui_step: float = 0.3) -> None:
        self.link = link
        self.ui_wait = ui_wait
        self.ui_step = ui_step

    async def getprop(self, name: str) -> str:
        return (await self.link.shell(f"getprop {shlex.quote(name)}")).strip()

    async def health(self) -> Health:
        model = await self.getprop("ro.product.model")
        android = await self.getprop("ro.build.version.release")
        path = (await self.link.shell(f"pm path {MESSAGES_PACKAGE}")).strip()
        pid = (await self.link.shell(f"pidof {MESSAGES_PACKAGE}")).strip()
        default = (await self.link.shell("settings get secure sms_default_application")).strip()
        window = await self.link.shell("dumpsys window")
        focus = _FOCUS.search(window)
        return Health(
            model=model,
            android=android,
            messages_installed=path.startswith("package:"),
            messages_running=bool(pid) and pid.split()[0].isdigit(),
            default_sms=None if default in ("", "null") else default,
            locked=_is_locked(window),
            focus=focus.group("window") if focus else None,
        )

    async def conversation_open(self) -> bool:
        focus = _FOCUS.search(await self.link.shell("dumpsys window"))
        return _is_conversation(focus.group("window") if focus else None)

    async def locked(self) -> bool:
        return _is_locked(await self.link.shell("dumpsys window"))

    async def stay_awake(self) -> None:
        # Keeps the screen on while USB powers the phone: uiautomator and taps need it, and
        # a phone that never sleeps never locks (with its screen lock set to None).
        await self.link.shell("svc power stayon usb")
        await self.link.shell("input keyevent KEYCODE_WAKEUP")

    async def wake_screen(self) -> None:
        # Idempotent: a screen that is already on stays on. A dark screen has no UI to dump.
        await self.link.shell("input keyevent KEYCODE_WAKEUP")

    async def start_messages(self) -> None:
        await self.link.shell(f"monkey -p {MESSAGES_PACKAGE} -c android.intent.category.LAUNCHER 1")
        await self.go_home()

    async def go_home(self) -> None:
        await self.link.shell("input keyevent KEYCODE_HOME")

    async def notifications(self) -> list[Notification]:
        return parse_dump(await self.link.shell("dumpsys notification --noredact"))

    async def sms_inbox(self, *, after_id: int = 0, since_ms: int = 0) -> list[ProviderSms]:
        where = f"_id>{int(after_id)} AND date>{int(since_ms)}"
        out = await self.link.shell(
            "content query --uri content://sms/inbox --projection _id:address:date:body "
            f"--where {shlex.quote(where)}"
        )
        return parse_provider(out)

    async def mms_inbox(
        self, *, after_id: int = 0, since_ms: int = 0, until_ms: int | None = None
    ) -> list[ProviderMms]:
        # msg_box 1: inbox; m_type 132: retrieve-conf, i.e. downloaded (130 would be the
        # notification of one still on the carrier's server).
        where = f"_id>{int(after_id)} AND date>{int(since_ms) // 1000 - 1}"
        if until_ms is not None:
            where += f" AND date<{int(until_ms) // 1000 + 1}"
        where += " AND msg_box=1 AND m_type=132"
        out = await self.link.shell(
            f"content query --uri content://mms --projection {':'.join(MMS_COLUMNS)} "
            f"--where {shlex.quote(where)}"
        )
        _check_provider(out)
        rows = []
        for r in parse_rows(out, MMS_COLUMNS):
            try:
                rows.append(
                    ProviderMms(
                        id=int(r["_id"]),
                        thread_id=int(r["thread_id"]),
                        date=int(r["date"]) * 1000,
                        size=int(r["m_size"]) if r["m_size"].isdigit() else None,
                    )
                )
            except ValueError:
                continue
        return rows

    async def mms_parts(self, mms_id: int) -> list[MmsPart]:
        out = await self.link.shell(
            f"content query --uri content://mms/part --projection {':'.join(PART_COLUMNS)} "
            f"--where {shlex.quote(f'mid={int(mms_id)}')}"
        )
        _check_provider(out)
        parts = []
        for r in parse_rows(out, PART_COLUMNS):
            if not r["_id"].isdigit():
                continue
            name = next((v for v in (r["name"], r["cl"]) if v and v != "NULL"), "")
            parts.append(
                MmsPart(
                    id=int(r["_id"]),
                    ct=r["ct"].strip().lower(),
                    name=name,
                    text=None if r["text"] == "NULL" else r["text"],
                )
            )
        return parts

    async def mms_addresses(self, mms_id: int) -> list[tuple[int, str]]:
        out = await self.link.shell(
            f"content query --uri content://mms/{int(mms_id)}/addr "
            f"--projection {':'.join(ADDR_COLUMNS)}"
        )
        _check_provider(out)
        found = []
        for r in parse_rows(out, ADDR_COLUMNS):
            if r["type"].isdigit() and r["address"] not in ("", "NULL", SELF_ADDRESS):
                found.append((int(r["type"]), r["address"]))
        return found

    async def threads(self) -> list[Thread]:
        """Every conversation in the telephony provider (MmsSmsProvider) with its
        recipients; raises ProviderDenied when the shell user may not read it."""
        out = await self.link.shell(
            f"content query --uri {shlex.quote(THREADS_URI)} "
            f"--projection {':'.join(THREAD_COLUMNS)}"
        )
        _check_provider(out)
        rows = parse_rows(out, THREAD_COLUMNS)
        out = await self.link.shell(
            f"content query --uri {shlex.quote(ADDRESSES_URI)} --projection _id:address"
        )
        _check_provider(out)
        addresses = {r["_id"]: r["address"] for r in parse_rows(out, ("_id", "address"))}
        threads = []
        for r in rows:
            ids = r["recipient_ids"].split()
            if not r["_id"].isdigit() or not r["date"].isdigit() or not ids:
                continue
            if any(i not in addresses for i in ids):
                continue  # an address row we could not read: this thread is not known
            snippet = "" if r["snippet"] == "NULL" else r["snippet"]
            threads.append(
                Thread(int(r["_id"]), tuple(addresses[i] for i in ids), int(r["date"]), snippet)
            )
        return threads

    async def read_part(self, part_id: int, *, limit: int) -> bytes:
        """A part's bytes, through `content read` (ContentProvider.openFile; the file itself
        is in the telephony provider's private directory) on the binary-safe exec service."""
        data = await self.link.exec_bytes(
            f"content read --uri content://mms/part/{int(part_id)}", limit=limit
        )
        if data.startswith((b"Error while accessing provider", b"java.lang.SecurityException")):
            lines = data.decode("utf-8", "replace").splitlines()
            raise PartUnreadable(lines[1] if len(lines) > 1 else lines[0])
        return data

    async def screen(self) -> Screen:
        out = await self.link.shell(f"uiautomator dump {DUMP_PATH}")
        if "dumped to" not in out:
            raise LayoutChanged(
                f"The phone could not read its own screen ({out.strip()[:120] or 'no answer'}); "
                "nothing was sent."
            )
        return parse_screen(await self.link.shell(f"cat {DUMP_PATH}"))

    async def _start_messages(self, command: str, failed: str) -> None:
        """Run an `am start` for Google Messages; `am` says "Starting: Intent" when the
        activity was found, and an Error otherwise (not installed, disabled)."""
        out = await self.link.shell(command)
        if "Error" in out or "Starting: Intent" not in out:
            raise MessagesMissing(
                f"Google Messages {failed} on the phone "
                f"({out.strip().splitlines()[-1] if out.strip() else 'no answer'})."
            )

    async def open_compose(self, recipients: list[str], text: str) -> Screen:
        """Open Messages' compose screen with `text` typed in, and return that screen once
        the compose box holds exactly our text. Nothing has been sent when this returns."""
        uri = "smsto:" + ";".join(recipients)
        await self._start_messages(
            "am start -a android.intent.action.SENDTO"
            f" -d {shlex.quote(uri)} --es sms_body {shlex.quote(text)}"
            f" -p {MESSAGES_PACKAGE}",
            "did not open a new message",
        )
        deadline = time.monotonic() + self.ui_wait
        last: Screen | None = None
        while True:
            last = await self.screen()
            compose = last.compose_text()
            if compose == text:
                return last
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(self.ui_step)
        if last.compose_text() is None:
            last.send_button()  # raises LayoutChanged naming what is on screen
            raise LayoutChanged(
                "Google Messages' compose box was not found on the phone's screen; "
                "nothing was sent."
            )
        raise LayoutChanged(
            "The text in Google Messages' compose box is not the text to send (the phone "
            "may have kept an old draft); nothing was sent."
        )

    # -- media out ---------------------------------------------------------------------------

    async def push_file(self, data: bytes, name: str) -> str:
        """Put `data` on the phone's shared storage, in Textbridge's own folder; its path."""
        path = f"{MEDIA_DIR}/{name}"
        await self.link.push(data, path)
        return path

    async def remove_file(self, path: str) -> None:
        if not path.startswith(MEDIA_DIR + "/"):
            raise ValueError(path)
        await self.link.shell(f"rm -f {shlex.quote(path)}")

    async def media_uri(self, path: str, mime: str) -> str:
        """The MediaStore content:// URI of a pushed file, which Messages may read. On
        Android 11+ MediaProvider indexes a file written through /storage (FUSE) when it is
        closed; older phones need the scanner broadcast, harmless on newer ones."""
        await self.link.shell(
            "am broadcast -a android.intent.action.MEDIA_SCANNER_SCAN_FILE "
            f"-d {shlex.quote('file://' + path)}"
        )
        where = f"_data='{path}'"  # path is ours: [A-Za-z0-9._/-] only
        deadline = time.monotonic() + self.ui_wait
        while True:
            out = await self.link.shell(
                "content query --uri content://media/external/file --projection _id "
                f"--where {shlex.quote(where)}"
            )
            rows = parse_rows(out, ("_id",))
            if rows and rows[0]["_id"].isdigit():
                collection = {
                    "image": "images/media",
                    "video": "video/media",
                    "audio": "audio/media",
                }.get(mime.split("/")[0], "file")
                return f"content://media/external/{collection}/{rows[0]['_id']}"
            if time.monotonic() >= deadline:
                raise MediaNotShared(
                    "The phone did not make the file visible to its apps (the media store "
                    "has no entry for it); nothing was sent."
                )
            await asyncio.sleep(self.ui_step)

    async def open_share(self, recipients: list[str], uri: str, mime: str) -> Screen:
        """Share the file into Messages for these recipients (ACTION_SEND with the
        `address` extra) and return the compose screen once it shows the attachment and
        names the recipient. Nothing has been sent when this returns."""
        await self._start_messages(
            f"am start -a android.intent.action.SEND -t {shlex.quote(mime)}"
            f" --eu android.intent.extra.STREAM {shlex.quote(uri)}"
            f" --es address {shlex.quote(';'.join(recipients))}"
            f" --grant-read-uri-permission -p {MESSAGES_PACKAGE}",
            "did not take the file",
        )
        deadline = time.monotonic() + self.ui_wait
        while True:
            screen = await self.screen()
            if screen.compose_text() is not None and screen.attachment_previews() == 1:
                if len(recipients) == 1 and not _names(screen.title() or "", recipients[0]):
                    raise LayoutChanged(
                        "Google Messages opened a conversation that does not name the "
                        "recipient; nothing was sent."
                    )
                return screen
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(self.ui_step)
        if screen.attachment_previews() > 1:
            raise LayoutChanged(
                "Google Messages' compose box holds more than the one file to send (an old "
                "draft); nothing was sent."
            )
        raise LayoutChanged(
            "Google Messages did not show the file attached in its compose box (it may not "
            "have been able to read it, or its layout changed); nothing was sent."
        )

    async def confirm_media_sent(self) -> SendOutcome:
        """After the tap: the attachment preview must go away from the compose box."""
        deadline = time.monotonic() + self.ui_wait
        while True:
            screen = await self.screen()
            if screen.compose_text() is not None and screen.attachment_previews() == 0:
                return SendOutcome("the attachment left the compose box")
            if time.monotonic() >= deadline:
                if screen.attachment_previews():
                    raise SendNotConfirmed(
                        "The send button was tapped but the file is still in Google "
                        "Messages' compose box, so it did not leave."
                    )
                raise LayoutChanged(
                    "after the tap Google Messages' compose box was gone "
                    f"(the screen shows {screen.foreground_package or 'nothing'})"
                )
            await asyncio.sleep(self.ui_step)

    async def tap(self, x: int, y: int) -> None:
        await self.link.shell(f"input tap {int(x)} {int(y)}")

    async def confirm_sent(self, text: str) -> SendOutcome:
        """After the tap: the compose box must let go of the text."""
        deadline = time.monotonic() + self.ui_wait
        while True:
            screen = await self.screen()
            compose = screen.compose_text()
            if compose is not None and compose != text:
                shown = (
                    "and the message shows in the conversation"
                    if screen.find_text(text)
                    else "the conversation does not show it yet"
                )
                return SendOutcome(f"compose box cleared, {shown}")
            if time.monotonic() >= deadline:
                if compose == text:
                    raise SendNotConfirmed(
                        "The send button was tapped but the text is still in Google Messages' "
                        "compose box, so it did not leave."
                    )
                # No compose box at all: the screen changed under the tap, and whether the
                # text left cannot be told from here.
                raise LayoutChanged(
                    "after the tap Google Messages' compose box was gone "
                    f"(the screen shows {screen.foreground_package or 'nothing'})"
                )
            await asyncio.sleep(self.ui_step)

    async def send_text(self, recipients: list[str], text: str) -> SendOutcome:
        await self.wake_screen()
        if await self.locked():
            raise PhoneLocked(LOCKED)
        screen = await self.open_compose(recipients, text)
        button = screen.send_button()
        await self.tap(*button.center)
        return await self.confirm_sent(text)


LOCKED = (
    "The phone's screen is locked, so Textbridge cannot send through Google Messages. "
    "Unlock it, and set its screen lock to None (Settings > Security) on this dedicated phone."
)


def _is_conversation(focus: str | None) -> bool:
    # Messages' conversation screen, not its list of conversations. The activity names are
    # an assumption about Messages (docs/phone.md), checked by the HIL test's artifacts.
    if not focus or not focus.startswith(MESSAGES_PACKAGE + "/"):
        return False
    name = focus.lower()
    return "conversation" in name and "list" not in name


def _is_locked(window_dump: str) -> bool:
    return bool(_KEYGUARD_TRUE.search(window_dump) or _KEYGUARD_DELEGATE.search(window_dump))


MEDIA_DIR = "/storage/emulated/0/Download/Textbridge"


class MediaNotShared(PhoneError):
    key = "layout"


def _names(title: str, number: str) -> bool:
    """Messages shows a number without a contact formatted ("+49 151 12345678"): the
    title names it when its digits end with the number's last nine."""
    digits = "".join(c for c in title if c.isdigit())
    want = "".join(c for c in number if c.isdigit())[-9:]
    return bool(want) and want in digits


class PartUnreadable(PhoneError):
    key = "mms-part"


def _check_provider(out: str) -> None:
    if (
        "Permission Denial" in out
        or "SecurityException" in out
        or ("Error while accessing provider" in out)
    ):
        raise ProviderDenied(
            "The phone does not let Textbridge read its MMS store, so pictures and files "
            "sent by MMS arrive only as a description."
        )


def parse_rows(out: str, projection: tuple[str, ...]) -> list[dict[str, str]]:
    """`content query` rows with a known projection, in order: each value runs to the next
    `, <column>=`, the last one to the end of the row (it may span lines). Only the last
    column may hold free text safely; the ones before it are numbers and MIME types, and a
    name holding `, text=` is cut there (a wrong file name, nothing worse)."""
    rows: list[dict[str, str]] = []
    starts = list(_ROW.finditer(out))
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(out)
        chunk = out[m.end() : end]
        if chunk.endswith("\n"):
            chunk = chunk[:-1]
        row: dict[str, str] = {}
        rest = chunk
        ok = True
        for i, col in enumerate(projection):
            if not rest.startswith(col + "="):
                ok = False
                break
            rest = rest[len(col) + 1 :]
            if i + 1 < len(projection):
                sep = f", {projection[i + 1]}="
                cut = rest.find(sep)
                if cut < 0:
                    ok = False
                    break
                row[col], rest = rest[:cut], rest[cut + 2 :]
            else:
                row[col] = rest
        if ok:
            rows.append(row)
    return rows


def parse_provider(out: str) -> list[ProviderSms]:
    """`content query` prints `Row: N k=v, k=v` per row (bodies may span lines), or
    "No result found."; a refused query prints an exception instead."""
    if (
        "Permission Denial" in out
        or "SecurityException" in out
        or ("Error while accessing provider" in out)
    ):
        raise ProviderDenied(
            "The phone does not let Textbridge read its SMS store, so a text that arrives "
            "while its conversation is open on the phone's screen can be missed."
        )
    rows: list[ProviderSms] = []
    starts = list(_ROW.finditer(out))
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(out)
        chunk = out[m.end() : end]
        if chunk.endswith("\n"):
            chunk = chunk[:-1]
        fields = _PROVIDER_FIELDS.match(chunk)
        if fields is None:
            continue
        rows.append(
            ProviderSms(
                id=int(fields.group("id")),
                address=fields.group("address"),
                date=int(fields.group("date")),
                body=fields.group("body"),
            )
        )
    return rows
