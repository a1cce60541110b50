"""The web application: middlewares (home-network check, sessions, CSRF, headers), login,
and the wiring of the wizard (wizard.py) and the dashboard (dashboard.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from appliance.control_client import ControlClient
from appliance.homeserver.base import HomeserverAdapter
from appliance.web import security, validate
from appliance.web.ca import CertificateAuthority
from appliance.web.config import CA_DIR, HOMESERVER_FILE, WebSettings
from appliance.web.files import read_json
from appliance.web.security import Session, Sessions, Throttle
from appliance.web.state import WIZARD_STEPS, WebState, burn_verify, verify_password
from appliance.web.tls import Certificates

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What any request may send; only the owner's upload pages take more (guard.UPLOAD_LIMITS).
SMALL_BODY = 64 * 1024

# Stated once: pages may load only their own CSS and script, never run inline code, and
# never be framed (no clickjacking of the PIN or password forms).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


@dataclass
class Web:
    settings: WebSettings
    state: WebState
    sessions: Sessions
    by_source: Throttle
    by_account: Throttle
    templates: jinja2.Environment
    control: ControlClient | None
    tls: Certificates
    started: float = field(default_factory=time.time)
    # Two people pressing "Create my account" at once must not both become the owner.
    owner_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _homeserver: HomeserverAdapter | None = None

    def login_wait(self, request: web.Request, account: str) -> float:
        """Seconds before this request's source may try this account's password again.

        The source's own count comes first. The account's count (failures from every
        source) holds only a source that has used up its own free tries too: so someone
        guessing from elsewhere never locks out the owner typing the password right, and
        spreading guesses over many addresses still buys only a few per address."""
        source = security.source_key(client_address(request))
        wait = self.by_source.wait(source)
        if self.by_source.failures(source) >= self.by_source.free:
            wait = max(wait, self.by_account.wait(account))
        return wait

    def login_failed(self, request: web.Request, account: str) -> None:
        self.by_source.failed(security.source_key(client_address(request)))
        self.by_account.failed(account)

    def login_succeeded(self, request: web.Request, account: str) -> None:
        self.by_source.succeeded(security.source_key(client_address(request)))
        self.by_account.succeeded(account)

    def homeserver(self) -> HomeserverAdapter | None:
        """None while the homeserver cannot be reached through its adapter yet (e.g. its
        config is still being written on first boot); pages then say so in words."""
        if self._homeserver is None and self.settings.homeserver is not None:
            try:
                self._homeserver = self.settings.homeserver()
            except Exception as exc:
                log.warning("homeserver adapter unavailable: %s", exc)
                return None
        return self._homeserver

    def external(self) -> dict[str, Any] | None:
        """The family's own homeserver, once chosen in the setup (web/own_server.py)."""
        data = read_json(self.state.dir / HOMESERVER_FILE, None)
        return data if isinstance(data, dict) and data.get("mode") == "external" else None

    def server_name(self) -> str:
        external = self.external()
        if external is not None:
            return str(external["server_name"])
        hs = self.homeserver()
        if hs is not None:
            return hs.server_name
        return str(self.state.setup().get("server_name") or "textbridge.local")

    def homeserver_address(self) -> str:
        external = self.external()
        if external is not None:
            return str(external["url"])
        if self.settings.homeserver_public_url:
            return self.settings.homeserver_public_url
        return f"https://{self.server_name()}"

    def homeserver_upstream(self) -> str | None:
        """Where the HTTPS site proxies the Matrix client API to (loopback, plain HTTP)."""
        if self.settings.homeserver_upstream:
            return self.settings.homeserver_upstream
        hs = self.homeserver()
        return hs.url if hs is not None else None

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.state.dir / CA_DIR, self.server_name())

    async def tell_owners(self, topic: str, key: str, text: str, severity: str) -> bool:
        """A notice in the owners' chat through the bridge (once per topic and key)."""
        if self.control is None:
            return False
        return await self.control.notice(topic, key, text, severity)


def tunnel_addresses(state_dir: Path) -> tuple[str, ...]:
    """The appliance's WireGuard address while remote access is on: phones away from home
    reach the HTTPS site there, so the home certificate must name it."""
    from appliance.wireguard import tunnel

    state = tunnel.load(state_dir / tunnel.STATE_FILE)
    return (state.appliance_address,) if state.enabled and state.subnet else ()


WEB_KEY = web.AppKey("textbridge_web", Web)
SESSION_KEY = web.RequestKey("session", Session)
NEW_COOKIE_KEY = web.RequestKey("new_cookie", bool)


def get_web(request: web.Request) -> Web:
    return request.app[WEB_KEY]


def session_of(request: web.Request) -> Session:
    return request[SESSION_KEY]


def replace_session(request: web.Request, session: Session) -> None:
    request[SESSION_KEY] = session
    request[NEW_COOKIE_KEY] = True


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    w = get_web(request)
    session = request.get(SESSION_KEY)
    page = w.templates.get_template(template).render(
        csrf=session.csrf if session else "",
        user=session.user if session else None,
        complete=w.state.complete,
        steps=WIZARD_STEPS,
        path=request.path,
        external=w.external() is not None,
        **context,
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", status=status)


def plain_error(request: web.Request, status: int, title: str, text: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, text=text)


def client_address(request: web.Request) -> str | None:
    # The TCP peer only: X-Forwarded-For and friends are chosen by the client and would let
    # anyone on the internet claim to be in the living room.
    return request.remote


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if exc.status == 404 and exc.content_type == "text/plain" and request.method == "GET":
            response = plain_error(
                request, 404, "Page not found", "There is no page at this address."
            )
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def local_only_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    w = get_web(request)
    if (
        w.settings.trust_local_only
        and not w.state.complete
        and not security.is_local_address(client_address(request))
    ):
        return plain_error(
            request,
            403,
            "Only from home",
            "Textbridge is not set up yet. To keep strangers from taking it over, the "
            "setup pages only open for phones and computers on the same home network as "
            "the Textbridge box. Connect to your home Wi-Fi and try again.",
        )
    return await handler(request)


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    w = get_web(request)
    session = w.sessions.get(request.cookies.get(security.COOKIE_NAME))
    request[NEW_COOKIE_KEY] = session is None
    if session is None:
        session = w.sessions.new()
    request[SESSION_KEY] = session
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _set_cookie(request, exc)
        raise
    _set_cookie(request, response)
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    if not request.get(NEW_COOKIE_KEY) or response.prepared:
        return
    w = get_web(request)
    response.set_cookie(
        security.COOKIE_NAME,
        w.sessions.cookie_value(request[SESSION_KEY]),
        httponly=True,
        samesite="Strict",
        secure=w.settings.secure_cookies or request.secure,
        path="/",
    )


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        # The body was capped while it streamed in (guard.body_limit_middleware).
        token: str | None = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get("csrf")
            token = value if isinstance(value, str) else None
        if not security.csrf_ok(request.get(SESSION_KEY), token):
            return plain_error(
                request,
                403,
                "Form expired",
                "This form is out of date or did not come from this page. Go back, reload "
                "the page and try again.",
            )
    return await handler(request)


def is_owner(request: web.Request) -> bool:
    owner = get_web(request).state.owner()
    return owner is not None and session_of(request).user == owner["username"]


def require_owner(request: web.Request) -> None:
    """Raise unless the owner is logged in: a GET goes to the login page, anything else
    is refused (a form posted after the session ended must not half-happen)."""
    if is_owner(request):
        return
    if request.method == "GET":
        raise web.HTTPSeeOther(f"/login?next={request.path}")
    denied = plain_error(request, 403, "Please log in", "Your login has ended. Log in again.")
    raise web.HTTPForbidden(text=denied.text, content_type="text/html")


def safe_next(value: str | None) -> str:
    # Only our own paths: an open redirect would make our login page a phishing tool.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login_page(request: web.Request) -> web.Response:
    w = get_web(request)
    if w.state.owner() is None:
        raise web.HTTPSeeOther("/setup")
    return render(
        request, "login.html", next=safe_next(request.query.get("next")), errors={}, values={}
    )


async def login_submit(request: web.Request) -> web.Response:
    w = get_web(request)
    owner = w.state.owner()
    if owner is None:
        raise web.HTTPSeeOther("/setup")
    form = await request.post()
    username = str(form.get("username", ""))[:128].strip().lower()
    password = str(form.get("password", ""))[:validate.MAX_PASSWORD + 1]
    nxt = safe_next(str(form.get("next", "/")))
    account = f"user:{username}"
    wait = w.login_wait(request, account)
    if wait > 0:
        return render(
            request,
            "login.html",
            status=429,
            next=nxt,
            values={"username": username},
            errors={
                "form": f"Too many wrong tries. Please wait {int(wait) + 1} seconds and try "
                "again."
            },
        )
    if username == owner["username"]:
        ok = await verify_password(owner["password_hash"], password)
    else:
        await burn_verify(password)
        ok = False
    if not ok:
        w.login_failed(request, account)
        return render(
            request,
            "login.html",
            status=401,
            next=nxt,
            values={"username": username},
            errors={"form": "Wrong username or password."},
        )
    w.login_succeeded(request, account)
    replace_session(request, w.sessions.rotate(session_of(request), owner["username"]))
    raise web.HTTPSeeOther(nxt)


async def logout(request: web.Request) -> web.Response:
    w = get_web(request)
    w.sessions.drop(session_of(request))
    replace_session(request, w.sessions.new())
    raise web.HTTPSeeOther("/login")


async def root(request: web.Request) -> web.StreamResponse:
    w = get_web(request)
    if not w.state.complete:
        raise web.HTTPSeeOther("/setup")
    from appliance.web.dashboard import dashboard

    return await dashboard(request)


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "static" / "icon.svg", headers={"Content-Type": "image/svg+xml"})


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def make_app(settings: WebSettings) -> web.Application:
    from appliance.web import acme, dashboard, guard, matrix_proxy, remote, secure, wizard

    state = WebState(settings)
    holder: list[Web] = []
    tls = Certificates(
        settings.state_dir,
        lambda: holder[0].ca(),
        hostnames=settings.extra_hostnames,
        ips=settings.certificate_ips,
        directory_url=settings.acme_directory,
        ca_bundle=settings.acme_ca_bundle,
        poll_interval=settings.acme_poll_interval,
        detect_addresses=settings.detect_addresses,
        notify=lambda topic, key, text, severity: holder[0].tell_owners(topic, key, text, severity),
        more_ips=lambda: tunnel_addresses(settings.state_dir),
    )
    w = Web(
        settings=settings,
        state=state,
        sessions=Sessions(state.session_secret(), settings.session_ttl),
        by_source=Throttle(
            free=settings.login_free_failures,
            base=settings.login_base_delay,
            ceiling=settings.login_max_delay,
        ),
        by_account=Throttle(
            free=settings.login_free_failures,
            base=settings.login_base_delay,
            ceiling=settings.login_max_delay,
        ),
        templates=make_templates(),
        control=ControlClient(settings.control_socket) if settings.control_socket else None,
        tls=tls,
    )
    holder.append(w)
    app = web.Application(
        client_max_size=SMALL_BODY,
        middlewares=[
            # The ACME CA checks the domain from the internet, also before setup is done,
            # when everything else answers only the home network: it goes ahead of all.
            acme.challenge_middleware(tls.challenges),
            # Then nobody but the home network and the tunnel, and no large body but the
            # owner's uploads (docs/web.md, "Security model").
            guard.source_middleware,
            guard.body_limit_middleware,
            # Then the Matrix paths (HTTPS only) skip the owner pages' middlewares below.
            matrix_proxy.middleware,
            headers_middleware,
            local_only_middleware,
            session_middleware,
            csrf_middleware,
        ],
    )
    app[WEB_KEY] = w
    app.router.add_get("/", root)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", HERE / "static", show_index=False)
    # Browsers ask for /favicon.ico on their own; a 404 there is an error on every page.
    app.router.add_get("/favicon.ico", favicon)
    wizard.add_routes(app)
    dashboard.add_routes(app)
    remote.add_routes(app)
    secure.add_routes(app)
    matrix_proxy.add_routes(app, w.homeserver_upstream)
    app.on_cleanup.append(lambda _app: tls.close())
    return app
