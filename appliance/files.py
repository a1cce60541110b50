"""Small durable private files: secrets, tokens, the web's state.

Every write goes to a temporary file that is fsynced and renamed over the old one, and the
directory is fsynced too: a power cut leaves the old or the new file, never half of one, and
nothing is ever readable by others (0600 from the first byte, whatever the umask).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file that replaces `path` whole once the block ends, as above; an error in the
    block leaves the old file and no temporary one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Makes the names in directory `path` (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with replacing(path, mode) as handle:
        handle.write(data)


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` as 0600, atomically."""
    write_private(path, text.encode("utf-8"))


def private_database(path: Path) -> None:
    """Make an SQLite database file 0600 before SQLite opens it, and its -wal and -shm too.

    SQLite gives the -wal and -shm files it creates the mode of the database file, so a
    database created here 0600 stays private whatever the umask; files left 0644 by an older
    version are tightened.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + "-journal"):
        try:
            os.chmod(path.with_name(name), 0o600)
        except FileNotFoundError:
            continue
