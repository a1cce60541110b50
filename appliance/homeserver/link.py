"""Is the family's homeserver linked to the bridge? Checked both ways, answered in words.

- bridge -> homeserver: `GET /_matrix/client/versions` (does it answer at all), then the
  bridge's own call, `whoami` with its as_token (has the server loaded this registration);
- homeserver -> bridge: the appservice ping, `POST /_matrix/client/v1/appservice/{id}/ping`,
  which makes the server call the bridge's `/_matrix/app/v1/ping` with the hs_token and
  report what happened.

Each failure has a `key` (stable, for tests and logs) and `words` for the person who set
the server up: what is wrong and what to do. See docs/homeserver.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from appliance.homeserver.api import MatrixHttp
from appliance.homeserver.base import HomeserverUnavailable
from appliance.homeserver.registration import Registration
from appliance.tasks import within

# The server waits for the bridge inside the ping; ours waits a little longer for it.
PING_TIMEOUT = 20.0


@dataclass(frozen=True)
class Problem:
    key: str
    words: str


@dataclass
class LinkReport:
    homeserver_url: str
    bridge_url: str
    # bridge -> homeserver and homeserver -> bridge: None when fine (or not checked).
    to_homeserver: Problem | None = None
    to_bridge: Problem | None = None
    ping_ms: int | None = None
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.to_homeserver is None
            and self.to_bridge is None
            and {"to_homeserver", "to_bridge"} <= set(self.checked)
        )

    @property
    def problems(self) -> list[Problem]:
        return [p for p in (self.to_homeserver, self.to_bridge) if p is not None]


def _unreachable(url: str, why: str) -> Problem:
    return Problem(
        "unreachable",
        f"Textbridge cannot reach your homeserver at {url} ({why}). Check the address, and "
        "that this box can reach that server: the same network, or the WireGuard tunnel "
        "when the server is outside the home.",
    )


def _not_installed(server_name: str) -> Problem:
    return Problem(
        "not-installed",
        f"Your homeserver ({server_name}) does not know this bridge's registration yet. "
        "Add the downloaded file to the server (Synapse: list it under "
        "app_service_config_files in homeserver.yaml) and restart the server. If you "
        "installed an older copy, replace it with this one.",
    )


async def check_link(
    url: str,
    server_name: str,
    registration: Registration,
    *,
    bridge_listening: bool | None = None,
    ping_timeout: float = PING_TIMEOUT,
) -> LinkReport:
    """`bridge_listening`: whether this box's own listener answers (the caller knows);
    it tells "the bridge is not running" from "something between blocks it"."""
    report = LinkReport(homeserver_url=url, bridge_url=registration.url)
    http = MatrixHttp(url, server_name, timeout=10.0)
    try:
        status, body = await http.request("GET", "/_matrix/client/versions")
    except HomeserverUnavailable as exc:
        report.to_homeserver = _unreachable(url, _why(exc))
        report.checked.append("to_homeserver")
        return report
    if status != 200 or "versions" not in body:
        report.to_homeserver = Problem(
            "not-matrix",
            f"{url} answers, but not as a Matrix homeserver (HTTP {status} for "
            "/_matrix/client/versions). Give the address your Matrix clients use; behind a "
            "reverse proxy, the proxy must pass /_matrix/ on to the server.",
        )
        report.checked.append("to_homeserver")
        return report

    report.to_homeserver = await _whoami(http, server_name, registration)
    report.checked.append("to_homeserver")
    if report.to_homeserver is not None and report.to_homeserver.key != "server-name":
        # Without an accepted as_token the ping cannot be asked for.
        return report
    report.to_bridge, report.ping_ms = await _ping(
        http, registration, bridge_listening, ping_timeout
    )
    report.checked.append("to_bridge")
    return report


async def _whoami(http: MatrixHttp, server_name: str, registration: Registration) -> Problem | None:
    try:
        status, body = await http.request(
            "GET", "/_matrix/client/v3/account/whoami", token=registration.as_token
        )
    except HomeserverUnavailable as exc:
        return _unreachable(http.url, _why(exc))
    if status == 200:
        mxid = str(body.get("user_id", ""))
        want = registration.bot_mxid(server_name)
        if mxid != want:
            actual = mxid.partition(":")[2] or "?"
            return Problem(
                "server-name",
                f"Your homeserver calls itself {actual}, not {server_name}. Use the part "
                f"after the colon in your Matrix ID (@you:{actual}) as the server name; the "
                "registration is made for that name, so download it again afterwards.",
            )
        return None
    errcode = str(body.get("errcode", ""))
    if status == 401 or errcode == "M_UNKNOWN_TOKEN":
        return _not_installed(server_name)
    return Problem(
        "refused",
        f"Your homeserver refused the bridge's check (HTTP {status} {errcode}).",
    )


async def _ping(
    http: MatrixHttp,
    registration: Registration,
    bridge_listening: bool | None,
    timeout: float,  # noqa: ASYNC109 - passed to the request
) -> tuple[Problem | None, int | None]:
    path = f"/_matrix/client/v1/appservice/{quote(registration.id, safe='')}/ping"
    try:
        status, body = await http.request(
            "POST",
            path,
            token=registration.as_token,
            body={"transaction_id": f"textbridge-check-{secrets.token_hex(6)}"},
            timeout=timeout,
        )
    except HomeserverUnavailable:
        status, body = 0, {}
    errcode = str(body.get("errcode", ""))
    if status == 200:
        return None, int(body.get("duration_ms", 0))
    port = urlsplit(registration.url).port or 80
    blocked = Problem(
        "blocked",
        f"Your homeserver cannot reach the bridge at {registration.url}. The bridge is "
        f"running, so something between them stops it: a firewall (allow TCP port {port} "
        "from the homeserver to this box), or the server is outside the home and the "
        "WireGuard tunnel is not up.",
    )
    if status == 0 or errcode == "M_CONNECTION_TIMEOUT" or status == 504:
        if bridge_listening is False:
            return _bridge_down(registration), None
        return blocked, None
    if errcode == "M_CONNECTION_FAILED":
        if bridge_listening is False:
            return _bridge_down(registration), None
        return blocked, None
    if errcode == "M_BAD_STATUS":
        inner = _int(body.get("status"))
        if inner in (401, 403):
            return Problem(
                "wrong-token",
                "Your homeserver reached the bridge, but with a token the bridge does not "
                "accept: the registration installed on the server is not the current one. "
                "Install the file from this page again (replace the old one) and restart "
                "the server.",
            ), None
        return Problem(
            "bridge-error",
            f"Your homeserver reached {registration.url}, which answered HTTP {inner}: "
            "is that address this box's bridge, and not another service?",
        ), None
    if errcode == "M_URL_NOT_SET":
        return Problem(
            "no-url",
            "The registration on your homeserver has no url. Install the file from this page.",
        ), None
    if status == 403 and errcode == "M_FORBIDDEN":
        return Problem(
            "wrong-id",
            "Your homeserver knows the bridge's token under another id: install the file "
            "from this page in place of the old one and restart the server.",
        ), None
    if status == 401 or errcode == "M_UNKNOWN_TOKEN":
        return _not_installed(http.server_name), None
    if status in (404, 405) or errcode == "M_UNRECOGNIZED":
        return Problem(
            "no-ping",
            "Your homeserver is too old for the appservice ping (Matrix 1.7), so this "
            "direction cannot be checked. Send a text to the bridge to see it work.",
        ), None
    return Problem("ping-failed", f"The homeserver's ping failed (HTTP {status} {errcode})."), None


def _bridge_down(registration: Registration) -> Problem:
    return Problem(
        "bridge-down",
        f"The bridge is not listening at {registration.url} on this box. Restart "
        "Textbridge; if it keeps failing, the Log page says why.",
    )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _why(exc: Exception) -> str:
    text = str(exc)
    if "Timeout" in text:
        return "no answer"
    if "Connect" in text or "OSError" in text:
        return "connection failed"
    return text.rsplit(": ", 1)[-1] or "no answer"


async def listener_answers(host: str, port: int, timeout: float = 3.0) -> bool:  # noqa: ASYNC109
    """Whether something on this box accepts connections at host:port (the bridge)."""
    try:
        _, writer = await within(timeout, asyncio.open_connection(host, port))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class ServerCheck:
    """What the wizard learns of the address a person typed."""

    url: str
    versions: list[str] = field(default_factory=list)
    well_known: str | None = None
    problem: Problem | None = None


async def check_server(address: str) -> ServerCheck:
    """Find the client-server API behind `address`, a URL or a bare domain: the domain's
    `/.well-known/matrix/client` may point elsewhere (example.org -> matrix.example.org),
    then `/_matrix/client/versions` must answer there."""
    url = address.strip()
    if "://" not in url:
        url = "https://" + url
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ServerCheck(url, problem=Problem("bad-address", f"{address!r} is not an address"))
    check = ServerCheck(url)
    base = f"{parts.scheme}://{parts.netloc}"
    try:
        status, body = await MatrixHttp(base, "", timeout=10.0).request(
            "GET", "/.well-known/matrix/client"
        )
        server = body.get("m.homeserver") if status == 200 else None
        if isinstance(server, dict) and isinstance(server.get("base_url"), str):
            check.well_known = str(server["base_url"]).rstrip("/")
    except HomeserverUnavailable:
        pass
    if check.well_known and not parts.path.strip("/"):
        # The domain's own word for where its client API is, as every Matrix client does.
        check.url = check.well_known
    try:
        status, body = await MatrixHttp(check.url, "", timeout=10.0).request(
            "GET", "/_matrix/client/versions"
        )
    except HomeserverUnavailable as exc:
        check.problem = _unreachable(check.url, _why(exc))
        return check
    versions = body.get("versions")
    if status != 200 or not isinstance(versions, list):
        check.problem = Problem(
            "not-matrix",
            f"{check.url} answers, but not as a Matrix homeserver (HTTP {status}). Give "
            "the address your Matrix clients use.",
        )
        return check
    check.versions = [str(v) for v in versions]
    return check
