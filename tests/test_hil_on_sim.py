"""The hardware-in-the-loop test of the modem (hil/test_modem_hil.py) run against the modem
simulator, as a separate process given the same settings a person gives it for a real
stick. Proves the HIL test itself works before anyone spends money on texts with it: it
must find the modem, send to itself and to a peer, see the texts come back whole and once,
and see the status reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWN = "+4915100000077"
PEER = "+4917612345678"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_modem_hil_test_passes_against_the_simulator(tmp_path: Path) -> None:
    link = tmp_path / "modem"
    control = _free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "appliance", "modem-sim", "--link", str(link),
         "--control", f"127.0.0.1:{control}", "--own-number", OWN, "--auto-report", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while not link.exists():
            assert sim.poll() is None and time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        env = dict(
            os.environ,
            TEXTBRIDGE_HIL_MODEM=str(link),
            TEXTBRIDGE_HIL_OWN_NUMBER=OWN,
            TEXTBRIDGE_HIL_PEER=PEER,
            TEXTBRIDGE_HIL_WAIT="60",
        )
        env.pop("TEXTBRIDGE_HIL_ASK", None)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             "hil/test_modem_hil.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        out = run.stdout + run.stderr
        assert run.returncode == 0, out
        assert "3 passed, 1 skipped" in out, out
        assert "TEXTBRIDGE_HIL_ASK is not 1" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{control}/sent") as resp:
            sent = json.loads(resp.read())
        texts = sent.get("messages", sent)
        destinations = [m[0] if isinstance(m, list) else m.get("dest") for m in texts]
        # Two texts to itself (one of them in two parts) and one to the peer, each once.
        assert destinations.count(OWN) == 2 and destinations.count(PEER) == 1, texts
    finally:
        sim.terminate()
        sim.wait(10)
