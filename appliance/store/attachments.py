"""Files that go out with an outbox row (a picture sent from a chat through the phone).

They are kept next to the database, not in it: a 10 MiB blob in a row would be copied at
every read of the outbox. Content-addressed (sha256 of the bytes), written 0600 through
`appliance.files.write_private` (fsynced, renamed, directory fsynced) BEFORE the row that
names them is enqueued, so a row never points at a file that a power cut lost. The row's
transport reads the file when it sends and deletes it once the row is finished. Opaque
bytes: nothing here knows where they came from.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

from appliance.files import write_private

_NAME = re.compile(r"[0-9a-f]{64}")


class Attachments:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not an attachment name: {name!r}")
        return self.directory / name

    async def put(self, data: bytes) -> str:
        """Durable before it returns; the name to put in the row's meta."""
        name = hashlib.sha256(data).hexdigest()
        path = self._path(name)
        if not path.exists():
            await asyncio.to_thread(write_private, path, data)
        return name

    async def get(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, True)
