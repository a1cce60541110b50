"""The homeserver's client API over HTTPS: a streaming reverse proxy in the web service.

Element X only talks to a homeserver over HTTPS, and the homeserver (Tuwunel on the
appliance, Synapse in tests and the demo) listens on 127.0.0.1 over plain HTTP. The web
service's HTTPS site already has a certificate from the appliance's own CA, so it also
forwards `/_matrix/` and `/_synapse/client/` to the homeserver and answers
`/.well-known/matrix/client` itself.

These paths skip the web app's own middlewares (home-network rule, sessions, CSRF): Matrix
clients carry their own access tokens, and family members use them from anywhere through
WireGuard. No cookie of ours is ever set on them. Bodies are streamed both ways (media
uploads and downloads are never held in memory), long-polling /sync gets a read timeout
well above the longest sync timeout clients ask for. Over plain HTTP the paths are refused:
passwords and access tokens must not cross the home Wi-Fi in the clear.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Upstream = Callable[[], str | None]

MATRIX_PREFIX = "/_matrix/"
SYNAPSE_CLIENT_PREFIX = "/_synapse/client/"
WELL_KNOWN_CLIENT = "/.well-known/matrix/client"
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0
# Clients long-poll /sync with `timeout=30000` (some up to 60 s); a read timeout this long
# also covers a slow homeserver answering a large upload or a first sync.
READ_TIMEOUT = 180.0

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}
# Media served from our origin must never run as a page (an uploaded HTML file or SVG).
MATRIX_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Trailers", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    )
)
# Chosen by the client, so never passed on as if we had vouched for them; we set our own.
REQUEST_DROP = frozenset(
    {"expect", "forwarded", "x-real-ip", "x-forwarded-for", "x-forwarded-proto",
     "x-forwarded-host", "x-forwarded-port"}
)
# The upstream's own CORS answer is replaced by ours (one value each, not two).
RESPONSE_DROP = frozenset(h.lower() for h in CORS_HEADERS)
# What the Host header may be before it goes into the well-known answer.
HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$"
)



@dataclass
class Proxy:
    upstream: Upstream  # the homeserver's loopback URL; None while unknown (-> 502)
    _session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop; closed with the app.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
                ),
                # Each long-polling phone holds a connection: no pool limit to wait on.
                connector=aiohttp.TCPConnector(limit=0),
                # Cookies belong to each client, never to a jar shared by all of them.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Bytes pass through as the homeserver sent them (Content-Encoding stays
                # true, Content-Length stays right).
                auto_decompress=False,
                # Add nothing the client did not send.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self, app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


PROXY_KEY = web.AppKey("matrix_proxy", Proxy)


def matrix_error(status: int, errcode: str, error: str) -> web.Response:
    response = web.json_response({"errcode": errcode, "error": error}, status=status)
    response.headers.update(CORS_HEADERS)
    _security_headers(response, matrix=True)
    return response


def _security_headers(response: web.StreamResponse, *, matrix: bool) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if matrix:
        response.headers.setdefault("Content-Security-Policy", MATRIX_CSP)


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    values = headers.getall("Connection", [])
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def _request_headers(request: web.Request) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | REQUEST_DROP | _connection_tokens(request.headers)
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in drop
    )
    # The TCP peer only: whatever the client claimed about itself was dropped above.
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    headers["X-Forwarded-Proto"] = request.scheme
    if request.host:
        headers["X-Forwarded-Host"] = request.host
    return headers


def _unsafe_path(raw_path: str) -> bool:
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        return True  # absolute-form targets ("GET http://elsewhere/...") are not ours
    # ".." would let a request leave /_matrix/ once the homeserver normalises the path
    # (e.g. into /_synapse/admin); %2e%2e and %2f too.
    segments = unquote(unquote(path)).replace("\\", "/").split("/")
    return any(s in (".", "..") for s in segments)


def _homeserver_down() -> web.Response:
    return matrix_error(502, "M_UNKNOWN", "The homeserver is not running")


async def proxy(request: web.Request) -> web.StreamResponse:
    matrix = request.path.startswith(MATRIX_PREFIX)
    if matrix and request.method == "OPTIONS":
        # CORS preflight: answered here, the homeserver need not even be up.
        preflight = web.Response(status=204, headers=CORS_HEADERS)
        _security_headers(preflight, matrix=True)
        return preflight
    if _unsafe_path(request.raw_path):
        return matrix_error(400, "M_UNRECOGNIZED", "Unrecognized request")
    state = request.app[PROXY_KEY]
    base = state.upstream()
    if not base:
        return _homeserver_down()
    target = URL(base.rstrip("/") + request.raw_path, encoded=True)
    session = state.session()
    body = request.content if request.body_exists else None
    try:
        upstream = await session.request(
            request.method,
            target,
            headers=_request_headers(request),
            data=body,
            allow_redirects=False,
        )
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
        log.warning("matrix proxy: homeserver unreachable: %s", exc)
        return _homeserver_down()
    except TimeoutError:
        log.warning("matrix proxy: homeserver did not answer in time: %s", request.path)
        return matrix_error(504, "M_UNKNOWN", "The homeserver did not answer in time")
    except aiohttp.ClientError as exc:
        log.warning("matrix proxy: %s", exc)
        return matrix_error(502, "M_UNKNOWN", "The homeserver could not be reached")
    try:
        return await _relay(request, upstream, matrix=matrix)
    finally:
        upstream.release()


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, *, matrix: bool
) -> web.StreamResponse:
    drop = HOP_BY_HOP | _connection_tokens(upstream.headers) | (
        RESPONSE_DROP if matrix else frozenset()
    )
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for key, value in upstream.headers.items():
        if key.lower() not in drop:
            response.headers.add(key, value)
    if matrix:
        response.headers.update(CORS_HEADERS)
    _security_headers(response, matrix=matrix)
    await response.prepare(request)
    while True:
        try:
            chunk = await upstream.content.read(CHUNK)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status line is gone already: cut the connection so the client sees a
            # broken transfer instead of a short file that looks complete.
            log.warning("matrix proxy: homeserver stopped mid-answer: %s", exc)
            if request.transport is not None:
                request.transport.abort()
            return response
        if not chunk:
            break
        try:
            await response.write(chunk)
        except ConnectionError:
            # The client went away (a phone lost its network); the upstream answer is
            # dropped when the caller releases it.
            log.debug("matrix proxy: client left during %s", request.path)
            return response
    await response.write_eof()
    return response


def _client_base_url(request: web.Request) -> str | None:
    host = request.host
    if not host or not HOST_RE.match(host):
        return None
    if host.endswith(":443"):  # the default port (a bare hostname has no colon)
        host = host[: -len(":443")]
    return f"https://{host}"


async def well_known_client(request: web.Request) -> web.StreamResponse:
    if request.method == "OPTIONS":
        preflight = web.Response(status=204, headers=CORS_HEADERS)
        _security_headers(preflight, matrix=True)
        return preflight
    base_url = _client_base_url(request)
    if base_url is None:
        return matrix_error(400, "M_UNKNOWN", "Bad Host header")
    response = web.Response(
        text=json.dumps({"m.homeserver": {"base_url": base_url}}),
        content_type="application/json",
        headers=CORS_HEADERS,
    )
    response.headers["Cache-Control"] = "no-cache"
    _security_headers(response, matrix=True)
    return response


async def plain_http_refused(request: web.Request) -> web.StreamResponse:
    host = _client_base_url(request) or "https://<this box>"
    return matrix_error(
        403, "M_FORBIDDEN", f"The Matrix API is only served over HTTPS: use {host}"
    )


HANDLERS: frozenset[Handler] = frozenset({proxy, well_known_client})


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Put first in the app's middlewares: the Matrix paths skip all the others (their
    sessions, CSRF and home-network rule are for the owner's pages, not for chat apps)."""
    if request.match_info.handler not in HANDLERS:
        return await handler(request)
    if not request.secure:
        return await plain_http_refused(request)
    return await request.match_info.handler(request)


def add_routes(app: web.Application, upstream: Upstream) -> None:
    """Route the Matrix paths to the proxy; `middleware` must come first in the app's
    middlewares. `upstream()` gives the homeserver's loopback URL (None: not known yet)."""
    state = Proxy(upstream)
    app[PROXY_KEY] = state
    app.router.add_route("*", MATRIX_PREFIX + "{tail:.*}", proxy)
    app.router.add_route("*", SYNAPSE_CLIENT_PREFIX + "{tail:.*}", proxy)
    app.router.add_route("GET", WELL_KNOWN_CLIENT, well_known_client)
    app.router.add_route("OPTIONS", WELL_KNOWN_CLIENT, well_known_client)
    app.on_cleanup.append(state.close)
