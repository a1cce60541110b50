"""Encrypted backups of the state directory.

Format: MAGIC, a 16-byte scrypt salt, a 12-byte nonce, then AES-256-GCM over a gzipped tar
of the state directory, with MAGIC as associated data. scrypt makes guessing the passphrase
expensive; GCM makes any change to the file (or a wrong passphrase) fail loudly instead of
restoring garbage.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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
    """Check every member before writing anything: a hostile archive could name ../ paths,
    absolute paths, links or devices. Returns the restored file names."""
    data = decrypt(blob, passphrase)
    files: list[tuple[PurePosixPath, bytes, int]] = []
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
                files.append((name, handle.read(), member.mode & 0o777))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"The backup could not be read: {exc}") from None
    for name, content, mode in files:
        # Everything restored is private unless it was world-readable public material.
        write_private(state_dir.joinpath(*name.parts), content, mode=mode & 0o644 or 0o600)
    return [str(name) for name, _, _ in files]
