"""The async modem driver against the modem simulator, over a real pty with real pyserial."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ModemConfig
from appliance.sms import pdu as pdus
from appliance.sms.errors import (
    CmeError,
    CmsError,
    ModemError,
    ModemTimeout,
    ModemUnavailable,
    PromptTimeout,
    SimLocked,
    classify_cms,
    cme_reason,
)
from appliance.sms.modem import (
    Disconnected,
    MessageStored,
    Modem,
    ModemEvent,
    Reconnected,
    RegistrationChanged,
    StatusReportPdu,
    StatusReportStored,
    StoredPdu,
    parse_listing,
    tpdu_length,
)

DEST = "+4915112345678"
SENDER = "+4917699887766"


class Events:
    """Collects driver events and the thread each arrived on."""

    def __init__(self) -> None:
        self.items: list[ModemEvent] = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def __call__(self, event: ModemEvent) -> None:
        self.items.append(event)
        self.threads.add(threading.get_ident())
        self.changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait_for(self, kind: type[Any], timeout: float = 5.0) -> Any:
        async def wait() -> Any:
            while True:
                found = self.of(kind)
                if found:
                    return found[-1]
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout)


def config_for(port: str, **kw: Any) -> ModemConfig:
    kw.setdefault("command_timeout", 2.0)
    return ModemConfig(port=port, **kw)


@pytest.fixture
async def opened(modem_sim: Any) -> Any:
    events = Events()
    modem = Modem(config_for(modem_sim.port), on_event=events, pin="1234")
    await modem.open()
    yield modem, modem_sim, events
    await modem.close()


def cmd_count(sim: Any, prefix: str) -> int:
    return sum(1 for c in sim.commands if c.upper().startswith(prefix.upper()))


# -- opening and the SIM ---------------------------------------------------------------


async def test_open_initialises_for_stored_pdu_mode(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin=None, own_number="+4915100000001")
    events = Events()
    modem = Modem(config_for(sim.port), on_event=events)
    try:
        info = await modem.open()
        assert modem.connected
        assert info.port == sim.port
        assert (info.manufacturer, info.model, info.imei) == ("Quectel", "EC25", sim.imei)
        assert info.revision and not info.revision.lower().startswith("revision")
        assert info.own_number == "+4915100000001"
        commands = [c.upper() for c in sim.commands]
        for expected in (
            "ATE0",
            "AT+CMEE=1",
            "AT+CPIN?",
            "AT+CMGF=0",
            'AT+CPMS="SM","SM","SM"',
            "AT+CNMI=2,1,0,2,0",
            "AT+CSMP=49,167,0,0",
            "AT+CREG=2",
            "AT+CEREG=2",
        ):
            assert expected in commands, expected
        # Store-and-notify only: a +CMT direct delivery could be lost in a crash.
        assert not any(c.startswith(("AT+CNMI=2,2", "AT+CNMI=1,2")) for c in commands)
        assert commands.index("AT+CMEE=1") < commands.index("AT+CPIN?")
        assert not any(c.startswith("AT+CSCA=") for c in commands)
    finally:
        await modem.close()
    assert not modem.connected


async def test_open_sets_smsc_and_storage_from_config(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    modem = Modem(
        config_for(sim.port, smsc="+4917722000000", storage="ME", status_reports=False),
        on_event=Events(),
    )
    try:
        await modem.open()
    finally:
        await modem.close()
    commands = [c.upper() for c in sim.commands]
    assert 'AT+CSCA="+4917722000000",145' in commands
    assert 'AT+CPMS="ME","ME","ME"' in commands
    assert "AT+CSMP=17,167,0,0" in commands


async def test_pin_is_entered_once(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin="1234")
    modem = Modem(config_for(sim.port), on_event=Events(), pin="1234")
    try:
        await modem.open()
        assert await modem.sim_state() == ("READY", None)
    finally:
        await modem.close()
    assert cmd_count(sim, 'AT+CPIN="') == 1


async def test_locked_sim_without_pin_says_so(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin="1234")
    modem = Modem(config_for(sim.port), on_event=Events())
    with pytest.raises(SimLocked) as caught:
        await modem.open()
    assert caught.value.needs == "SIM PIN"
    assert caught.value.attempts_left == 3
    assert "PIN" in str(caught.value) and "3 attempts left" in str(caught.value)
    assert cmd_count(sim, 'AT+CPIN="') == 0
    assert not modem.connected
    await modem.close()


async def test_wrong_pin_is_tried_only_once(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin="1234")
    modem = Modem(config_for(sim.port), on_event=Events(), pin="9999")
    with pytest.raises(SimLocked) as first:
        await modem.open()
    assert first.value.needs == "SIM PIN"
    assert first.value.attempts_left == 2
    assert "not accepted" in str(first.value)
    # Opening again (as a supervisor would) must not burn a second attempt.
    with pytest.raises(SimLocked) as second:
        await modem.open()
    assert second.value.attempts_left == 2
    with pytest.raises(SimLocked):
        await modem.enter_pin("9999")
    assert cmd_count(sim, 'AT+CPIN="') == 1
    # A different PIN from a person is allowed, and works.
    await modem.enter_pin("1234")
    assert modem.connected
    assert await modem.sim_state() == ("READY", None)
    await modem.close()


async def test_puk_is_never_attempted(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin="1234", puk="12345678")
    for wrong in ("1111", "2222", "3333"):
        modem = Modem(config_for(sim.port), on_event=Events(), pin=wrong)
        with pytest.raises(SimLocked):
            await modem.open()
        await modem.close()
    tries = cmd_count(sim, 'AT+CPIN="')
    assert tries == 3
    modem = Modem(config_for(sim.port), on_event=Events(), pin="1234")
    with pytest.raises(SimLocked) as caught:
        await modem.open()
    assert caught.value.needs == "SIM PUK"
    assert "PUK" in str(caught.value)
    assert await modem.sim_state() == ("SIM PUK", caught.value.attempts_left)
    with pytest.raises(SimLocked):
        await modem.enter_pin("1234")
    await modem.close()
    assert cmd_count(sim, 'AT+CPIN="') == tries


async def test_enter_pin_rejects_non_digits(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin="1234")
    modem = Modem(config_for(sim.port), on_event=Events())
    with pytest.raises(ValueError):
        await modem.enter_pin('1234"\rAT+CFUN=0')
    await modem.close()
    assert cmd_count(sim, "AT+CFUN=0") == 0


async def test_port_in_use_by_another_program_is_refused(opened: Any) -> None:
    modem, sim, _events = opened
    second = Modem(config_for(sim.port), on_event=Events())
    with pytest.raises(ModemUnavailable, match="another program"):
        await second.open()
    await second.close()
    # The first one never noticed.
    assert await modem.signal_percent() is not None


async def test_missing_port_is_unavailable(tmp_path: Path) -> None:
    modem = Modem(config_for(str(tmp_path / "no-such-tty")), on_event=Events())
    with pytest.raises(ModemUnavailable, match="plugged in"):
        await modem.open()
    await modem.close()


# -- network -----------------------------------------------------------------------------


async def test_registration_wait_and_events(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin=None)
    sim.network.registered = False
    events = Events()
    modem = Modem(config_for(sim.port), on_event=events)
    try:
        await modem.open()
        assert await modem.wait_registered(0.3) is False

        async def register_later() -> None:
            await asyncio.sleep(0.5)
            sim.network.registered = True

        task = asyncio.create_task(register_later())
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await modem.wait_registered(10.0) is True
        assert loop.time() - started < 5.0
        await task
        changed = await events.wait_for(RegistrationChanged)
        assert changed.registered is True
        assert "registered" in changed.detail
    finally:
        await modem.close()


async def test_signal_and_operator(modem_sim_factory: Callable[..., Any]) -> None:
    sim = modem_sim_factory(pin=None, operator="Vodafone.de")
    modem = Modem(config_for(sim.port), on_event=Events())
    try:
        await modem.open()
        signal = await modem.signal_percent()
        assert signal is not None and 0 <= signal <= 100
        assert await modem.operator() == "Vodafone.de"
    finally:
        await modem.close()


# -- storage -----------------------------------------------------------------------------


async def test_list_read_delete(opened: Any) -> None:
    modem, sim, _events = opened
    first = sim.network.deliver(SENDER, "hello there")
    second = sim.network.deliver(SENDER, "and again")
    stored = await modem.list_stored()
    assert sorted(s.index for s in stored) == sorted(first + second)
    texts = {pdus.decode(s.pdu).text for s in stored}  # type: ignore[union-attr]
    assert texts == {"hello there", "and again"}
    used, total = await modem.storage_usage()
    assert used == 2 and total == 30

    one = await modem.read(first[0])
    assert isinstance(one, StoredPdu) and one.index == first[0]
    assert pdus.decode(one.pdu).text == "hello there"  # type: ignore[union-attr]

    await modem.delete(first[0])
    assert await modem.read(first[0]) is None
    assert [s.index for s in await modem.list_stored()] == second
    assert (await modem.storage_usage())[0] == 1


async def test_new_message_event_arrives_on_the_loop(opened: Any) -> None:
    _modem, sim, events = opened
    indexes = sim.network.deliver(SENDER, "ping")
    event = await events.wait_for(MessageStored)
    assert event.index == indexes[0]
    assert events.threads == {threading.get_ident()}


def test_listing_parser_is_tolerant() -> None:
    pdu_a = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
    lines = [
        "+CMGL: 1,0,,24",
        pdu_a,
        "+CMGL: 2,1,,3",  # header without its PDU line
        "+CMGL: garbage",
        "ZZ not hex",
        '+CMGL: 5,1,"",24',
        pdu_a.lower(),
        "\ufffd\ufffd",
        "+CMGL: 7,0,,1",
        "ABC",  # truncated: still listed, so the SMS line can quarantine and delete it
    ]
    found = parse_listing(lines, "+CMGL:")
    assert found == [StoredPdu(1, 0, pdu_a), StoredPdu(5, 1, pdu_a), StoredPdu(7, 0, "ABC")]
    assert parse_listing(["+CMGR: 1,,24", pdu_a], "+CMGR:", index=7) == [StoredPdu(7, 1, pdu_a)]
    assert parse_listing([], "+CMGR:", index=7) == []


# -- sending -----------------------------------------------------------------------------


async def test_send_single_part(opened: Any) -> None:
    modem, sim, _events = opened
    [part] = pdus.encode_submit(DEST, "Dinner at 7?", concat_ref=1)
    reference = await modem.send_pdu(part)
    assert 0 <= reference <= 255
    [sent] = sim.network.sent
    assert sent.dest == DEST
    assert sent.text == "Dinner at 7?"
    assert sent.reference == reference
    assert f"AT+CMGS={tpdu_length(part)}" in sim.commands


async def test_send_multipart_gets_a_reference_per_part(opened: Any) -> None:
    modem, sim, _events = opened
    text = "Long message about the weekend plans. " * 12
    parts = pdus.encode_submit(DEST, text, concat_ref=77)
    assert len(parts) >= 3
    references = [await modem.send_pdu(p) for p in parts]
    assert len(set(references)) == len(parts)
    assert [s.reference for s in sim.network.sent] == references
    assert "".join(s.text for s in sim.network.sent) == text


async def test_send_emoji_exactly(opened: Any) -> None:
    modem, sim, _events = opened
    text = "Happy birthday 🎂🎉 love from all of us 👨‍👩‍👧" * 3
    for part in pdus.encode_submit(DEST, text, concat_ref=9):
        await modem.send_pdu(part)
    assert "".join(s.text for s in sim.network.sent) == text


@pytest.mark.parametrize(
    ("code", "retryable", "words"),
    [(331, True, "no mobile network"), (50, False, "not allowed to send SMS"), (42, True, "")],
)
async def test_send_cms_errors_are_classified(
    opened: Any, code: int, retryable: bool, words: str
) -> None:
    modem, sim, _events = opened
    [part] = pdus.encode_submit(DEST, "hi", concat_ref=1)
    sim.faults.cms_error_next(code)
    with pytest.raises(CmsError) as caught:
        await modem.send_pdu(part)
    assert caught.value.code == code
    assert caught.value.retryable is retryable
    assert words in str(caught.value)
    assert sim.network.sent == []
    # The modem is usable straight after.
    assert await modem.send_pdu(part) >= 0
    assert len(sim.network.sent) == 1


async def test_send_is_atomic_among_concurrent_commands(opened: Any) -> None:
    modem, sim, _events = opened
    parts = pdus.encode_submit(DEST, "Concurrency is fine. " * 10, concat_ref=3)

    async def poll() -> None:
        for _ in range(5):
            await modem.signal_percent()

    await asyncio.gather(*(modem.send_pdu(p) for p in parts), poll(), poll(), modem.operator())
    # A command that slipped in between AT+CMGS and the PDU would have become part of the
    # PDU, which the modem rejects (+CMS ERROR: 304) and the command would never be answered.
    assert "".join(s.text for s in sim.network.sent) == "Concurrency is fine. " * 10
    assert cmd_count(sim, "AT+CSQ") == 10


def test_cms_classification() -> None:
    assert classify_cms(331) == (True, "there is no mobile network service")
    assert classify_cms(332)[0] is True
    for code in (38, 41, 42, 47, 500, 512, 600):
        assert classify_cms(code)[0] is True, code
    for code in (1, 21, 28, 29, 50, 96, 97, 98, 99, 111, 127, 304, 322, 330):
        assert classify_cms(code)[0] is False, code
    assert "check your plan or credit" in classify_cms(50)[1]
    assert "modem.smsc" in classify_cms(330)[1]
    err = CmsError(42)
    assert err.retryable and "congested" in str(err) and "42" in str(err)
    assert "PIN" in cme_reason(11)
    assert CmeError(16).reason == "the PIN or PUK was wrong"


def test_tpdu_length() -> None:
    [part] = pdus.encode_submit(DEST, "x", concat_ref=1)
    assert tpdu_length(part) == pdus.tpdu_length(part)
    [with_smsc] = pdus.encode_submit(DEST, "x", concat_ref=1, smsc="+4917722000000")
    assert tpdu_length(with_smsc) == len(with_smsc) - 1 - with_smsc[0]
    with pytest.raises(ValueError):
        tpdu_length(b"")
    with pytest.raises(ValueError):
        tpdu_length(b"\x00\x01")


# -- recovery ----------------------------------------------------------------------------


@pytest.fixture
async def quick(modem_sim_factory: Callable[..., Any]) -> Any:
    """An opened driver with a short command timeout, for fault tests."""
    sim = modem_sim_factory(pin="1234")
    events = Events()
    modem = Modem(config_for(sim.port, command_timeout=1.5), on_event=events, pin="1234")
    await modem.open()
    yield modem, sim, events
    await modem.close()


async def test_hang_is_recovered_by_the_probe(quick: Any) -> None:
    modem, sim, events = quick
    sim.faults.hang(1.5)
    with pytest.raises(ModemError):
        await modem.signal_percent()
    assert await modem.recover() == "probe"
    assert await modem.operator() is not None
    assert (await events.wait_for(Reconnected)).rung == "probe"


async def test_stuck_prompt_is_recovered_by_escape(quick: Any) -> None:
    modem, sim, _events = quick
    sim.faults.stuck_prompt()
    with pytest.raises(ModemError):
        await modem.signal_percent()
    assert await modem.recover() == "escape"
    [part] = pdus.encode_submit(DEST, "after the prompt", concat_ref=1)
    await modem.send_pdu(part)
    assert [s.text for s in sim.network.sent] == ["after the prompt"]


async def test_unplug_and_replug_reopens_by_the_stable_path(
    modem_sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    link = tmp_path / "textbridge-modem"
    sim = modem_sim_factory(pin="1234", link_path=str(link))
    events = Events()
    modem = Modem(
        config_for(str(link), command_timeout=1.0), on_event=events, pin="1234", reopen_timeout=15.0
    )
    try:
        await modem.open()
        sim.faults.unplug()
        gone = await events.wait_for(Disconnected)
        assert "unplugged" in gone.reason
        assert not modem.connected
        with pytest.raises(ModemError):
            await modem.signal_percent()

        async def replug_later() -> None:
            await asyncio.sleep(1.0)
            sim.faults.replug()

        task = asyncio.create_task(replug_later())
        assert await modem.recover() == "reopen"
        await task
        assert modem.connected
        assert (await events.wait_for(Reconnected)).rung == "reopen"
        # Re-initialised on the new tty: PIN entered again, notifications on again.
        indexes = sim.network.deliver(SENDER, "welcome back")
        assert (await events.wait_for(MessageStored)).index == indexes[0]
        assert cmd_count(sim, 'AT+CPIN="') == 2
    finally:
        await modem.close()


async def test_recover_gives_up_when_the_modem_stays_away(
    modem_sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    link = tmp_path / "textbridge-modem"
    sim = modem_sim_factory(pin=None, link_path=str(link))
    events = Events()
    modem = Modem(config_for(str(link)), on_event=events, reopen_timeout=1.0)
    try:
        await modem.open()
        sim.faults.unplug()
        await events.wait_for(Disconnected)
        with pytest.raises(ModemUnavailable, match="did not come back"):
            await modem.recover()
    finally:
        await modem.close()


async def test_reset_rung_reinitialises_the_modem(quick: Any) -> None:
    modem, sim, events = quick
    before = len(sim.commands)
    # The rung on its own: a modem that ignores AT and ESC cannot be made in the simulator
    # without also ignoring AT+CFUN=1,1.
    assert await modem._call(modem._reset) is True
    after = [c.upper() for c in sim.commands[before:]]
    assert after[0] == "AT+CFUN=1,1"
    # The reboot forgot everything: PIN, echo, notifications all set again.
    for expected in ('AT+CPIN="1234"', "ATE0", "AT+CNMI=2,1,0,2,0", "AT+CMGF=0"):
        assert expected in after, expected
    indexes = sim.network.deliver(SENDER, "after the reset")
    assert (await events.wait_for(MessageStored)).index == indexes[0]


async def test_all_port_io_happens_on_one_thread(opened: Any) -> None:
    modem, _sim, _events = opened
    port = modem._port
    writers: set[str] = set()
    write = port.serial.write

    def recording(data: bytes) -> int | None:
        writers.add(threading.current_thread().name)
        return write(data)

    port.serial.write = recording
    [part] = pdus.encode_submit(DEST, "which thread?", concat_ref=1)
    await asyncio.gather(
        modem.send_pdu(part),
        modem.signal_percent(),
        modem.list_stored(),
        modem.wait_registered(0.1),
        modem.recover(),
    )
    assert len(writers) == 1
    assert writers.pop().startswith("modem-io")


async def test_status_report_stored_event(opened: Any) -> None:
    modem, sim, events = opened
    [part] = pdus.encode_submit(DEST, "report this", concat_ref=1)
    reference = await modem.send_pdu(part)
    sim.network.report(reference, 0x00)
    event = await events.wait_for(StatusReportStored)
    stored = await modem.read(event.index)
    assert stored is not None
    report = pdus.decode(stored.pdu)
    assert isinstance(report, pdus.StatusReport)
    assert report.reference == reference and report.state == "delivered"


async def test_direct_status_report_pdu_event(opened: Any) -> None:
    modem, sim, events = opened
    raw = pdus.encode_status_report(
        12, DEST, 0x00, scts_ms=1_763_800_000_000, discharge_ms=1_763_800_001_000
    )
    hexed = raw.hex().upper()
    sim.faults.garbage(f"\r\n+CDS: {pdus.tpdu_length(raw)}\r\n{hexed}\r\n".encode())
    event = await events.wait_for(StatusReportPdu)
    assert event.pdu == hexed
    assert await modem.signal_percent() is not None


async def test_losing_the_network_is_reported(opened: Any) -> None:
    modem, sim, events = opened
    assert await modem.wait_registered(1.0)
    events.items.clear()
    sim.network.registered = False
    lost = await events.wait_for(RegistrationChanged)
    assert lost.registered is False
    assert lost.detail == "searching for a network"
    assert await modem.wait_registered(0.2) is False
    assert await modem.signal_percent() is None
    assert await modem.operator() is None


async def test_probe_notices_a_modem_that_restarted_on_its_own(quick: Any) -> None:
    modem, sim, events = quick
    # A brown-out reboots the modem without USB re-enumeration; the simulator has no public
    # fault for it, so its reset is started directly.
    sim._in_thread(sim._begin_reset)
    await asyncio.sleep(sim.reset_delay + 0.3)
    before = len(sim.commands)
    assert await modem.recover() == "probe"
    after = [c.upper() for c in sim.commands[before:]]
    assert 'AT+CPIN="1234"' in after and "AT+CNMI=2,1,0,2,0" in after
    indexes = sim.network.deliver(SENDER, "still here")
    assert (await events.wait_for(MessageStored)).index == indexes[0]


async def test_send_without_a_prompt_is_a_timeout_not_a_refusal(quick: Any) -> None:
    modem, sim, _events = quick
    [part] = pdus.encode_submit(DEST, "never typed", concat_ref=1)
    sim.faults.hang(2.0)
    with pytest.raises(PromptTimeout) as caught:
        await modem.send_pdu(part)
    assert isinstance(caught.value, ModemTimeout) and not isinstance(caught.value, CmsError)
    assert "not sent" in str(caught.value)
    await asyncio.sleep(0.6)
    assert await modem.recover() == "probe"
    assert sim.network.sent == []
    assert await modem.send_pdu(part) >= 0
    assert [s.text for s in sim.network.sent] == ["never typed"]


async def test_lost_answer_after_the_pdu_is_ambiguous(
    modem_sim_factory: Callable[..., Any],
) -> None:
    sim = modem_sim_factory(pin=None)
    modem = Modem(config_for(sim.port, command_timeout=5.0), on_event=Events(), send_timeout=0.5)
    try:
        await modem.open()
        [part] = pdus.encode_submit(DEST, "did it go?", concat_ref=1)
        sim.faults.slow(1.0)
        with pytest.raises(ModemTimeout) as caught:
            await modem.send_pdu(part)
        assert not isinstance(caught.value, PromptTimeout)
        sim.faults.slow(0)
        # It did go: which is why the SMS line must not treat this like a CmsError.
        assert [s.text for s in sim.network.sent] == ["did it go?"]
        assert await modem.recover() == "probe"
    finally:
        await modem.close()
