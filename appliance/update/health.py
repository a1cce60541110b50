"""The check after an update, and what follows it (docs/update.md, "After the reboot").

On the first boot of a new slot the homeserver, the bridge and the web must answer, and the
store and bridge databases must open, within a deadline. Then the slot is marked good
(`rauc status mark-good`) and the owners hear "Textbridge was updated to 0.3.0". Otherwise it
is marked bad and the box reboots into the old slot, whose first boot tells the owners the
update failed and that nothing was lost. A new slot that hangs never gets this far: the
hardware watchdog resets the Pi and the firmware's one-shot tryboot is already spent, so the
old slot starts, and its check says the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from appliance.control_client import ControlClient, ControlError, ControlUnavailable
from appliance.store.schema import readable
from appliance.update import pending as pendings
from appliance.update.rauc import Rauc, RaucError

log = logging.getLogger(__name__)

DEADLINE = pendings.CHECK_DEADLINE
INTERVAL = 2.0
TOPIC = "update"

# (topic, key, severity, text) -> told; POST /v1/notices on the control socket.
Notify = Callable[[str, str, str, str], Awaitable[bool]]
Reboot = Callable[[], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Probes:
    homeserver_url: str  # http://127.0.0.1:8008
    control_socket: Path
    web_url: str  # http://127.0.0.1:80/
    store_db: Path
    bridge_db: Path


async def _http_ok(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status >= 500:
                return f"answered with error {resp.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"does not answer ({type(exc).__name__})"
    return None


def _open_db(path: Path, version_sql: str) -> str | None:
    """None if SQLite opens the file read-only, finds it whole, and (for the store) at a
    schema this Textbridge can use."""
    if not path.exists():
        return "is missing"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                timeout=10)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                return f"is damaged ({check and check[0]})"
            row = conn.execute(version_sql).fetchone()
            if version_sql.startswith("PRAGMA user_version"):
                floor = None
                with contextlib.suppress(sqlite3.Error):
                    got = conn.execute("SELECT max(oldest_reader) FROM schema_floor").fetchone()
                    floor = int(got[0]) if got and got[0] is not None else None
                if row is None or not readable(int(row[0]), floor):
                    return f"has schema version {row and row[0]}, which this version cannot use"
            elif row is None:
                return "has no schema version"
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    return None


async def problems(probes: Probes) -> list[str]:
    """What is not ready yet, in plain words; empty when everything is."""
    found: list[str] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        hs = await _http_ok(session, probes.homeserver_url.rstrip("/")
                            + "/_matrix/client/versions")
        if hs:
            found.append(f"the homeserver {hs}")
        web = await _http_ok(session, probes.web_url)
        if web:
            found.append(f"the web page {web}")
    try:
        status = await ControlClient(probes.control_socket, timeout=10).status()
        health = status.get("bridge", {}).get("health", {})
        if not status.get("bridge", {}).get("running") or not health.get("ok", True):
            found.append(f"the bridge is not healthy ({health.get('setup_error') or 'no reason'})")
    except (ControlUnavailable, ControlError) as exc:
        found.append(f"the bridge does not answer ({exc})")
    store = await asyncio.to_thread(_open_db, probes.store_db, "PRAGMA user_version")
    if store:
        found.append(f"the message store {store}")
    bridge = await asyncio.to_thread(_open_db, probes.bridge_db,
                                     "SELECT version FROM bridge_version")
    if bridge:
        found.append(f"the bridge database {bridge}")
    return found


async def wait_ready(probes: Probes, deadline: float = DEADLINE,
                     interval: float = INTERVAL) -> list[str]:
    """[] once everything is ready within the deadline, else what still was not."""
    end = time.monotonic() + deadline
    while True:
        found = await problems(probes)
        if not found or time.monotonic() >= end:
            return found
        await asyncio.sleep(min(interval, max(0.0, end - time.monotonic())))


def told_ok(to_version: str) -> str:
    return f"Textbridge was updated to {to_version}."


def told_failed(to_version: str, back_to: str) -> str:
    return (f"The update to {to_version} failed its check and Textbridge went back to "
            f"{back_to}; nothing was lost.")


async def after_boot(*, rauc: Rauc, data_dir: Path, probes: Probes, notify: Notify,
                     reboot: Reboot, deadline: float = DEADLINE,
                     interval: float = INTERVAL) -> str:
    """Run at every boot (textbridge-update-check.service). Returns what it did: "none",
    "good", "rolled-back" (marked bad, rebooting) or "went-back" (the old slot runs)."""
    pending = pendings.load(data_dir)
    if pending is None:
        return "none"
    try:
        status = await rauc.status()
    except RaucError as exc:
        log.error("update check: %s", exc.message)
        return "none"
    if status.booted == pending.slot and pending.outcome in ("", "good"):
        if pending.outcome == "":
            found = await wait_ready(probes, deadline, interval)
            if found:
                pending.outcome, pending.reason = "failed", "; ".join(found)
                pendings.save(data_dir, pending)
                log.error("update to %s failed its check: %s", pending.to_version,
                          pending.reason)
                await rauc.mark("bad", "booted")
                await reboot()
                return "rolled-back"
            await rauc.mark("good", "booted")
            pending.outcome = "good"
            pendings.save(data_dir, pending)
        if await notify(TOPIC, f"updated:{pending.to_version}", "info",
                        told_ok(pending.to_version)):
            pendings.clear(data_dir)
        return "good"
    if status.booted == pending.from_slot:
        # The new slot failed its check, or never came up: make sure it is not tried again.
        other = status.other_slot()
        if other is not None and other.boot_status != "bad":
            with contextlib.suppress(RaucError):
                await rauc.mark("bad", "other")
        await wait_ready(probes, deadline, interval)
        if await notify(TOPIC, f"failed:{pending.to_version}", "error",
                        told_failed(pending.to_version, pending.from_version)):
            pendings.clear(data_dir)
        return "went-back"
    return "none"
