"""Gammu, an AT implementation we did not write, talks to the simulator: if it can identify the
modem, send (single and multipart) and read texts, the simulator behaves like a modem and not
merely like our own driver's expectations."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.sim.modem import ModemSimulator

GAMMU = shutil.which("gammu") or "/usr/bin/gammu"

pytestmark = pytest.mark.skipif(not Path(GAMMU).exists(), reason="Debian's gammu is needed")


def gammu(sim: ModemSimulator, tmp_path: Path, *args: str) -> str:
    config = tmp_path / "gammurc"
    config.write_text(f"[gammu]\ndevice = {sim.port}\nconnection = at115200\n")
    done = subprocess.run(
        [GAMMU, "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"gammu {args}: {done.stdout}\n{done.stderr}\n{sim.commands}"
    return done.stdout


def test_gammu_identifies_the_modem(modem_sim: ModemSimulator, tmp_path: Path) -> None:
    out = gammu(modem_sim, tmp_path, "identify")
    assert "Quectel" in out
    assert "867000000000001" in out
    assert "EC25EFAR06A06M4G" in out


def test_gammu_sends_through_the_simulator(
    modem_sim_factory: Callable[..., ModemSimulator], tmp_path: Path
) -> None:
    sim = modem_sim_factory(pin="1234")
    # Gammu enters the PIN itself only when asked; unlock over its own "entersecuritycode".
    gammu(sim, tmp_path, "entersecuritycode", "PIN", "1234")
    assert sim.status()["sim"] == "READY"
    out = gammu(sim, tmp_path, "sendsms", "TEXT", "+4915112345678", "-text", "Hallo von gammu")
    assert "message reference=0" in out
    [part] = sim.network.sent
    assert (part.dest, part.text, part.reference) == ("+4915112345678", "Hallo von gammu", 0)

    long_text = "Ein langer Text, der nicht in eine SMS passt. " * 5
    out = gammu(
        sim, tmp_path, "sendsms", "TEXT", "+4915112345678", "-len", "400", "-text", long_text
    )
    assert sim.network.sent_messages()[-1] == ("+4915112345678", long_text)
    assert len(sim.network.sent) == 3
    assert any(c.upper().startswith("AT+CMGS=") for c in sim.commands)


def test_gammu_reads_injected_texts(modem_sim: ModemSimulator, tmp_path: Path) -> None:
    modem_sim.network.deliver("+4915187654321", "Grüße vom Netz €")
    modem_sim.network.deliver("+4915100000042", "zweite Nachricht")
    out = gammu(modem_sim, tmp_path, "getallsms")
    assert '"+4915187654321"' in out
    assert "Grüße vom Netz €" in out
    assert '"+4915100000042"' in out
    assert "zweite Nachricht" in out
    assert "2 SMS parts in 2 SMS sequences" in out
    # Gammu can delete what it read, as the appliance does after a durable commit.
    gammu(modem_sim, tmp_path, "deleteallsms", "1")
    assert modem_sim.storage == {}
