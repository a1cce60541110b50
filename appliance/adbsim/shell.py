"""The part of a phone's /system/bin/sh (mksh) that a command line from adbd goes
through, and the commands the phone line runs, answered from the simulated phone's model
(appliance.adbsim.device): quotes, backslashes, `;`, `&&`, `$(...)`, backticks, `$VAR` and `>`
redirection parse as sh parses them, so a text that is quoted wrongly has the effect it would
have on a phone -- recorded in `SimPhone.executed`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.adbsim import formats
from appliance.adbsim.formats import MESSAGES

if TYPE_CHECKING:
    from appliance.adbsim.device import SimPhone


class Disconnect(Exception):
    """Raised inside a command to make the server drop the connection (a pulled cable)."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__("disconnect")
        self.partial = partial


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
        if uri in (
            "content://mms-sms/conversations?simple=true",
            "content://mms-sms/canonical-addresses",
        ):
            threads, canonical = p.telephony_threads()
            table = threads if "conversations" in uri else canonical
            columns = opts.get("--projection", "")
            wanted = columns.split(":") if columns else list(table[0] if table else [])
            return formats.query_rows(table, wanted), True
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
