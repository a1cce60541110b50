"""Each known defect of python-gsmmodem-new, shown with the unmodified library against the
modem simulator (so the test proves the bug is real), next to our driver doing it right.

If a future release of the library fixes one of these, its "library" assertion fails: that is
the moment to look at whether our workaround is still needed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import serial
from gsmmodem.exceptions import TimeoutException
from gsmmodem.modem import GsmModem, SentSms, StatusReport
from gsmmodem.pdu import decodeSmsPdu, encodeSmsSubmitPdu
from gsmmodem.serial_comms import SerialComms

from appliance.config import ModemConfig
from appliance.sms import pdu as pdus
from appliance.sms.modem import MessageStored, Modem, ModemEvent

DEST = "+4915112345678"
SENDER = "+4917699887766"
EMOJI_TEXT = "Happy birthday 🎂🎉 from all of us 👨‍👩‍👧"
NOW_MS = 1_763_800_000_000


@contextmanager
def library(sim: Any, **kwargs: Any) -> Iterator[GsmModem]:
    """The unmodified gsmmodem GsmModem, connected to the simulator."""
    modem = GsmModem(sim.port, **kwargs)
    modem.connect()
    try:
        yield modem
    finally:
        modem.close()


@contextmanager
def thread_exceptions() -> Iterator[list[BaseException]]:
    """Exceptions that end threads (the library's reader dies this way)."""
    caught: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            caught.append(args.exc_value)

    threading.excepthook = hook
    try:
        yield caught
    finally:
        threading.excepthook = previous


class Driver:
    """Our driver, opened on the simulator, with the events it delivered."""

    def __init__(self, sim: Any, **config: Any) -> None:
        config.setdefault("command_timeout", 2.0)
        self.events: list[ModemEvent] = []
        self.modem = Modem(ModemConfig(port=sim.port, **config), on_event=self.events.append)

    async def __aenter__(self) -> Modem:
        await self.modem.open()
        return self.modem

    async def __aexit__(self, *exc: object) -> None:
        await self.modem.close()


# -- 1. characters outside the BMP ------------------------------------------------------


def test_library_ucs2_encoder_fails_on_emoji() -> None:
    with pytest.raises(ValueError):
        encodeSmsSubmitPdu(DEST, EMOJI_TEXT)


def test_library_ucs2_decoder_yields_lone_surrogates() -> None:
    [deliver] = pdus.encode_deliver(SENDER, "🎂 ok", timestamp_ms=NOW_MS, encoding="ucs2")
    text = decodeSmsPdu(deliver.hex())["text"]
    assert text == "\ud83c\udf82 ok"
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")
    assert pdus.decode(deliver).text == "🎂 ok"


async def test_library_send_sms_fails_on_emoji_and_ours_delivers_it(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    with library(sim) as lib, pytest.raises(ValueError):
        lib.sendSms(DEST, EMOJI_TEXT)
    assert sim.network.sent == []

    # Long enough for several parts: no part may end in half a surrogate pair.
    text = EMOJI_TEXT + " 🎈" * 60
    parts = pdus.encode_submit(DEST, text, concat_ref=5)
    assert len(parts) > 1
    async with Driver(sim) as modem:
        for part in parts:
            await modem.send_pdu(part)
    for sent in sim.network.sent:
        sent.text.encode("utf-8")  # raises on a lone surrogate
    assert "".join(s.text for s in sim.network.sent) == text


# -- 2. one non-UTF-8 byte kills the reader ----------------------------------------------


async def test_garbage_byte_kills_library_reader_but_not_ours(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    with thread_exceptions() as died, library(sim) as lib:
        sim.faults.garbage(b"\xff\xfe\r\n")
        lib.rxThread.join(timeout=5)
        assert not lib.rxThread.is_alive()
        assert any(isinstance(e, UnicodeDecodeError) for e in died)
        with pytest.raises(TimeoutException):
            lib.write("AT", timeout=1)

    async with Driver(sim) as modem:
        sim.faults.garbage(b"\xff\xfe\r\n")
        await asyncio.sleep(0.2)
        assert await modem.signal_percent() is not None
        assert modem.connected


# -- 3. a URC inside a command's response is swallowed -----------------------------------


async def test_urc_inside_a_response_is_lost_by_library_found_by_ours(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    received: list[Any] = []
    with library(sim, smsReceivedCallbackFunc=received.append) as lib:
        # Control: a +CMTI on its own, between responses, does reach the library's callback.
        sim.network.deliver(SENDER, "seen")
        wait_until(lambda: bool(received))
        assert [sms.text for sms in received] == ["seen"]
        received.clear()

        sim.network.notify = False  # stored without its own +CMTI...
        [index] = sim.network.deliver(SENDER, "hidden")
        sim.network.notify = True
        urc = f'+CMTI: "SM",{index}'
        sim.faults.urc_in_next_response(urc)  # ...which comes inside a response instead
        response = lib.write("AT+CSQ")
        assert urc in response  # taken for part of the answer to AT+CSQ
        time.sleep(1.0)
        assert received == []
    assert index in sim.storage

    driver = Driver(sim)
    async with driver as modem:
        await asyncio.sleep(0.3)
        driver.events.clear()
        sim.faults.urc_in_next_response(f'+CMTI: "SM",{index}')
        assert await modem.signal_percent() is not None
        await asyncio.sleep(0.3)
        stored = [e for e in driver.events if isinstance(e, MessageStored)]
        assert stored == [MessageStored("SM", index)]


# -- 4. flow control forced on -------------------------------------------------------------


async def test_flow_control_is_forced_on_by_library_configurable_in_ours(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    comms = SerialComms(sim.port)
    comms.connect()
    try:
        assert comms.serial.rtscts is True
        assert comms.serial.dsrdtr is True
    finally:
        comms.close()
    # Asking for it off is not even possible: the keyword collides with its own.
    with pytest.raises(TypeError):
        SerialComms(sim.port, rtscts=False).connect()

    for rtscts, dsrdtr in ((False, False), (True, False), (False, True)):
        driver = Driver(sim, rtscts=rtscts, dsrdtr=dsrdtr)
        async with driver as modem:
            port: serial.Serial = modem._port.serial  # type: ignore[union-attr]
            assert (port.rtscts, port.dsrdtr) == (rtscts, dsrdtr)
            assert await modem.signal_percent() is not None


# -- 5. AT+CFUN? answered with a bare OK -------------------------------------------------


async def test_bare_cfun_ok_breaks_library_connect_not_ours(
    modem_sim_factory: Callable[..., Any],
) -> None:
    normal = modem_sim_factory(pin=None)
    with library(normal) as lib:  # the same library connects to a modem that answers +CFUN:
        assert lib.alive

    sim = modem_sim_factory(pin=None, cfun_query_bare_ok=True)
    lib = GsmModem(sim.port)
    try:
        with pytest.raises(TypeError):
            lib.connect()
    finally:
        lib.close()

    async with Driver(sim) as modem:
        assert modem.connected
        assert "AT+CFUN?" in sim.commands


# -- 6. AT+CMGS and its PDU are two separate writes ------------------------------------


async def test_library_lets_a_command_into_the_pdu_ours_does_not(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    [part] = pdus.encode_submit(DEST, "interleaved", concat_ref=1)
    with library(sim) as lib:
        # Exactly what its sendSms does: one write for the command, a second for the PDU.
        lib.write(f"AT+CMGS={pdus.tpdu_length(part)}", timeout=5, expectedResponseTermSeq="> ")
        # Between the two, its lock is free: any other thread may write to the port now.
        other_got_lock: list[bool] = []
        outcome: list[Any] = []

        def other_thread() -> None:
            free = lib._txLock.acquire(blocking=False)
            other_got_lock.append(free)
            if free:
                lib._txLock.release()
                try:
                    outcome.append(lib.write("AT+CSQ", timeout=1))
                except TimeoutException:
                    outcome.append("no answer: the modem took it as message text")

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert other_got_lock == [True]
        assert outcome == ["no answer: the modem took it as message text"]
        # The modem may reject the corrupted PDU outright; what matters is what it sent.
        with suppress(Exception):
            lib.write(part.hex().upper(), timeout=10, writeTerm="\x1a")
    assert all(s.text != "interleaved" for s in sim.network.sent)

    async with Driver(sim) as modem:
        port = modem._port
        assert port is not None
        send_data = port.send_data
        free_in_between: list[bool] = []

        def observed(text: str, timeout: float) -> list[str]:
            # At the one moment the library leaves open (prompt received, PDU not yet
            # written), can another thread take the port?
            free_in_between.append(lock_is_free_for_another_thread(port.lock))
            return send_data(text, timeout)

        port.send_data = observed  # type: ignore[method-assign]
        await asyncio.gather(modem.send_pdu(part), modem.signal_percent(), modem.operator())
        assert free_in_between == [False]
    assert [s.text for s in sim.network.sent][-1] == "interleaved"


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lock_is_free_for_another_thread(lock: Any) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        got = lock.acquire(blocking=False)
        result.append(got)
        if got:
            lock.release()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return result == [True]


# -- 7. status reports ---------------------------------------------------------------------


def test_library_calls_a_temporary_status_failed() -> None:
    report_pdu = pdus.encode_status_report(
        7, DEST, 0x21, scts_ms=NOW_MS, discharge_ms=NOW_MS + 1000
    )
    fields = decodeSmsPdu(report_pdu.hex())
    assert fields["type"] == "SMS-STATUS-REPORT" and fields["status"] == 0x21
    holder = GsmModem("/dev/null")  # only to satisfy its weak reference; never opened
    sent = SentSms(DEST, "text", 7)
    sent.report = StatusReport(
        holder,
        0,
        fields["reference"],
        fields["number"],
        fields["time"],
        fields["discharge"],
        fields["status"],
    )
    assert sent.status == SentSms.FAILED  # the network is in fact still trying
    ours = pdus.decode(report_pdu)
    assert isinstance(ours, pdus.StatusReport)
    assert ours.state == "trying"


async def test_library_tracks_only_the_last_part_of_a_long_message(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    text = "A long message in plain GSM characters. " * 8
    reports: list[Any] = []
    with library(sim, smsStatusReportCallback=reports.append) as lib:
        sent = lib.sendSms(DEST, text)
        references = [s.reference for s in sim.network.sent]
        assert len(references) >= 3
        assert list(lib.sentSms.keys()) == [references[-1]]
        assert sent.reference == references[-1]
        # A report for the first part reaches the library but has nothing to update...
        sim.network.report(references[0], 0x00)
        wait_until(lambda: len(reports) == 1)
        assert reports[0].reference == references[0]
        assert sent.report is None
        # ...and "the phone is busy, still trying" for the last part marks the whole
        # message failed.
        sim.network.report(references[-1], 0x21)
        wait_until(lambda: sent.report is not None)
        assert sent.status == SentSms.FAILED
    # Ours hands back every part's reference for the store to match.
    sim.network.sent.clear()
    async with Driver(sim) as modem:
        ours = [await modem.send_pdu(p) for p in pdus.encode_submit(DEST, text, concat_ref=2)]
    assert ours == [s.reference for s in sim.network.sent]
    assert len(set(ours)) == len(ours)
