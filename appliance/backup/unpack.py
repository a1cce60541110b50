"""Reading a backup's tar into a staging directory, refusing anything that is not plainly a
file or a directory inside the data directory (or the one configuration file).

Nothing from the archive is trusted: names are checked before anything is created, links,
devices and FIFOs are refused, sizes are capped per file, in total and in number, and every
file is created with O_EXCL | O_NOFOLLOW, so nothing in the archive can write outside the
staging directory.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from appliance.backup.errors import BackupError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_file: int = 64 << 30  # the backup file as a whole
    max_member: int = 16 << 30  # one file inside it
    max_total: int = 64 << 30  # everything unpacked
    max_members: int = 2_000_000


def _member_name(member: tarfile.TarInfo, allowed_files: frozenset[str]) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or "\\" in member.name:
        raise BackupError(
            f"The backup names a path outside the data directory ({member.name!r}); it is "
            "refused and nothing was changed."
        )
    if name.parts[0] != "data" and str(name) not in allowed_files:
        raise BackupError(
            f"The backup holds {member.name!r}, which is outside the data directory; it is "
            "refused and nothing was changed."
        )
    return name


def unpack(
    source: IO[bytes], staging: Path, raw_header: bytes, limits: Limits,
    allowed_files: frozenset[str],
) -> list[PurePosixPath]:
    """Unpacks into `staging` (empty, private); returns the regular files written."""
    written: list[PurePosixPath] = []
    total = 0
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|gz") as tar:
            first = True
            for member in tar:
                count += 1
                if count > limits.max_members:
                    raise BackupError("The backup holds too many files to be a Textbridge backup.")
                if first:
                    first = False
                    handle = tar.extractfile(member) if member.isfile() else None
                    if member.name != "header.json" or handle is None or (
                        handle.read(len(raw_header) + 1) != raw_header
                    ):
                        raise BackupError(
                            "The backup file was changed: its header does not match its content."
                        )
                    continue
                name = _member_name(member, allowed_files)
                if member.isdir():
                    (staging / name).mkdir(parents=True, exist_ok=True, mode=0o700)
                    continue
                if not member.isfile():
                    kind = "a link" if member.issym() or member.islnk() else "a device or pipe"
                    raise BackupError(
                        f"The backup holds {kind} ({member.name!r}); only plain files can be "
                        "restored. Nothing was changed."
                    )
                if member.size > limits.max_member:
                    raise BackupError(
                        f"The backup holds a file that is far too large ({member.name!r}, "
                        f"{member.size >> 20} MiB). Nothing was changed."
                    )
                total += member.size
                if total > limits.max_total:
                    raise BackupError("The backup unpacks to more than this box can hold.")
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                handle = tar.extractfile(member)
                assert handle is not None  # isfile() members always have data
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := handle.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                # The archive's mode is kept, but never wider than 0640: no one else reads
                # the family's data, and nothing restored is executable.
                os.chmod(target, (member.mode & 0o640) | 0o600)
                written.append(name)
    except FileExistsError:
        raise BackupError("The backup holds the same file twice. Nothing was changed.") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"The backup's content cannot be read ({exc}).") from None
    if first:
        raise BackupError("The backup is empty.")
    return written
