"""Our own ADB key pair: generated at first use, private half 0600, never shared.

ADB authenticates the host with RSA-2048: the phone sends a 20-byte token, the host signs
it (PKCS#1 v1.5 over a value the protocol treats as a SHA-1 digest), and a phone that has
never seen the key asks its owner "Allow USB debugging?" showing the key's fingerprint.
The public key travels in Android's own binary layout (struct RSAPublicKey from
system/core/libcrypto_utils), base64 encoded, followed by " user@host".
"""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

from adb_shell.auth.sign_cryptography import CryptographySigner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MODULUS_BYTES = 2048 // 8
_STRUCT = f"<LL{MODULUS_BYTES}s{MODULUS_BYTES}sL"
KEY_COMMENT = "textbridge@appliance"


def android_public_key(key: rsa.RSAPublicKey, comment: str = KEY_COMMENT) -> bytes:
    """The public key as adbd expects it in an AUTH(RSAPUBLICKEY) packet (without the NUL)."""
    numbers = key.public_numbers()
    if numbers.n.bit_length() > MODULUS_BYTES * 8:
        raise ValueError("ADB keys are RSA-2048")
    r32 = 1 << 32
    # adbd's Montgomery arithmetic wants -1/n mod 2^32 and R^2 mod n precomputed.
    n0inv = r32 - pow(numbers.n % r32, -1, r32)
    rr = pow(1 << (MODULUS_BYTES * 8), 2, numbers.n)
    blob = struct.pack(
        _STRUCT,
        MODULUS_BYTES // 4,
        n0inv,
        numbers.n.to_bytes(MODULUS_BYTES, "little"),
        rr.to_bytes(MODULUS_BYTES, "little"),
        numbers.e,
    )
    return base64.b64encode(blob) + b" " + comment.encode("ascii")


def ensure_key(path: Path) -> Path:
    """Create the key pair at `path` (+ `.pub`) if missing; return `path`.

    The private key is written through a 0600 file descriptor, so it is never readable by
    others, not even for the moment between create and chmod.
    """
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub.write_bytes(android_public_key(private.public_key()))
    os.replace(tmp, path)
    return path


def load_signer(path: Path) -> CryptographySigner:
    """adb-shell's signer over our key file (created first if needed)."""
    return CryptographySigner(str(ensure_key(path)))


def fingerprint(path: Path) -> str:
    """The MD5 fingerprint the phone's "Allow USB debugging?" dialog shows, for the wizard."""
    import hashlib

    pub = path.with_name(path.name + ".pub").read_bytes().split(b" ", 1)[0]
    digest = hashlib.md5(base64.b64decode(pub), usedforsecurity=False).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
