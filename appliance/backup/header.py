"""The plain header in front of every backup file, and the checks it allows before the key.

A backup file is:

    TEXTBRIDGE-BACKUP-2\\n                 the magic line (the "1" format was web state only)
    {"product": "textbridge", ...}\\n      the header: one line of JSON, at most 8 KiB
    age-encryption.org/v1 ...              an age file (X25519 recipient) holding a tar

The header is readable without the key so that a restore onto the wrong box is refused
before anyone types a key. It is not trusted on its own: the same bytes are the first member
of the encrypted tar (`header.json`), and a restore compares the two.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

from appliance import __version__
from appliance.backup.errors import BackupError

MAGIC = b"TEXTBRIDGE-BACKUP-2\n"
OLD_MAGIC = b"TEXTBRIDGE-BACKUP-1\n"
AGE_MAGIC = b"age-encryption.org/v1\n"
PRODUCT = "textbridge"
FORMAT = 2
MAX_HEADER = 8192
FLAVOURS = ("synapse", "tuwunel")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,3}")


@dataclass(frozen=True)
class Header:
    homeserver: str
    recipient: str  # the age X25519 public key the archive is encrypted to
    # The box's age identity encrypted with the owner's passphrase (age scrypt), so that the
    # passphrase opens the backup as well as the emergency kit's key does; "" if none set.
    passphrase_identity: str = ""
    appliance_version: str = __version__
    created_at: float = 0.0
    product: str = PRODUCT
    format: int = FORMAT

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def new(cls, homeserver: str, recipient: str, passphrase_identity: str = "") -> Header:
        return cls(homeserver, recipient, passphrase_identity, created_at=round(time.time(), 3))


def version_tuple(text: str) -> tuple[int, ...]:
    if not _VERSION_RE.fullmatch(text):
        raise BackupError(f"The backup names an appliance version that cannot be read: {text!r}.")
    return tuple(int(p) for p in text.split("."))


def write(out: IO[bytes], header: Header) -> None:
    out.write(MAGIC)
    out.write(header.encode())


def read(handle: IO[bytes]) -> tuple[Header, bytes]:
    """The header and its raw line; `handle` is left at the start of the age file."""
    magic = handle.read(len(MAGIC))
    if magic == OLD_MAGIC:
        raise BackupError(
            "This is an older Textbridge settings backup (from the Backup page). Restore it "
            "on the dashboard's Backup page; it does not hold the messages or the homeserver."
        )
    if magic != MAGIC:
        if magic.startswith(AGE_MAGIC[: len(magic)]) and magic:
            raise BackupError("This is an age file, but not a Textbridge backup.")
        raise BackupError("This file is not a Textbridge backup.")
    raw = handle.readline(MAX_HEADER + 1)
    if not raw.endswith(b"\n") or len(raw) > MAX_HEADER:
        raise BackupError("The backup file is damaged: its header is cut off.")
    try:
        data: Any = json.loads(raw)
    except ValueError:
        raise BackupError("The backup file is damaged: its header cannot be read.") from None
    if not isinstance(data, dict) or data.get("product") != PRODUCT:
        raise BackupError("This file is a backup of another product, not of Textbridge.")
    try:
        header = Header(
            homeserver=str(data["homeserver"]),
            recipient=str(data["recipient"]),
            passphrase_identity=str(data.get("passphrase_identity") or ""),
            appliance_version=str(data["appliance_version"]),
            created_at=float(data["created_at"]),
            product=PRODUCT,
            format=int(data["format"]),
        )
    except (KeyError, TypeError, ValueError):
        raise BackupError("The backup file is damaged: its header is incomplete.") from None
    if header.encode() != raw:
        raise BackupError("The backup file is damaged: its header was changed.")
    return header, raw


def check_compatible(header: Header, homeserver: str) -> None:
    """Refuse what this box cannot take, saying what to do instead."""
    if header.format > FORMAT or version_tuple(header.appliance_version) > version_tuple(
        __version__
    ):
        raise BackupError(
            f"This backup was made by a newer Textbridge ({header.appliance_version}; this box "
            f"runs {__version__}). Update this box first (flash the newest image), then restore."
        )
    if header.homeserver not in FLAVOURS:
        raise BackupError(f"The backup names an unknown homeserver: {header.homeserver!r}.")
    if header.homeserver != homeserver:
        raise BackupError(
            f"This backup comes from a box running {header.homeserver.title()}, and this one "
            f"runs {homeserver.title()}. Flash the {header.homeserver.title()} image of "
            "Textbridge, then restore the backup at its first start."
        )
