"""The modem simulator, driven the way the appliance drives a modem: real pyserial on its pty."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from appliance.sim.modem import ModemSimulator
from appliance.sms import pdu

SENDER = "+4915112345678"
DEST = "+4915187654321"
FINAL = ("OK", "ERROR", "+CME ERROR:", "+CMS ERROR:")


class Client:
    """A minimal AT client: write a line, read until a final result code."""

    def __init__(self, port: str) -> None:
        self.port = serial.Serial(port, 115200, timeout=0.05)
        self.buf = b""
        self.urcs: list[str] = []

    def close(self) -> None:
        self.port.close()

    def _fill(self) -> None:
        self.buf += self.port.read(max(1, self.port.in_waiting))

    def raw(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._fill()
        out, self.buf = self.buf, b""
        return out

    def wait_for(self, needle: bytes, timeout: float = 3.0) -> bytes:
        end = time.monotonic() + timeout
        while needle not in self.buf:
            if time.monotonic() > end:
                raise TimeoutError(f"no {needle!r} in {self.buf!r}")
            self._fill()
        head, _, self.buf = self.buf.partition(needle)
        return head + needle

    def lines(self, data: bytes) -> list[str]:
        return [ln for ln in re.split(r"[\r\n]+", data.decode("latin-1")) if ln]

    def cmd(self, line: str, timeout: float = 3.0) -> list[str]:
        """Information and final lines of one command (echo, if on, is the first line)."""
        self.port.write(line.encode() + b"\r")
        return self.response(timeout)

    def response(self, timeout: float = 3.0) -> list[str]:
        """Lines up to and including the first final result code (or the "> " prompt);
        whatever follows stays buffered for the next read."""
        end = time.monotonic() + timeout
        while True:
            pos = 0
            while True:
                nl = self.buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                line = self.buf[pos:nl].decode("latin-1").strip("\r")
                if line.startswith(FINAL):
                    taken, self.buf = self.buf[: nl + 2], self.buf[nl + 2 :]
                    return self.lines(taken)
                pos = nl + 2
            if self.buf.endswith(b"\r\n> "):
                taken, self.buf = self.buf, b""
                return [*self.lines(taken[:-2]), "> "]
            if time.monotonic() > end:
                raise TimeoutError(f"no final result code in {self.buf!r}")
            self._fill()

    def send_pdu(self, hexpdu: str, length: int | None = None) -> list[str]:
        raw = bytes.fromhex(hexpdu)
        n = pdu.tpdu_length(raw) if length is None else length
        prompt = self.cmd(f"AT+CMGS={n}")
        assert prompt[-1] == "> ", prompt
        self.port.write(hexpdu.encode() + b"\x1a")
        return self.response()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(sim: ModemSimulator, *, echo: bool = False) -> Client:
        c = Client(sim.port)
        clients.append(c)
        if not echo:
            assert c.cmd("ATE0")[-1] == "OK"
        assert c.cmd("AT+CMEE=1")[-1] == "OK"
        return c

    yield make
    for c in clients:
        c.close()


def submit(text: str, dest: str = DEST, *, status: bool = False) -> list[str]:
    return [
        p.hex().upper() for p in pdu.encode_submit(dest, text, concat_ref=7, request_status=status)
    ]


def test_echo_result_codes_and_cmee(modem_sim: ModemSimulator) -> None:
    c = Client(modem_sim.port)
    try:
        c.port.write(b"AT\r")
        # Echo first, then V1 framing: exactly what a stick sends after power-on.
        assert c.wait_for(b"OK\r\n") == b"AT\r\r\nOK\r\n"
        assert c.cmd("AT+CMEE=0") == ["AT+CMEE=0", "OK"]
        assert c.cmd("AT+NOPE") == ["AT+NOPE", "ERROR"]
        assert c.cmd("ATE0") == ["ATE0", "OK"]
        assert c.cmd("AT+NOPE") == ["ERROR"]
        assert c.cmd("AT+CMEE=1") == ["OK"]
        assert c.cmd("AT+NOPE") == ["+CME ERROR: 4"]
        assert c.cmd("AT+CMEE=2") == ["OK"]
        assert c.cmd("AT+NOPE") == ["+CME ERROR: operation not supported"]
        assert c.cmd("AT+CMEE?") == ["+CMEE: 2", "OK"]
        # Several commands on one line, basic and extended, answered in order.
        assert c.cmd("ATE0V1;+CMEE=1;+CSQ;+CMGF?") == ["+CSQ: 20,99", "+CMGF: 0", "OK"]
        # Text mode is not offered; PDU mode is.
        assert c.cmd("AT+CMGF=1") == ["ERROR"]
        assert c.cmd("AT+CMGF=0") == ["OK"]
        assert c.cmd("ATI") == ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G", "OK"]
        assert c.cmd("AT+CGSN") == ["867000000000001", "OK"]
        # Noise before "AT" is ignored, as modems hunt for the attention sequence.
        assert c.cmd("\x00\x01xxAT") == ["OK"]
        # ATZ restores factory settings: echo comes back.
        assert c.cmd("ATZ") == ["OK"]
        assert c.cmd("AT") == ["AT", "OK"]
    finally:
        c.close()
    assert modem_sim.commands[:2] == ["AT", "AT+CMEE=0"]


def test_settings_are_remembered(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    c = connect(modem_sim)
    assert c.cmd("AT+CMGS=?") == ["OK"], "a test command must not open a prompt"
    assert c.cmd("AT+CLIP=1;+CLIP?;+CRC?") == ["+CLIP: 1,1", "+CRC: 0", "OK"]
    assert c.cmd("AT+CSMP=49,167,0,0;+CSMP?") == ["+CSMP: 49,167,0,0", "OK"]
    assert c.cmd('AT+CSCS="UCS2";+CSCS?') == ['+CSCS: "UCS2"', "OK"]
    assert c.cmd('AT+CSCS="KOI8"') == ["+CME ERROR: 50"]
    assert c.cmd("AT+CGSMS=1;+CGSMS?") == ["+CGSMS: 1", "OK"]
    assert c.cmd("AT+CSDH=1;+CSDH?") == ["+CSDH: 1", "OK"]
    assert c.cmd("AT+CMEE=7") == ["+CME ERROR: 50"]
    # AT&F puts factory values back.
    assert c.cmd("AT&F") == ["OK"]
    assert c.cmd("AT+CLIP?") == ["AT+CLIP?", "+CLIP: 0,1", "OK"]


def test_pin_puk_and_attempts(
    modem_sim_factory: Callable[..., ModemSimulator], connect: Callable[..., Client]
) -> None:
    sim = modem_sim_factory(pin="1234")
    c = connect(sim)
    assert c.cmd("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert c.cmd("AT+CMGL=4") == ["+CMS ERROR: 311"]
    assert c.cmd("AT+CNUM") == ["+CME ERROR: 11"]
    assert c.cmd("AT+CREG?") == ["+CREG: 0,0", "OK"]
    assert c.cmd("AT+QPINC?")[0] == '+QPINC: "SC",3,10'
    assert c.cmd('AT+CPIN="0000"') == ["+CME ERROR: 16"]
    assert c.cmd("AT+QPINC?")[0] == '+QPINC: "SC",2,10'
    assert c.cmd('AT+CPIN="1111"') == ["+CME ERROR: 16"]
    assert c.cmd('AT+CPINR="SIM PIN"') == ['+CPINR: "SIM PIN",1,3', "OK"]
    assert c.cmd('AT+CPIN="2222"') == ["+CME ERROR: 16"]
    assert "+CPIN: SIM PUK" in c.lines(c.raw(0.2))
    assert c.cmd("AT+CPIN?") == ["+CPIN: SIM PUK", "OK"]
    # The right PIN no longer helps: the SIM wants its PUK.
    assert c.cmd('AT+CPIN="1234"') == ["+CME ERROR: 50"]
    assert c.cmd('AT+CPIN="00000000","1234"') == ["+CME ERROR: 16"]
    assert c.cmd("AT+QPINC?")[0] == '+QPINC: "SC",0,9'
    assert c.cmd('AT+CPIN="12345678","4321"') == ["OK"]
    assert c.lines(c.raw(0.2)) == ["+CPIN: READY", "+QIND: SMS DONE"]
    assert c.cmd("AT+CPIN?") == ["+CPIN: READY", "OK"]
    assert c.cmd("AT+QPINC?")[0] == '+QPINC: "SC",3,10'
    assert c.cmd("AT+CREG?") == ["+CREG: 0,1", "OK"]
    assert c.cmd('AT+CPIN="4321"') == ["+CME ERROR: 3"]
    assert c.cmd('AT+CLCK="SC",2') == ["+CLCK: 1", "OK"]

    # A power cycle locks the SIM again, with the new PIN.
    c.close()
    sim.faults.unplug()
    sim.faults.replug()
    c = connect(sim)
    assert c.cmd("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert c.cmd('AT+CPIN="1234"') == ["+CME ERROR: 16"]
    assert c.cmd('AT+CPIN="4321"') == ["OK"]
    c.raw(0.2)
    # Turning the PIN lock off takes the current PIN.
    assert c.cmd('AT+CLCK="SC",0,"4321"') == ["OK"]
    assert c.cmd('AT+CLCK="SC",2') == ["+CLCK: 0", "OK"]


def test_registration_signal_and_operator(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    assert c.cmd("AT+CREG=2;+CEREG=2") == ["OK"]
    assert c.cmd("AT+CREG?") == ['+CREG: 2,1,"1A2B","01C2D3E4",7', "OK"]
    assert c.cmd("AT+CEREG?") == ['+CEREG: 2,1,"1A2B","01C2D3E4",7', "OK"]
    assert c.cmd("AT+CSQ") == ["+CSQ: 20,99", "OK"]
    assert c.cmd("AT+COPS?") == ['+COPS: 0,0,"Textbridge Mobile",7', "OK"]
    assert c.cmd("AT+COPS=3,2;+COPS?") == ['+COPS: 0,2,"26299",7', "OK"]
    assert c.cmd("AT+CNUM") == ['+CNUM: "","+4915100000001",145', "OK"]
    assert c.cmd("AT+CSCA?") == ['+CSCA: "+4915200000000",145', "OK"]
    assert c.cmd('AT+CSCA="+4917722000000",145;+CSCA?') == ['+CSCA: "+4917722000000",145', "OK"]
    assert c.cmd("AT+CFUN?") == ["+CFUN: 1", "OK"]

    modem_sim.network.registered = False
    urcs = c.lines(c.raw(0.3))
    assert urcs == ["+CREG: 2", "+CEREG: 2"]
    assert c.cmd("AT+CREG?") == ["+CREG: 2,2", "OK"]
    assert c.cmd("AT+CSQ") == ["+CSQ: 99,99", "OK"]
    assert c.cmd("AT+COPS?") == ["+COPS: 0", "OK"]
    [part] = submit("no coverage")
    assert c.send_pdu(part) == ["+CMS ERROR: 331"]
    assert modem_sim.network.sent == []

    assert c.cmd("AT+CREG=1") == ["OK"]
    modem_sim.network.registered = True
    assert c.lines(c.raw(0.3)) == ["+CREG: 1", '+CEREG: 1,"1A2B","01C2D3E4",7']
    assert c.send_pdu(part) == ["+CMGS: 0", "OK"]

    # USSD: the answer arrives from the network after the OK.
    assert c.cmd('AT+CUSD=1,"*100#",15') == ["OK"]
    assert c.lines(c.raw(0.3)) == ['+CUSD: 0,"Guthaben: 5,00 EUR",15']
    assert c.cmd('AT+CSCS="UCS2";+CUSD=1,"002A0031003000300023",15') == ["OK"]
    [ucs2] = c.lines(c.raw(0.3))
    assert bytes.fromhex(ucs2.split('"')[1]).decode("utf-16-be") == "Guthaben: 5,00 EUR"
    assert c.cmd('AT+CSCS="GSM";+CUSD=1,"*999#",15') == ["OK"]
    assert c.lines(c.raw(0.3)) == ["+CUSD: 4"]

    # Roaming is registered (stat 5): texts still go out.
    modem_sim.network.roaming = True
    assert c.lines(c.raw(0.3)) == ["+CREG: 5", '+CEREG: 5,"1A2B","01C2D3E4",7']
    assert c.send_pdu(part) == ["+CMGS: 1", "OK"]
    modem_sim.network.roaming = False
    c.raw(0.3)

    # Radio off (CFUN=4) deregisters too.
    assert c.cmd("AT+CFUN=4;+CREG?") == ["+CREG: 1,0", "OK"]
    assert c.lines(c.raw(0.3)) == ["+CREG: 0", "+CEREG: 0"]
    assert c.cmd("AT+CFUN=1;+CREG?") == ["+CREG: 1,1", "OK"]


def test_cfun_query_bare_ok_option(
    modem_sim_factory: Callable[..., ModemSimulator], connect: Callable[..., Client]
) -> None:
    sim = modem_sim_factory(cfun_query_bare_ok=True)
    assert connect(sim).cmd("AT+CFUN?") == ["OK"]


def test_storage_is_finite_and_the_network_retries(
    modem_sim_factory: Callable[..., ModemSimulator], connect: Callable[..., Client]
) -> None:
    sim = modem_sim_factory(storage_size=3)
    c = connect(sim)
    assert c.cmd('AT+CPMS="SM","SM","SM"') == ["+CPMS: 0,3,0,3,0,3", "OK"]
    indexes = [i for n in range(5) for i in sim.network.deliver(SENDER, f"text {n}")]
    assert indexes == [1, 2, 3]
    assert sim.network.pending == 2
    assert c.lines(c.raw(0.3)) == [f'+CMTI: "SM",{i}' for i in (1, 2, 3)]
    assert c.cmd("AT+CPMS?") == ['+CPMS: "SM",3,3,"SM",3,3,"SM",3,3', "OK"]

    # Freeing a slot lets the network deliver the next waiting text, in order.
    assert c.cmd("AT+CMGD=2") == ["OK"]
    assert c.lines(c.raw(0.3)) == ['+CMTI: "SM",2']
    assert sim.network.pending == 1
    assert pdu.decode(sim.storage[2][1]).text == "text 3"  # type: ignore[union-attr]
    assert c.cmd("AT+CMGD=1,4") == ["OK"]
    assert c.lines(c.raw(0.3)) == ['+CMTI: "SM",1']
    assert sim.network.pending == 0
    assert c.cmd("AT+CPMS?") == ['+CPMS: "SM",1,3,"SM",1,3,"SM",1,3', "OK"]

    # Forced full (a SIM full of messages the appliance cannot see) holds texts back as well.
    sim.faults.storage_full = True
    assert sim.network.deliver(SENDER, "held") == []
    assert c.cmd("AT+CPMS?") == ['+CPMS: "SM",3,3,"SM",3,3,"SM",3,3', "OK"]
    sim.faults.storage_full = False
    assert c.lines(c.raw(0.3)) == ['+CMTI: "SM",2']
    assert c.cmd("AT+CPMS?") == ['+CPMS: "SM",2,3,"SM",2,3,"SM",2,3', "OK"]

    # The phone memory is a separate store.
    assert c.cmd('AT+CPMS="ME","ME","ME"') == ["+CPMS: 0,3,0,3,0,3", "OK"]
    assert sim.network.deliver(SENDER, "to the phone memory") == [1]
    assert c.lines(c.raw(0.3)) == ['+CMTI: "ME",1']
    assert c.cmd('AT+CPMS="XX"') == ["+CMS ERROR: 302"]


def test_list_read_delete(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    c = connect(modem_sim)
    ts = 1_700_000_000_000
    [first] = modem_sim.network.deliver(SENDER, "first", timestamp_ms=ts)
    [second] = modem_sim.network.deliver("+4915100000099", "zweite Nachricht €", timestamp_ms=ts)
    c.raw(0.2)

    listed = c.cmd("AT+CMGL=0")
    assert listed[-1] == "OK"
    heads, pdus = listed[0:-1:2], listed[1:-1:2]
    assert [h.split(",")[:2] for h in heads] == [["+CMGL: 1", "0"], ["+CMGL: 2", "0"]]
    for head, hexpdu in zip(heads, pdus, strict=True):
        assert int(head.rsplit(",", 1)[1]) == pdu.tpdu_length(bytes.fromhex(hexpdu))
    decoded = [pdu.decode(p) for p in pdus]
    assert [(d.sender, d.text, d.timestamp_ms) for d in decoded] == [  # type: ignore[union-attr]
        (SENDER, "first", ts),
        ("+4915100000099", "zweite Nachricht €", ts),
    ]
    # Listing marked them read: nothing unread is left.
    assert c.cmd("AT+CMGL=0") == ["OK"]
    assert [ln.split(",")[1] for ln in c.cmd("AT+CMGL=1")[0:-1:2]] == ["1", "1"]

    modem_sim.network.deliver(SENDER, "third")
    c.raw(0.2)
    read = c.cmd("AT+CMGR=3")
    assert read[0].startswith("+CMGR: 0,,") and read[-1] == "OK"
    assert pdu.decode(read[1]).text == "third"  # type: ignore[union-attr]
    assert c.cmd("AT+CMGR=3")[0].startswith("+CMGR: 1,,")
    assert modem_sim.storage[3][0] == 1

    assert c.cmd(f"AT+CMGD={first}") == ["OK"]
    assert c.cmd(f"AT+CMGR={first}") == ["+CMS ERROR: 321"]
    assert c.cmd("AT+CMGR=99") == ["+CMS ERROR: 321"]
    assert sorted(modem_sim.storage) == [second, 3]
    assert c.cmd("AT+CMGD=1,1") == ["OK"]  # all read messages
    assert modem_sim.storage == {}
    assert c.cmd("AT+CMGL=4") == ["OK"]


def test_send_prompt_reference_length_and_escape(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    [one] = submit("one")
    [two] = submit("two")
    assert c.send_pdu(one) == ["+CMGS: 0", "OK"]
    assert c.send_pdu(two) == ["+CMGS: 1", "OK"]
    assert [(s.dest, s.text, s.reference) for s in modem_sim.network.sent] == [
        (DEST, "one", 0),
        (DEST, "two", 1),
    ]
    # <length> must match the TPDU, or the modem refuses it.
    assert c.send_pdu(one, length=pdu.tpdu_length(bytes.fromhex(one)) + 1) == ["+CMS ERROR: 304"]
    assert c.cmd("AT+CMGS=10")[-1] == "> "
    c.port.write(b"0011ZZ\x1a")
    assert c.response() == ["+CMS ERROR: 304"]
    # ESC abandons the message; the modem listens to commands again.
    assert c.cmd(f"AT+CMGS={pdu.tpdu_length(bytes.fromhex(one))}")[-1] == "> "
    c.port.write(one.encode() + b"\x1b")
    assert c.cmd("AT") == ["OK"]
    assert len(modem_sim.network.sent) == 2

    # The network takes its time to accept a part; +CMGS comes only then.
    modem_sim.network.submit_delay = 0.4
    started = time.monotonic()
    assert c.send_pdu(two) == ["+CMGS: 2", "OK"]
    assert time.monotonic() - started >= 0.4
    modem_sim.network.submit_delay = 0.0

    long_text = "Lorem ipsum dolor sit amet, " * 12
    parts = submit(long_text, status=True)
    assert len(parts) == 3
    refs = [int(c.send_pdu(p)[0].split(": ")[1]) for p in parts]
    assert refs == [3, 4, 5]
    assert modem_sim.network.sent_messages() == [
        (DEST, "one"),
        (DEST, "two"),
        (DEST, "two"),
        (DEST, long_text),
    ]
    assert all(s.request_status for s in modem_sim.network.sent[3:])
    # TP-MR wraps at 255 like the modem's counter.
    for _ in range(249):
        assert c.send_pdu(one)[-1] == "OK"
    assert c.send_pdu(one) == ["+CMGS: 255", "OK"]
    assert c.send_pdu(one) == ["+CMGS: 0", "OK"]


def test_new_message_indications(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    c = connect(modem_sim)
    assert c.cmd("AT+CNMI=2,1,0,2,0") == ["OK"]
    assert c.cmd("AT+CNMI?") == ["+CNMI: 2,1,0,2,0", "OK"]
    [index] = modem_sim.network.deliver(SENDER, "stored")
    assert c.lines(c.raw(0.3)) == [f'+CMTI: "SM",{index}']

    # mt=0: stored silently.
    assert c.cmd("AT+CNMI=2,0,0,2,0") == ["OK"]
    [index] = modem_sim.network.deliver(SENDER, "silent")
    assert c.raw(0.3) == b""
    assert index in modem_sim.storage

    # mt=2: routed straight to the client as +CMT, not stored.
    assert c.cmd("AT+CNMI=2,2,0,0,0") == ["OK"]
    before = dict(modem_sim.storage)
    assert modem_sim.network.deliver(SENDER, "direct") == []
    urc = c.lines(c.raw(0.3))
    assert urc[0].startswith("+CMT: ,")
    assert int(urc[0].split(",")[1]) == pdu.tpdu_length(bytes.fromhex(urc[1]))
    assert pdu.decode(urc[1]).text == "direct"  # type: ignore[union-attr]
    assert modem_sim.storage == before
    assert c.cmd("AT+CNMI=9") == ["+CMS ERROR: 302"]


def test_multipart_delivery(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    c = connect(modem_sim)
    text = "Grüße aus Berlin 🎉 " * 8
    first = modem_sim.network.deliver(SENDER, text)
    second = modem_sim.network.deliver(SENDER, "x" * 200)
    assert len(first) == 3 and len(second) == 2
    assert c.lines(c.raw(0.3)) == [f'+CMTI: "SM",{i}' for i in first + second]
    decoded = [pdu.decode(modem_sim.storage[i][1]) for i in first + second]
    concats = [d.concat for d in decoded]  # type: ignore[union-attr]
    assert all(cc is not None for cc in concats)
    assert [(cc.total, cc.seq) for cc in concats] == [(3, 1), (3, 2), (3, 3), (2, 1), (2, 2)]  # type: ignore[union-attr]
    refs = {cc.ref for cc in concats}  # type: ignore[union-attr]
    assert len(refs) == 2, "each message gets its own concatenation reference"
    assert "".join(d.text for d in decoded[:3]) == text  # type: ignore[union-attr]


def test_status_reports_cds_and_cdsi(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    [part] = submit("report me", status=True)
    assert c.cmd("AT+CNMI=2,1,0,1,0") == ["OK"]
    assert c.send_pdu(part) == ["+CMGS: 0", "OK"]
    modem_sim.network.report(0, 0x00)
    head, body = c.lines(c.raw(0.3))
    assert head == f"+CDS: {pdu.tpdu_length(bytes.fromhex(body))}"
    report = pdu.decode(body)
    assert isinstance(report, pdu.StatusReport)
    assert (report.reference, report.recipient, report.status) == (0, DEST, 0x00)

    assert c.cmd("AT+CNMI=2,1,0,2,0") == ["OK"]
    modem_sim.network.report(0, 0x46)
    [urc] = c.lines(c.raw(0.3))
    assert urc.startswith('+CDSI: "SM",')
    index = int(urc.split(",")[1])
    listed = c.cmd("AT+CMGL=4")
    assert listed[0].startswith(f"+CMGL: {index},0,,")
    stored = pdu.decode(listed[1])
    assert isinstance(stored, pdu.StatusReport) and stored.status == 0x46

    # auto_report answers every sent part by itself.
    modem_sim.network.auto_report = 0x00
    modem_sim.network.report_delay = 0.1
    assert c.send_pdu(part) == ["+CMGS: 1", "OK"]
    [urc] = c.lines(c.raw(0.5))
    assert urc.startswith('+CDSI: "SM",')
    got = pdu.decode(modem_sim.storage[int(urc.split(",")[1])][1])
    assert isinstance(got, pdu.StatusReport) and got.reference == 1
    # No report for a part that did not ask for one (TP-SRR clear).
    [quiet] = submit("no report wanted")
    assert c.send_pdu(quiet) == ["+CMGS: 2", "OK"]
    assert c.raw(0.5) == b""
    # ds=0: reports are not routed to the client at all.
    assert c.cmd("AT+CNMI=2,1,0,0,0") == ["OK"]
    stored = dict(modem_sim.storage)
    modem_sim.network.report(1, 0x00)
    assert c.raw(0.3) == b""
    assert modem_sim.storage == stored
    with pytest.raises(KeyError):
        modem_sim.network.report(77)


def test_fault_hang(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    c = connect(modem_sim)
    modem_sim.faults.hang(0.8)
    c.port.write(b"AT\r")
    assert c.raw(0.5) == b""
    time.sleep(0.4)
    # What was typed while hung is lost; a fresh command is answered.
    assert c.cmd("AT") == ["OK"]
    modem_sim.faults.hang(None)
    c.port.write(b"AT\r")
    assert c.raw(0.5) == b""
    [index] = modem_sim.network.deliver(SENDER, "queued while hung")
    modem_sim.faults.hang(0)
    assert f'+CMTI: "SM",{index}' in c.lines(c.raw(0.3))
    assert c.cmd("AT") == ["OK"]


def test_fault_unplug_and_replug(modem_sim: ModemSimulator, connect: Callable[..., Client]) -> None:
    link = Path(modem_sim.port)
    old_tty = os.readlink(link)
    c = connect(modem_sim)
    modem_sim.faults.unplug()
    assert not link.exists() and not link.is_symlink()
    with pytest.raises(serial.SerialException):
        for _ in range(20):
            c.port.write(b"AT\r")
            c.port.read(64)
    c.close()
    # While unplugged the network cannot deliver; it keeps the text.
    assert modem_sim.network.deliver(SENDER, "while unplugged") == []
    assert modem_sim.network.pending == 1
    modem_sim.faults.replug()
    assert os.readlink(link) != old_tty
    assert modem_sim.network.pending == 0
    c = connect(modem_sim)
    listed = c.cmd("AT+CMGL=4")
    assert pdu.decode(listed[1]).text == "while unplugged"  # type: ignore[union-attr]


def test_fault_garbage_urc_in_response_and_cms_error(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    modem_sim.faults.garbage(b"\xff\xfe\r\n")
    assert c.raw(0.2) == b"\xff\xfe\r\n"

    modem_sim.faults.urc_in_next_response('+CMTI: "SM",5')
    assert c.cmd("AT+CSQ") == ["+CSQ: 20,99", '+CMTI: "SM",5', "OK"]
    assert c.cmd("AT+CSQ") == ["+CSQ: 20,99", "OK"]

    [part] = submit("rejected twice")
    modem_sim.faults.cms_error_next(332, command="CMGS", count=2)
    assert c.send_pdu(part) == ["+CMS ERROR: 332"]
    assert c.send_pdu(part) == ["+CMS ERROR: 332"]
    assert c.send_pdu(part) == ["+CMGS: 0", "OK"]
    assert len(modem_sim.network.sent) == 1
    modem_sim.faults.cms_error_next(500, command="CMGL")
    assert c.cmd("AT+CMGL=4") == ["+CMS ERROR: 500"]
    assert c.cmd("AT+CMGL=4") == ["OK"]


def test_fault_slow_and_stuck_prompt(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    modem_sim.faults.slow(0.4)
    started = time.monotonic()
    assert c.cmd("AT") == ["OK"]
    assert time.monotonic() - started >= 0.4
    modem_sim.faults.slow(0)

    modem_sim.faults.stuck_prompt()
    c.port.write(b"AT\r")
    assert c.raw(0.4) == b"", "a modem inside a prompt takes commands as message text"
    c.port.write(b"\x1b")
    assert c.cmd("AT") == ["OK"]
    # Ctrl-Z out of a stuck prompt sends the garbage typed so far, which the modem rejects.
    modem_sim.faults.stuck_prompt()
    c.port.write(b"AT+CSQ\r\x1a")
    assert c.response() == ["+CMS ERROR: 304"]
    assert modem_sim.network.sent == []


def test_reset_goes_quiet_then_boots(
    modem_sim_factory: Callable[..., ModemSimulator], connect: Callable[..., Client]
) -> None:
    sim = modem_sim_factory(pin="1234")
    sim.reset_delay = 0.5
    c = connect(sim)
    assert c.cmd('AT+CPIN="1234"') == ["OK"]
    c.raw(0.2)
    assert c.cmd("AT+CFUN=1,1") == ["OK"]
    c.port.write(b"AT\r")
    assert c.raw(0.3) == b""
    boot = c.lines(c.raw(0.6))
    assert boot == ["RDY", "+CFUN: 1", "+CPIN: SIM PIN"]
    # Settings are back to factory values: echo is on again, the SIM is locked again.
    assert c.cmd("AT+CPIN?") == ["AT+CPIN?", "+CPIN: SIM PIN", "OK"]


def test_output_while_no_client_is_lost(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    c.close()
    time.sleep(0.2)
    [index] = modem_sim.network.deliver(SENDER, "nobody listening")
    time.sleep(0.2)
    c = Client(modem_sim.port)
    try:
        # Like a closed USB port: the +CMTI is gone, the message itself is in storage.
        assert c.raw(0.3) == b""
        assert c.cmd("AT") == ["OK"]
        assert index in modem_sim.storage
    finally:
        c.close()


def test_malformed_pdu_is_listed_as_received(
    modem_sim: ModemSimulator, connect: Callable[..., Client]
) -> None:
    c = connect(modem_sim)
    index = modem_sim.network.deliver_pdu("0791947106004034040C9194710600")
    c.raw(0.2)
    assert c.cmd(f"AT+CMGR={index}") == ["+CMGR: 0,,7", "0791947106004034040C9194710600", "OK"]
    with pytest.raises(ValueError):
        modem_sim.network.deliver_pdu("not hex")


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cli_control_server_and_network_client(tmp_path: Path) -> None:
    link = tmp_path / "ttyDemo"
    control = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "TEXTBRIDGE_SIM_CONTROL": control}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "modem-sim", "--link", str(link), "--control", control],
        stdout=subprocess.PIPE,
        text=True,
    )

    def network(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "appliance", "network", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        assert proc.stdout is not None
        assert "control on" in proc.stdout.readline()
        c = Client(str(link))
        try:
            assert "storage index 1" in network("send", "--from", SENDER, "--text", "hi there")
            assert c.cmd("ATE0")[-1] == "OK"
            listed = c.cmd("AT+CMGL=4")
            assert pdu.decode(listed[1]).text == "hi there"  # type: ignore[union-attr]
            [part] = submit("hello from the appliance")
            assert c.send_pdu(part)[0] == "+CMGS: 0"
            assert network("sent") == f"{DEST}\treference 0\thello from the appliance\n"
            assert "reference 0" in network("report", "--reference", "0", "--status", "0")
            # A two-part text: its line names both parts' references, as `report` takes them.
            long = "x" * 200
            for part in submit(long):
                assert c.send_pdu(part)[0].startswith("+CMGS: ")
            assert network("sent").splitlines()[1] == f"{DEST}\treferences 1,2\t{long}"
            # The network's own reports: on (the demo's default), then off.
            assert c.cmd("AT+CNMI=2,1,0,2,0") == ["OK"]
            said = network("auto-report", "--status", "0", "--delay", "0.1")
            assert "status 0x00" in said
            [reported] = submit("report me", status=True)
            assert c.send_pdu(reported)[0] == "+CMGS: 3"
            [urc] = c.lines(c.raw(0.6))
            assert urc.startswith('+CDSI: "SM",')
            assert "no status reports" in network("auto-report", "--off")
            assert c.send_pdu(reported)[0] == "+CMGS: 4"
            assert c.lines(c.raw(0.6)) == []
            assert '"sent": 5' in network("status")
            base = f"http://{control}"
            assert _post(base + "/fault", {"fault": "registered", "value": False}) == (200, {})
            assert c.cmd("AT+CSQ") == ["+CSQ: 99,99", "OK"]
            assert _post(base + "/fault", {"fault": "registered"}) == (200, {})
            assert _post(base + "/fault", {"fault": "explode"})[0] == 400
            assert _post(base + "/deliver", {"text": "no sender"})[0] == 400
        finally:
            c.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not link.exists()


def test_control_rejects_non_loopback() -> None:
    from appliance.sim.network_cli import parse_control

    assert parse_control("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_control("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_control("0.0.0.0:9000")
    with pytest.raises(ValueError):
        parse_control("nonsense")
