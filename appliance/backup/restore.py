"""Restoring a backup: decrypt, unpack into staging, check everything, then swap.

The box changes only in the last step. Until then every refusal (a wrong key, a damaged or
hostile file, a backup from another homeserver or a newer version, a file that fails its
validator) leaves the data directory as it was and removes the staging directory.

The swap renames each top-level entry of the staged data directory over the live one (the
old one moved aside first, with a database's -wal and -shm, which belong to the old file);
if a rename fails, the ones done are rolled back. Staging sits inside the data directory, on
the same filesystem, so each rename is atomic. Run it with the appliance's services stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from appliance.backup import age, checks, header
from appliance.backup.create import CONFIG_MEMBER
from appliance.backup.errors import BackupError
from appliance.backup.key import identity_for
from appliance.backup.layout import Layout
from appliance.backup.unpack import Limits, unpack
from appliance.files import fsync_dir

SIDECARS = ("-wal", "-shm", "-journal")
# Files that hold secrets are 0600 whatever the archive says.
SECRET_RE = re.compile(
    r"(^web/.*|.*\.(key|json|yaml|toml|db|sqlite)$|.*_secret(_key)?$|.*adbkey.*|"
    r"(^|/)(signing\.key|form_secret)$)"
)


@dataclass(frozen=True)
class Restored:
    files: int
    header: header.Header


class _CappedWriter:
    """Where age writes the plaintext: refuses a stream that would unpack without end."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise BackupError("The backup unpacks to more than this box can hold.")
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _decrypt(source: IO[bytes], identity: str, spool: Path,
             limits: Limits) -> None:
    with spool.open("wb") as out:
        writer = _CappedWriter(out, limits.max_total)
        try:
            age.decrypt_stream(source, writer, identity)
        except age.NoMatchingKey:
            raise BackupError(
                "That key does not open this backup: it is the key of another backup, or "
                "mistyped. Use the key on this backup's emergency kit."
            ) from None
        except age.AgeError:
            raise BackupError(
                "The backup file is damaged or cut off (an incomplete copy or download?): it "
                "cannot be restored. Nothing was changed."
            ) from None


def _set_modes(staging: Path, files: list[PurePosixPath]) -> None:
    uid_gid: tuple[int, int] | None = None
    if os.geteuid() == 0:
        st = os.stat(staging.parent)
        uid_gid = (st.st_uid, st.st_gid)
    for rel in files:
        path = staging / rel
        inner = PurePosixPath(*rel.parts[1:]).as_posix()
        if SECRET_RE.fullmatch(inner):
            os.chmod(path, 0o600)
        if uid_gid is not None:
            os.chown(path, *uid_gid, follow_symlinks=False)
    if uid_gid is not None:
        for path in (staging / "data").rglob("*"):
            if path.is_dir():
                os.chown(path, *uid_gid, follow_symlinks=False)



def _swap(layout: Layout, staging: Path) -> None:
    data = layout.data_dir
    aside = staging / "previous"
    aside.mkdir(mode=0o700)
    moves: list[tuple[Path, Path]] = []  # (from, to), in the order done
    config = staging / CONFIG_MEMBER
    try:
        staged = staging / "data"
        for entry in sorted(staged.iterdir()) if staged.is_dir() else []:
            live = data / entry.name
            for sidecar in [live, *(data / f"{entry.name}{s}" for s in SIDECARS)]:
                if sidecar.exists() or sidecar.is_symlink():
                    os.rename(sidecar, aside / sidecar.name)
                    moves.append((sidecar, aside / sidecar.name))
            os.rename(entry, live)
            moves.append((entry, live))
        if config.is_file() and layout.config_file is not None:
            if layout.config_file.exists():
                os.rename(layout.config_file, aside / "config.toml")
                moves.append((layout.config_file, aside / "config.toml"))
            # /etc and the data partition are different filesystems: copy, then rename.
            tmp = layout.config_file.with_name(f".{layout.config_file.name}.restore")
            shutil.copyfile(config, tmp)
            os.chmod(tmp, 0o640)
            os.rename(tmp, layout.config_file)
            moves.append((config, layout.config_file))
    except BaseException:
        for src, dst in reversed(moves):
            if src == config:
                dst.unlink(missing_ok=True)
            else:
                os.rename(dst, src)
        raise
    fsync_dir(data)


def restore(path: Path, layout: Layout, secret: str, limits: Limits | None = None) -> Restored:
    limits = limits or Limits()
    try:
        size = path.stat().st_size
    except OSError:
        raise BackupError(f"There is no backup file at {path}.") from None
    if size > limits.max_file:
        raise BackupError("That file is too large to be a Textbridge backup.")
    layout.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    with path.open("rb") as source:
        head, raw = header.read(source)
        header.check_compatible(head, layout.homeserver)
        identity = identity_for(secret, head.passphrase_identity)
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=layout.data_dir))
        try:
            spool = staging / "archive.tar.gz"
            _decrypt(source, identity, spool, limits)
            with spool.open("rb") as plain:
                files = unpack(plain, staging, raw, limits, frozenset({CONFIG_MEMBER}))
            spool.unlink()
            checks.check_staged(staging, files)
            _set_modes(staging, files)
            try:
                _swap(layout, staging)
            except OSError as exc:
                raise BackupError(
                    f"The restore could not be finished ({exc.strerror or exc}); the box was "
                    "put back as it was."
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Restored(len(files), head)


def verify(path: Path, layout: Layout, secret: str, limits: Limits | None = None) -> int:
    """A restore that stops before the swap: decrypts, unpacks and checks every file
    (databases with integrity_check) in a scratch directory. Returns the number of files."""
    limits = limits or Limits()
    with path.open("rb") as source:
        head, raw = header.read(source)
        identity = identity_for(secret, head.passphrase_identity)
        scratch = Path(tempfile.mkdtemp(prefix=".restore-verify-", dir=layout.data_dir))
        try:
            spool = scratch / "archive.tar.gz"
            _decrypt(source, identity, spool, limits)
            with spool.open("rb") as plain:
                files = unpack(plain, scratch, raw, limits, frozenset({CONFIG_MEMBER}))
            checks.check_staged(scratch, files)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return len(files)

