"""The ADB wire protocol as adbd speaks it (AOSP packages/modules/adb/protocol.txt).

Every packet is a 24-byte little-endian header -- command, arg0, arg1, data length, data
checksum (byte sum; 0 allowed from version 0x01000001 on), magic (command ^ 0xffffffff) --
followed by the data. Written independently of adb-shell, so tests that put adb-shell
against this simulator check one implementation against the other.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453
COMMANDS = {A_SYNC, A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_STLS}
NAMES = {
    A_SYNC: "SYNC",
    A_CNXN: "CNXN",
    A_AUTH: "AUTH",
    A_OPEN: "OPEN",
    A_OKAY: "OKAY",
    A_CLSE: "CLSE",
    A_WRTE: "WRTE",
    A_STLS: "STLS",
}

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")
_KEY_STRUCT = struct.Struct("<LL256s256sL")


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class Packet:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return NAMES.get(self.command, f"0x{self.command:08x}")

    def pack(self) -> bytes:
        header = HEADER.pack(
            self.command,
            self.arg0 & 0xFFFFFFFF,
            self.arg1 & 0xFFFFFFFF,
            len(self.data),
            checksum(self.data),
            self.command ^ 0xFFFFFFFF,
        )
        return header + self.data


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def parse_header(raw: bytes) -> tuple[int, int, int, int, int]:
    """(command, arg0, arg1, length, checksum), or ProtocolError for a corrupt header."""
    if len(raw) != HEADER.size:
        raise ProtocolError(f"short header ({len(raw)} bytes)")
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command 0x{command:08x}")
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic for {NAMES[command]}")
    if length > MAX_PAYLOAD * 4:
        raise ProtocolError(f"payload of {length} bytes is too large")
    return command, arg0, arg1, length, check


def decode_public_key(blob: bytes) -> rsa.RSAPublicKey:
    """An AUTH(RSAPUBLICKEY) payload ("<base64 struct RSAPublicKey> user@host\\0")."""
    text = blob.rstrip(b"\0").split(b" ", 1)[0]
    try:
        raw = base64.b64decode(text, validate=True)
        words, n0inv, modulus, rr, exponent = _KEY_STRUCT.unpack(raw)
    except (ValueError, struct.error) as exc:
        raise ProtocolError(f"unreadable public key ({exc})") from exc
    if words != 64:
        raise ProtocolError(f"public key has {words} modulus words, expected 64 (RSA-2048)")
    n = int.from_bytes(modulus, "little")
    # The precomputed Montgomery values must agree with the modulus, as adbd relies on them.
    if (n0inv * n + 1) % (1 << 32) != 0 or int.from_bytes(rr, "little") != pow(1 << 2048, 2, n):
        raise ProtocolError("public key's precomputed values do not match its modulus")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def verify_token(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adbd's check: RSA PKCS#1 v1.5 where the 20-byte token stands in for a SHA-1 digest."""
    try:
        # SHA-1 is what the ADB protocol specifies for the token signature.
        key.verify(
            signature,
            token,
            padding.PKCS1v15(),
            utils.Prehashed(hashes.SHA1()),  # noqa: S303
        )
    except (InvalidSignature, ValueError):
        return False
    return True
