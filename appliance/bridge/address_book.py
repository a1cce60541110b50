"""The address book the owner uploads in the dashboard, applied until it has been.

The web service only writes `contacts.vcf`; naming ghosts and rooms needs the homeserver,
which may be away at that moment (or restarting, or the bridge itself may be down). So the
import is retried until one whole pass worked, and only then is the file's digest recorded
(`contacts.applied` in the bridge's data directory). Until then the upload is *pending*,
and the dashboard says so, with the reason, from `state()` in the bridge's health.

A retry renames every number in the file, not only those whose name changed: the names
were stored by the failed pass, but its renames may not have happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.files import write_private
from appliance.tasks import within

if TYPE_CHECKING:
    from appliance.bridge.core import Bridge

log = logging.getLogger(__name__)

APPLIED_FILE = "contacts.applied"
# The first retry comes soon (a homeserver restart takes seconds), later ones less often.
RETRY_DELAYS = (3.0, 5.0, 10.0, 20.0, 30.0)
IMPORT_TIMEOUT = 120.0


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Pending:
    digest: str
    tries: int = 0
    error: str | None = None
    next_at: float = 0.0


class AddressBook:
    def __init__(self, bridge: Bridge, vcf_path: Path, data_dir: Path, home_country: str,
                 added_by: str) -> None:
        self.bridge = bridge
        self.vcf_path = vcf_path
        self.applied_path = data_dir / APPLIED_FILE
        self.home_country = home_country
        self.added_by = added_by
        self._pending: _Pending | None = None
        self._lock = asyncio.Lock()

    def applied(self) -> str | None:
        try:
            return self.applied_path.read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def state(self) -> dict[str, Any]:
        """For the dashboard: the digest applied last and what still waits, if anything."""
        pending = self._pending
        return {
            "applied": self.applied(),
            "pending": pending.digest if pending else None,
            "tries": pending.tries if pending else 0,
            "error": pending.error if pending else None,
        }

    async def sync(self, *, changed: bool = False) -> None:
        """Apply the uploaded file if it is not applied yet: at start, when it changed, and
        on every look while a retry is due."""
        async with self._lock:
            try:
                data = await asyncio.to_thread(self.vcf_path.read_bytes)
            except FileNotFoundError:
                self._pending = None
                return
            digest = digest_of(data)
            if digest == self.applied():
                self._pending = None
                return
            pending = self._pending
            if pending is None or pending.digest != digest:
                # A new upload: its first pass renames only what changed, unless an
                # earlier pass (of any file) was left unfinished.
                retry = pending is not None or not changed
                pending = self._pending = _Pending(digest)
            else:
                retry = True
                if time.monotonic() < pending.next_at:
                    return
            await self._apply(data, pending, rename_all=retry)

    async def _apply(self, data: bytes, pending: _Pending, *, rename_all: bool) -> None:
        pending.tries += 1
        try:
            # A hung homeserver must not hold the caller (the reload loop) for good.
            added = await within(
                IMPORT_TIMEOUT,
                self.bridge.import_contacts(
                    data.decode("utf-8", "replace"), self.added_by, self.home_country,
                    rename_all=rename_all,
                ),
            )
        except Exception as exc:
            first = pending.error is None
            pending.error = (
                "the home server did not answer in time" if isinstance(exc, TimeoutError)
                else str(exc) or exc.__class__.__name__
            )
            delay = RETRY_DELAYS[min(pending.tries, len(RETRY_DELAYS)) - 1]
            pending.next_at = time.monotonic() + delay
            if first:
                log.warning("importing the uploaded contacts failed, retrying until it "
                            "works: %s", pending.error)
            else:
                log.debug("importing the uploaded contacts failed again (try %d): %s",
                          pending.tries, pending.error)
            return
        await asyncio.to_thread(write_private, self.applied_path, pending.digest.encode())
        self._pending = None
        log.info("contacts imported from the dashboard: %d numbers named (try %d)", added,
                 pending.tries)
