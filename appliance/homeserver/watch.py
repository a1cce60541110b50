"""The watch on the homeserver: restarted when it stops answering, and the owners told.

It runs in `textbridge run`, which needs the homeserver more than anything else and already
speaks to it. Every `interval` seconds it asks GET /_matrix/client/versions; when nothing
good has come back for `grace` seconds (two minutes on the appliance) it calls the restart
action, and again every five minutes while the server stays silent (its unit's start
timeout governs a slow start meanwhile). Once the server answers again, the owners read,
once, when it stopped answering and that it was restarted, and whether the texts that
waited meanwhile are through.

Texts need nothing from the watch to survive: an inbound text is in the durable store before
the modem lets go of it and stays RECEIVED until the homeserver took it (docs/store.md); the
watch only waits for those rows before it says they were delivered.

The restart action is injected. On the appliance it is `restart_systemd_unit`: the bridge
runs as the same unprivileged user as the homeserver and may not ask systemd to restart a
unit, but it may signal a process of its own user; SIGKILL (which also ends a SIGSTOPped
process) makes the unit fail, and its Restart=on-failure starts it again. Tuwunel's unit also
has a sd_notify watchdog (WatchdogSec=, written by image/build.sh), which catches a hung
process even while the bridge is down; Synapse pings no watchdog, so this watch is what
catches a hung Synapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.homeserver.api import MatrixHttp
from appliance.line import Severity
from appliance.tasks import stop_tasks

log = logging.getLogger(__name__)

HOMESERVER_UNIT = "textbridge-homeserver.service"
# Defaults on the appliance: the two minutes, a look every ten seconds.
GRACE = 120.0
INTERVAL = 10.0
PROBE_TIMEOUT = 5.0
# After a restart the unit's own start timeout (TimeoutStartSec=180) governs the start: a
# slow start on a busy Pi must not be killed again by the watch before systemd gave up on it.
AGAIN_AFTER = 300.0
# After the server is back: how long to wait for the texts that waited to go through before
# the notice says where they stand.
DRAIN_TIMEOUT = 120.0
# Owner notice about the homeserver itself, as notify_owners takes it.
Notify = Callable[[str, str, Severity, str], Awaitable[bool]]
Restart = Callable[[], Awaitable[None]]
Pending = Callable[[], Awaitable[int]]
TOPIC = "homeserver"


class HomeserverWatch:
    def __init__(
        self,
        url: str,
        *,
        restart: Restart,
        notify: Notify,
        pending: Pending,
        grace: float = GRACE,
        interval: float = INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        drain_timeout: float = DRAIN_TIMEOUT,
        again_after: float | None = None,
    ) -> None:
        self.http = MatrixHttp(url, "")
        self.restart = restart
        self.notify = notify
        self.pending = pending
        self.grace = grace
        self.interval = interval
        self.probe_timeout = min(probe_timeout, grace)
        self.drain_timeout = drain_timeout
        self.again_after = max(grace, AGAIN_AFTER) if again_after is None else again_after
        # Wall clock of the first look that got no answer, for the owners' notice; the
        # monotonic one times the grace.
        self.silent_since: float | None = None
        self._silent_mono: float | None = None
        self._last_restart: float | None = None
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="homeserver-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task], "homeserver watch")
            self._task = None

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The watch must outlive whatever went wrong in one look.
                log.exception("homeserver watch: a check failed")
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """One look: note silence, restart after the grace, tell the owners once it is back."""
        if await self.http.is_up(timeout=self.probe_timeout):
            if self.silent_since is not None and self.restarts:
                await self._back()
            elif self.silent_since is not None:
                log.info("the homeserver answers again (it was silent for a while)")
            self.silent_since = self._silent_mono = self._last_restart = None
            self.restarts = 0
            return
        now = time.monotonic()
        if self.silent_since is None or self._silent_mono is None:
            self.silent_since, self._silent_mono = time.time(), now
            log.warning("the homeserver does not answer /_matrix/client/versions")
            return
        if self._last_restart is None:
            waited, limit = now - self._silent_mono, self.grace
        else:
            waited, limit = now - self._last_restart, self.again_after
        if waited < limit:
            return
        self.restarts += 1
        self._last_restart = now
        log.error(
            "the homeserver has not answered for %.0f s: restarting it (restart %d)",
            now - self._silent_mono, self.restarts,
        )  # fmt: skip
        await self.restart()

    async def _back(self) -> None:
        assert self.silent_since is not None
        stopped = self.silent_since
        log.info("the homeserver answers again after %d restart(s)", self.restarts)
        left = await self._drained()
        at = time.strftime("%H:%M", time.localtime(stopped))
        if left == 0:
            texts = "texts waited and were delivered"
        else:
            texts = f"{left} text(s) that waited are still being delivered"
        text = f"The homeserver stopped answering at {at} and was restarted; {texts}."
        key = f"restarted-{int(stopped)}"
        # The chat runs on the homeserver that just came back: give it a few tries.
        for attempt in range(5):
            try:
                await self.notify(TOPIC, key, Severity.WARNING, text)
                return
            except Exception as exc:
                log.warning("telling the owners the homeserver was restarted: %s", exc)
                await asyncio.sleep(min(2.0 * (attempt + 1), self.interval))
        log.error("could not tell the owners that the homeserver was restarted")

    async def _drained(self) -> int:
        deadline = time.monotonic() + self.drain_timeout
        while True:
            left = await self.pending()
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(min(0.5, self.interval))


def unit_pids(unit: str, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of the processes in systemd unit `unit`, from their cgroup (v2, or v1's
    name=systemd hierarchy). Only processes this user may see are listed."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            hierarchy, _, path = line.partition(":")[2].partition(":")
            if hierarchy in ("", "name=systemd") and path.rsplit("/", 1)[-1] == unit:
                found.append(int(entry.name))
                break
    return found


def restart_systemd_unit(unit: str = HOMESERVER_UNIT) -> Restart:
    async def restart() -> None:
        pids = await asyncio.to_thread(unit_pids, unit)
        if not pids:
            log.error("no process of %s to restart", unit)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.info("killed %s (pids %s); systemd starts it again", unit, pids)

    return restart
