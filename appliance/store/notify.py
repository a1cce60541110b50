"""`store.changed`: lets readers sleep until something was committed instead of polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from appliance.tasks import wait_event

# Commits made by another process (the web dashboard's process, the CLI) ring the store's
# doorbell (store/doorbell.py) when this process listens on it; otherwise, while someone
# waits, we look at SQLite's data_version this often.
CROSS_PROCESS_POLL_S = 0.5


class Notifier:
    """Wakes every waiter on each commit.

    `version` counts notifications, so a caller that read the store and then waits can pass
    the version it saw and not miss a commit that happened in between.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.version = 0
        self._probe: Callable[[], Awaitable[bool]] | None = None
        self._ring: Callable[[], None] | None = None
        self._rung: Callable[[], bool] = lambda: False

    def notify(self) -> None:
        """A commit of this process: wakes its waiters and rings the store's doorbell."""
        self._wake_waiters()
        if self._ring is not None:
            self._ring()

    def _set_ring(self, ring: Callable[[], None] | None) -> None:
        self._ring = ring

    def _set_rung(self, rung: Callable[[], bool]) -> None:
        """`rung()` is True while other processes' commits arrive as doorbell rings."""
        self._rung = rung

    def _wake_waiters(self) -> None:
        self.version += 1
        # Swap in a fresh event so waiters that arrive later wait for the next commit.
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _set_probe(self, probe: Callable[[], Awaitable[bool]] | None) -> None:
        self._probe = probe

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract other parts code against
        *,
        since: int | None = None,
    ) -> bool:
        """True as soon as a commit happens (or happened after `since`), False on timeout."""
        if since is not None and since != self.version:
            return True
        event = self._event
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            # While rings bring other processes' commits, there is nothing to poll for; the
            # minute is a look at whether that is still so.
            step = 60.0 if self._rung() else CROSS_PROCESS_POLL_S
            if deadline is not None:
                step = min(step, deadline - loop.time())
                if step <= 0:
                    return event.is_set()
            if await wait_event(event, step):
                return True
            if self._probe is not None and not self._rung() and await self._probe():
                self._wake_waiters()
                return True
