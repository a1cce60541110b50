"""Every staged file checked before anything on the box is replaced.

Databases pass `PRAGMA integrity_check`; the web state passes the forms' validators
(appliance/web/state_check.py); the configuration, the appservice registration and the
backup key load with the loaders the appliance itself uses.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from appliance.backup import key as backup_key
from appliance.backup import sqlite_copy
from appliance.backup.errors import BackupError
from appliance.backup.layout import is_sqlite


def _refuse(name: str, reason: str) -> BackupError:
    return BackupError(
        f"The backup's {name} is not valid: {reason}. It was not restored; nothing was changed."
    )


def check_staged(staging: Path, files: list[PurePosixPath]) -> None:
    from appliance.config import Config, ConfigError
    from appliance.homeserver.registration import Registration, RegistrationError
    from appliance.web import state_check

    data = staging / "data"
    for rel in files:
        path = staging / rel
        if is_sqlite(path):
            result = sqlite_copy.integrity(path)
            if result != "ok":
                raise _refuse(str(rel), f"the database is damaged ({result})")
    web_dir = data / "web"
    if web_dir.is_dir():
        try:
            state_check.check_state_dir(web_dir)
        except state_check.BadStateFile as exc:
            raise _refuse(f"web/{exc.name}", exc.reason) from None
    config = staging / "etc" / "config.toml"
    if config.is_file():
        try:
            Config.load(config)
        except ConfigError as exc:
            raise _refuse("config.toml", str(exc)) from None
    registration = data / "registration.yaml"
    if registration.is_file():
        try:
            Registration.load(registration)
        except (RegistrationError, ValueError, UnicodeDecodeError) as exc:
            raise _refuse("registration.yaml", str(exc)) from None
    key_file = data / backup_key.KEY_FILE
    if key_file.is_file():
        try:
            backup_key.load(key_file)
        except BackupError:
            raise _refuse(backup_key.KEY_FILE, "the backup key is damaged") from None
