"""The AT line discipline: gsmmodem's SerialComms with its known defects fixed.

We keep gsmmodem's command/response machinery (one RLock around the port, a response buffer
filled by a reader thread, an event that wakes the writer on the final result code) and replace
the parts that lose data:

* its reader decodes every line as strict UTF-8, so one stray byte from the modem raises inside
  the reader thread, which then dies without a word and every later command times out. Ours
  decodes with errors="replace" and survives anything but the port going away;
* it opens the port with rtscts and dsrdtr forced on, which hangs modems and adapters that do
  not wire those lines; ours takes both from the configuration;
* a URC (+CMTI, +CDSI, registration changes) that arrives while a command is waiting is
  appended to that command's response and never reported; ours takes URCs out of any response
  and hands them to the driver;
* when the port goes away mid-command the writer waits out its whole timeout; ours is woken
  at once and told the port is lost.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import serial
from gsmmodem.exceptions import TimeoutException
from gsmmodem.serial_comms import SerialComms

from appliance.sms.errors import ModemTimeout, PortLost

log = logging.getLogger(__name__)

# Final result codes that end a command's response (V.250 and 27.007/27.005, plus Huawei's).
FINAL = re.compile(
    r"^(OK|ERROR|NO CARRIER|COMMAND NOT SUPPORT|TOO MANY PARAMETERS|\+CM[ES] ERROR:.*)$"
)
# Unsolicited result codes the driver acts on. Registration lines are also the answers to
# AT+CREG? and friends, so they count as URCs only while no such query is waiting.
URC_PREFIXES = ("+CMTI:", "+CDSI:", "+CDS:", "+CREG:", "+CEREG:", "+CGREG:")
# Chatter some modems send at any time; none of it belongs in a command's response.
NOISE_PREFIXES = (
    "RING",
    "+CRING:",
    "+CLIP:",
    "+CUSD:",
    "^RSSI:",
    "^HCSQ:",
    "^MODE:",
    "^BOOT:",
    "^SRVST:",
    "^SIMST:",
    "^CEND:",
    "^SYSSTART",
    "+QIND:",
    "+QUSIM:",
    "+PACSP",
    "RDY",
    "SMS DONE",
    "PB DONE",
)
# A modem that never sends CR LF must not grow the buffer without end.
MAX_PENDING_BYTES = 8192

UrcHandler = Callable[[list[str]], None]
FatalHandler = Callable[[Exception], None]


class AtPort(SerialComms):  # type: ignore[misc]  # gsmmodem ships no type information
    """One serial port speaking AT. Thread-safe: every exchange holds the port's lock."""

    # Short read timeout so that close() (which joins the reader) returns quickly.
    timeout = 0.2

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        rtscts: bool,
        dsrdtr: bool,
        on_urc: UrcHandler,
        on_fatal: FatalHandler,
    ) -> None:
        super().__init__(port, baudrate, fatalErrorCallbackFunc=on_fatal)
        self.rtscts = rtscts
        self.dsrdtr = dsrdtr
        self._on_urc = on_urc
        self._pending: str | None = None
        self._cds_waiting: str | None = None
        self._cmt_skip = False
        self.lost = False
        self.serial: serial.Serial | None = None

    # -- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        """Open the port with the configured flow control and start the reader thread."""
        self.serial = serial.Serial(
            port=self.port,
            baudrate=self.baudrate,
            rtscts=self.rtscts,
            dsrdtr=self.dsrdtr,
            timeout=self.timeout,
            # Another program (ModemManager, a second Textbridge) on the same port would steal
            # responses and URCs; better to refuse to open.
            exclusive=True,
        )
        self.alive = True
        self.lost = False
        self.rxThread = threading.Thread(target=self._readLoop, name="modem-reader", daemon=True)
        self.rxThread.start()

    def close(self) -> None:
        self.alive = False
        thread = getattr(self, "rxThread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        if self.serial is not None:
            try:
                self.serial.close()
            except (OSError, serial.SerialException):
                log.debug("closing the modem port failed", exc_info=True)

    # -- commands -----------------------------------------------------------------------

    def command(self, text: str, timeout: float, *, prompt: bool = False) -> list[str]:
        """Send one AT command line; return every response line up to and including the final
        result code (or the "> " prompt when `prompt` is set)."""
        return self._exchange(text, "\r", timeout, prompt=prompt, label=_label(text))

    def send_data(self, text: str, timeout: float) -> list[str]:
        """Send the data that follows a "> " prompt, ended with Ctrl-Z."""
        return self._exchange(text, "\x1a", timeout, prompt=False, label="the message data")

    def write_raw(self, data: bytes) -> None:
        with self._txLock:
            self._check_alive()
            assert self.serial is not None
            try:
                self.serial.write(data)
            except (OSError, serial.SerialException) as exc:
                raise self._lose(exc) from None

    @property
    def lock(self) -> threading.RLock:
        """Held across a multi-step exchange (AT+CMGS, prompt, PDU) to keep it in one piece."""
        lock: threading.RLock = self._txLock
        return lock

    def _exchange(
        self, text: str, terminator: str, timeout: float, *, prompt: bool, label: str
    ) -> list[str]:
        with self._txLock:
            self._check_alive()
            self._pending = text.strip()
            try:
                lines: list[str] = SerialComms.write(
                    self,
                    text + terminator,
                    waitForResponse=True,
                    timeout=timeout,
                    expectedResponseTermSeq="> " if prompt else None,
                )
            except TimeoutException:
                self._check_alive()
                raise ModemTimeout(
                    f"the modem did not answer {label} within {timeout:g} seconds"
                ) from None
            except (OSError, serial.SerialException) as exc:
                raise self._lose(exc) from None
            finally:
                self._pending = None
            if not lines or not (lines[-1] == ">" or FINAL.match(lines[-1])):
                # Woken without a final result code: the reader lost the port.
                self._check_alive()
                raise ModemTimeout(f"the modem's answer to {label} ended early")
            return list(lines)

    def _check_alive(self) -> None:
        if not self.alive or self.serial is None:
            raise PortLost("the modem's serial port is gone (unplugged or reset)")

    def _lose(self, exc: BaseException) -> PortLost:
        self.alive = False
        self.lost = True
        return PortLost(f"the modem's serial port is gone ({exc})")

    # -- reading ------------------------------------------------------------------------

    def _readLoop(self) -> None:
        buffer = bytearray()
        try:
            while self.alive:
                assert self.serial is not None
                waiting = self.serial.in_waiting
                data = self.serial.read(waiting or 1)
                if not data:
                    continue
                buffer += data
                while True:
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        break
                    raw = bytes(buffer[:end])
                    del buffer[: end + 2]
                    self._safe_line(raw.decode("utf-8", errors="replace"), True)
                if self._expectResponseTermSeq and bytes(buffer).strip() == b">":
                    buffer.clear()
                    self._safe_line(">", False)
                if len(buffer) > MAX_PENDING_BYTES:
                    del buffer[:-MAX_PENDING_BYTES]
        except (OSError, serial.SerialException, TypeError) as exc:
            # pyserial raises TypeError when the port is closed under a read in progress.
            if not self.alive:
                return
            self.alive = False
            self.lost = True
            try:
                if self.serial is not None:
                    self.serial.close()
            except (OSError, serial.SerialException):
                pass
            event = self._responseEvent
            if event is not None:
                event.set()
            self.fatalErrorCallback(exc if isinstance(exc, Exception) else RuntimeError(exc))

    def _safe_line(self, line: str, check: bool) -> None:
        try:
            self._handleLineRead(line, check)
        except Exception:
            # A parsing bug must cost one line, never the reader thread.
            log.exception("modem reader failed on one line; continuing")

    def _handleLineRead(self, line: str, checkForResponseTerm: bool = True) -> None:
        line = line.strip()
        if not line:
            return
        if self._cds_waiting is not None:
            header, self._cds_waiting = self._cds_waiting, None
            self._dispatch([header, line])
            return
        if self._cmt_skip:
            # The body of a +CMT we never asked for; the message stays in the network's hands
            # only if we do not ack it, which we do not.
            self._cmt_skip = False
            return
        pending = self._pending
        if pending is not None and line.upper() == pending.upper():
            return  # echo (before ATE0 takes effect)
        if self._is_urc(line, pending):
            if line.startswith("+CDS:"):
                self._cds_waiting = line
            else:
                self._dispatch([line])
            return
        if line.startswith("+CMT:"):
            log.warning("the modem delivered an SMS directly (+CMT) despite AT+CNMI; ignored")
            self._cmt_skip = True
            return
        if line.startswith(NOISE_PREFIXES) and not _answers(line, pending):
            return
        event = self._responseEvent
        if event is not None and not event.is_set():
            self._response.append(line)
            if not checkForResponseTerm or FINAL.match(line):
                event.set()
        else:
            log.debug("ignored a line from the modem that no command was waiting for")

    def _is_urc(self, line: str, pending: str | None) -> bool:
        if not line.startswith(URC_PREFIXES):
            return False
        # Only a read command (AT+CREG?) is answered with these; during anything else,
        # including AT+CREG=2 itself, one is news from the network.
        prefix = line.split(":", 1)[0].upper()
        return pending is None or pending.upper() != f"AT{prefix}?"

    def _dispatch(self, lines: list[str]) -> None:
        self._on_urc(lines)


def _answers(line: str, pending: str | None) -> bool:
    """Whether `line` is the information response of the pending command (+CREG: to AT+CREG?)."""
    if pending is None or ":" not in line:
        return False
    prefix = line.split(":", 1)[0].upper()
    return pending.upper().startswith("AT" + prefix)


def _label(text: str) -> str:
    # Never the arguments: they can hold a PIN or a phone number.
    head = re.split(r"[=?]", text, maxsplit=1)[0]
    return head if head.upper().startswith("AT") else "a command"
