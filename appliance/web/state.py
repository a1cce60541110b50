"""The web service's persistent state, and the files it shares with the bridge."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.web import config as names
from appliance.web.config import WebSettings
from appliance.web.files import read_json, write_json, write_private

WIZARD_STEPS = 6
DEFAULT_DAILY_CAP = 50

# argon2-cffi's defaults are argon2id with 64 MiB: about 50 ms on a Pi 4, fine for a login.
_hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored: str, password: str) -> bool:
    def check() -> bool:
        try:
            return bool(_hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# A hash of a random password: verifying against it when the username is unknown costs the
# same time as a real check, so response time does not reveal the owner's username.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


async def burn_verify(password: str) -> None:
    await verify_password(_DUMMY_HASH, password)


@dataclass
class Member:
    name: str
    username: str
    mxid: str
    lines: list[str] = field(default_factory=list)
    owner: bool = False
    added_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "username": self.username,
            "mxid": self.mxid,
            "lines": sorted(self.lines),
            "owner": self.owner,
            "added_at": self.added_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Member:
        return cls(
            name=str(data["name"]),
            username=str(data["username"]),
            mxid=str(data["mxid"]),
            lines=[str(x) for x in data.get("lines", [])],
            owner=bool(data.get("owner", False)),
            added_at=float(data.get("added_at", 0.0)),
        )


@dataclass
class Policy:
    default_daily_cap: int = DEFAULT_DAILY_CAP
    block_short_codes: bool = True
    block_premium: bool = True
    international_allowed: bool = True
    caps: dict[str, int] = field(default_factory=dict)  # mxid -> SMS per day

    def to_json(self) -> dict[str, Any]:
        return {
            "default_daily_cap": self.default_daily_cap,
            "block_short_codes": self.block_short_codes,
            "block_premium": self.block_premium,
            "international_allowed": self.international_allowed,
            "users": {mxid: {"daily_cap": cap} for mxid, cap in sorted(self.caps.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        users = data.get("users", {})
        return cls(
            default_daily_cap=int(data.get("default_daily_cap", DEFAULT_DAILY_CAP)),
            block_short_codes=bool(data.get("block_short_codes", True)),
            block_premium=bool(data.get("block_premium", True)),
            international_allowed=bool(data.get("international_allowed", True)),
            caps={str(k): int(v.get("daily_cap", DEFAULT_DAILY_CAP)) for k, v in users.items()},
        )


class WebState:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.dir = settings.state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def session_secret(self) -> bytes:
        path = self.dir / names.SESSION_KEY_FILE
        try:
            secret = path.read_bytes()
            if len(secret) >= 32:
                return secret
        except FileNotFoundError:
            pass
        secret = secrets.token_bytes(32)
        write_private(path, secret)
        return secret

    # -- the wizard ---------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        data = read_json(self.dir / names.SETUP_FILE, {})
        return data if isinstance(data, dict) else {}

    def save_setup(self, data: dict[str, Any]) -> None:
        write_json(self.dir / names.SETUP_FILE, data)

    @property
    def complete(self) -> bool:
        return bool(self.setup().get("complete"))

    def done_steps(self) -> set[int]:
        return {int(s) for s in self.setup().get("done", [])}

    def mark_done(self, step: int, **extra: Any) -> None:
        data = self.setup()
        data["done"] = sorted(self.done_steps() | {step})
        data.update(extra)
        self.save_setup(data)

    def finish(self) -> None:
        data = self.setup()
        data["complete"] = True
        data["completed_at"] = time.time()
        data["done"] = list(range(1, WIZARD_STEPS + 1))
        self.save_setup(data)

    # -- the owner ----------------------------------------------------------------------

    def owner(self) -> dict[str, str] | None:
        data = read_json(self.dir / names.OWNER_FILE, None)
        if not isinstance(data, dict) or "password_hash" not in data:
            return None
        return {str(k): str(v) for k, v in data.items()}

    def forget_owner_reset(self) -> None:
        data = self.setup()
        if data.pop("owner_reset_username", None) is not None:
            self.save_setup(data)

    def save_owner(self, *, name: str, username: str, mxid: str, password_hash: str) -> None:
        write_json(
            self.dir / names.OWNER_FILE,
            {"name": name, "username": username, "mxid": mxid, "password_hash": password_hash},
        )

    # -- the family ---------------------------------------------------------------------

    def family(self) -> list[Member]:
        data = read_json(self.dir / names.FAMILY_FILE, {"members": []})
        return [Member.from_json(m) for m in data.get("members", [])]

    def member(self, username: str) -> Member | None:
        return next((m for m in self.family() if m.username == username), None)

    def save_family(self, members: list[Member]) -> None:
        write_json(self.dir / names.FAMILY_FILE, {"members": [m.to_json() for m in members]})
        # The bridge's view: who may use which line.
        lines: dict[str, list[str]] = {}
        for m in members:
            for line_id in m.lines:
                lines.setdefault(line_id, []).append(m.mxid)
        write_json(self.dir / names.MEMBERS_FILE, {k: sorted(v) for k, v in lines.items()})

    def upsert_member(self, member: Member) -> None:
        members = [m for m in self.family() if m.username != member.username]
        members.append(member)
        self.save_family(members)

    def remove_member(self, username: str) -> None:
        self.save_family([m for m in self.family() if m.username != username])

    # -- policy -------------------------------------------------------------------------

    def policy(self) -> Policy:
        data = read_json(self.dir / names.POLICY_FILE, {})
        return Policy.from_json(data if isinstance(data, dict) else {})

    def save_policy(self, policy: Policy) -> None:
        write_json(self.dir / names.POLICY_FILE, policy.to_json())
