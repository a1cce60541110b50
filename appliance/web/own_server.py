"""The wizard's server step, second way: "Connect to my homeserver".

The owner gives the homeserver's address and their own Matrix ID there. The wizard checks the
address (`/.well-known/matrix/client`, `/_matrix/client/versions`) and the account (a profile
lookup: no admin API), makes the appservice registration for that server, offers it for
download with what to do on the server, then checks the link both ways
(appliance/homeserver/link.py) and says in words what is wrong.

What the owner chose goes to `homeserver.json` in the web state (0600), which `textbridge
run` reads at start (run.apply_homeserver) and watches: a change restarts the bridge onto
the new server. The registration is `external-registration.yaml` beside it (0600).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from appliance.homeserver.base import HomeserverError
from appliance.homeserver.external import (
    ExternalAdapter,
    ExternalHomeserver,
    registration_for,
    split_mxid,
)
from appliance.homeserver.link import check_link, check_server, listener_answers
from appliance.homeserver.registration import Registration
from appliance.web.app import get_web
from appliance.web.config import HOMESERVER_FILE
from appliance.web.files import read_json, write_json
from appliance.web.state import Member

REGISTRATION_FILE = "external-registration.yaml"
TEMPLATE = "setup_2_external.html"


def chosen(state_dir: Path) -> dict[str, Any] | None:
    data = read_json(state_dir / HOMESERVER_FILE, None)
    return data if isinstance(data, dict) and data.get("mode") == "external" else None


def _guard(request: web.Request) -> None:
    from appliance.web.wizard import guard

    guard(request, 2)


def _page(request: web.Request, *, status: int = 200, **context: Any) -> web.Response:
    from appliance.web.wizard import page

    w = get_web(request)
    current = chosen(w.state.dir)
    values = context.pop("values", None) or {
        "url": (current or {}).get("url", ""),
        "mxid": (current or {}).get("owner", ""),
        "address": (current or {}).get("homeserver_address", ""),
    }
    return page(
        request,
        2,
        TEMPLATE,
        status=status,
        chosen=current,
        values=values,
        errors=context.pop("errors", {}),
        report=context.pop("report", None),
        **context,
    )


async def show(request: web.Request) -> web.Response:
    _guard(request)
    return _page(request)


def _address_towards(ip: str) -> str:
    """This box's address on the way to `ip`: the home address when the server is in the
    home, the tunnel address when the route goes through WireGuard. A UDP "connect" sends
    nothing; it only asks the kernel for the route."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((ip, 9))
        return str(sock.getsockname()[0])


async def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def submit(request: web.Request) -> web.Response:
    _guard(request)
    w = get_web(request)
    form = await request.post()
    values = {
        "url": str(form.get("url", ""))[:500].strip(),
        "mxid": str(form.get("mxid", ""))[:300].strip(),
        "address": str(form.get("address", ""))[:100].strip(),
    }
    errors: dict[str, str] = {}
    try:
        localpart, server_name = split_mxid(values["mxid"])
    except ValueError:
        errors["mxid"] = "Type your Matrix ID as your app shows it, like @anna:example.org."
    if values["address"]:
        try:
            values["address"] = str(ipaddress.ip_address(values["address"]))
        except ValueError:
            errors["address"] = "Type an IP address, like 192.168.1.10, or leave it empty."
    if not values["url"]:
        errors["url"] = "Type your homeserver's address, like https://matrix.example.org."
    if errors:
        return _page(request, status=400, values=values, errors=errors)
    found = await check_server(values["url"])
    if found.problem is not None:
        return _page(request, status=400, values=values, errors={"url": found.problem.words})
    host = urlsplit(found.url).hostname or ""
    try:
        hs_address = values["address"] or await _resolve(host)
        listen_host = await asyncio.to_thread(_address_towards, hs_address)
    except OSError:
        errors["url"] = f"This box cannot find a route to {host}. Is it on the same network?"
        return _page(request, status=400, values=values, errors=errors)
    port = w.settings.appservice_port
    bridge_host = f"[{listen_host}]" if ":" in listen_host else listen_host
    registration = registration_for(
        w.state.dir / REGISTRATION_FILE, f"http://{bridge_host}:{port}", server_name
    )
    adapter = ExternalAdapter(ExternalHomeserver(found.url, server_name), registration)
    try:
        exists = await adapter.mxid_exists(values["mxid"])
    except HomeserverError as exc:
        errors["mxid"] = f"Your homeserver did not say whether this account exists ({exc})."
        return _page(request, status=502, values=values, errors=errors)
    if not exists:
        errors["mxid"] = (
            f"{found.url} has no account {values['mxid']}. Check the spelling, and that the "
            "part after the colon is your server's name."
        )
        return _page(request, status=400, values=values, errors=errors)
    write_json(
        w.state.dir / HOMESERVER_FILE,
        {
            "mode": "external",
            "url": found.url,
            "server_name": server_name,
            "owner": values["mxid"],
            "listen_host": listen_host,
            "listen_port": port,
            "homeserver_address": hs_address,
            "registration": str(w.state.dir / REGISTRATION_FILE),
        },
    )
    _owner_is(w, values["mxid"], localpart)
    raise web.HTTPSeeOther("/setup/2/external")


def _owner_is(w: Any, mxid: str, localpart: str) -> None:
    """The owner's account is the one on the family's server from now on: the bridge makes
    it the owner of every line (owner.json), and the family list shows it."""
    owner = w.state.owner()
    if owner is None:
        return
    w.state.save_owner(name=owner["name"], username=owner["username"], mxid=mxid,
                       password_hash=owner["password_hash"])
    member = w.state.member(owner["username"])
    if member is not None:
        member.mxid = mxid
        w.state.upsert_member(member)
    else:
        w.state.upsert_member(Member(name=owner["name"], username=owner["username"], mxid=mxid,
                                     owner=True))


async def download(request: web.Request) -> web.StreamResponse:
    _guard(request)
    w = get_web(request)
    if chosen(w.state.dir) is None:
        raise web.HTTPNotFound()
    path = w.state.dir / REGISTRATION_FILE
    return web.Response(
        body=path.read_bytes(),
        content_type="application/x-yaml",
        headers={
            "Content-Disposition": 'attachment; filename="textbridge-registration.yaml"',
            # Both tokens are in it: no cache may keep a copy.
            "Cache-Control": "no-store",
        },
    )


async def check(request: web.Request) -> web.Response:
    _guard(request)
    w = get_web(request)
    current = chosen(w.state.dir)
    if current is None:
        raise web.HTTPSeeOther("/setup/2/external")
    registration = Registration.load(current["registration"])
    report = await check_link(
        str(current["url"]),
        str(current["server_name"]),
        registration,
        bridge_listening=await listener_answers(
            str(current["listen_host"]), int(current["listen_port"])
        ),
    )
    if report.ok:
        w.state.mark_done(2, homeserver="external", server_name=current["server_name"])
    return _page(request, status=200 if report.ok else 409, report=report)


async def account_problem(w: Any, mxid: str) -> str | None:
    """Why `mxid` cannot be added to a line on the family's server, or None: it must be
    a Matrix ID that server has (no account is ever made there by Textbridge)."""
    current = chosen(w.state.dir)
    if current is None:
        return "No homeserver is connected yet."
    try:
        _, server_name = split_mxid(mxid)
    except ValueError:
        return "Type the Matrix ID as their app shows it, like @ben:example.org."
    if server_name != current["server_name"]:
        # Asking would make the server ask another server over federation.
        return f"{mxid} is not on {current['server_name']}, and only accounts there can be added."
    registration = Registration.load(current["registration"])
    adapter = ExternalAdapter(
        ExternalHomeserver(str(current["url"]), str(current["server_name"])), registration
    )
    try:
        if await adapter.mxid_exists(mxid):
            return None
    except HomeserverError:
        return "Your homeserver is not answering. Wait a minute and try again."
    return f"{current['server_name']} has no account {mxid}. Make it there first."


def add_routes(app: web.Application) -> None:
    app.router.add_get("/setup/2/external", show)
    app.router.add_post("/setup/2/external", submit)
    app.router.add_get("/setup/2/registration.yaml", download)
    app.router.add_post("/setup/2/check", check)
