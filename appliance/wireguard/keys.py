"""WireGuard keys: X25519 key pairs and preshared keys, in WireGuard's base64 form.

The appliance's own private key is made on first use and kept in one 0600 file; the keys made
for a phone are handed out once and never stored. Nothing here logs a key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.files import write_private

KEY_LEN = 32


class BadKey(ValueError):
    pass


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode(key: str) -> bytes:
    """The 32 bytes of a base64 key; BadKey for anything else (never echoing the value)."""
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey("not a base64 WireGuard key") from exc
    if len(raw) != KEY_LEN:
        raise BadKey(f"a WireGuard key is {KEY_LEN} bytes, this one is {len(raw)}")
    return raw


def check(key: str) -> str:
    decode(key)
    return key.strip()


def private_key() -> str:
    raw = bytearray(secrets.token_bytes(KEY_LEN))
    # Clamped as `wg genkey` does, so the stored form matches what wg-tools would make.
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return _encode(bytes(raw))


def public_key(private: str) -> str:
    key = X25519PrivateKey.from_private_bytes(decode(private))
    return _encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def preshared_key() -> str:
    return _encode(secrets.token_bytes(KEY_LEN))


def to_hex(key: str) -> str:
    """The userspace API's form of a key."""
    return decode(key).hex()


def from_hex(value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise BadKey("not a hex WireGuard key") from exc
    if len(raw) != KEY_LEN:
        raise BadKey(f"a WireGuard key is {KEY_LEN} bytes, this one is {len(raw)}")
    return _encode(raw)


def load_or_create(path: Path) -> str:
    """The appliance's private key at `path`, made (0600) the first time it is asked for.

    The web service (it needs the public key for a phone's config) and the apply step may
    both get here first; a lock next to the file makes sure only one key is ever made."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return check(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            pass
        key = private_key()
        write_private(path, (key + "\n").encode("ascii"))
        return key
    finally:
        os.close(fd)
