"""Making a backup: snapshots of every database, the files around them, one encrypted file.

Blocking throughout (SQLite, tar, age): callers on the event loop run it in an executor.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.backup import age, cut, header, sqlite_copy
from appliance.backup.errors import BackupError
from appliance.backup.key import BackupKey
from appliance.backup.layout import Layout, is_sqlite, skipped
from appliance.files import replacing

CONFIG_MEMBER = "etc/config.toml"
# Media are mostly compressed already; a light level keeps a Pi's backup quick.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class Made:
    path: Path
    size: int
    files: int
    databases: int
    seconds: float
    reset_rows: int  # inbox rows the cut sent back to RECEIVED (cut.py)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> bool:
    """Adds what `path` holds now; False if it vanished (a temp file renamed meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return False
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return False
        info = tarfile.TarInfo(name)
        info.size = st.st_size
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        tar.addfile(info, handle)
    return True


def _databases(layout: Layout) -> list[Path]:
    """Every SQLite file to snapshot, homeserver first, then store, then bridge (cut.py)."""
    found: list[Path] = []
    for path in sorted(layout.data_dir.rglob("*")):
        rel = PurePosixPath(path.relative_to(layout.data_dir).as_posix())
        if path.is_symlink() or not path.is_file() or skipped(rel):
            continue
        if is_sqlite(path):
            found.append(path)

    def rank(p: Path) -> int:
        if p == layout.store_path:
            return 1
        if p == layout.bridge_path:
            return 2
        if p.is_relative_to(layout.homeserver_dir):
            return 0
        return 3

    return sorted(found, key=rank)


def create(layout: Layout, key: BackupKey, out: Path) -> Made:
    started = time.monotonic()
    if layout.homeserver == "tuwunel":
        raise BackupError(
            "Backups of a box running Tuwunel are not made yet: its database needs Tuwunel's "
            "own online backup, which Textbridge does not drive yet (docs/backup.md)."
        )
    if layout.homeserver not in header.FLAVOURS:
        raise BackupError(f"Unknown homeserver {layout.homeserver!r}.")
    data_dir = layout.data_dir
    if not data_dir.is_dir():
        raise BackupError(f"There is no data directory at {data_dir}.")
    head = header.Header.new(layout.homeserver, key.recipient, key.passphrase_identity)
    raw_header = head.encode()
    # The work directory sits on the data partition, where the space is, and is private.
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=data_dir) as work_name:
        work = Path(work_name)
        os.chmod(work, 0o700)
        before = cut.mark(layout.store_path)
        copies: dict[Path, Path] = {}
        for index, db in enumerate(_databases(layout)):
            target = work / f"db{index}.sqlite"
            sqlite_copy.snapshot(db, target)
            copies[db] = target
        reset = cut.apply(
            before, copies.get(layout.store_path, work / "none"), copies.get(layout.bridge_path)
        )
        spool = work / "archive.tar.gz"
        files = 0
        with tarfile.open(spool, mode="w:gz", compresslevel=GZIP_LEVEL,
                          format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "header.json", raw_header)
            for path in sorted(data_dir.rglob("*")):
                rel = PurePosixPath(path.relative_to(data_dir).as_posix())
                if skipped(rel) or path.is_symlink() or rel.parts[0] == work.name:
                    continue
                name = f"data/{rel}"
                if path.is_dir():
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o700
                    tar.addfile(info)
                elif path in copies:
                    src_mode = stat.S_IMODE(path.stat().st_mode)
                    info = tar.gettarinfo(copies[path], arcname=name)
                    info.mode = src_mode
                    with copies[path].open("rb") as handle:
                        tar.addfile(info, handle)
                    files += 1
                elif path.is_file():
                    files += _add_file(tar, name, path)
            if layout.config_file is not None and layout.config_file.is_file():
                files += _add_file(tar, CONFIG_MEMBER, layout.config_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as sink, spool.open("rb") as source:
            header.write(sink, head)
            age.encrypt_stream(source, sink, key.recipient)
        return Made(out, out.stat().st_size, files, len(copies),
                    time.monotonic() - started, reset)


def describe(made: Made) -> str:
    return json.dumps({"file": str(made.path), "bytes": made.size, "files": made.files,
                       "databases": made.databases, "seconds": round(made.seconds, 2)})
