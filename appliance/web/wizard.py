"""The first-boot setup wizard: six pages, each done in order, then closed for good.

Step 1 is open to anyone on the home network (that visitor becomes the owner); from then on
every step needs the owner's session, so a second person on the Wi-Fi cannot take over a
half-finished setup.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from appliance.homeserver.base import (
    HomeserverError,
    HomeserverUnavailable,
    LoginFailed,
    UserExists,
)
from appliance.web import backup_pages, family, own_server, owner_reset, sim, validate
from appliance.web.app import (
    get_web,
    is_owner,
    plain_error,
    render,
    replace_session,
    session_of,
)
from appliance.web.state import WIZARD_STEPS, Member, hash_password

STEP_TITLES = {
    1: "Your account",
    2: "Server name",
    3: "SIM card",
    4: "Family",
    5: "Secure connection",
    6: "Done",
}


def _first_open_step(done: set[int]) -> int:
    return next((s for s in range(1, WIZARD_STEPS + 1) if s not in done), WIZARD_STEPS)


def guard(request: web.Request, step: int) -> None:
    w = get_web(request)
    if w.state.complete:
        if request.method == "GET":
            raise web.HTTPSeeOther("/" if is_owner(request) else "/login")
        raise web.HTTPNotFound()
    if w.state.owner() is not None and not is_owner(request):
        raise web.HTTPSeeOther(f"/login?next=/setup/{step}")
    first_open = _first_open_step(w.state.done_steps())
    if step > first_open:
        raise web.HTTPSeeOther(f"/setup/{first_open}")


def page(request: web.Request, step: int, template: str, *, status: int = 200,
          **context: Any) -> web.Response:
    return render(
        request,
        template,
        status=status,
        step=step,
        step_title=STEP_TITLES[step],
        titles=STEP_TITLES,
        done=get_web(request).state.done_steps(),
        **context,
    )


def _step(request: web.Request) -> int:
    try:
        step = int(request.match_info["step"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 1 <= step <= WIZARD_STEPS:
        raise web.HTTPNotFound()
    return step


async def start(request: web.Request) -> web.Response:
    w = get_web(request)
    if w.state.complete:
        raise web.HTTPSeeOther("/")
    raise web.HTTPSeeOther(f"/setup/{_first_open_step(w.state.done_steps())}")


async def show(request: web.Request) -> web.Response:
    step = _step(request)
    guard(request, step)
    return page(request, step, f"setup_{step}.html", **await step_context(request, step))


async def step_context(request: web.Request, step: int) -> dict[str, Any]:
    w = get_web(request)
    if step == 1:
        return {"owner": w.state.owner(), "errors": {}, "values": {}}
    if step == 2:
        return {
            "server_name": w.server_name(),
            "fixed": w.homeserver() is not None,
            "domain": w.state.setup().get("domain") or "",
            "errors": {},
            "values": {},
        }
    if step == 3:
        return await sim.sim_context(request)
    if step == 4:
        lines, bridge_error = await family.known_lines(request)
        return {
            "members": w.state.family(),
            "lines": lines,
            "bridge_error": bridge_error,
            "errors": {},
            "values": {"method": "password"},
            "chosen": [],
        }
    if step == 5:
        from appliance.web import secure

        # The same path as the HTTPS site's (one lock, every address it should name).
        await asyncio.to_thread(w.tls.reload)
        ca = w.ca()
        return {"ca": ca.info(), "server_name": w.server_name(),
                "cert_action": "/setup/5/acme", **secure.certificate_context(request)}
    owner = w.state.owner()
    return {
        "owner": owner,
        "server_name": w.server_name(),
        "members": w.state.family(),
        "address": w.homeserver_address(),
    }


async def submit(request: web.Request) -> web.Response:
    step = _step(request)
    guard(request, step)
    w = get_web(request)
    if step == 1:
        return await _submit_owner(request)
    if step == 2:
        form = await request.post()
        raw = str(form.get("domain", ""))[:1000]
        domain = ""
        if raw.strip():
            try:
                domain = validate.hostname(raw)
            except validate.Invalid as exc:
                ctx = await step_context(request, 2)
                ctx["errors"] = {"domain": exc.message}
                ctx["values"] = {"domain": raw}
                return page(request, 2, "setup_2.html", status=400, **ctx)
        w.state.mark_done(2, domain=domain or None)
    elif step == 6:
        await backup_pages.ensure_key(w)  # the emergency kit's key, before the first backup
        w.state.finish()
        raise web.HTTPSeeOther("/")
    else:
        w.state.mark_done(step)
    raise web.HTTPSeeOther(f"/setup/{step + 1}")


async def _submit_owner(request: web.Request) -> web.Response:
    w = get_web(request)
    form = await request.post()
    values = {
        "name": str(form.get("name", ""))[:500],
        "username": str(form.get("username", ""))[:500],
    }
    password = str(form.get("password", ""))[:2000]
    again = str(form.get("password2", ""))[:2000]
    errors: dict[str, str] = {}
    try:
        values["name"] = validate.display_name(values["name"], label="name")
    except validate.Invalid as exc:
        errors["name"] = exc.message
    try:
        values["username"] = validate.username(values["username"])
    except validate.Invalid as exc:
        errors["username"] = exc.message
    try:
        validate.new_password(password, again, user=values["username"])
    except validate.Invalid as exc:
        errors["password"] = exc.message

    def again_page(status: int = 400) -> web.Response:
        return page(request, 1, "setup_1.html", status=status, owner=None, errors=errors,
                     values=values)

    if errors:
        return again_page()
    hs = w.homeserver()
    if hs is None:
        errors["form"] = (
            "The home server is not ready yet (it may still be starting). Wait a minute "
            "and try again."
        )
        return again_page(503)
    async with w.owner_lock:
        if w.state.owner() is not None:
            return plain_error(request, 409, "Already set up",
                               "Someone has already created the owner's account.")
        try:
            mxid = await hs.create_user(
                values["username"], password, admin=True, displayname=values["name"]
            )
        except UserExists:
            # A retry after a crash between creating the account and saving it here: the
            # right password proves it is the same person's account.
            try:
                if w.state.setup().get(owner_reset.RESET_KEY) == values["username"]:
                    # The owner reset from the boot partition (owner_reset.py): physical
                    # access proved it is theirs, so the account gets the new password.
                    await hs.set_password(values["username"], password)
                else:
                    await hs.login(values["username"], password)
            except LoginFailed:
                errors["username"] = "This username is already taken. Please pick another."
                return again_page()
            except HomeserverError:
                errors["form"] = "The home server is not answering. Wait a minute, try again."
                return again_page(503)
            mxid = f"@{values['username']}:{hs.server_name}"
        except HomeserverUnavailable:
            errors["form"] = "The home server is not answering. Wait a minute and try again."
            return again_page(503)
        except HomeserverError as exc:
            errors["form"] = f"The home server refused: {exc}"
            return again_page(502)
        w.state.save_owner(
            name=values["name"],
            username=values["username"],
            mxid=mxid,
            password_hash=await hash_password(password),
        )
        w.state.upsert_member(
            Member(name=values["name"], username=values["username"], mxid=mxid, owner=True,
                   added_at=time.time())
        )
        w.state.mark_done(1)
        w.state.forget_owner_reset()
    replace_session(request, w.sessions.rotate(session_of(request), values["username"]))
    raise web.HTTPSeeOther("/setup/2")


async def pin(request: web.Request) -> web.Response:
    guard(request, 3)
    return await sim.handle_pin(request, "/setup/3", "setup_3.html", _extra(request, 3))


async def test_sms(request: web.Request) -> web.Response:
    guard(request, 3)
    return await sim.handle_test_sms(request, "/setup/3", "setup_3.html", _extra(request, 3))


def _extra(request: web.Request, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "step_title": STEP_TITLES[step],
        "titles": STEP_TITLES,
        "done": get_web(request).state.done_steps(),
    }


async def add_member(request: web.Request) -> web.Response:
    guard(request, 4)
    w = get_web(request)
    lines, bridge_error = await family.known_lines(request)
    line_ids = [str(x.get("line_id")) for x in lines]
    form = await request.post()
    values, errors, chosen = family.parse_member_form(form, line_ids)
    if not errors:
        errors = await family.add_member(request, values, chosen)
    if errors:
        return page(request, 4, "setup_4.html", status=400, members=w.state.family(),
                     lines=lines, bridge_error=bridge_error, errors=errors, values=values,
                     chosen=chosen)
    raise web.HTTPSeeOther(f"/setup/4/welcome/{values['username']}")


async def set_lines(request: web.Request) -> web.Response:
    guard(request, 4)
    return await set_member_lines(request, "/setup/4")


async def set_member_lines(request: web.Request, back: str) -> web.Response:
    w = get_web(request)
    lines, _ = await family.known_lines(request)
    line_ids = {str(x.get("line_id")) for x in lines}
    member = w.state.member(request.match_info["username"])
    if member is None:
        raise web.HTTPNotFound()
    form = await request.post()
    chosen = [str(v) for v in form.getall("lines", [])]
    if any(c not in line_ids for c in chosen):
        return plain_error(request, 400, "Unknown line", "Please choose only lines from the list.")
    member.lines = sorted(set(chosen))
    w.state.upsert_member(member)
    raise web.HTTPSeeOther(back)


async def welcome(request: web.Request) -> web.Response:
    guard(request, 4)
    return await family.welcome(request, back="/setup/4")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/setup", start)
    app.router.add_get("/setup/{step}", show)
    app.router.add_post("/setup/{step}", submit)
    app.router.add_post("/setup/3/pin", pin)
    app.router.add_post("/setup/3/test-sms", test_sms)
    app.router.add_post("/setup/4/add", add_member)
    app.router.add_post("/setup/4/lines/{username}", set_lines)
    app.router.add_get("/setup/4/welcome/{username}", welcome)
    app.router.add_get("/api/outbox/{request_id}", sim.outbox_json)
    own_server.add_routes(app)
