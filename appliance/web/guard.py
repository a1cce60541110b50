"""What every request meets before any page: who may ask (the home network and the
remote-access tunnel only) and how much it may send (a small body, unless the owner,
logged in, uploads to one of the upload pages).

Both run ahead of the sessions and forms, so a stranger costs the box neither a session nor
more than a few kilobytes of memory.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from appliance.web import security
from appliance.web.app import CSP, SMALL_BODY, client_address, get_web, plain_error
from appliance.web.matrix_proxy import MATRIX_PREFIX, SYNAPSE_CLIENT_PREFIX, matrix_error

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The owner's upload pages and the most each may take. Everything else gets SMALL_BODY:
# forms of a few fields. Room for the multipart framing and the other fields comes on top.
UPLOAD_LIMITS: dict[str, int] = {
    "/contacts": 4 * 1024 * 1024 + SMALL_BODY,
    "/backup/restore": 256 * 1024 * 1024 + SMALL_BODY,
}


def allow_upload(path: str, limit: int) -> None:
    """Let the owner, once logged in, send up to `limit` bytes to `path`."""
    UPLOAD_LIMITS[path] = limit


# -- who may ask --------------------------------------------------------------------------

_tunnel_cache: dict[Path, tuple[int, ipaddress.IPv4Network | None]] = {}


def tunnel_network(state_dir: Path) -> ipaddress.IPv4Network | None:
    """The remote-access subnet while remote access is on (re-read when the file changes)."""
    from appliance.wireguard import tunnel

    path = state_dir / tunnel.STATE_FILE
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _tunnel_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    network: ipaddress.IPv4Network | None = None
    try:
        state = tunnel.load(path)
        if state.enabled and state.subnet:
            network = state.network
    except Exception as exc:  # a damaged file opens nothing; the page shows the problem
        log.warning("remote access settings unreadable: %s", exc)
    _tunnel_cache[path] = (stamp, network)
    return network


def may_ask(address: str | None, state_dir: Path) -> bool:
    if security.is_local_address(address):
        return True
    network = tunnel_network(state_dir)
    ip = security.peer_ip(address)
    return network is not None and ip is not None and ip in network


def _page_headers(response: web.StreamResponse) -> web.StreamResponse:
    # This answer leaves before headers_middleware would add them.
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def source_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only the home network and the tunnel get an answer, on every path (the Matrix
    client API too: family phones away from home come through the tunnel). The ACME
    challenge middleware runs before this one: the certificate authority asks from the
    internet."""
    w = get_web(request)
    if not w.settings.trust_local_only or may_ask(client_address(request), w.state.dir):
        return await handler(request)
    if request.path.startswith((MATRIX_PREFIX, SYNAPSE_CLIENT_PREFIX)):
        return matrix_error(403, "M_FORBIDDEN", "Only from the home network or Textbridge's "
                            "remote access")
    if w.state.complete:
        text = (
            "Textbridge answers only phones and computers on the home network, or away from "
            "home through its remote access (the WireGuard app with the configuration from "
            "the Away from home page)."
        )
    else:
        text = (
            "Textbridge is not set up yet. To keep strangers from taking it over, the "
            "setup pages only open for phones and computers on the same home network as "
            "the Textbridge box. Connect to your home Wi-Fi and try again."
        )
    response = plain_error(request, 403, "Only from home", text)
    response.force_close()
    return _page_headers(response)


# -- how much it may send -----------------------------------------------------------------


def _is_owner(request: web.Request) -> bool:
    # The session middleware runs after this one, so the cookie is checked here directly.
    w = get_web(request)
    owner = w.state.owner()
    if owner is None:
        return False
    session = w.sessions.get(request.cookies.get(security.COOKIE_NAME))
    return session is not None and session.user == owner["username"]


def body_limit(request: web.Request) -> int:
    limit = UPLOAD_LIMITS.get(request.path)
    if limit is not None and request.method == "POST" and _is_owner(request):
        return limit
    return SMALL_BODY


def _too_large(request: web.Request) -> web.StreamResponse:
    response = plain_error(
        request, 413, "Too much data",
        "That was more than this page takes. Large files can only be uploaded by the "
        "owner, logged in, on the contacts and backup pages.",
    )
    # The rest of the body is not read: the connection ends with this answer.
    response.force_close()
    return _page_headers(response)


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A cap on every request body, counted as it streams in: Content-Length is checked
    before a byte is read, and a chunked body (which has none) is cut off by aiohttp's
    `client_max_size` the moment it passes the cap. The app-wide cap is SMALL_BODY; only
    the owner's upload pages raise it, per request, after the session was checked."""
    if request.path.startswith((MATRIX_PREFIX, SYNAPSE_CLIENT_PREFIX)):
        # Streamed to the homeserver chunk by chunk, never held here; the homeserver's
        # own upload limit applies.
        return await handler(request)
    limit = body_limit(request)
    if (request.content_length or 0) > limit:
        return _too_large(request)
    if limit != request.client_max_size:
        request = request.clone(client_max_size=limit)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request)
