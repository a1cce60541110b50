"""What the rest of Textbridge may ask of a homeserver, whichever one runs.

The bridge itself speaks only the standard appservice and client-server APIs; everything that
differs between homeservers (creating accounts, resetting passwords, where an appservice
registration goes) is behind `HomeserverAdapter`. One adapter per homeserver:
`appliance.homeserver.synapse.SynapseAdapter` and `appliance.homeserver.tuwunel.TuwunelAdapter`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from appliance.homeserver.registration import Registration


class HomeserverError(Exception):
    """The homeserver refused or failed a request. `errcode` is the Matrix error code
    (e.g. ``M_FORBIDDEN``) when the server gave one."""

    def __init__(self, message: str, *, status: int = 0, errcode: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode


class UserExists(HomeserverError):
    """create_user: the localpart is taken (also by a deactivated account)."""


class UserNotFound(HomeserverError):
    """The account does not exist on this homeserver."""


class LoginFailed(HomeserverError):
    """Wrong password, or the account is deactivated."""


class HomeserverUnavailable(HomeserverError):
    """The homeserver did not answer (down, restarting, paused)."""


@runtime_checkable
class HomeserverAdapter(Protocol):
    name: str
    server_name: str
    # The client-server API base URL, e.g. http://127.0.0.1:6167
    url: str

    async def is_up(self) -> bool:
        """True when GET /_matrix/client/versions answers 200."""
        ...

    async def create_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        """Create the account and return its mxid; raise UserExists if the localpart is
        taken. The account has no device left behind by its creation."""
        ...

    async def user_exists(self, localpart: str) -> bool: ...

    async def set_password(self, localpart: str, password: str) -> None:
        """Replace the password and log out the account's devices (a reset after a leak
        must end the sessions that used the old one)."""
        ...

    async def deactivate_user(self, localpart: str) -> None: ...

    async def login(self, localpart: str, password: str) -> str:
        """Log in with a password and return the new device's access token."""
        ...

    async def create_registration_token(
        self, *, uses: int = 1, expiry_ms: int | None = None
    ) -> str:
        """A token for the standard m.login.registration_token flow, valid `uses` times and,
        if `expiry_ms` is given, for that many milliseconds from now."""
        ...

    async def install_appservice(self, registration: Registration) -> bool:
        """Put the registration where this homeserver reads it. Returns True when something
        changed: the homeserver must then be restarted before it honours the new tokens."""
        ...
