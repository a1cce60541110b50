"""The HTTP calls both adapters share: the standard client-server API (login, the
registration-token /register flow, whoami) and the Synapse-style admin API, which Synapse and
Tuwunel (1.8.1 and later) both serve under /_synapse/admin.

Each call opens its own short-lived aiohttp session. These calls are rare (setup, a password
reset) and go to loopback, and a session per call keeps an adapter usable from any event
loop, which the session-wide Synapse of the test suite needs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from appliance.files import write_secret_file
from appliance.homeserver.base import (
    HomeserverError,
    HomeserverUnavailable,
    LoginFailed,
    UserExists,
    UserNotFound,
)

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# Synapse accepts [A-Za-z0-9._~-] in registration tokens; letters and digits are safe for
# both servers and for reading a token aloud.
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_REG_TOKEN_LENGTH = 32
_REGISTRATION_STAGE = "m.login.registration_token"


def random_password(length: int = 24) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def random_registration_token() -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(_REG_TOKEN_LENGTH))


def _error_of(status: int, body: JsonDict) -> tuple[str, str]:
    errcode = str(body.get("errcode", ""))
    message = str(body.get("error", "")) or f"HTTP {status}"
    return errcode, message


class MatrixHttp:
    """Requests to one homeserver's client-server and admin APIs."""

    def __init__(self, url: str, server_name: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.server_name = server_name
        self.timeout = timeout

    def mxid(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: JsonDict | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per request, passed to aiohttp
    ) -> tuple[int, JsonDict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.request(method, self.url + path, json=body, headers=headers) as resp,
            ):
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The path only: query strings and bodies can carry secrets.
            raise HomeserverUnavailable(
                f"{method} {path.split('?', 1)[0]}: {type(exc).__name__}"
            ) from None
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError:
            data = {}
        return status, data if isinstance(data, dict) else {"value": data}

    async def is_up(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        try:
            status, body = await self.request("GET", "/_matrix/client/versions", timeout=timeout)
        except HomeserverUnavailable:
            return False
        return status == 200 and "versions" in body

    async def login(self, localpart: str, password: str, *, device_name: str = "textbridge") -> str:
        status, body = await self.request(
            "POST",
            "/_matrix/client/v3/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
                "initial_device_display_name": device_name,
            },
        )
        if status == 200 and isinstance(body.get("access_token"), str):
            return str(body["access_token"])
        errcode, message = _error_of(status, body)
        if status in (401, 403):
            raise LoginFailed(f"login as {localpart}: {message}", status=status, errcode=errcode)
        raise HomeserverError(f"login as {localpart}: {message}", status=status, errcode=errcode)

    async def logout(self, token: str) -> None:
        status, body = await self.request("POST", "/_matrix/client/v3/logout", token=token, body={})
        if status != 200:
            errcode, message = _error_of(status, body)
            raise HomeserverError(f"logout: {message}", status=status, errcode=errcode)

    async def whoami(self, token: str) -> str:
        status, body = await self.request("GET", "/_matrix/client/v3/account/whoami", token=token)
        if status != 200:
            errcode, message = _error_of(status, body)
            raise HomeserverError(f"whoami: {message}", status=status, errcode=errcode)
        return str(body["user_id"])

    async def set_displayname(self, mxid: str, token: str, displayname: str) -> None:
        status, body = await self.request(
            "PUT",
            f"/_matrix/client/v3/profile/{quote(mxid, safe='')}/displayname",
            token=token,
            body={"displayname": displayname},
        )
        if status != 200:
            errcode, message = _error_of(status, body)
            raise HomeserverError(f"set displayname: {message}", status=status, errcode=errcode)

    async def register_with_token(
        self, localpart: str, password: str, registration_token: str
    ) -> tuple[str, str]:
        """The standard user-interactive /register with an m.login.registration_token stage.

        Returns (mxid, access token of the new device). Completes any m.login.dummy and
        m.login.terms stages a server adds to the same flow, because a server may put them
        after the token stage; any other stage (email, captcha) cannot be done unattended.
        """
        request: JsonDict = {
            "username": localpart,
            "password": password,
            "initial_device_display_name": "textbridge setup",
        }
        session: str | None = None
        # Every round completes one stage; a server that keeps asking is looping.
        for _ in range(6):
            status, body = await self.request("POST", "/_matrix/client/v3/register", body=request)
            if status == 200:
                return str(body["user_id"]), str(body["access_token"])
            errcode, message = _error_of(status, body)
            if errcode == "M_USER_IN_USE":
                raise UserExists(f"{localpart} is taken", status=status, errcode=errcode)
            if status != 401 or "flows" not in body:
                raise HomeserverError(
                    f"register {localpart}: {message}", status=status, errcode=errcode
                )
            if errcode:
                # A 401 with an errcode means the stage we just sent was rejected.
                raise HomeserverError(
                    f"register {localpart}: {message}", status=status, errcode=errcode
                )
            session = str(body.get("session", session or ""))
            # Only the server's word counts: a stage it did not list is not done.
            completed = {str(s) for s in body.get("completed", [])}
            stage = _next_stage(body["flows"], completed)
            auth: JsonDict = {"type": stage, "session": session}
            if stage == _REGISTRATION_STAGE:
                auth["token"] = registration_token
            request["auth"] = auth
        raise HomeserverError(f"register {localpart}: the server kept asking for more stages")

    async def shared_secret_register(
        self,
        shared_secret: str,
        localpart: str,
        password: str,
        *,
        admin: bool,
        displayname: str | None = None,
    ) -> tuple[str, str]:
        """Synapse's /_synapse/admin/v1/register: creates an account without UIA, proven by
        an HMAC-SHA1 over a one-time nonce. Returns (mxid, access token)."""
        path = "/_synapse/admin/v1/register"
        status, body = await self.request("GET", path)
        if status != 200 or "nonce" not in body:
            errcode, message = _error_of(status, body)
            raise HomeserverError(f"register nonce: {message}", status=status, errcode=errcode)
        nonce = str(body["nonce"])
        mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode("utf-8"))
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        request: JsonDict = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            request["displayname"] = displayname
        status, body = await self.request("POST", path, body=request)
        if status == 200:
            return str(body["user_id"]), str(body["access_token"])
        errcode, message = _error_of(status, body)
        if errcode == "M_USER_IN_USE":
            raise UserExists(f"{localpart} is taken", status=status, errcode=errcode)
        raise HomeserverError(f"register {localpart}: {message}", status=status, errcode=errcode)

    async def username_taken(self, localpart: str) -> bool:
        """The standard availability check; needs no admin, and a deactivated account's
        name counts as taken, as it does for registration."""
        status, body = await self.request(
            "GET", f"/_matrix/client/v3/register/available?username={quote(localpart, safe='')}"
        )
        if status == 200 and body.get("available") is True:
            return False
        errcode, message = _error_of(status, body)
        if errcode == "M_USER_IN_USE":
            return True
        raise HomeserverError(f"check {localpart}: {message}", status=status, errcode=errcode)

    # --- the Synapse-style admin API -------------------------------------------------------

    async def admin_user_exists(self, admin_token: str, localpart: str) -> bool:
        mxid = quote(self.mxid(localpart), safe="")
        status, body = await self.request(
            "GET", f"/_synapse/admin/v2/users/{mxid}", token=admin_token
        )
        if status == 200:
            return True
        if status == 404:
            return False
        errcode, message = _error_of(status, body)
        raise HomeserverError(f"look up {localpart}: {message}", status=status, errcode=errcode)

    async def admin_reset_password(self, admin_token: str, localpart: str, password: str) -> None:
        mxid = quote(self.mxid(localpart), safe="")
        status, body = await self.request(
            "POST",
            f"/_synapse/admin/v1/reset_password/{mxid}",
            token=admin_token,
            body={"new_password": password, "logout_devices": True},
        )
        self._check_user_call(status, body, f"reset the password of {localpart}")

    async def admin_deactivate(self, admin_token: str, localpart: str) -> None:
        mxid = quote(self.mxid(localpart), safe="")
        status, body = await self.request(
            "POST",
            f"/_synapse/admin/v1/deactivate/{mxid}",
            token=admin_token,
            body={"erase": False},
        )
        self._check_user_call(status, body, f"deactivate {localpart}")

    async def admin_make_admin(self, admin_token: str, localpart: str) -> None:
        mxid = quote(self.mxid(localpart), safe="")
        status, body = await self.request(
            "PUT", f"/_synapse/admin/v2/users/{mxid}", token=admin_token, body={"admin": True}
        )
        self._check_user_call(status, body, f"make {localpart} an admin")

    async def admin_create_registration_token(
        self, admin_token: str, *, uses: int, expiry_ms: int | None
    ) -> str:
        if uses < 1:
            raise ValueError("a registration token must allow at least one use")
        if expiry_ms is not None and expiry_ms <= 0:
            raise ValueError("expiry_ms is a duration from now and must be positive")
        token = random_registration_token()
        request: JsonDict = {"token": token, "uses_allowed": uses}
        if expiry_ms is not None:
            request["expiry_time"] = int(time.time() * 1000) + expiry_ms
        status, body = await self.request(
            "POST", "/_synapse/admin/v1/registration_tokens/new", token=admin_token, body=request
        )
        if status != 200:
            errcode, message = _error_of(status, body)
            raise HomeserverError(
                f"create a registration token: {message}", status=status, errcode=errcode
            )
        return str(body.get("token", token))

    @staticmethod
    def _check_user_call(status: int, body: JsonDict, what: str) -> None:
        if status == 200:
            return
        errcode, message = _error_of(status, body)
        if status == 404 or errcode == "M_NOT_FOUND":
            raise UserNotFound(f"{what}: no such user", status=status, errcode=errcode)
        raise HomeserverError(f"{what}: {message}", status=status, errcode=errcode)


def _next_stage(flows: list[Any], completed: set[str]) -> str:
    # Prefer a flow we can finish unattended, with the token stage in it.
    doable = {_REGISTRATION_STAGE, "m.login.dummy", "m.login.terms"}
    candidates = [
        [str(s) for s in flow.get("stages", [])] for flow in flows if isinstance(flow, dict)
    ]
    candidates = [c for c in candidates if set(c) <= doable]
    candidates.sort(key=lambda c: (_REGISTRATION_STAGE not in c, len(c)))
    for stages in candidates:
        for stage in stages:
            if stage not in completed:
                return stage
    offered = ", ".join("/".join(str(s) for s in f.get("stages", [])) for f in flows)
    raise HomeserverError(f"register: no registration flow can be done unattended ({offered})")


@dataclass(frozen=True)
class AdminCredentials:
    """The adapter's own admin account, kept in a 0600 JSON file in the state directory."""

    localpart: str
    password: str
    access_token: str

    def __repr__(self) -> str:
        return f"AdminCredentials(localpart={self.localpart!r})"

    @classmethod
    def load(cls, path: Path) -> AdminCredentials | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(
            localpart=str(data["localpart"]),
            password=str(data["password"]),
            access_token=str(data["access_token"]),
        )

    def save(self, path: Path) -> None:
        write_secret_file(
            path,
            json.dumps(
                {
                    "localpart": self.localpart,
                    "password": self.password,
                    "access_token": self.access_token,
                },
                indent=2,
            )
            + "\n",
        )
