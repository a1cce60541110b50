"""Fixtures for the modem simulator: a started simulator on a pty, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.sim.modem import ModemSimulator


@pytest.fixture
def modem_sim_factory(tmp_path: Path) -> Iterator[Callable[..., ModemSimulator]]:
    """Start simulators with any ModemSimulator arguments; each one is stopped afterwards.
    Without a PIN unless asked, and with a stable symlink under tmp_path like a udev rule
    gives, so that unplug/replug can be tested by path."""
    started: list[ModemSimulator] = []

    def make(**kwargs: Any) -> ModemSimulator:
        kwargs.setdefault("pin", None)
        kwargs.setdefault("link_path", tmp_path / f"ttyModem{len(started)}")
        sim = ModemSimulator(**kwargs)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in reversed(started):
        sim.stop()


@pytest.fixture
def modem_sim(modem_sim_factory: Callable[..., ModemSimulator]) -> ModemSimulator:
    return modem_sim_factory()
