"""Adding, resetting and removing family members, shared by wizard step 4 and the dashboard,
and the onboarding page each new member gets."""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from typing import Any

import segno
from aiohttp import web
from cryptography import x509
from markupsafe import Markup

from appliance.homeserver.base import HomeserverError, HomeserverUnavailable, UserExists
from appliance.homeserver.external import MXID
from appliance.web import own_server, validate
from appliance.web.app import Web, get_web, render, session_of
from appliance.web.state import Member
from appliance.web.tls import is_home_address

ELEMENT_X_ANDROID = "https://play.google.com/store/apps/details?id=io.element.android.x"
ELEMENT_X_IOS = "https://apps.apple.com/app/element-x-secure-chat-call/id1631335820"
# No 0/O, 1/l/I: the password is read off a screen and typed on a phone.
_READABLE = "abcdefghijkmnpqrstuvwxyz23456789"


def one_time_password() -> str:
    groups = ["".join(secrets.choice(_READABLE) for _ in range(4)) for _ in range(5)]
    return "-".join(groups)


def qr_svg(text: str, label: str) -> Markup:
    svg = segno.make(text, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff")
    # segno's markup is ours (no user text inside it), so it may go into the page unescaped.
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(label)}" ', 1)
    return Markup(svg)  # noqa: S704 - generated SVG path data only, label escaped above


async def known_lines(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    """The lines the bridge reports, or (empty, a reason) when it is not running."""
    w = get_web(request)
    if w.control is None:
        return [], "The bridge is not connected to this page."
    from appliance.control_client import ControlError, ControlUnavailable

    try:
        status = await w.control.status()
    except (ControlUnavailable, ControlError) as exc:
        return [], str(exc)
    lines = status.get("lines", [])
    return [x for x in lines if isinstance(x, dict)], None


def parse_member_form(
    form: Any, line_ids: list[str]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    errors: dict[str, str] = {}
    values = {
        "name": str(form.get("name", ""))[:500],
        "username": str(form.get("username", ""))[:500],
        "method": str(form.get("method", "password")),
    }
    if "mxid" in form:
        # "Connect to my homeserver": an existing account, by its Matrix ID (own_server.py).
        values["mxid"] = str(form.get("mxid", ""))[:300].strip()
        values["method"] = "mxid"
        match = MXID.fullmatch(values["mxid"])
        if match is None:
            errors["mxid"] = "Type the Matrix ID as their app shows it, like @ben:example.org."
        else:
            # The family list keys people by a username; here it is the Matrix ID's own.
            try:
                values["username"] = validate.username(match.group(1))
            except validate.Invalid as exc:
                errors["mxid"] = exc.message
    try:
        values["name"] = validate.display_name(values["name"])
    except validate.Invalid as exc:
        errors["name"] = exc.message
    try:
        if values["method"] != "mxid":
            values["username"] = validate.username(values["username"])
    except validate.Invalid as exc:
        errors["username"] = exc.message
    if values["method"] not in ("password", "token", "mxid"):
        errors["method"] = "Please choose how this person gets in."
    chosen = [str(v) for v in form.getall("lines", [])]
    unknown = [c for c in chosen if c not in line_ids]
    if unknown:
        errors["lines"] = "Please choose only lines from the list."
    return values, errors, chosen


async def add_member(
    request: web.Request, values: dict[str, str], lines: list[str]
) -> dict[str, str]:
    """Create the account and remember the member; returns field errors (empty on success).
    The one-time secret goes into the session to be shown once on the welcome page."""
    w = get_web(request)
    username = values["username"]
    owner = w.state.owner()
    if w.state.member(username) is not None or (owner and owner["username"] == username):
        return {"username": "This person is already in the family."}
    if w.external() is not None and values["method"] != "mxid":
        # No accounts are made on the Pi's own server once the family's server is in use.
        return {"mxid": "Add people by their Matrix ID on your homeserver."}
    if values["method"] == "mxid":
        problem = await own_server.account_problem(w, values["mxid"])
        if problem is not None:
            return {"mxid": problem}
        w.state.upsert_member(Member(name=values["name"], username=username,
                                     mxid=values["mxid"], lines=lines, added_at=time.time()))
        session_of(request).flash = {"username": username, "method": "mxid"}
        return {}
    hs = w.homeserver()
    if hs is None:
        return {"form": "The home server is not ready yet. Wait a minute and try again."}
    try:
        if values["method"] == "token":
            secret = await hs.create_registration_token(uses=1)
            mxid = f"@{username}:{hs.server_name}"
        else:
            secret = one_time_password()
            mxid = await hs.create_user(username, secret, displayname=values["name"])
    except UserExists:
        return {"username": "This username is already taken on the home server."}
    except HomeserverUnavailable:
        return {"form": "The home server is not answering. Wait a minute and try again."}
    except HomeserverError as exc:
        return {"form": f"The home server refused: {exc}"}
    w.state.upsert_member(
        Member(name=values["name"], username=username, mxid=mxid, lines=lines,
               added_at=time.time())
    )
    session_of(request).flash = {"username": username, "method": values["method"],
                                 "secret": secret}
    return {}


_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def _own_host(request: web.Request, fallback: str) -> str:
    """The address the owner reached us by, for the printed install link. The Host header
    is the client's word, so only a plain host[:port] is taken."""
    host = request.host
    return host if _HOST_RE.fullmatch(host) else fallback


def fallback_addresses(w: Web, address: str) -> list[str]:
    """For a `.local` server address: the box's home-network IPv4 addresses that its
    certificate names, to type instead on a phone that cannot resolve `.local` names (many
    Android phones). Only addresses the certificate covers: any other would fail in TLS."""
    if not address.rstrip("/").endswith(".local"):
        return []
    cert = w.ca().server_certificate()
    if cert is None:
        return []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    from appliance.web.app import tunnel_addresses

    away = set(tunnel_addresses(w.state.dir))  # reached through WireGuard, not at home
    return [
        f"https://{ip}"
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address) and is_home_address(ip) and str(ip) not in away
    ]


async def welcome(request: web.Request, *, back: str) -> web.Response:
    """The onboarding page for one member: what to install, where to log in, the one-time
    password or registration token (only right after it was made)."""
    w = get_web(request)
    username = request.match_info["username"]
    member = w.state.member(username)
    if member is None:
        raise web.HTTPNotFound()
    session = session_of(request)
    flash = session.flash if session.flash.get("username") == username else {}
    session.flash = {}
    address = w.homeserver_address()
    install_url = f"http://{_own_host(request, w.server_name())}/install"
    return render(
        request,
        "welcome.html",
        member=member,
        secret=flash.get("secret"),
        method=flash.get("method", "password"),
        address=address,
        server_name=w.server_name(),
        android_url=ELEMENT_X_ANDROID,
        ios_url=ELEMENT_X_IOS,
        qr_android=qr_svg(ELEMENT_X_ANDROID, "QR code: Element X in the Google Play store"),
        qr_ios=qr_svg(ELEMENT_X_IOS, "QR code: Element X in Apple's App Store"),
        qr_address=qr_svg(address, f"QR code: the server address {address}"),
        fallback_addresses=fallback_addresses(w, address),
        install_url=install_url,
        qr_install=qr_svg(install_url, "QR code: the page that makes this phone trust Textbridge"),
        back=back,
    )
