"""The owner's "Away from home" page: WireGuard remote access for the family's phones.

The web service only edits `wireguard.json` in its state directory; the privileged apply step
(textbridge-wireguard.service, started by a path unit when the file changes) puts it on the
system. A new device's private key is made here, put into the page that answers the POST
(QR code and text) and not kept anywhere: reloading or coming back shows it no more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from appliance.web import validate
from appliance.web.app import Web, get_web, render, require_owner
from appliance.web.family import qr_svg
from appliance.wireguard import apply as wg_apply
from appliance.wireguard import client, keys, tunnel
from appliance.wireguard.tunnel import Tunnel

WIREGUARD_ANDROID = "https://play.google.com/store/apps/details?id=com.wireguard.android"
WIREGUARD_IOS = "https://apps.apple.com/app/wireguard/id1441195209"
# One change at a time: two forms posted at once must not each overwrite the other's edit.
LOCK_KEY = web.AppKey("wireguard_lock", asyncio.Lock)


def _state_path(w: Web) -> Path:
    return w.state.dir / tunnel.STATE_FILE


def load(w: Web) -> Tunnel:
    return tunnel.load(_state_path(w))


def save(w: Web, state: Tunnel) -> None:
    tunnel.save(_state_path(w), state)
    # The home certificate names the tunnel address while remote access is on.
    w.tls.refresh_soon()


async def appliance_public_key(w: Web) -> str:
    private = await asyncio.to_thread(keys.load_or_create, w.state.dir / tunnel.KEY_FILE)
    return keys.public_key(private)


def _lock(request: web.Request) -> asyncio.Lock:
    return request.app[LOCK_KEY]


async def forget_member(request: web.Request, username: str) -> None:
    """A family member removed: every device of theirs is revoked too."""
    w = get_web(request)
    async with _lock(request):
        state = load(w)
        if any(p.member == username for p in state.peers):
            save(w, state.remove_member(username))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%d %b %Y")


async def _page(
    request: web.Request,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    state: Tunnel | None = None,
) -> web.Response:
    w = get_web(request)
    state = state if state is not None else load(w)
    members = w.state.family()
    names = {m.username: m.name for m in members}
    devices = [
        {"peer": p, "member_name": names.get(p.member, p.member), "added": _when(p.created_at)}
        for p in sorted(state.peers, key=lambda p: (names.get(p.member, p.member), p.name))
    ]
    if values is None:
        values = {
            "endpoint_host": state.endpoint_host,
            "endpoint_port": str(state.endpoint_port),
            "enabled": "on" if state.enabled else "",
        }
    return render(
        request,
        "remote.html",
        status=status,
        title="Away from home",
        state=state,
        devices=devices,
        members=members,
        errors=errors or {},
        values=values,
        listen_port=tunnel.LISTEN_PORT,
        homeserver_address=w.homeserver_address(),
        local_address=_is_local(w),
    )


def _is_local(w: Web) -> bool:
    """Element X's server address is a .local name, which phones resolve only at home."""
    return (urlsplit(w.homeserver_address()).hostname or "").endswith(".local")


async def remote_get(request: web.Request) -> web.Response:
    require_owner(request)
    return await _page(request)


async def remote_settings(request: web.Request) -> web.Response:
    require_owner(request)
    w = get_web(request)
    form = await request.post()
    values = {
        "endpoint_host": str(form.get("endpoint_host", ""))[:300],
        "endpoint_port": str(form.get("endpoint_port", ""))[:20],
        "enabled": "on" if form.get("enabled") == "on" else "",
    }
    enabled = values["enabled"] == "on"
    errors: dict[str, str] = {}
    host, port = "", tunnel.LISTEN_PORT
    try:
        host = validate.wireguard_endpoint_host(values["endpoint_host"])
    except validate.Invalid as exc:
        errors["endpoint_host"] = exc.message
    try:
        port = validate.wireguard_port(values["endpoint_port"])
    except validate.Invalid as exc:
        errors["endpoint_port"] = exc.message
    if errors:
        return await _page(request, status=400, errors=errors, values=values)
    async with _lock(request):
        state = load(w)
        state = replace(state, enabled=enabled, endpoint_host=host, endpoint_port=port)
        if not state.subnet:
            # Drawn once, away from the networks this box is on.
            state = state.with_subnet(await asyncio.to_thread(wg_apply.local_networks))
        save(w, state)
    raise web.HTTPSeeOther("/remote")


async def device_add(request: web.Request) -> web.Response:
    require_owner(request)
    w = get_web(request)
    form = await request.post()
    values = {
        "device_name": str(form.get("device_name", ""))[:300],
        "member": str(form.get("member", ""))[:100],
    }
    errors: dict[str, str] = {}
    name = ""
    try:
        name = validate.wireguard_device_name(values["device_name"])
    except validate.Invalid as exc:
        errors["device_name"] = exc.message
    member = w.state.member(values["member"])
    if member is None:
        errors["member"] = "Please choose a person from the list."
    if errors:
        return await _page(request, status=400, errors=errors, values=values)
    assert member is not None
    public = await appliance_public_key(w)
    async with _lock(request):
        state = load(w)
        if not state.ready:
            return await _page(
                request, status=400, values=values, state=state,
                errors={"form": "First type your home's public address above and save it."},
            )
        try:
            state, new = state.add_device(name, member.username)
        except tunnel.Invalid as exc:
            return await _page(request, status=400, errors={"device_name": exc.message},
                               values=values, state=state)
        save(w, state)
    config = client.client_config(state, new, public)
    # Rendered straight into this answer (no-store): the private key exists nowhere else.
    return render(
        request,
        "remote_device.html",
        title=f"Set up {new.peer.name}",
        peer=new.peer,
        member=member,
        config=config,
        qr_config=qr_svg(config, f"QR code: the WireGuard set-up for {new.peer.name}"),
        state=state,
        android_url=WIREGUARD_ANDROID,
        ios_url=WIREGUARD_IOS,
        homeserver_address=w.homeserver_address(),
        local_address=_is_local(w),
    )


async def device_revoke(request: web.Request) -> web.Response:
    require_owner(request)
    w = get_web(request)
    peer_id = request.match_info["peer_id"]
    async with _lock(request):
        state = load(w)
        if state.peer(peer_id) is None:
            raise web.HTTPNotFound()
        save(w, state.remove_device(peer_id))
    raise web.HTTPSeeOther("/remote")


def add_routes(app: web.Application) -> None:
    app[LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/remote", remote_get)
    app.router.add_post("/remote", remote_settings)
    app.router.add_post("/remote/devices", device_add)
    app.router.add_post("/remote/devices/{peer_id}/revoke", device_revoke)
