"""The few age operations a backup needs, typed (pyrage ships no type information).

Identities and recipients travel as their standard strings (AGE-SECRET-KEY-1…, age1…).
"""

from __future__ import annotations

from typing import IO, Any

import pyrage  # type: ignore[import-untyped]


class AgeError(ValueError):
    """A key that cannot be read, or a file that does not decrypt."""


class NoMatchingKey(AgeError):
    """The file is sound but was not made for this identity."""


def new_identity() -> str:
    return str(pyrage.x25519.Identity.generate())


def _identity(identity: str) -> Any:
    try:
        return pyrage.x25519.Identity.from_str(identity)
    except pyrage.IdentityError:
        raise AgeError("not an age identity") from None


def check_identity(identity: str) -> str:
    _identity(identity)
    return identity


def recipient_of(identity: str) -> str:
    return str(_identity(identity).to_public())


def encrypt_stream(source: IO[bytes], sink: Any, recipient: str) -> None:
    pyrage.encrypt_io(source, sink, [pyrage.x25519.Recipient.from_str(recipient)])


def decrypt_stream(source: IO[bytes], sink: Any, identity: str) -> None:
    """Raises NoMatchingKey or AgeError; other exceptions raised by `sink.write` pass."""
    try:
        pyrage.decrypt_io(source, sink, [_identity(identity)])
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise NoMatchingKey(str(exc)) from None
        raise AgeError(str(exc)) from None
    except OSError as exc:
        # pyrage reports a changed or cut-off chunk as an I/O error of the stream.
        raise AgeError(str(exc)) from None


def passphrase_encrypt(data: bytes, passphrase: str) -> bytes:
    return bytes(pyrage.passphrase.encrypt(data, passphrase))


def passphrase_decrypt(data: bytes, passphrase: str) -> bytes:
    try:
        return bytes(pyrage.passphrase.decrypt(data, passphrase))
    except pyrage.DecryptError:
        raise AgeError("wrong passphrase") from None
