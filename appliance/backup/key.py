"""The backup key: an age X25519 identity the box keeps (0600) for scheduled backups.

Why age (pyrage): a small, well-reviewed format with one way to do each thing (X25519 or
scrypt recipients, ChaCha20-Poly1305 in 64 KiB chunks, so a truncated or changed file fails
to decrypt and is never half-used), a stable specification that other tools read (`age -d`
opens a backup's encrypted part on any computer), and streaming, so a backup of gigabytes
never sits in memory. The hand-made AES-GCM format it replaces had none of these.

The owner may also set a passphrase. The box cannot keep only a passphrase and still back up
at night without a person, so the passphrase does not replace the identity: it encrypts it
(age's scrypt recipient), and that small blob travels in each backup's header. Either the
emergency kit's key or the passphrase then opens a backup.

Key file (`{data_dir}/backup.key`, JSON, 0600):
    {"identity": "AGE-SECRET-KEY-1...", "passphrase_identity": "<base64 age scrypt file>"}
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from appliance.backup import age
from appliance.backup.errors import BackupError
from appliance.files import write_private

KEY_FILE = "backup.key"
SECRET_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 - the format's prefix, not a secret
MIN_PASSPHRASE = 12


@dataclass(frozen=True)
class BackupKey:
    identity: str
    passphrase_identity: str = ""  # base64 of the identity encrypted with the passphrase

    @property
    def recipient(self) -> str:
        return age.recipient_of(self.identity)


def generate() -> BackupKey:
    return BackupKey(age.new_identity())


def with_passphrase(key: BackupKey, passphrase: str) -> BackupKey:
    """Slow on purpose (scrypt): seconds on a Pi, once, when the owner sets it."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"Use a passphrase of at least {MIN_PASSPHRASE} characters.")
    wrapped = age.passphrase_encrypt(key.identity.encode(), passphrase)
    return BackupKey(key.identity, base64.b64encode(wrapped).decode())


def save(path: Path, key: BackupKey) -> None:
    data = {"identity": key.identity, "passphrase_identity": key.passphrase_identity}
    write_private(path, (json.dumps(data, indent=2) + "\n").encode())


def load(path: Path) -> BackupKey:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        key = BackupKey(str(data["identity"]), str(data.get("passphrase_identity") or ""))
        age.check_identity(key.identity)
    except FileNotFoundError:
        raise BackupError(f"There is no backup key at {path} yet.") from None
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"The backup key file {path} is damaged.") from None
    return key


def load_or_create(path: Path) -> BackupKey:
    """At setup: the key is made once and never replaced (old backups need it)."""
    if path.exists():
        return load(path)
    key = generate()
    save(path, key)
    return key


def identity_for(secret: str, passphrase_identity: str) -> str:
    """What a person typed (the kit's key, or the passphrase), or a key file's text, as the
    identity that opens a backup whose header carries `passphrase_identity`."""
    text = secret.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["identity"])
        except (ValueError, KeyError, TypeError):
            raise BackupError("That key file cannot be read.") from None
    compact = "".join(text.split()).upper()
    if compact.startswith(SECRET_PREFIX):
        try:
            return age.check_identity(compact)
        except age.AgeError:
            raise BackupError(
                "That backup key is mistyped: check it against the emergency kit."
            ) from None
    if not passphrase_identity:
        raise BackupError(
            "This backup opens only with its key (AGE-SECRET-KEY-1…, on the emergency kit); "
            "no passphrase was set when it was made."
        )
    try:
        inner = age.passphrase_decrypt(base64.b64decode(passphrase_identity), secret)
        return age.check_identity(inner.decode())
    except ValueError:
        raise BackupError("The passphrase is wrong.") from None


def kit_text(key: BackupKey) -> str:
    """The key as the emergency kit prints it: groups of eight, easy to copy by hand."""
    body = key.identity[len(SECRET_PREFIX):]
    groups = [body[i : i + 8] for i in range(0, len(body), 8)]
    return SECRET_PREFIX + " " + " ".join(groups)
