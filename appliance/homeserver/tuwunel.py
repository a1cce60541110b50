"""Tuwunel, the appliance's homeserver: its configuration file and its adapter.

Config keys follow tuwunel-example.toml (Tuwunel 1.9). Two facts from Tuwunel's sources shape
this module:
- With `allow_registration = false` Tuwunel refuses every /register, with or without a token.
  So registration is enabled, but only for holders of `registration_token`, which is generated
  here, lives only in the 0600 config file, and never leaves the appliance. The
  "open registration" escape hatch stays explicitly false.
- Appservices can be declared in the config (`[global.appservice.<id>]`, read at start), so
  the registration needs no admin-room command and survives a database reset.

Accounts are made with the standard /register flow and that token; the first account on a
fresh server is made admin by Tuwunel (`grant_admin_to_first_user`), and that is the
adapter's own admin account. Password resets, deactivation and one-use registration tokens
use the Synapse-style admin API, which Tuwunel serves from 1.8.1 on.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import tomllib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from appliance.files import write_secret_file
from appliance.homeserver.api import (
    AdminCredentials,
    MatrixHttp,
    random_password,
    random_registration_token,
)
from appliance.homeserver.base import HomeserverError, HomeserverUnavailable, UserExists
from appliance.homeserver.registration import Registration, RegistrationError, prefix_from_regex

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 6167
DEFAULT_DATABASE = Path("/var/lib/tuwunel")


@dataclass(frozen=True)
class TuwunelConfig:
    server_name: str
    registration_token: str
    database_path: Path = DEFAULT_DATABASE
    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    appservices: tuple[Registration, ...] = field(default=())

    def __repr__(self) -> str:
        return f"TuwunelConfig(server_name={self.server_name!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def with_appservice(self, registration: Registration) -> TuwunelConfig:
        # Same id replaces: a re-run with a new bridge URL must not leave two registrations
        # claiming the same namespace.
        others = tuple(r for r in self.appservices if r.id != registration.id)
        return replace(self, appservices=(*others, registration))

    def render(self) -> str:
        q = json.dumps  # a JSON string is a valid TOML basic string
        lines = [
            "# Tuwunel configuration written by `textbridge homeserver bootstrap`.",
            "# It holds secrets (registration token, appservice tokens): keep it 0600.",
            "",
            "[global]",
            f"server_name = {q(self.server_name)}",
            f"database_path = {q(str(self.database_path))}",
            # Loopback only: Element reaches it through the appliance's reverse proxy.
            f"address = [{q(self.address)}]",
            f"port = {self.port}",
            "",
            "# Registration is possible only with the token below (see the module notes).",
            "allow_registration = true",
            f"registration_token = {q(self.registration_token)}",
            "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse = false",
            "allow_guest_registration = false",
            "grant_admin_to_first_user = true",
            "create_admin_room = true",
            "",
            "# A family's server on a Pi talks to no other server.",
            "allow_federation = false",
            "federate_admin_room = false",
            "allow_public_room_directory_over_federation = false",
            "trusted_servers = []",
            "allow_incoming_presence = false",
            "allow_outgoing_presence = false",
            "",
            "# New accounts get exactly the name given (Tuwunel appends a suffix by default).",
            'new_user_displayname_suffix = ""',
            'log = "info"',
        ]
        for reg in self.appservices:
            lines += _appservice_toml(reg, self.server_name)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> TuwunelConfig:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not valid TOML: {exc}") from None
        glob = raw.get("global", {})
        token = glob.get("registration_token")
        if not isinstance(token, str) or not token:
            raise ValueError("global.registration_token is missing")
        address = glob.get("address", "127.0.0.1")
        if isinstance(address, list):
            address = address[0]
        port = glob.get("port", DEFAULT_PORT)
        if isinstance(port, list):
            port = port[0]
        appservices = tuple(
            _appservice_from_toml(ident, table)
            for ident, table in glob.get("appservice", {}).items()
        )
        return cls(
            server_name=str(glob["server_name"]),
            registration_token=token,
            database_path=Path(glob.get("database_path", str(DEFAULT_DATABASE))),
            address=str(address),
            port=int(port),
            appservices=appservices,
        )

    @classmethod
    def load(cls, path: Path) -> TuwunelConfig:
        return cls.parse(Path(path).read_text(encoding="utf-8"))

    def save(self, path: Path, *, owner: str | None = None) -> bool:
        """Write if the content changed; True if it did (Tuwunel must then be restarted).
        `owner`: the system user Tuwunel runs as, who must be able to read the file."""
        path = Path(path)
        text = self.render()
        try:
            changed = path.read_text(encoding="utf-8") != text
        except FileNotFoundError:
            changed = True
        if changed:
            write_secret_file(path, text)
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return changed


def _appservice_toml(reg: Registration, server_name: str) -> list[str]:
    q = json.dumps
    # A bare key keeps the table name readable; anything else is quoted.
    key = reg.id if reg.id.replace("_", "").replace("-", "").isalnum() else q(reg.id)
    lines = [
        "",
        f"[global.appservice.{key}]",
        f"url = {q(reg.url)}",
        f"as_token = {q(reg.as_token)}",
        f"hs_token = {q(reg.hs_token)}",
        f"sender_localpart = {q(reg.sender_localpart)}",
        "rate_limited = false",
        "receive_ephemeral = true",
    ]
    for regex in (reg.user_regex(server_name), reg.bot_regex(server_name)):
        lines += ["", f"[[global.appservice.{key}.users]]", "exclusive = true"]
        lines.append(f"regex = {q(regex)}")
    return lines


def _appservice_from_toml(ident: str, table: dict[str, Any]) -> Registration:
    prefix = None
    for ns in table.get("users", []):
        prefix = prefix_from_regex(str(ns.get("regex", "")))
        if prefix is not None:
            break
    if prefix is None:
        raise RegistrationError(f"appservice {ident!r} has no '@<prefix>.*:server' namespace")
    return Registration(
        id=ident,
        url=str(table["url"]),
        as_token=str(table["as_token"]),
        hs_token=str(table["hs_token"]),
        sender_localpart=str(table["sender_localpart"]),
        user_prefix=prefix,
    )


def write_config(
    path: Path,
    *,
    server_name: str,
    database_path: Path = DEFAULT_DATABASE,
    port: int = DEFAULT_PORT,
    registrations: Iterable[Registration] = (),
    owner: str | None = None,
) -> tuple[TuwunelConfig, bool]:
    """Create or update Tuwunel's config. A token already in the file is kept, so a re-run
    does not invalidate anything. Returns (config, changed)."""
    try:
        old: TuwunelConfig | None = TuwunelConfig.load(path)
    except FileNotFoundError:
        old = None
    if old is not None and old.server_name != server_name:
        # The server name is baked into every event and account id in the database.
        raise ValueError(
            f"{path} is for {old.server_name!r}; changing the server name needs a new database"
        )
    config = TuwunelConfig(
        server_name=server_name,
        registration_token=old.registration_token if old else random_registration_token(),
        database_path=database_path,
        port=port,
        appservices=old.appservices if old else (),
    )
    for reg in registrations:
        config = config.with_appservice(reg)
    return config, config.save(path, owner=owner)


class TuwunelAdapter:
    name = "tuwunel"

    def __init__(
        self,
        config_path: Path,
        *,
        state_dir: Path,
        url: str | None = None,
        owner: str | None = None,
        admin_localpart: str = "textbridge-admin",
    ) -> None:
        self.config_path = Path(config_path)
        self.admin_localpart = admin_localpart
        self.state_dir = Path(state_dir)
        self._owner = owner
        config = TuwunelConfig.load(self.config_path)
        self.server_name = config.server_name
        self.url = url or config.url
        self.http = MatrixHttp(self.url, self.server_name)

    def __repr__(self) -> str:
        return f"TuwunelAdapter(url={self.url!r}, server_name={self.server_name!r})"

    @property
    def admin_credentials_path(self) -> Path:
        return self.state_dir / "textbridge-admin.json"

    def _registration_token(self) -> str:
        # Read each time: the config is the one place the token lives.
        return TuwunelConfig.load(self.config_path).registration_token

    async def is_up(self) -> bool:
        return await self.http.is_up()

    async def create_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        # The adapter's admin must be the first account, or Tuwunel would make this one admin.
        creds = await self._admin()
        mxid, token = await self.http.register_with_token(
            localpart, password, self._registration_token()
        )
        try:
            if displayname is not None:
                await self.http.set_displayname(mxid, token, displayname)
        finally:
            await self.http.logout(token)
        if admin:
            await self._as_admin(lambda t: self.http.admin_make_admin(t, localpart), creds)
        log.info("created %s%s", mxid, " (admin)" if admin else "")
        return mxid

    async def user_exists(self, localpart: str) -> bool:
        return await self.http.username_taken(localpart)

    async def set_password(self, localpart: str, password: str) -> None:
        await self._as_admin(lambda t: self.http.admin_reset_password(t, localpart, password))

    async def deactivate_user(self, localpart: str) -> None:
        await self._as_admin(lambda t: self.http.admin_deactivate(t, localpart))

    async def login(self, localpart: str, password: str) -> str:
        return await self.http.login(localpart, password)

    async def create_registration_token(
        self, *, uses: int = 1, expiry_ms: int | None = None
    ) -> str:
        return await self._as_admin(
            lambda t: self.http.admin_create_registration_token(t, uses=uses, expiry_ms=expiry_ms)
        )

    async def install_appservice(self, registration: Registration) -> bool:
        config = TuwunelConfig.load(self.config_path).with_appservice(registration)
        return config.save(self.config_path, owner=self._owner)

    async def _as_admin(
        self, call: Callable[[str], Awaitable[T]], creds: AdminCredentials | None = None
    ) -> T:
        creds = creds or await self._admin()
        try:
            return await call(creds.access_token)
        except HomeserverUnavailable:
            raise
        except HomeserverError as exc:
            if exc.errcode != "M_UNKNOWN_TOKEN":
                raise
        token = await self.http.login(creds.localpart, creds.password)
        AdminCredentials(creds.localpart, creds.password, token).save(self.admin_credentials_path)
        return await call(token)

    async def _admin(self) -> AdminCredentials:
        creds = AdminCredentials.load(self.admin_credentials_path)
        if creds is not None:
            return creds
        password = random_password(32)
        try:
            _, token = await self.http.register_with_token(
                self.admin_localpart, password, self._registration_token()
            )
        except UserExists:
            raise HomeserverError(
                f"{self.admin_localpart} exists but {self.admin_credentials_path} is gone; "
                "restore that file, or reset the account's password from Tuwunel's admin room"
            ) from None
        creds = AdminCredentials(self.admin_localpart, password, token)
        creds.save(self.admin_credentials_path)
        return creds
