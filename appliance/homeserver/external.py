"""The family's existing homeserver ("Connect to my homeserver"): no admin API, ever.

On such a server the accounts are the family's own, made and managed by whoever runs the
server. The appliance only needs three things of it, all standard client-server API:
  - that it answers (`GET /_matrix/client/versions`),
  - that a Matrix ID exists (a profile lookup, `GET /_matrix/client/v3/profile/{mxid}`,
    with the bridge's as_token, which every homeserver accepts for its appservices),
  - a registration the server's admin installs by hand (`registration_for`).
Everything that would need admin rights raises `NotInThisMode` with words a person can act on.
See docs/homeserver.md, "Using your own homeserver".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlsplit

from appliance.homeserver.api import MatrixHttp, _error_of
from appliance.homeserver.base import HomeserverError, HomeserverUnavailable
from appliance.homeserver.registration import Registration

log = logging.getLogger(__name__)

MXID = re.compile(r"@([a-z0-9._=/+\-]+):([A-Za-z0-9.\-]+(?::[0-9]+)?)")


class NotInThisMode(HomeserverError):
    """Asked for something only the server's admin may do on the family's own server."""


@dataclass(frozen=True)
class ExternalHomeserver:
    """Where the family's server is: `url` is its client-server API (behind a reverse
    proxy, say https://matrix.example.org), `server_name` the part after the colon in its
    Matrix IDs (example.org), which need not be the URL's host."""

    url: str
    server_name: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{self.url!r} is not an http(s) address")
        if not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]+)?", self.server_name):
            raise ValueError(f"{self.server_name!r} is not a server name")


def registration_for(path: Path, bridge_url: str, server_name: str) -> Registration:
    """The registration the family's server needs, kept at `path` (0600): made once, its
    tokens never replaced (the server's copy would stop matching); a changed bridge address
    or server name is written in place, and the file must then be installed again."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        registration = Registration.load(path)
        if registration.url != bridge_url:
            registration = replace(registration, url=bridge_url)
        if path.read_text(encoding="utf-8") != registration.to_yaml(server_name):
            registration.save(path, server_name)
        return registration
    registration = Registration.generate(url=bridge_url)
    registration.save(path, server_name)
    return registration


def split_mxid(mxid: str) -> tuple[str, str]:
    match = MXID.fullmatch(mxid)
    if match is None:
        raise ValueError(f"{mxid!r} is not a Matrix ID like @anna:example.org")
    return match.group(1), match.group(2)


class ExternalAdapter:
    """The `HomeserverAdapter` for a server the appliance does not run."""

    name = "external"

    def __init__(self, server: ExternalHomeserver, registration: Registration) -> None:
        self.url = server.url.rstrip("/")
        self.server_name = server.server_name
        self._registration = registration
        self.http = MatrixHttp(self.url, self.server_name, timeout=15.0)

    def __repr__(self) -> str:
        return f"ExternalAdapter(url={self.url!r}, server_name={self.server_name!r})"

    async def is_up(self) -> bool:
        return await self.http.is_up()

    async def mxid_exists(self, mxid: str) -> bool:
        """True if the server knows the account. A profile lookup, because it needs no
        admin: the server answers 404 M_NOT_FOUND for an account it does not have."""
        split_mxid(mxid)
        path = f"/_matrix/client/v3/profile/{quote(mxid, safe='')}"
        status, body = await self.http.request("GET", path, token=self._registration.as_token)
        if status == 401:
            # Before the registration is installed the as_token means nothing there; a
            # server that does not ask for a token on profiles answers without one.
            status, body = await self.http.request("GET", path)
        if status == 200:
            return True
        errcode, message = _error_of(status, body)
        if status == 404 or errcode == "M_NOT_FOUND":
            return False
        if status in (502, 503, 504):
            raise HomeserverUnavailable(f"look up {mxid}: {message}", status=status)
        raise HomeserverError(f"look up {mxid}: {message}", status=status, errcode=errcode)

    async def missing(self, mxids: list[str]) -> list[str]:
        """Those of `mxids` the server does not know, in order."""
        return [m for m in mxids if not await self.mxid_exists(m)]

    async def user_exists(self, localpart: str) -> bool:
        return await self.mxid_exists(f"@{localpart}:{self.server_name}")

    async def login(self, localpart: str, password: str) -> str:
        # A standard password login: the person's own right, not the admin's.
        return await self.http.login(localpart, password)

    async def create_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        raise NotInThisMode(
            f"Accounts on {self.server_name} are made on that server, not by Textbridge. "
            "Create the account there, then add it by its Matrix ID."
        )

    async def set_password(self, localpart: str, password: str) -> None:
        raise NotInThisMode(f"Passwords on {self.server_name} are changed on that server.")

    async def deactivate_user(self, localpart: str) -> None:
        raise NotInThisMode(f"Accounts on {self.server_name} are removed on that server.")

    async def create_registration_token(
        self, *, uses: int = 1, expiry_ms: int | None = None
    ) -> str:
        raise NotInThisMode(f"Invitations to {self.server_name} are made on that server.")

    async def install_appservice(self, registration: Registration) -> bool:
        raise NotInThisMode(
            f"The registration is installed on {self.server_name} by its admin: download "
            "it from the setup page and follow the steps shown there."
        )
