"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=...) over $NOTIFY_SOCKET.

Spoken directly over the datagram socket so that it works from any venv and costs nothing
when not under systemd; the protocol is one datagram of newline-separated assignments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

HealthCheck = Callable[[], bool]


def notify(*assignments: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=Connected"); False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode("utf-8"))
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the WatchdogSec systemd gave us, in seconds, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def watchdog_loop(healthy: HealthCheck | None = None) -> None:
    """Ping the watchdog while `healthy()` says the event loop is doing its work.

    The ping comes from the event loop itself, so a blocked loop stops the pings and systemd
    restarts the service, which is the point of the watchdog.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        if healthy is None or healthy():
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def stop_notifying() -> None:
    with contextlib.suppress(Exception):
        notify("STOPPING=1")

