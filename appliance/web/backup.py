"""Encrypted backups of the web state directory (the dashboard's Backup page).

The full backup of a box (every database, the homeserver, the keys) is appliance/backup/;
this older format holds only the web's settings.

Format: MAGIC, a 16-byte scrypt salt, a 12-byte nonce, then AES-256-GCM over a gzipped tar
of the state directory, with MAGIC as associated data. scrypt makes guessing the passphrase
expensive; GCM makes any change to the file (or a wrong passphrase) fail loudly instead of
restoring garbage.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.files import fsync_dir
from appliance.web import state_check
from appliance.web.files import write_private

MAGIC = b"TEXTBRIDGE-BACKUP-1\n"
SCRYPT_N = 2**15  # 32 MiB of memory: affordable on a Pi, costly for a guesser
MAX_BACKUP = 256 * 1024 * 1024
# Never in a backup: sockets and the log of a previous run say nothing about the family.
SKIP_SUFFIXES = (".sock", ".lock")


class BackupError(ValueError):
    pass


def _key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase.encode())


def make_tar(state_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(state_dir.rglob("*")):
            if path.is_symlink() or path.name.endswith(SKIP_SUFFIXES):
                continue
            if path.is_file() or path.is_dir():
                tar.add(path, arcname=str(path.relative_to(state_dir)), recursive=False)
    return buffer.getvalue()


def encrypt(data: bytes, passphrase: str) -> bytes:
    salt = os.urandom(16)
    nonce = os.urandom(12)
    return MAGIC + salt + nonce + AESGCM(_key(passphrase, salt)).encrypt(nonce, data, MAGIC)


def decrypt(blob: bytes, passphrase: str) -> bytes:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 28 + 16:
        raise BackupError("This file is not a Textbridge backup.")
    salt = blob[len(MAGIC) : len(MAGIC) + 16]
    nonce = blob[len(MAGIC) + 16 : len(MAGIC) + 28]
    try:
        return AESGCM(_key(passphrase, salt)).decrypt(nonce, blob[len(MAGIC) + 28 :], MAGIC)
    except InvalidTag:
        raise BackupError(
            "The passphrase is wrong, or the backup file is damaged."
        ) from None


def backup(state_dir: Path, passphrase: str) -> bytes:
    return encrypt(make_tar(state_dir), passphrase)


def restore(state_dir: Path, blob: bytes, passphrase: str) -> list[str]:
    """All or nothing (issue 12.4): the archive is checked member by member (no ../ or
    absolute paths, links or devices), laid over a copy of the state directory, and that
    whole copy must pass the forms' validators (state_check.py) before it replaces the
    state directory in two renames. Everything restored is 0600. Returns the file names."""
    data = decrypt(blob, passphrase)
    files: list[tuple[PurePosixPath, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or not name.parts:
                    raise BackupError(f"The backup holds an unsafe path: {member.name!r}.")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BackupError(f"The backup holds something that is not a file: {name}.")
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - isfile() members always have data
                    continue
                files.append((name, handle.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"The backup could not be read: {exc}") from None
    parent = state_dir.parent
    staging = Path(tempfile.mkdtemp(prefix=".restore-web-", dir=parent))
    try:
        staged = staging / "web"
        if state_dir.is_dir():
            shutil.copytree(state_dir, staged, symlinks=True,
                            ignore=shutil.ignore_patterns("*.sock", "*.lock"))
        staged.mkdir(mode=0o700, exist_ok=True)
        for name, content in files:
            target = staged.joinpath(*name.parts)
            if target.is_symlink():
                target.unlink()
            write_private(target, content, mode=0o600)
        try:
            state_check.check_state_dir(staged)
        except state_check.BadStateFile as exc:
            raise BackupError(
                f"The backup's {exc.name} is not valid ({exc.reason}); nothing was restored."
            ) from None
        for path in staged.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o700 if path.is_dir() else 0o600)
        aside = staging / "previous"
        if state_dir.exists():
            os.rename(state_dir, aside)
        try:
            os.rename(staged, state_dir)
        except OSError:
            if aside.exists():
                os.rename(aside, state_dir)
            raise
        fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [str(name) for name, _ in files]
