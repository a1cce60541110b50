"""A USB-stick GSM/LTE modem on a pseudo-terminal, for tests and the demo.

It answers the subset of 3GPP TS 27.005/27.007 (PDU mode) that SMS software uses, the way a
Quectel-style stick does: echo, V1 result codes, +CME/+CMS errors, a SIM with PIN and PUK,
finite message storage, +CMTI/+CMT/+CDS/+CDSI notifications, and the "> " prompt of AT+CMGS.
The phone-network side (`Network`) injects inbound texts and status reports and records what
the modem sent; `Faults` makes it misbehave like real hardware does.

One daemon thread owns the pty and all modem state changes that produce output; other threads
(tests, the control server) change state under `_lock` and queue unsolicited result codes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import select
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.sms import pdu
from appliance.sms.pdu import Concat

CTRL_Z = 0x1A
ESC = 0x1B
# Real modems cap a command line (Quectel: 2048 octets); without a cap garbage grows forever.
MAX_LINE = 2048
# A PDU is at most 12 octets of SMSC plus 164 octets of TPDU, in hex; anything longer at the
# prompt is a stray stream, dropped like the modem's buffer overflow would.
MAX_PDU_HEX = 2 * (12 + 176)

REC_UNREAD, REC_READ, STO_UNSENT, STO_SENT = 0, 1, 2, 3
MEMORIES = ("SM", "ME")

CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    16: "incorrect password",
    30: "no network service",
    50: "incorrect parameters",
    100: "unknown",
}

# CMS errors of 27.005 3.2.5 this modem produces.
CMS_SIM_PIN = 311
CMS_SIM_PUK = 316
CMS_SIM_FAILURE = 313
CMS_INVALID_PDU = 304
CMS_NOT_ALLOWED = 302
CMS_INVALID_INDEX = 321
CMS_MEMORY_FULL = 322
CMS_NO_NETWORK = 331

_SIM_READY, _SIM_PIN, _SIM_PUK, _SIM_BLOCKED = "READY", "SIM PIN", "SIM PUK", "BLOCKED"

_MCC_MNC = "26299"
_LAC, _CELL = "1A2B", "01C2D3E4"
_REVISION = "EC25EFAR06A06M4G"
_IMSI = "262990123456789"


class _Error(Exception):
    """A plain ERROR final result (syntax, unsupported)."""


class _CmeError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _CmsError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class SentSms:
    """One part the modem handed to the network, decoded."""

    dest: str
    text: str
    encoding: str
    concat: Concat | None
    reference: int
    request_status: bool
    pdu_hex: str
    at: float


@dataclass
class _Settings:
    """What AT&F / ATZ / a power cycle put back to factory values."""

    echo: bool = True
    cmee: int = 0
    cnmi: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    creg_n: int = 0
    cereg_n: int = 0
    cops_format: int = 0
    csmp: tuple[int, int, int, int] = (17, 167, 0, 0)
    csdh: int = 0
    cscs: str = "GSM"
    cgsms: int = 1
    clip: int = 0
    crc: int = 0
    cvhu: int = 1
    mems: list[str] = field(default_factory=lambda: ["SM", "SM", "SM"])


@dataclass
class _Prompt:
    length: int
    stuck: bool = False
    data: bytearray = field(default_factory=bytearray)


_Handler = Callable[[str], list[str]]


def _split_args(text: str) -> list[str]:
    """Comma-separated AT arguments; quotes protect commas and are removed."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise _Error("unbalanced quotes")
    out.append("".join(cur).strip())
    return out


def _split_commands(body: str) -> list[tuple[str, str]]:
    """Split what follows "AT" into (name, rest) pairs: ATE0V1, AT+A;+B=1, AT&F;E0."""
    cmds: list[tuple[str, str]] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch in " ;":
            i += 1
        elif ch in "+^$%":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] == "_"):
                j += 1
            if j == i + 1:
                raise _Error("empty command name")
            k, quoted = j, False
            while k < n and (quoted or body[k] != ";"):
                if body[k] == '"':
                    quoted = not quoted
                k += 1
            cmds.append((body[i:j].upper(), body[j:k].strip()))
            i = k
        elif ch == "&" and i + 1 < n and body[i + 1].isalpha():
            j = i + 2
            while j < n and body[j].isdigit():
                j += 1
            cmds.append(("&" + body[i + 1].upper(), body[i + 2 : j]))
            i = j
        elif ch.upper() == "S" and i + 1 < n and body[i + 1].isdigit():
            j = i + 1
            while j < n and body[j].isdigit():
                j += 1
            if j < n and body[j] == "?":
                cmds.append(("S", body[i + 1 : j] + "?"))
                i = j + 1
            elif j < n and body[j] == "=":
                k = j + 1
                while k < n and body[k].isdigit():
                    k += 1
                cmds.append(("S", body[i + 1 : k]))
                i = k
            else:
                raise _Error("bad S-register")
        elif ch.isalpha():
            j = i + 1
            while j < n and body[j].isdigit():
                j += 1
            cmds.append((ch.upper(), body[i + 1 : j]))
            i = j
        else:
            raise _Error(f"unexpected {ch!r}")
    return cmds


def _int_arg(args: list[str], i: int, default: int | None = None) -> int:
    if i >= len(args) or args[i] == "":
        if default is None:
            raise _CmeError(50)
        return default
    try:
        return int(args[i])
    except ValueError:
        raise _CmeError(50) from None


def _pdu_length(raw: bytes) -> int:
    """<length> for +CMGL/+CMGR/+CMT: TPDU octets; tolerant of the malformed PDUs that
    deliver_pdu may inject, since a modem reports whatever the network sent."""
    try:
        return pdu.tpdu_length(raw)
    except pdu.PduError:
        return max(0, len(raw) - 1)


class Faults:
    """Ways the simulated modem misbehaves, each seen on real USB sticks."""

    def __init__(self, sim: ModemSimulator) -> None:
        self._sim = sim
        self._storage_full = False

    def hang(self, seconds: float | None) -> None:
        """Stop answering for `seconds` (None: until hang(0)); input meanwhile is lost."""
        with self._sim._lock:
            if seconds is None:
                self._sim._hang_until = math.inf
            elif seconds <= 0:
                self._sim._hang_until = 0.0
            else:
                self._sim._hang_until = time.monotonic() + seconds
        self._sim._poke()

    def hang_at_next(self, seconds: float, command: str = "AT") -> None:
        """Hang (as hang()) on the next command line that contains `command`, unanswered:
        a modem that locks up in the middle of whatever the client was doing."""
        with self._sim._lock:
            self._sim._hang_at = (command.upper(), seconds)

    def unplug(self) -> None:
        """Pull the stick: the client's port errors out and the stable symlink disappears."""
        self._sim._in_thread(self._sim._unplug)

    def replug(self) -> None:
        """Plug it back in: a new tty (USB re-enumeration) and the symlink repointed to it."""
        self._sim._in_thread(self._sim._replug)

    def garbage(self, data: bytes) -> None:
        """Write raw bytes to the line now (line noise, a firmware's binary debug output)."""
        self._sim._in_thread(lambda: self._sim._write(data))

    def urc_in_next_response(self, urc: str) -> None:
        """Put `urc` inside the next command's response, before its final result code, as
        some firmwares do; software that only looks for URCs between responses loses it."""
        with self._sim._lock:
            self._sim._urc_in_response.append(urc)

    def cms_error_next(self, code: int, command: str = "CMGS", count: int = 1) -> None:
        """The next `count` uses of `command` (e.g. "CMGS", "CMGL") fail with +CMS ERROR."""
        name = command.upper().removeprefix("AT").removeprefix("+")
        with self._sim._lock:
            self._sim._cms_faults.setdefault(name, deque()).extend([code] * count)

    def slow(self, seconds: float) -> None:
        """Wait this long before every answer (0 to stop)."""
        self._sim._slow = max(0.0, seconds)

    def stuck_prompt(self) -> None:
        """Leave the modem inside an AT+CMGS "> " prompt, as when the sending process died
        between the prompt and Ctrl-Z: everything typed is taken as message text until ESC
        (cancel) or Ctrl-Z (a garbage PDU, rejected)."""

        def enter() -> None:
            self._sim._prompt = _Prompt(length=0, stuck=True)

        self._sim._in_thread(enter)

    @property
    def storage_full(self) -> bool:
        """Forced full storage: the network keeps new texts pending and AT+CPMS reports the
        store as full, whatever it actually holds."""
        return self._storage_full

    @storage_full.setter
    def storage_full(self, value: bool) -> None:
        with self._sim._lock:
            self._storage_full = value
        if not value:
            self._sim._in_thread(self._sim._flush_pending)


class Network:
    """The phone network as seen from the modem: inbound texts, status reports, coverage."""

    def __init__(self, sim: ModemSimulator) -> None:
        self._sim = sim
        self.sent: list[SentSms] = []
        # A TP-ST to report, report_delay seconds later, every sent part that asks for a
        # status report; None: reports only come from report().
        self.auto_report: int | None = None
        self.report_delay = 0.5
        # Seconds the network takes to accept a submitted part (the wait between Ctrl-Z and
        # +CMGS, 1-5 s on a real network); the modem answers nothing meanwhile.
        self.submit_delay = 0.0
        # False delivers silently (no +CMTI), as when a notification is lost on the line.
        self.notify = True
        # A text to the SIM's own number comes back to it, as on a real network (the HIL
        # test of a real modem relies on that; hil/test_modem_hil.py).
        self.loopback = True
        # USSD codes the network answers (AT+CUSD), e.g. the prepaid balance.
        self.ussd: dict[str, str] = {"*100#": "Guthaben: 5,00 EUR"}
        self._registered = True
        self._roaming = False
        self._pending: deque[tuple[str, str]] = deque()
        self._concat_ref = 0

    @property
    def registered(self) -> bool:
        return self._registered

    @registered.setter
    def registered(self, value: bool) -> None:
        with self._sim._lock:
            self._registered = value
            self._sim._registration_changed()
        self._sim._poke()
        if value:
            self._sim._in_thread(self._sim._flush_pending)

    @property
    def roaming(self) -> bool:
        """Registered on a visited network (+CREG stat 5); texts still work."""
        return self._roaming

    @roaming.setter
    def roaming(self, value: bool) -> None:
        with self._sim._lock:
            self._roaming = value
            self._sim._registration_changed()
        self._sim._poke()

    @property
    def pending(self) -> int:
        """Texts and reports the network holds because the modem cannot take them now."""
        return len(self._pending)

    def deliver(
        self,
        sender: str,
        text: str,
        *,
        timestamp_ms: int | None = None,
        encoding: str | None = None,
    ) -> list[int]:
        """Send a text to the modem's number; returns the storage indexes of the parts stored
        now (parts the modem cannot take yet stay pending and arrive later)."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        with self._sim._lock:
            self._concat_ref = self._concat_ref % 255 + 1
            parts = pdu.encode_deliver(
                sender,
                text,
                timestamp_ms=ts,
                smsc=self._sim.smsc,
                encoding=encoding,
                concat_ref=self._concat_ref,
            )
            indexes = [self._sim._receive("deliver", p.hex().upper()) for p in parts]
        self._sim._poke()
        return [i for i in indexes if i is not None]

    def deliver_pdu(self, pdu_hex: str) -> int:
        """Hand the modem a raw SMS-DELIVER PDU (SMSC prefix included), valid or not.
        Returns its storage index, or -1 when it was not stored (pending, or sent straight
        to the client as +CMT)."""
        bytes.fromhex(pdu_hex)  # only hex can travel over the air interface
        with self._sim._lock:
            index = self._sim._receive("deliver", pdu_hex.upper())
        self._sim._poke()
        return -1 if index is None else index

    def sent_messages(self) -> list[tuple[str, str]]:
        """(destination, whole text) per message in the order sent, multipart messages
        reassembled by (destination, concatenation reference)."""
        order: list[tuple[str, int, int] | int] = []
        groups: dict[tuple[str, int, int], dict[int, str]] = {}
        parts = list(self.sent)
        for i, part in enumerate(parts):
            if part.concat is None or part.concat.total <= 1:
                order.append(i)
                continue
            key = (part.dest, part.concat.ref, part.concat.total)
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][part.concat.seq] = part.text
        out: list[tuple[str, str]] = []
        for item in order:
            if isinstance(item, int):
                out.append((parts[item].dest, parts[item].text))
            else:
                texts = groups[item]
                out.append((item[0], "".join(texts.get(n, "") for n in range(1, item[2] + 1))))
        return out

    def report(self, reference: int, status: int = 0x00) -> None:
        """The network's SMS-STATUS-REPORT for the most recent part sent with `reference`."""
        with self._sim._lock:
            part = next((s for s in reversed(self.sent) if s.reference == reference), None)
            if part is None:
                raise KeyError(f"no sent part has reference {reference}")
            raw = pdu.encode_status_report(
                reference,
                part.dest,
                status,
                scts_ms=int(part.at * 1000),
                discharge_ms=int(time.time() * 1000),
                smsc=self._sim.smsc,
            )
            self._sim._receive("report", raw.hex().upper())
        self._sim._poke()


class ModemSimulator:
    """A modem on a pty; see the module docstring."""

    def __init__(
        self,
        *,
        pin: str | None = "1234",
        puk: str = "12345678",
        storage_size: int = 30,
        own_number: str = "+4915100000001",
        operator: str = "Textbridge Mobile",
        smsc: str = "+4915200000000",
        link_path: str | Path | None = None,
        manufacturer: str = "Quectel",
        model: str = "EC25",
        imei: str = "867000000000001",
        cfun_query_bare_ok: bool = False,
    ) -> None:
        self.pin = pin
        self.puk = puk
        self.pin_enabled = pin is not None
        self.storage_size = storage_size
        self.own_number = own_number
        self.operator = operator
        self.smsc = smsc
        self.link_path = Path(link_path) if link_path is not None else None
        self.manufacturer = manufacturer
        self.model = model
        self.imei = imei
        self.cfun_query_bare_ok = cfun_query_bare_ok
        # Seconds of silence after AT+CFUN=1,1 before the boot URCs.
        self.reset_delay = 0.5

        self.commands: list[str] = []
        self.network = Network(self)
        self.faults = Faults(self)

        self._lock = threading.RLock()
        self._stores: dict[str, dict[int, tuple[int, str]]] = {m: {} for m in MEMORIES}
        self._settings = _Settings()
        self._sim_state = _SIM_PIN if self.pin_enabled else _SIM_READY
        self._pin_attempts = 3
        self._puk_attempts = 10
        self._fun = 1
        self._csca = smsc
        self._csca_type = 145
        self._next_mr = 0
        self._reg_seen: dict[str, int] = {}

        self._master: int | None = None
        self._slave_name = ""
        self._connected = False
        self._plugged = False
        self._line = bytearray()
        self._prompt: _Prompt | None = None
        # Set by AT+CFUN=1,1: the reboot starts once its OK is out.
        self._resetting = False
        self._urcs: deque[str] = deque()
        self._urc_in_response: deque[str] = deque()
        self._cms_faults: dict[str, deque[int]] = {}
        self._hang_until = 0.0
        self._hang_at: tuple[str, float] | None = None
        self._silent_until = 0.0
        self._slow = 0.0
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._calls: deque[tuple[Callable[[], None], threading.Event]] = deque()

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1

        self._handlers: dict[str, _Handler] = {
            "E": self._at_e,
            "V": self._at_v,
            "Q": self._at_q,
            "Z": self._at_z,
            "&F": self._at_z,
            "I": self._at_i,
            "X": self._at_ok,
            "&C": self._at_ok,
            "&D": self._at_ok,
            "&W": self._at_ok,
            "S": self._at_s,
            "+CGMI": self._at_cgmi,
            "+GMI": self._at_cgmi,
            "+CGMM": self._at_cgmm,
            "+GMM": self._at_cgmm,
            "+CGMR": self._at_cgmr,
            "+GMR": self._at_cgmr,
            "+CGSN": self._at_cgsn,
            "+GSN": self._at_cgsn,
            "+CIMI": self._at_cimi,
            "+CMEE": self._at_cmee,
            "+CPIN": self._at_cpin,
            "+CPINR": self._at_cpinr,
            "+QPINC": self._at_qpinc,
            "+CLCK": self._at_clck,
            "+CFUN": self._at_cfun,
            "+CREG": lambda rest: self._registration("+CREG", rest),
            "+CEREG": lambda rest: self._registration("+CEREG", rest),
            "+CGREG": lambda rest: self._registration("+CGREG", rest),
            "+CSQ": self._at_csq,
            "+COPS": self._at_cops,
            "+CNUM": self._at_cnum,
            "+CSCA": self._at_csca,
            "+CMGF": self._at_cmgf,
            "+CSMS": self._at_csms,
            "+CPMS": self._at_cpms,
            "+CNMI": self._at_cnmi,
            "+CNMA": self._at_ok_sms,
            "+CSMP": self._at_csmp,
            "+CSDH": self._at_csdh,
            "+CMGL": self._at_cmgl,
            "+CMGR": self._at_cmgr,
            "+CMGD": self._at_cmgd,
            "+CMGS": self._at_cmgs,
            "+CGSMS": self._at_cgsms,
            "+CSCS": self._at_cscs,
            "+CLIP": lambda rest: self._flag("+CLIP", "clip", rest),
            "+CRC": lambda rest: self._flag("+CRC", "crc", rest),
            "+CVHU": lambda rest: self._flag("+CVHU", "cvhu", rest),
            "+CUSD": self._at_cusd,
            "+IFC": self._at_ok,
            "+IPR": self._at_ok,
        }

    # -- public surface -------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The path a client opens: the stable symlink if there is one, else the tty."""
        return str(self.link_path) if self.link_path is not None else self._slave_name

    @property
    def storage(self) -> dict[int, tuple[int, str]]:
        """index -> (stat, PDU hex) of the store incoming texts go to (AT+CPMS <mem3>)."""
        return self._stores[self._settings.mems[2]]

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping.clear()
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="modem-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._poke()
        thread.join(5)
        self._close_pty()
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1

    def __enter__(self) -> ModemSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot (for the control server)."""
        with self._lock:
            return {
                "port": self.port,
                "plugged": self._plugged,
                "connected": self._connected,
                "sim": self._sim_state,
                "registered": self.network.registered,
                "storage": {str(k): v[0] for k, v in sorted(self.storage.items())},
                "storage_size": self.storage_size,
                "pending": self.network.pending,
                "sent": len(self.network.sent),
                "commands": len(self.commands),
            }

    # -- pty ------------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        if os.ttyname(slave) == self._slave_name:
            # The kernel reuses the freed pty number; a re-enumerated USB modem gets a new
            # name, and clients holding the old path must not find a modem there.
            again = os.openpty()
            os.close(master)
            os.close(slave)
            master, slave = again
        # Raw: a modem line has no line discipline (no echo by the tty, no CR/LF mapping).
        tty.setraw(slave)
        self._slave_name = os.ttyname(slave)
        # Not holding the slave open lets reads on the master tell when no client has it
        # (EIO), so that output while nobody listens is lost like on a closed USB port.
        os.close(slave)
        os.set_blocking(master, False)
        flags = fcntl.fcntl(master, fcntl.F_GETFD)
        fcntl.fcntl(master, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        self._master = master
        self._connected = False
        self._plugged = True
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_name)
            # rename() makes the switch atomic: a client never sees a missing or stale link.
            tmp.replace(self.link_path)

    def _close_pty(self) -> None:
        master, self._master = self._master, None
        self._plugged = False
        self._connected = False
        if master is not None:
            with contextlib.suppress(OSError):
                os.close(master)

    def _flush_stale(self) -> None:
        """Drop output the last client did not read; a real port's buffer dies with it."""
        try:
            fd = os.open(self._slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error:
            pass
        finally:
            os.close(fd)

    def _write(self, data: bytes) -> None:
        if self._master is None or not data:
            return
        deadline = time.monotonic() + 1.0
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # Nobody reads: a real UART overruns and loses the rest.
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
                continue
            except OSError:
                return
            view = view[n:]

    def _poke(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def _in_thread(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the modem thread (which owns the pty) and wait for it."""
        thread = self._thread
        if thread is None or threading.current_thread() is thread or not thread.is_alive():
            with self._lock:
                fn()
            return
        done = threading.Event()
        self._calls.append((fn, done))
        self._poke()
        if not done.wait(10):
            raise TimeoutError("the modem simulator thread did not respond")

    # -- main loop ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            while self._calls:
                fn, done = self._calls.popleft()
                try:
                    with self._lock:
                        fn()
                finally:
                    done.set()
            self._run_timers()
            fds = [self._wake_r]
            if self._master is not None:
                fds.append(self._master)
            try:
                readable, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 512):
                        pass
            master = self._master
            if master is not None and master in readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        if self._connected:
                            self._connected = False
                            self._flush_stale()
                            # Closing the port drops DTR; with AT&D2 (the default) the modem
                            # abandons a half-typed command line. A "> " prompt survives.
                            with self._lock:
                                self._line.clear()
                        with self._lock:
                            # Nobody has the port open: unsolicited output goes nowhere.
                            self._urcs.clear()
                        # No client: poll instead of spinning on a permanently readable fd.
                        time.sleep(0.02)
                    continue
                self._connected = True
                if data:
                    with self._lock:
                        if self._silent():
                            continue
                        self._feed(data)
            elif master is not None:
                self._connected = True
            with self._lock:
                if self.network._pending:
                    # An SMSC keeps retrying; this catches every way space or service returns.
                    self._flush_pending()
                if not self._silent() and self._prompt is None:
                    self._flush_urcs()

    def _silent(self) -> bool:
        now = time.monotonic()
        return now < self._hang_until or now < self._silent_until

    def _run_timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [fn for at, fn in self._timers if at <= now]
            self._timers = [(at, fn) for at, fn in self._timers if at > now]
        for fn in due:
            with self._lock:
                fn()

    def _after(self, seconds: float, fn: Callable[[], None]) -> None:
        with self._lock:
            self._timers.append((time.monotonic() + seconds, fn))
        self._poke()

    def _flush_urcs(self) -> None:
        while self._urcs:
            urc = self._urcs.popleft()
            if self._connected:
                self._write(f"\r\n{urc}\r\n".encode())

    def _urc(self, text: str) -> None:
        self._urcs.append(text)
        self._poke()

    # -- input ----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        echo = bytearray()
        for b in data:
            if self._prompt is not None:
                if b in (CTRL_Z, ESC):
                    self._write(bytes(echo))
                    echo.clear()
                    prompt, self._prompt = self._prompt, None
                    if b == CTRL_Z:
                        self._submit(prompt)
                    continue
                if self._settings.echo:
                    echo.append(b)
                if len(prompt_data := self._prompt.data) < MAX_PDU_HEX:
                    prompt_data.append(b)
                continue
            if b in (CTRL_Z, ESC):
                continue  # outside a prompt these mean nothing to a modem
            if self._settings.echo:
                echo.append(b)
            if b == 0x0D:
                self._write(bytes(echo))
                echo.clear()
                line, self._line = bytes(self._line), bytearray()
                self._command_line(line.decode("latin-1").strip())
            elif b == 0x0A:
                continue
            elif b in (0x08, 0x7F):
                del self._line[-1:]
            elif len(self._line) < MAX_LINE:
                self._line.append(b)
        self._write(bytes(echo))

    def _respond(self, blocks: list[list[str]], final: str | None) -> None:
        if self._slow:
            time.sleep(self._slow)
        out = "".join("\r\n" + "\r\n".join(lines) + "\r\n" for lines in blocks if lines)
        if final is not None:
            while self._urc_in_response:
                out += "\r\n" + self._urc_in_response.popleft() + "\r\n"
            out += f"\r\n{final}\r\n"
        self._write(out.encode())

    def _cme(self, code: int) -> str:
        if self._settings.cmee == 0:
            return "ERROR"
        if self._settings.cmee == 2:
            return f"+CME ERROR: {CME_TEXT.get(code, 'unknown')}"
        return f"+CME ERROR: {code}"

    def _command_line(self, line: str) -> None:
        # A modem finds "AT" anywhere in noise; before it, bytes are line garbage.
        at = line.upper().find("AT")
        if at < 0:
            return
        line = line[at:]
        self.commands.append(line)
        if self._hang_at is not None and self._hang_at[0] in line.upper():
            self._hang_until = time.monotonic() + self._hang_at[1]
            self._hang_at = None
            return
        blocks: list[list[str]] = []
        try:
            cmds = _split_commands(line[2:])
            for i, (name, rest) in enumerate(cmds):
                handler = self._handlers.get(name)
                if handler is None:
                    raise _CmeError(4)
                fault = self._cms_faults.get(name.lstrip("+"))
                if fault and name != "+CMGS":
                    code = fault.popleft()
                    raise _CmsError(code)
                if name == "+CMGS" and i != len(cmds) - 1:
                    raise _Error("AT+CMGS must end the line")
                blocks.append(handler(rest))
                if self._prompt is not None:
                    # The rest of the exchange is the PDU, ended by Ctrl-Z or ESC.
                    self._respond(blocks, None)
                    self._write(b"\r\n> ")
                    return
        except _CmeError as exc:
            self._respond(blocks, self._cme(exc.code))
            return
        except _CmsError as exc:
            self._respond(blocks, f"+CMS ERROR: {exc.code}")
            return
        except _Error:
            self._respond(blocks, "ERROR")
            return
        self._respond(blocks, "OK")
        if self._resetting:
            self._resetting = False
            self._begin_reset()

    # -- helpers for handlers -------------------------------------------------------------

    @staticmethod
    def _op(rest: str) -> tuple[str, list[str]]:
        """("exec" | "query" | "test" | "set", args)."""
        if rest == "":
            return "exec", []
        if rest == "?":
            return "query", []
        if rest.replace(" ", "") == "=?":
            return "test", []
        if rest.startswith("="):
            return "set", _split_args(rest[1:])
        raise _Error(rest)

    def _need_sim(self) -> None:
        if self._sim_state == _SIM_PIN:
            raise _CmeError(11)
        if self._sim_state == _SIM_PUK:
            raise _CmeError(12)
        if self._sim_state == _SIM_BLOCKED:
            raise _CmeError(13)

    def _need_sim_sms(self) -> None:
        if self._sim_state == _SIM_PIN:
            raise _CmsError(CMS_SIM_PIN)
        if self._sim_state == _SIM_PUK:
            raise _CmsError(CMS_SIM_PUK)
        if self._sim_state == _SIM_BLOCKED:
            raise _CmsError(CMS_SIM_FAILURE)

    def _reg_stat(self) -> int:
        if self._fun != 1 or self._sim_state != _SIM_READY:
            return 0
        if not self.network.registered:
            return 2
        return 5 if self.network.roaming else 1

    def _can_receive(self) -> bool:
        return self._plugged and self._reg_stat() in (1, 5) and not self._silent_reset()

    def _silent_reset(self) -> bool:
        return time.monotonic() < self._silent_until

    def _registration_changed(self) -> None:
        stat = self._reg_stat()
        for name, n in (("+CREG", self._settings.creg_n), ("+CEREG", self._settings.cereg_n)):
            if self._reg_seen.get(name) == stat:
                continue
            self._reg_seen[name] = stat
            if n == 1:
                self._urc(f"{name}: {stat}")
            elif n == 2:
                self._urc(f"{name}: {stat}" + (self._location() if stat in (1, 5) else ""))

    @staticmethod
    def _location() -> str:
        # +CREG reports a 2G/3G LAC, +CEREG an LTE TAC; both four hex digits here.
        return f',"{_LAC}","{_CELL}",7'

    # -- storage and delivery -------------------------------------------------------------

    def _free_index(self, store: dict[int, tuple[int, str]]) -> int | None:
        if self.faults.storage_full:
            return None
        for i in range(1, self.storage_size + 1):
            if i not in store:
                return i
        return None

    def _receive(self, kind: str, pdu_hex: str) -> int | None:
        """Take one PDU from the network: route it per AT+CNMI or keep it pending."""
        if not self._can_receive() or self.network._pending:
            # Order matters to the network: nothing overtakes a message already waiting.
            self.network._pending.append((kind, pdu_hex))
            return None
        return self._route(kind, pdu_hex)

    def _route(self, kind: str, pdu_hex: str) -> int | None:
        mt, ds = self._settings.cnmi[1], self._settings.cnmi[3]
        raw = bytes.fromhex(pdu_hex)
        if kind == "report":
            if ds == 1 and self._connected:
                self._urc(f"+CDS: {_pdu_length(raw)}\r\n{pdu_hex}")
                return None
            if ds == 0:
                # 27.005: with ds=0 reports are not routed to the TE; sticks keep them in a
                # separate "SR" store at most, which SMS software never reads.
                return None
        elif mt in (2, 3) and self._connected and self.network.notify:
            self._urc(f"+CMT: ,{_pdu_length(raw)}\r\n{pdu_hex}")
            return None
        mem = self._settings.mems[2]
        store = self._stores[mem]
        index = self._free_index(store)
        if index is None:
            self.network._pending.appendleft((kind, pdu_hex))
            return None
        store[index] = (REC_UNREAD, pdu_hex)
        if self.network.notify:
            if kind == "report" and ds == 2:
                self._urc(f'+CDSI: "{mem}",{index}')
            elif kind == "deliver" and mt in (1, 2, 3):
                self._urc(f'+CMTI: "{mem}",{index}')
        return index

    def _flush_pending(self) -> None:
        pending = self.network._pending
        while pending and self._can_receive():
            kind, pdu_hex = pending.popleft()
            before = len(pending)
            if self._route(kind, pdu_hex) is None and len(pending) > before:
                break  # still full: it went back to the head of the queue

    # -- unplug / reset -------------------------------------------------------------------

    def _power_on_state(self) -> None:
        """A power cycle: factory settings; a SIM that wants its PIN wants it again, one that
        wants its PUK still does (the SIM remembers, not the modem)."""
        self._settings = _Settings()
        if self._sim_state not in (_SIM_PUK, _SIM_BLOCKED):
            self._sim_state = _SIM_PIN if self.pin_enabled else _SIM_READY
        self._fun = 1
        self._prompt = None
        self._line.clear()
        self._reg_seen.clear()
        self._urcs.clear()

    def _unplug(self) -> None:
        self._close_pty()
        self._prompt = None
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def _replug(self) -> None:
        if self._plugged:
            self._unplug()
        self._power_on_state()
        self._open_pty()
        self._registration_changed()
        self._flush_pending()

    def _begin_reset(self) -> None:
        """AT+CFUN=1,1: the OK goes out, then the modem reboots and stays quiet a moment."""
        self._power_on_state()
        self._silent_until = time.monotonic() + self.reset_delay

        def booted() -> None:
            self._urc("RDY")
            self._urc("+CFUN: 1")
            self._urc(f"+CPIN: {self._sim_state}")
            if self._sim_state == _SIM_READY:
                self._urc("+QIND: SMS DONE")
            self._registration_changed()
            self._flush_pending()

        self._after(self.reset_delay, booted)

    # -- prompt (AT+CMGS data) ------------------------------------------------------------

    def _submit(self, prompt: _Prompt) -> None:
        text = prompt.data.decode("latin-1").strip()
        fault = self._cms_faults.get("CMGS")
        if prompt.stuck:
            self._respond([], f"+CMS ERROR: {CMS_INVALID_PDU}")
            return
        if fault:
            self._respond([], f"+CMS ERROR: {fault.popleft()}")
            return
        try:
            raw = bytes.fromhex(text)
            length = pdu.tpdu_length(raw)
            submit = pdu.decode_submit(raw)
        except ValueError:
            self._respond([], f"+CMS ERROR: {CMS_INVALID_PDU}")
            return
        if length != prompt.length:
            self._respond([], f"+CMS ERROR: {CMS_INVALID_PDU}")
            return
        if self._reg_stat() not in (1, 5):
            self._respond([], f"+CMS ERROR: {CMS_NO_NETWORK}")
            return
        if self.network.submit_delay > 0:
            time.sleep(self.network.submit_delay)
        mr = self._next_mr
        self._next_mr = (mr + 1) % 256
        self.network.sent.append(
            SentSms(
                dest=submit.dest,
                text=submit.text,
                encoding=submit.encoding,
                concat=submit.concat,
                reference=mr,
                request_status=submit.request_status,
                pdu_hex=text.upper(),
                at=time.time(),
            )
        )
        self._respond([[f"+CMGS: {mr}"]], "OK")
        if self.network.loopback:
            whole = self._to_self(submit.dest)
            if whole is not None:
                own = self.own_number

                def back() -> None:
                    self.network.deliver(own, whole)

                self._after(self.network.report_delay, back)
        status = self.network.auto_report
        # The network reports only on parts that asked for it (TP-SRR).
        if status is not None and submit.request_status:
            self._after(self.network.report_delay, lambda: self.network.report(mr, status))

    def _to_self(self, dest: str) -> str | None:
        """The whole text once the last part of a message to the SIM's own number is in,
        else None (another destination, or parts still to come)."""
        digits = [c for c in dest if c.isdigit()]
        if not digits or digits != [c for c in self.own_number if c.isdigit()]:
            return None
        last = self.network.sent[-1]
        if last.concat is None or last.concat.total <= 1:
            return last.text
        key = (last.dest, last.concat.ref, last.concat.total)
        texts: dict[int, str] = {}
        # Back to this message's first part: an older message may have used the same
        # reference (they wrap at 256).
        for part in reversed(self.network.sent):
            if part.concat is None or (part.dest, part.concat.ref, part.concat.total) != key:
                continue
            texts.setdefault(part.concat.seq, part.text)
            if part.concat.seq == 1:
                break
        if len(texts) < last.concat.total:
            return None
        return "".join(texts[n] for n in range(1, last.concat.total + 1))

    # -- handlers -------------------------------------------------------------------------
    # Each takes the text after the command name and returns its information lines; errors
    # are raised as _Error/_CmeError/_CmsError.

    def _at_ok(self, rest: str) -> list[str]:
        return []

    def _at_ok_sms(self, rest: str) -> list[str]:
        self._need_sim_sms()
        return []

    def _bool_arg(self, rest: str) -> bool:
        if rest in ("", "0"):
            return False
        if rest == "1":
            return True
        raise _Error(rest)

    def _at_e(self, rest: str) -> list[str]:
        self._settings.echo = self._bool_arg(rest)
        return []

    def _at_v(self, rest: str) -> list[str]:
        # Numeric result codes (ATV0) are not simulated; nothing we test against uses them.
        if rest != "1":
            raise _Error(rest)
        return []

    def _at_q(self, rest: str) -> list[str]:
        if rest not in ("", "0"):
            raise _Error(rest)
        return []

    def _at_z(self, rest: str) -> list[str]:
        mems = self._settings.mems
        self._settings = _Settings(mems=mems)
        return []

    def _at_i(self, rest: str) -> list[str]:
        return [self.manufacturer, self.model, f"Revision: {_REVISION}"]

    def _at_s(self, rest: str) -> list[str]:
        if rest.endswith("?"):
            return [{"3": "013", "4": "010", "5": "008"}.get(rest[:-1], "000")]
        return []

    def _at_cgmi(self, rest: str) -> list[str]:
        return [] if rest == "=?" else [self.manufacturer]

    def _at_cgmm(self, rest: str) -> list[str]:
        return [] if rest == "=?" else [self.model]

    def _at_cgmr(self, rest: str) -> list[str]:
        return [] if rest == "=?" else [f"Revision: {_REVISION}"]

    def _at_cgsn(self, rest: str) -> list[str]:
        return [] if rest == "=?" else [self.imei]

    def _at_cimi(self, rest: str) -> list[str]:
        self._need_sim()
        return [] if rest == "=?" else [_IMSI]

    def _at_cmee(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return [f"+CMEE: {self._settings.cmee}"]
        if op == "test":
            return ["+CMEE: (0-2)"]
        if op == "set":
            value = _int_arg(args, 0, 0)
            if value not in (0, 1, 2):
                raise _CmeError(50)
            self._settings.cmee = value
            return []
        raise _Error(rest)

    def _at_cpin(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            if self._sim_state == _SIM_BLOCKED:
                raise _CmeError(13)
            return [f"+CPIN: {self._sim_state}"]
        if op == "test":
            return []
        if op != "set" or not args or not args[0]:
            raise _CmeError(50)
        if self._sim_state == _SIM_PIN:
            if args[0] == self.pin:
                self._sim_state = _SIM_READY
                self._pin_attempts = 3
                self._sim_ready()
                return []
            self._pin_attempts -= 1
            if self._pin_attempts <= 0:
                self._sim_state = _SIM_PUK
                self._urc("+CPIN: SIM PUK")
            raise _CmeError(16)
        if self._sim_state == _SIM_PUK:
            if len(args) < 2 or not args[1].isdigit() or not 4 <= len(args[1]) <= 8:
                raise _CmeError(50)
            if args[0] == self.puk:
                self.pin = args[1]
                self.pin_enabled = True
                self._sim_state = _SIM_READY
                self._pin_attempts = 3
                self._puk_attempts = 10
                self._sim_ready()
                return []
            self._puk_attempts -= 1
            if self._puk_attempts <= 0:
                self._sim_state = _SIM_BLOCKED
                raise _CmeError(13)
            raise _CmeError(16)
        if self._sim_state == _SIM_BLOCKED:
            raise _CmeError(13)
        # Entering a PIN into a ready SIM is not allowed on most modems.
        raise _CmeError(3)

    def _sim_ready(self) -> None:
        """After the PIN: the SIM's phonebook and SMS come up, then the network registers."""
        self._urc("+CPIN: READY")
        self._urc("+QIND: SMS DONE")
        self._registration_changed()
        self._after(0.0, self._flush_pending)

    def _at_cpinr(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return []
        which = args[0].upper() if args else ""
        lines = []
        if which in ("", "SIM PIN", "SIM*"):
            lines.append(f'+CPINR: "SIM PIN",{self._pin_attempts},3')
        if which in ("", "SIM PUK", "SIM*"):
            lines.append(f'+CPINR: "SIM PUK",{self._puk_attempts},10')
        if not lines:
            raise _CmeError(50)
        return lines

    def _at_qpinc(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        sc = f'+QPINC: "SC",{self._pin_attempts},{self._puk_attempts}'
        p2 = '+QPINC: "P2",3,10'
        if op == "query":
            return [sc, p2]
        if op == "test":
            return ['+QPINC: ("SC","P2")']
        if op == "set" and args and args[0].upper() == "SC":
            return [sc]
        if op == "set" and args and args[0].upper() == "P2":
            return [p2]
        raise _CmeError(50)

    def _at_clck(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return ['+CLCK: ("SC","AO","OI","OX","AI","IR","AB","AG","AC","FD","PN")']
        if op != "set" or len(args) < 2:
            raise _CmeError(50)
        if args[0].upper() != "SC":
            raise _CmeError(4)
        self._need_sim()
        mode = _int_arg(args, 1)
        if mode == 2:
            return [f"+CLCK: {int(self.pin_enabled)}"]
        if mode not in (0, 1):
            raise _CmeError(50)
        password = args[2] if len(args) > 2 else ""
        if self.pin is None or password != self.pin:
            if self.pin is None and mode == 1 and password.isdigit() and len(password) >= 4:
                self.pin = password  # a SIM without a PIN set takes the new one
            else:
                self._pin_attempts -= 1
                if self._pin_attempts <= 0:
                    self._sim_state = _SIM_PUK
                raise _CmeError(16)
        self._pin_attempts = 3
        self.pin_enabled = mode == 1
        return []

    def _at_cfun(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return [] if self.cfun_query_bare_ok else [f"+CFUN: {self._fun}"]
        if op == "test":
            return ["+CFUN: (0,1,4),(0-1)"]
        if op != "set":
            raise _Error(rest)
        fun = _int_arg(args, 0)
        reset = _int_arg(args, 1, 0)
        if fun not in (0, 1, 4) or reset not in (0, 1):
            raise _CmeError(50)
        if reset == 1:
            if fun != 1:
                raise _CmeError(3)
            self._resetting = True
            return []
        self._fun = fun
        self._registration_changed()
        if fun == 1:
            self._after(0.0, self._flush_pending)
        return []

    def _registration(self, name: str, rest: str) -> list[str]:
        op, args = self._op(rest)
        attr = {"+CREG": "creg_n", "+CGREG": "creg_n", "+CEREG": "cereg_n"}[name]
        if op == "test":
            return [f"{name}: (0-2)"]
        if op == "set":
            n = _int_arg(args, 0, 0)
            if n not in (0, 1, 2):
                raise _CmeError(50)
            if name != "+CGREG":
                setattr(self._settings, attr, n)
                self._reg_seen[name] = self._reg_stat()
            return []
        if op != "query":
            raise _Error(rest)
        n = getattr(self._settings, attr)
        stat = self._reg_stat()
        self._reg_seen[name] = stat
        loc = self._location() if n == 2 and stat in (1, 5) else ""
        return [f"{name}: {n},{stat}{loc}"]

    def _at_csq(self, rest: str) -> list[str]:
        op, _args = self._op(rest)
        if op == "test":
            return ["+CSQ: (0-31,99),(0-7,99)"]
        if op != "exec":
            raise _Error(rest)
        return ["+CSQ: 20,99" if self._reg_stat() in (1, 5) else "+CSQ: 99,99"]

    def _at_cops(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        names = (self.operator, "TB Mobile", _MCC_MNC)
        if op == "query":
            if self._reg_stat() not in (1, 5):
                return ["+COPS: 0"]
            fmt = self._settings.cops_format
            return [f'+COPS: 0,{fmt},"{names[fmt]}",7']
        if op == "test":
            self._need_sim()
            return [f'+COPS: (2,"{names[0]}","{names[1]}","{names[2]}",7),,(0-4),(0-2)']
        if op != "set":
            raise _Error(rest)
        mode = _int_arg(args, 0)
        if mode == 3:
            fmt = _int_arg(args, 1)
            if fmt not in (0, 1, 2):
                raise _CmeError(50)
            self._settings.cops_format = fmt
            return []
        if mode in (0, 1, 4):
            return []
        if mode == 2:
            raise _CmeError(3)
        raise _CmeError(50)

    def _at_cnum(self, rest: str) -> list[str]:
        if rest == "=?":
            return []
        self._need_sim()
        kind = 145 if self.own_number.startswith("+") else 129
        return [f'+CNUM: "","{self.own_number}",{kind}']

    def _at_csca(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return []
        self._need_sim_sms()
        if op == "query":
            return [f'+CSCA: "{self._csca}",{self._csca_type}']
        if op != "set" or not args or not args[0]:
            raise _CmsError(CMS_NOT_ALLOWED)
        self._csca = args[0]
        self._csca_type = _int_arg(args, 1, 145 if args[0].startswith("+") else 129)
        return []

    def _at_cmgf(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return ["+CMGF: 0"]
        if op == "test":
            return ["+CMGF: (0)"]
        # Text mode is deliberately unsupported: everything here speaks PDU mode.
        if op == "set" and _int_arg(args, 0, 0) == 0:
            return []
        raise _Error(rest)

    def _at_csms(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return ["+CSMS: 0,1,1,1"]
        if op == "test":
            return ["+CSMS: (0,1)"]
        if op == "set" and _int_arg(args, 0) in (0, 1):
            return ["+CSMS: 1,1,1"]
        raise _CmsError(CMS_NOT_ALLOWED)

    def _cpms_counts(self, mem: str) -> str:
        used = len(self._stores[mem])
        if self.faults.storage_full:
            used = self.storage_size
        return f"{used},{self.storage_size}"

    def _at_cpms(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return ['+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")']
        self._need_sim_sms()
        mems = self._settings.mems
        if op == "query":
            return ["+CPMS: " + ",".join(f'"{m}",{self._cpms_counts(m)}' for m in mems)]
        if op != "set" or not 1 <= len(args) <= 3:
            raise _CmsError(CMS_NOT_ALLOWED)
        chosen = [a.upper() for a in args]
        if any(m not in MEMORIES for m in chosen):
            raise _CmsError(CMS_NOT_ALLOWED)
        for i, m in enumerate(chosen):
            mems[i] = m
        self._after(0.0, self._flush_pending)
        return ["+CPMS: " + ",".join(self._cpms_counts(m) for m in mems)]

    def _at_cnmi(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return ["+CNMI: " + ",".join(str(v) for v in self._settings.cnmi)]
        if op == "test":
            return ["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)"]
        if op != "set":
            raise _Error(rest)
        current = self._settings.cnmi
        values = [_int_arg(args, i, current[i]) for i in range(5)] if len(args) <= 5 else []
        limits = (2, 3, 3, 2, 1)
        if not values or any(not 0 <= v <= hi for v, hi in zip(values, limits, strict=True)):
            raise _CmsError(CMS_NOT_ALLOWED)
        self._settings.cnmi = (values[0], values[1], values[2], values[3], values[4])
        return []

    def _at_csmp(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return ["+CSMP: " + ",".join(str(v) for v in self._settings.csmp)]
        if op == "test":
            return []
        if op != "set" or len(args) > 4:
            raise _Error(rest)
        cur = self._settings.csmp
        vals = [_int_arg(args, i, cur[i]) for i in range(4)]
        self._settings.csmp = (vals[0], vals[1], vals[2], vals[3])
        return []

    def _at_csdh(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return [f"+CSDH: {self._settings.csdh}"]
        if op == "test":
            return ["+CSDH: (0,1)"]
        self._settings.csdh = _int_arg(args, 0, 0)
        return []

    def _at_cgsms(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return [f"+CGSMS: {self._settings.cgsms}"]
        if op == "test":
            return ["+CGSMS: (0-3)"]
        value = _int_arg(args, 0, 0)
        if not 0 <= value <= 3:
            raise _CmeError(50)
        self._settings.cgsms = value
        return []

    def _at_cscs(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return [f'+CSCS: "{self._settings.cscs}"']
        if op == "test":
            return ['+CSCS: ("GSM","IRA","UCS2")']
        if op != "set" or not args or args[0].upper() not in ("GSM", "IRA", "UCS2"):
            raise _CmeError(50)
        self._settings.cscs = args[0].upper()
        return []

    def _at_cusd(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "query":
            return ["+CUSD: 0"]
        if op == "test":
            return ["+CUSD: (0-2)"]
        if op != "set":
            raise _Error(rest)
        n = _int_arg(args, 0, 0)
        if n not in (0, 1, 2):
            raise _CmeError(50)
        if len(args) < 2:
            return []
        self._need_sim()
        if self._reg_stat() not in (1, 5):
            raise _CmeError(30)
        code = args[1]
        ucs2 = self._settings.cscs == "UCS2"
        if ucs2:
            try:
                code = bytes.fromhex(code).decode("utf-16-be")
            except ValueError:
                raise _CmeError(50) from None
        answer = self.network.ussd.get(code)
        # The answer comes later, from the network, as a URC; 4: not supported by the network.
        if answer is None:
            self._urc("+CUSD: 4")
        else:
            text = answer.encode("utf-16-be").hex().upper() if ucs2 else answer
            self._urc(f'+CUSD: 0,"{text}",{72 if ucs2 else 15}')
        return []

    def _flag(self, name: str, attr: str, rest: str) -> list[str]:
        """The on/off settings that only matter for calls (caller ID, ring format, hang-up);
        SMS software sets them anyway, so they must be accepted and remembered."""
        op, args = self._op(rest)
        if op == "test":
            return [f"{name}: (0,1)"]
        if op == "query":
            value = getattr(self._settings, attr)
            # +CLIP? adds whether the network provides caller ID (1: it does).
            return [f"{name}: {value},1" if name == "+CLIP" else f"{name}: {value}"]
        if op == "set" and _int_arg(args, 0, 0) in (0, 1):
            setattr(self._settings, attr, _int_arg(args, 0, 0))
            return []
        raise _CmeError(50)

    def _listing(self, store: dict[int, tuple[int, str]], index: int, head: str) -> list[str]:
        stat, pdu_hex = store[index]
        raw = bytes.fromhex(pdu_hex)
        if stat == REC_UNREAD:
            store[index] = (REC_READ, pdu_hex)
        return [f"{head}{stat},,{_pdu_length(raw)}", pdu_hex]

    def _at_cmgl(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return ["+CMGL: (0-4)"]
        self._need_sim_sms()
        if op == "exec":
            wanted = REC_UNREAD
        elif op == "set":
            try:
                wanted = int(args[0])
            except ValueError:
                raise _CmsError(CMS_INVALID_PDU) from None
        else:
            raise _Error(rest)
        if not 0 <= wanted <= 4:
            raise _CmsError(CMS_INVALID_PDU)
        store = self._stores[self._settings.mems[0]]
        lines: list[str] = []
        for index in sorted(store):
            if wanted == 4 or store[index][0] == wanted:
                lines += self._listing(store, index, f"+CMGL: {index},")
        return lines

    def _index_arg(self, args: list[str]) -> int:
        try:
            index = int(args[0])
        except (ValueError, IndexError):
            raise _CmsError(CMS_INVALID_INDEX) from None
        if not 1 <= index <= self.storage_size:
            raise _CmsError(CMS_INVALID_INDEX)
        return index

    def _at_cmgr(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return []
        self._need_sim_sms()
        if op != "set":
            raise _Error(rest)
        index = self._index_arg(args)
        store = self._stores[self._settings.mems[0]]
        if index not in store:
            raise _CmsError(CMS_INVALID_INDEX)
        return self._listing(store, index, "+CMGR: ")

    def _at_cmgd(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return [f"+CMGD: (1-{self.storage_size}),(0-4)"]
        self._need_sim_sms()
        if op != "set":
            raise _Error(rest)
        flag = _int_arg(args, 1, 0) if len(args) > 1 else 0
        if not 0 <= flag <= 4:
            raise _CmsError(CMS_NOT_ALLOWED)
        store = self._stores[self._settings.mems[0]]
        if flag == 0:
            store.pop(self._index_arg(args), None)
        else:
            # delflag n deletes every message whose stat is below the nth boundary.
            doomed = {1: {REC_READ}, 2: {REC_READ, STO_SENT}, 3: {REC_READ, STO_SENT, STO_UNSENT}}
            for index in list(store):
                if flag == 4 or store[index][0] in doomed[flag]:
                    del store[index]
        self._after(0.0, self._flush_pending)
        return []

    def _at_cmgs(self, rest: str) -> list[str]:
        op, args = self._op(rest)
        if op == "test":
            return []
        self._need_sim_sms()
        if op != "set":
            raise _Error(rest)
        try:
            length = int(args[0])
        except (ValueError, IndexError):
            raise _CmsError(CMS_INVALID_PDU) from None
        if not 7 <= length <= 164:
            raise _CmsError(CMS_INVALID_PDU)
        self._prompt = _Prompt(length=length)
        return []
