"""The async modem driver: AT over a serial port, safe to use from the event loop.

Every exchange with the modem runs on one dedicated executor thread, so commands are
serialized without any locking on the loop and the loop never blocks on the port. A reader
thread (see serial_port.AtPort) collects responses and unsolicited result codes; URCs become
ModemEvent values delivered on the loop through loop.call_soon_threadsafe.

The driver only moves PDUs: encoding, decoding, multipart and status-report matching live in
appliance.sms.pdu and the SMS line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import serial

from appliance.config import ModemConfig
from appliance.sms.errors import (
    AtError,
    CmeError,
    CmsError,
    ModemError,
    ModemTimeout,
    ModemUnavailable,
    PortLost,
    PromptTimeout,
    SimLocked,
)
from appliance.sms.serial_port import FINAL, AtPort
from appliance.tasks import wait_event

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StoredPdu:
    index: int
    status: int  # 0 unread, 1 read, 2 stored unsent, 3 stored sent (27.005 <stat>)
    pdu: str  # hex, including the SMSC address


@dataclass(frozen=True)
class ModemInfo:
    manufacturer: str
    model: str
    revision: str
    imei: str
    own_number: str | None
    port: str


@dataclass(frozen=True)
class MessageStored:
    storage: str
    index: int


@dataclass(frozen=True)
class StatusReportStored:
    storage: str
    index: int


@dataclass(frozen=True)
class StatusReportPdu:
    pdu: str


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Reconnected:
    rung: str


@dataclass(frozen=True)
class RegistrationChanged:
    registered: bool
    detail: str


ModemEvent = (
    MessageStored
    | StatusReportStored
    | StatusReportPdu
    | Disconnected
    | Reconnected
    | RegistrationChanged
)

# 27.007 <stat> for +CREG/+CEREG. 6/7 (SMS only) and 9/10 (CSFB not preferred) can send and
# receive SMS, which is all we need.
REGISTERED = frozenset({1, 5, 6, 7, 9, 10})
_REG_WORDS = {
    0: "not registered and not searching for a network",
    1: "registered on the home network",
    2: "searching for a network",
    3: "the network denied registration",
    4: "registration state unknown",
    5: "registered, roaming",
    6: "registered on the home network for SMS only",
    7: "registered for SMS only, roaming",
    8: "attached for emergency calls only",
    9: "registered on the home network",
    10: "registered, roaming",
}
# Which non-registered state tells a person the most.
_REG_RANK = {3: 0, 2: 1, 8: 2, 0: 3, 4: 4}

SIM_BUSY_CME = frozenset({14})
SIM_BUSY_CMS = frozenset({314, 515, 517})
PIN_RE = re.compile(r"[0-9]{4,8}")
HEX_RE = re.compile(r"[0-9A-Fa-f]+")

# How long the network may take to accept a PDU after Ctrl-Z (27.005 leaves it open; real
# modems take up to about a minute on a bad cell).
SEND_TIMEOUT = 60.0
PROBE_TIMEOUT = 2.0
PROBE_ATTEMPTS = 3
RESET_TIMEOUT = 30.0
REOPEN_TIMEOUT = 60.0
PIN_READY_TIMEOUT = 15.0


class Modem:
    """One USB modem. Open it, then use it from the event loop; close it when done."""

    def __init__(
        self,
        config: ModemConfig,
        *,
        on_event: Callable[[ModemEvent], None],
        pin: str | None = None,
        reopen_timeout: float = REOPEN_TIMEOUT,
        reset_timeout: float = RESET_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.config = config
        self._on_event = on_event
        self._pin = pin
        self._reopen_timeout = reopen_timeout
        self._reset_timeout = reset_timeout
        self._send_timeout = send_timeout
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: AtPort | None = None
        self._info: ModemInfo | None = None
        # A PIN that failed once is never sent again by this driver: each try burns one of
        # the SIM's few attempts, and three wrong ones lock it behind the PUK.
        self._failed_pins: set[str] = set()
        self._cereg_supported = True
        self._cnmi: str | None = None
        self._reg_lock = threading.Lock()
        self._reg: dict[str, int] = {}
        self._reg_reported: tuple[bool, str] | None = None
        self._reg_changed: asyncio.Event | None = None
        self._closing = False

    # -- properties ---------------------------------------------------------------------

    @property
    def info(self) -> ModemInfo | None:
        return self._info

    @property
    def connected(self) -> bool:
        port = self._port
        return port is not None and bool(port.alive) and self._info is not None

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> ModemInfo:
        self._loop = asyncio.get_running_loop()
        self._reg_changed = asyncio.Event()
        self._closing = False
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="modem-io"
            )
        return await self._call(self._open_sync)

    async def close(self) -> None:
        self._closing = True
        executor = self._executor
        if executor is None:
            return
        try:
            await self._call(self._close_port)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    # -- SIM ----------------------------------------------------------------------------

    async def enter_pin(self, pin: str) -> None:
        """Enter the SIM PIN once (from the setup page) and finish opening the modem."""
        if not PIN_RE.fullmatch(pin):
            raise ValueError("a SIM PIN is 4 to 8 digits")
        self._pin = pin
        if self._executor is None or self._loop is None:
            await self.open()
            return
        await self._call(self._enter_pin_sync, pin)

    async def sim_state(self) -> tuple[str, int | None]:
        return await self._call(self._sim_state_sync)

    # -- network ------------------------------------------------------------------------

    # The SMS line calls this with timeout=...; the name is part of the driver's API.
    async def wait_registered(self, timeout: float) -> bool:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = self._reg_changed
        while True:
            if changed is not None:
                changed.clear()
            if await self._call(self._query_registered):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if changed is None:
                await asyncio.sleep(min(1.0, remaining))
                continue
            await wait_event(changed, min(1.0, remaining))

    async def signal_percent(self) -> int | None:
        lines = await self._call(self._cmd, "AT+CSQ")
        match = _find(lines, r"\+CSQ:\s*(\d+)\s*,")
        if match is None:
            return None
        rssi = int(match.group(1))
        if rssi == 99 or rssi > 31:
            return None
        # 27.007: 0 is -113 dBm or less, 31 is -51 dBm or more, in 2 dB steps.
        return round(rssi * 100 / 31)

    async def operator(self) -> str | None:
        lines = await self._call(self._cmd, "AT+COPS?")
        match = _find(lines, r'\+COPS:\s*\d+\s*,\s*\d+\s*,\s*"([^"]*)"')
        if match is None or not match.group(1).strip():
            return None
        return match.group(1).strip()

    # -- storage ------------------------------------------------------------------------

    async def storage_usage(self) -> tuple[int, int]:
        lines = await self._call(self._cmd, "AT+CPMS?")
        match = _find(lines, r'\+CPMS:\s*"?[A-Z]*"?\s*,\s*(\d+)\s*,\s*(\d+)')
        if match is None:
            raise AtError("AT+CPMS?", lines, "the modem did not say how full its storage is")
        return int(match.group(1)), int(match.group(2))

    async def list_stored(self) -> list[StoredPdu]:
        lines = await self._call(self._cmd, "AT+CMGL=4", max(self.config.command_timeout, 30.0))
        return parse_listing(lines, "+CMGL:")

    async def read(self, index: int) -> StoredPdu | None:
        try:
            lines = await self._call(self._cmd, f"AT+CMGR={int(index)}")
        except CmsError as exc:
            if exc.code == 321:  # invalid memory index: nothing stored there
                return None
            raise
        found = parse_listing(lines, "+CMGR:", index=index)
        return found[0] if found else None

    async def delete(self, index: int) -> None:
        await self._call(self._cmd, f"AT+CMGD={int(index)}")

    # -- sending ------------------------------------------------------------------------

    async def send_pdu(self, pdu: bytes) -> int:
        """Send one SMS-SUBMIT (SMSC prefix included); return the TP-MR the network gave it.

        CmsError means the PDU certainly did not leave. Any other ModemError means it may
        have (the answer was lost), so the caller must not blindly resend.
        """
        length = tpdu_length(pdu)
        return await self._call(self._send_sync, length, pdu.hex().upper())

    # -- recovery -----------------------------------------------------------------------

    async def recover(self) -> str:
        """Walk the ladder until the modem answers; return the rung that worked."""
        rung = await self._call(self._recover_sync)
        log.info("modem recovered: %s", rung)
        self._emit(Reconnected(rung))
        return rung

    # == everything below runs on the executor thread ===================================

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        executor = self._executor
        if executor is None:
            raise ModemUnavailable("the modem is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, functools.partial(fn, *args))
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise ModemUnavailable("the modem was closed") from None
            raise

    def _cmd(self, text: str, timeout: float | None = None) -> list[str]:
        """One command; the information lines of its response (final code stripped)."""
        port = self._port
        if port is None:
            raise PortLost("the modem's port is not open")
        lines = port.command(text, timeout or self.config.command_timeout)
        return _check_final(text, lines)

    def _cmd_busy(self, text: str, attempts: int = 10) -> list[str]:
        """A command the SIM may refuse for a moment while it starts (SIM busy)."""
        for attempt in range(attempts):
            try:
                return self._cmd(text)
            except CmeError as exc:
                if exc.code not in SIM_BUSY_CME or attempt == attempts - 1:
                    raise
            except CmsError as exc:
                if exc.code not in SIM_BUSY_CMS or attempt == attempts - 1:
                    raise
            time.sleep(0.5)
        raise AssertionError("unreachable")  # pragma: no cover

    def _try(self, text: str) -> list[str] | None:
        """A command whose failure only means the modem lacks a feature."""
        try:
            return self._cmd(text)
        except (AtError, CmeError, CmsError):
            return None

    def _open_sync(self) -> ModemInfo:
        self._connect_port()
        try:
            return self._init()
        except (SimLocked, ModemUnavailable):
            self._close_port()
            raise
        except ModemError as exc:
            self._close_port()
            raise ModemUnavailable(
                f"the modem on {self.config.port} could not be set up ({exc})"
            ) from exc
        except BaseException:
            self._close_port()
            raise

    def _connect_port(self) -> None:
        self._close_port()
        port = AtPort(
            self.config.port,
            self.config.baudrate,
            rtscts=self.config.rtscts,
            dsrdtr=self.config.dsrdtr,
            on_urc=self._on_urc,
            on_fatal=self._on_fatal,
        )
        try:
            port.connect()
        except (OSError, serial.SerialException) as exc:
            if "lock" in str(exc).lower():
                raise ModemUnavailable(
                    f"another program is using the modem port {self.config.port} "
                    "(ModemManager, or a second Textbridge)"
                ) from None
            raise ModemUnavailable(
                f"cannot open the modem port {self.config.port} ({exc}); is the modem plugged in?"
            ) from None
        self._port = port

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def _sync(self) -> None:
        """Get the modem to a known, listening state: out of any half-typed PDU, answering."""
        port = self._port
        assert port is not None
        # ESC ends a "> " prompt left behind by an earlier crash without sending anything.
        port.write_raw(b"\x1b")
        time.sleep(0.1)
        if not self._probe():
            raise ModemUnavailable(f"the modem on {self.config.port} does not answer")

    def _probe(self) -> bool:
        timeout = min(PROBE_TIMEOUT, self.config.command_timeout)
        for _ in range(PROBE_ATTEMPTS):
            port = self._port
            if port is None or not port.alive:
                return False
            try:
                port.command("AT", timeout)
            except ModemTimeout:
                continue
            except PortLost:
                return False
            # Answers to commands sent while the modem was deaf may still be on their way;
            # let them arrive now so no later command takes them for its own.
            time.sleep(0.3)
            return True
        return False

    def _init(self) -> ModemInfo:
        self._sync()
        self._cmd("ATE0")
        self._cmd("AT+CMEE=1")
        self._unlock(self._pin)
        return self._init_after_unlock()

    def _init_after_unlock(self) -> ModemInfo:
        self._ensure_radio_on()
        info = self._identify()
        self._cmd_busy("AT+CMGF=0")
        self._set_storage()
        self._set_notifications()
        csmp = "AT+CSMP=49,167,0,0" if self.config.status_reports else "AT+CSMP=17,167,0,0"
        self._try(csmp)  # only matters in text mode; our PDUs carry TP-SRR themselves
        if self.config.smsc:
            kind = 145 if self.config.smsc.startswith("+") else 129
            self._cmd_busy(f'AT+CSCA="{self.config.smsc}",{kind}')
        self._try("AT+COPS=3,0")  # long alphanumeric operator names for operator()
        if self._try("AT+CREG=2") is None:
            self._try("AT+CREG=1")
        self._cereg_supported = self._try("AT+CEREG=2") is not None
        with self._reg_lock:
            self._reg.clear()
            self._reg_reported = None
        self._info = info
        log.info("modem ready: %s %s on %s", info.manufacturer, info.model, info.port)
        return info

    def _ensure_radio_on(self) -> None:
        # Some modems answer AT+CFUN? with a bare OK (gsmmodem crashes on that); only an
        # explicit minimum-functionality answer is acted on.
        lines = self._try("AT+CFUN?")
        match = _find(lines or [], r"\+CFUN:\s*(\d+)")
        if match is not None and int(match.group(1)) != 1:
            self._cmd("AT+CFUN=1", max(self.config.command_timeout, 15.0))

    def _identify(self) -> ModemInfo:
        def first(command: str, prefix: str) -> str:
            lines = self._try(command) or []
            for line in lines:
                text = line[len(prefix) :].strip() if line.startswith(prefix) else line.strip()
                # Quectel and SIMCom print "Revision: EC25EFAR06A06M4G".
                if text.lower().startswith("revision:"):
                    text = text[len("revision:") :].strip()
                if text:
                    return text.strip('"')
            return ""

        own: str | None = None
        match = _find(self._try("AT+CNUM") or [], r'\+CNUM:\s*"[^"]*"\s*,\s*"([+0-9]+)"')
        if match is not None:
            own = match.group(1)
        return ModemInfo(
            manufacturer=first("AT+CGMI", "+CGMI:"),
            model=first("AT+CGMM", "+CGMM:"),
            revision=first("AT+CGMR", "+CGMR:"),
            imei=first("AT+CGSN", "+CGSN:"),
            own_number=own,
            port=self.config.port,
        )

    def _set_storage(self) -> None:
        mem = f'"{self.config.storage}"'
        for args in ((mem, mem, mem), (mem, mem), (mem,)):
            try:
                self._cmd_busy("AT+CPMS=" + ",".join(args))
                return
            except (AtError, CmsError, CmeError) as exc:
                last = exc
        raise ModemUnavailable(f"the modem cannot use {self.config.storage} storage ({last})")

    def _set_notifications(self) -> None:
        # mt=1: store every message and announce it with +CMTI, never hand it over directly
        # with +CMT (an unacknowledged +CMT can be lost). ds=2: status reports likewise.
        self._cnmi = None
        for cnmi in ("2,1,0,2,0", "1,1,0,2,0", "2,1,0,0,0", "1,1,0,0,0"):
            try:
                self._cmd_busy("AT+CNMI=" + cnmi)
            except (AtError, CmsError, CmeError):
                continue
            self._cnmi = cnmi
            if not cnmi.endswith("2,0"):
                log.warning("the modem cannot announce status reports; they are found by sweeps")
            return
        log.warning("the modem refuses new-message notifications; relying on sweeps")

    # -- SIM ----------------------------------------------------------------------------

    def _cpin(self) -> str:
        for attempt in range(10):
            try:
                lines = self._cmd("AT+CPIN?", max(self.config.command_timeout, 5.0))
            except CmeError as exc:
                if exc.code == 10:
                    return "NO SIM"
                if exc.code == 13:
                    return "SIM FAILURE"
                if exc.code in SIM_BUSY_CME and attempt < 9:
                    time.sleep(0.5)
                    continue
                if exc.code in (11, 12):  # some modems answer the query with the error itself
                    return "SIM PIN" if exc.code == 11 else "SIM PUK"
                raise
            match = _find(lines, r"\+CPIN:\s*(.+)")
            if match is None:
                raise AtError("AT+CPIN?", lines, "the modem did not say whether the SIM is ready")
            return match.group(1).strip().strip('"')
        raise AssertionError("unreachable")  # pragma: no cover

    def _sim_state_sync(self) -> tuple[str, int | None]:
        if self._port is None or not self._port.alive:
            self._connect_port()
            self._sync()
            self._cmd("ATE0")
            self._cmd("AT+CMEE=1")
        state = self._cpin()
        if state == "READY":
            return state, None
        return state, self._attempts_left(state)

    def _unlock(self, pin: str | None) -> None:
        state = self._cpin()
        if state == "READY":
            return
        if state != "SIM PIN":
            # A PUK (or a phone-lock code) is for a person with the SIM's card, never for us.
            raise SimLocked(state, self._attempts_left(state))
        if pin is None:
            raise SimLocked("SIM PIN", self._attempts_left("SIM PIN"))
        if not PIN_RE.fullmatch(pin):
            raise SimLocked("SIM PIN", self._attempts_left("SIM PIN"), "it is not 4 to 8 digits")
        if pin in self._failed_pins:
            raise SimLocked("SIM PIN", self._attempts_left("SIM PIN"), "it was refused before")
        try:
            self._cmd(f'AT+CPIN="{pin}"', max(self.config.command_timeout, 15.0))
        except (CmeError, AtError) as exc:
            self._failed_pins.add(pin)
            after = self._cpin()
            needs = after if after in ("SIM PUK", "SIM PIN") else "SIM PIN"
            reason = exc.reason if isinstance(exc, CmeError) else "the modem refused it"
            raise SimLocked(needs, self._attempts_left(needs), reason) from None
        deadline = time.monotonic() + PIN_READY_TIMEOUT
        while self._cpin() != "READY":
            if time.monotonic() > deadline:
                raise ModemUnavailable("the SIM took the PIN but did not become ready")
            time.sleep(0.5)

    def _enter_pin_sync(self, pin: str) -> None:
        if self._port is None or not self._port.alive:
            self._connect_port()
        try:
            self._sync()
            self._cmd("ATE0")
            self._cmd("AT+CMEE=1")
            self._unlock(pin)
            self._init_after_unlock()
        except BaseException:
            self._close_port()
            raise

    def _attempts_left(self, needs: str) -> int | None:
        """Attempts left for the code the SIM wants, from whichever query the modem knows."""
        puk = needs.endswith("PUK")
        # 27.007 +CPINR: <code>,<retries>[,<default retries>]
        for query in (f'AT+CPINR="{needs}"', "AT+CPINR"):
            for line in self._try(query) or []:
                match = re.match(r'\+CPINR:\s*"?([^",]+)"?\s*,\s*(\d+)', line)
                if match and match.group(1).strip().upper() == needs.upper():
                    return int(match.group(2))
        # Quectel: +QPINC: "SC",<pin retries>,<puk retries>
        for line in self._try("AT+QPINC?") or []:
            match = re.match(r'\+QPINC:\s*"SC"\s*,\s*(\d+)\s*,\s*(\d+)', line)
            if match:
                return int(match.group(2) if puk else match.group(1))
        # Huawei: ^CPIN: <code>,[<times>],<puk_times>,<pin_times>,<puk2_times>,<pin2_times>
        for line in self._try("AT^CPIN?") or []:
            match = re.match(r"\^CPIN:\s*[^,]*,\s*\d*\s*,\s*(\d+)\s*,\s*(\d+)", line)
            if match:
                return int(match.group(1) if puk else match.group(2))
        return None

    # -- registration -------------------------------------------------------------------

    def _query_registered(self) -> bool:
        lines = self._cmd("AT+CREG?")
        match = _find(lines, r"\+CREG:\s*\d+\s*,\s*(\d+)")
        if match is not None:
            self._set_reg("CREG", int(match.group(1)))
        if self._cereg_supported:
            try:
                lines = self._cmd("AT+CEREG?")
            except (AtError, CmeError):
                self._cereg_supported = False
            else:
                match = _find(lines, r"\+CEREG:\s*\d+\s*,\s*(\d+)")
                if match is not None:
                    self._set_reg("CEREG", int(match.group(1)))
        with self._reg_lock:
            return any(stat in REGISTERED for stat in self._reg.values())

    def _set_reg(self, domain: str, stat: int) -> None:
        with self._reg_lock:
            self._reg[domain] = stat
            stats = list(self._reg.values())
            registered = [s for s in stats if s in REGISTERED]
            if registered:
                now = (True, _REG_WORDS.get(registered[0], "registered"))
            else:
                worst = min(stats, key=lambda s: _REG_RANK.get(s, 9))
                now = (False, _REG_WORDS.get(worst, f"registration state {worst}"))
            if now == self._reg_reported:
                return
            self._reg_reported = now
        self._emit(RegistrationChanged(*now))

    # -- sending ------------------------------------------------------------------------

    def _send_sync(self, length: int, pdu_hex: str) -> int:
        port = self._port
        if port is None:
            raise PortLost("the modem's port is not open")
        # One lock across command, prompt and data: nothing may reach the port in between, or
        # it would become part of the PDU.
        with port.lock:
            command = f"AT+CMGS={length}"
            try:
                lines = port.command(command, self.config.command_timeout, prompt=True)
            except ModemTimeout as exc:
                # If the prompt comes late, the modem would take our next command as message
                # text; ESC makes it drop the half-started message instead.
                port.write_raw(b"\x1b")
                raise PromptTimeout(f"{exc}; the message was not sent") from None
            if lines[-1] != ">":
                _check_final(command, lines)
                raise AtError(command, lines, "the modem did not ask for the message data")
            lines = port.send_data(pdu_hex, self._send_timeout)
            info = _check_final("AT+CMGS", lines)
        match = _find(info, r"\+CMGS:\s*(\d+)")
        if match is None:
            raise AtError("AT+CMGS", lines, "the modem sent the message without a reference")
        return int(match.group(1))

    # -- recovery -----------------------------------------------------------------------

    def _recover_sync(self) -> str:
        port = self._port
        if port is not None and port.alive:
            try:
                if self._probe():
                    self._reinit_if_forgotten()
                    return "probe"
                port.write_raw(b"\x1b")
                time.sleep(0.3)
                if self._probe():
                    self._reinit_if_forgotten()
                    return "escape"
                if self._reset():
                    return "reset"
            except SimLocked:
                raise
            except ModemError as exc:
                log.info("modem reset did not help (%s); reopening the port", exc)
        return self._reopen()

    def _reinit_if_forgotten(self) -> None:
        # A brown-out can reboot the modem without USB noticing: it answers AT again, but has
        # forgotten AT+CNMI (no more +CMTI), echo and maybe the PIN. Its notification setting
        # is the cheapest thing to check.
        expected = self._cnmi
        if expected is None:
            return
        try:
            lines = self._cmd("AT+CNMI?")
        except ModemTimeout:
            raise
        except ModemError:
            lines = []
        match = _find(lines, r"\+CNMI:\s*([0-9,\s]+)$")
        if match is not None and match.group(1).replace(" ", "") == expected:
            return
        log.warning("the modem lost its settings (it restarted); initialising it again")
        self._init()

    def _reset(self) -> bool:
        port = self._port
        assert port is not None
        try:
            port.command("AT+CFUN=1,1", max(self.config.command_timeout, 15.0))
        except (ModemTimeout, AtError, CmeError, CmsError):
            pass  # a wedged modem may still act on it; see whether it comes back
        except PortLost:
            return False  # rebooted with a USB re-enumeration: the reopen rung follows
        deadline = time.monotonic() + self._reset_timeout
        time.sleep(1.0)
        while time.monotonic() < deadline:
            current = self._port
            if current is None or not current.alive:
                return False
            if self._probe():
                self._init()
                return True
        return False

    def _reopen(self) -> str:
        self._close_port()
        path = self.config.port
        deadline = time.monotonic() + self._reopen_timeout
        last: Exception | None = None
        while not self._closing:
            # After a USB re-enumeration the stable path is a new symlink to a new tty; it
            # reappears only once udev has run.
            if os.path.exists(path):
                try:
                    self._connect_port()
                    self._init()
                    return "reopen"
                except SimLocked:
                    raise
                except ModemError as exc:
                    last = exc
                    self._close_port()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        why = f" ({last})" if last else ""
        raise ModemUnavailable(
            f"the modem did not come back on {path}{why}; check that it is plugged in"
        )

    # == reader thread ==================================================================

    def _on_urc(self, lines: list[str]) -> None:
        head = lines[0]
        match = re.match(r'\+(CMTI|CDSI):\s*"?([A-Za-z]*)"?\s*,\s*(\d+)', head)
        if match:
            kind, storage, index = match.group(1), match.group(2), int(match.group(3))
            if kind == "CMTI":
                self._emit(MessageStored(storage, index))
            else:
                self._emit(StatusReportStored(storage, index))
            return
        if head.startswith("+CDS:"):
            if len(lines) > 1 and HEX_RE.fullmatch(lines[1]):
                self._emit(StatusReportPdu(lines[1].upper()))
            return
        match = re.match(r"\+(CREG|CEREG|CGREG):\s*(\d+)", head)
        if match:
            if match.group(1) != "CGREG":  # GPRS attach says nothing about SMS
                self._set_reg(match.group(1), int(match.group(2)))
            return
        log.debug("unhandled URC %s", head.split(":", 1)[0])

    def _on_fatal(self, exc: Exception) -> None:
        if self._closing:
            return
        log.warning("modem port lost: %s", exc)
        self._emit(Disconnected("the modem's serial port went away (unplugged or reset)"))

    def _emit(self, event: ModemEvent) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            log.debug("event loop closed; dropped %s", type(event).__name__)

    def _deliver(self, event: ModemEvent) -> None:
        if isinstance(event, RegistrationChanged) and self._reg_changed is not None:
            self._reg_changed.set()
        try:
            self._on_event(event)
        except Exception:
            log.exception("modem event handler failed on %s", type(event).__name__)


# -- parsing helpers (pure) ------------------------------------------------------------


def tpdu_length(pdu: bytes) -> int:
    """AT+CMGS's <length>: the PDU's octets after the SMSC address (27.005 3.5.1)."""
    if not pdu:
        raise ValueError("empty PDU")
    length = len(pdu) - 1 - pdu[0]
    if length < 7 or length > 175:
        raise ValueError(f"not an SMS-SUBMIT PDU ({len(pdu)} octets, SMSC part {pdu[0]})")
    return length


def _check_final(command: str, lines: list[str]) -> list[str]:
    """Raise for an error result code; otherwise the information lines."""
    if not lines:
        raise AtError(command, lines, f"the modem gave no answer to {_name(command)}")
    final = lines[-1]
    body = lines[:-1]
    if final == "OK":
        return body
    match = re.match(r"\+(CM[ES]) ERROR:\s*(\d+)", final)
    if match:
        code = int(match.group(2))
        if match.group(1) == "CMS":
            raise CmsError(code, _name(command))
        raise CmeError(code, _name(command))
    if FINAL.match(final):
        raise AtError(_name(command), lines, f"the modem answered {final} to {_name(command)}")
    raise AtError(_name(command), lines, f"the modem gave an unexpected answer to {_name(command)}")


def _name(command: str) -> str:
    return re.split(r"[=?]", command, maxsplit=1)[0]


def _find(lines: list[str], pattern: str) -> re.Match[str] | None:
    regex = re.compile(pattern)
    for line in lines:
        match = regex.match(line)
        if match:
            return match
    return None


def parse_listing(lines: list[str], prefix: str, *, index: int | None = None) -> list[StoredPdu]:
    """+CMGL (or +CMGR) headers each followed by one PDU line; anything else is skipped.

    Modems pad, reorder, and sometimes drop lines; one odd line costs one entry, never the
    whole listing (the sweep comes back for anything missed).
    """
    found: list[StoredPdu] = []
    header = re.compile(re.escape(prefix) + r"\s*(\d+)\s*(?:,\s*(\d+))?(?:.*,\s*(\d+))?\s*$")
    pending: tuple[int, int] | None = None
    for line in lines:
        text = line.strip()
        match = header.match(text)
        if match:
            if prefix == "+CMGR:":
                # +CMGR: <stat>,[<alpha>],<length>
                pending = (index if index is not None else -1, int(match.group(1)))
            elif match.group(2) is not None:
                pending = (int(match.group(1)), int(match.group(2)))
            else:
                pending = None
            if pending is not None and match.group(3) == "0":
                # An empty PDU has no line of its own; taken as it is, it is quarantined and
                # deleted, where skipping it would block its slot for good.
                found.append(StoredPdu(index=pending[0], status=pending[1], pdu=""))
                pending = None
            continue
        if pending is not None and HEX_RE.fullmatch(text):
            # However short or odd its length: the SMS line quarantines what it cannot decode
            # and deletes it, where skipping it here would leave it on the SIM forever.
            found.append(StoredPdu(index=pending[0], status=pending[1], pdu=text.upper()))
        pending = None
    return found
