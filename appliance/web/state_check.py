"""Checks of the web state files as a restore finds them, with the forms' own validators.

A restored owner.json passes the same checks the wizard's owner step made (name, username,
password hash), family.json the family form's, and so on; a backup that would leave a
closed wizard and no owner who can log in is refused (issue 12.4). Every failure names the
file and says what is wrong; nothing here writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from appliance.web import config as names
from appliance.web import validate
from appliance.web.state import WIZARD_STEPS, Member, Policy
from appliance.wireguard import keys as wg_keys
from appliance.wireguard import tunnel as wg_tunnel

MXID_RE = re.compile(r"@[a-z0-9._=/+\-]+:[A-Za-z0-9.\-]+(:[0-9]+)?")


class BadStateFile(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None


def _mxid(value: Any) -> str:
    if not isinstance(value, str) or not MXID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Matrix ID")
    return value


def _form(check: Callable[[str], Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    try:
        check(value)
    except validate.Invalid as exc:
        raise ValueError(exc.message) from None


def check_owner(path: Path) -> None:
    data = _json(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    _form(lambda v: validate.display_name(v, label="name"), data.get("name"))
    _form(validate.username, data.get("username"))
    mxid = _mxid(data.get("mxid"))
    if mxid.split(":", 1)[0] != "@" + data["username"]:
        raise ValueError("the Matrix ID does not belong to the username")
    hashed = data.get("password_hash")
    if not isinstance(hashed, str) or not hashed.startswith("$argon2id$"):
        raise ValueError("the password hash is not an argon2id hash")
    try:
        argon2.extract_parameters(hashed)
    except argon2.exceptions.InvalidHashError:
        raise ValueError("the password hash is damaged") from None


def check_setup(path: Path) -> None:
    data = _json(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if not isinstance(data.get("complete", False), bool):
        raise ValueError("'complete' is not true or false")
    done = data.get("done", [])
    if not isinstance(done, list) or not all(
        isinstance(s, int) and 1 <= s <= WIZARD_STEPS for s in done
    ):
        raise ValueError("the list of finished steps is not valid")


def check_family(path: Path) -> None:
    data = _json(path)
    if not isinstance(data, dict) or not isinstance(data.get("members", []), list):
        raise ValueError("not a list of members")
    for raw in data.get("members", []):
        if not isinstance(raw, dict):
            raise ValueError("a member is not a JSON object")
        try:
            member = Member.from_json(raw)
        except (KeyError, TypeError, ValueError):
            raise ValueError("a member is incomplete") from None
        _form(validate.display_name, member.name)
        _form(validate.username, member.username)
        _mxid(member.mxid)


def check_members(path: Path) -> None:
    data = _json(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for line_id, people in data.items():
        if not isinstance(people, list):
            raise ValueError(f"line {line_id!r} has no list of people")
        for mxid in people:
            _mxid(mxid)


def check_policy(path: Path) -> None:
    data = _json(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        policy = Policy.from_json(data)
    except (AttributeError, TypeError, ValueError):
        raise ValueError("a setting has the wrong kind of value") from None
    for cap in (policy.default_daily_cap, *policy.caps.values()):
        if not 0 <= cap <= 10000:
            raise ValueError(f"a daily cap of {cap} is out of range (0 to 10000)")
    for mxid in policy.caps:
        _mxid(mxid)


def check_session_key(path: Path) -> None:
    if len(path.read_bytes()) < 32:
        raise ValueError("the session secret is too short")


def check_wireguard(path: Path) -> None:
    try:
        wg_tunnel.load(path)
    except (KeyError, TypeError, ValueError, wg_tunnel.Invalid) as exc:
        raise ValueError(f"the remote access settings are not valid ({exc})") from None


def check_wireguard_key(path: Path) -> None:
    try:
        wg_keys.check(path.read_text(encoding="ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the WireGuard key is damaged") from None


def check_pem(path: Path) -> None:
    data = path.read_bytes()
    try:
        if path.suffix == ".key":
            load_pem_private_key(data, password=None)
        elif path.suffix in (".crt", ".pem"):
            x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("the certificate or key is damaged") from None


CHECKS: dict[str, Callable[[Path], None]] = {
    names.OWNER_FILE: check_owner,
    names.SETUP_FILE: check_setup,
    names.FAMILY_FILE: check_family,
    names.MEMBERS_FILE: check_members,
    names.POLICY_FILE: check_policy,
    names.SESSION_KEY_FILE: check_session_key,
    wg_tunnel.STATE_FILE: check_wireguard,
    wg_tunnel.KEY_FILE: check_wireguard_key,
}


def check_state_dir(state_dir: Path) -> list[str]:
    """Checks every file of a (staged) web state directory; returns the names checked.
    Raises BadStateFile for the first one that is wrong."""
    checked: list[str] = []
    for path in sorted(p for p in state_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(state_dir).as_posix()
        check = CHECKS.get(rel)
        if check is None and rel.split("/")[0] in ("ca", "acme"):
            check = check_pem
        try:
            if check is not None:
                check(path)
        except (ValueError, OSError) as exc:
            raise BadStateFile(rel, str(exc)) from None
        checked.append(rel)
    setup = _json(state_dir / names.SETUP_FILE) if (state_dir / names.SETUP_FILE).is_file() else {}
    if setup.get("complete") and not (state_dir / names.OWNER_FILE).is_file():
        raise BadStateFile(
            names.OWNER_FILE, "the setup is finished but there is no owner: nobody could log in"
        )
    return checked
