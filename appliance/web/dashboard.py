"""The owner's dashboard (after setup): status, charts, family, contacts, SMS policy,
backups and the log; plus the public certificate install pages for family phones."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.control_client import ControlError, ControlUnavailable
from appliance.homeserver.base import HomeserverError, UserNotFound
from appliance.web import backup, backup_pages, family, logs, plots, remote, sim, validate
from appliance.web.app import (
    get_web,
    plain_error,
    render,
    replace_session,
    require_owner,
    session_of,
)
from appliance.web.config import CONTACTS_FILE
from appliance.web.files import write_private
from appliance.web.state import hash_password, verify_password
from appliance.web.wizard import set_member_lines

MAX_VCARD = 4 * 1024 * 1024
RECENT_TEXTS = 8
# The store's states as an owner reads them in "Recent texts".
STATE_WORDS = {
    "queued": "waiting",
    "sending": "waiting",
    "sent": "sent",
    "delivered": "delivered",
    "failed": "failed",
    "ambiguous": "maybe sent: the chat asks what to do",
    "cancelled": "cancelled",
    "received": "received",
    "quarantined": "held back: the chat says why",
}


def _owner_only(request: web.Request) -> None:
    require_owner(request)


def _system_uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def bridge_problems(status: dict[str, Any] | None) -> list[str]:
    """The bridge's self-check in plain words (empty when all is well)."""
    if not status:
        return []
    bridge = status.get("bridge", {})
    health = bridge.get("health", {})
    problems = []
    if not bridge.get("lines_ok", True):
        problems.append("No phone line is working (see below).")
    if health.get("homeserver_reachable") is False:
        problems.append("The bridge cannot reach the home server.")
    for key, words in (
        ("setup_error", "Setting up the chat rooms failed"),
        ("inbound_error", "Passing on a received text failed"),
        ("delivery_error", "Reporting a delivery failed"),
    ):
        if health.get(key):
            problems.append(f"{words}: {health[key]}")
    contacts = health.get("contacts") or {}
    if contacts.get("pending") and contacts.get("tries"):
        problems.append(f"The uploaded contacts are not applied yet ({contacts_reason(health)});"
                        " Textbridge keeps trying.")
    if health.get("ok") is False and not problems:
        problems.append("A part of the bridge has stopped; restarting the box may help.")
    return problems


async def dashboard(request: web.Request, **extra: Any) -> web.Response:
    """The status page; `extra` (a refused certificate form's errors) goes to the page."""
    from appliance.web import secure

    _owner_only(request)
    w = get_web(request)
    hs = w.homeserver()
    hs_up = await hs.is_up() if hs is not None else False
    bridge: dict[str, Any] | None = None
    bridge_error: str | None = None
    stats: dict[str, Any] = {}
    activity: list[dict[str, Any]] = []
    if w.control is None:
        bridge_error = "The bridge is not connected to this page."
    else:
        try:
            bridge = await w.control.status()
            stats = await w.control.stats(14)
        except (ControlUnavailable, ControlError) as exc:
            bridge_error = str(exc)
        else:
            # Recent texts are a nicety: their failure must not hide the bridge's status.
            with contextlib.suppress(ControlUnavailable, ControlError):
                activity = await w.control.activity(RECENT_TEXTS)
    usage = await asyncio.to_thread(shutil.disk_usage, w.state.dir)
    problems = bridge_problems(bridge)
    lines = (bridge or {}).get("lines", [])
    names = {str(x.get("line_id")): str(x.get("name") or x.get("line_id")) for x in lines}
    signal_charts = []
    for line_id, samples in sorted(stats.get("signal", {}).items()):
        pairs = [(float(t), float(v)) for t, v in samples]
        name = names.get(line_id, line_id)
        signal_charts.append((name, plots.signal_chart(pairs, line_name=name)))
    days = [
        (str(d["day"]), int(d["inbound"]), int(d["outbound"]))
        for d in stats.get("messages_per_day", [])
    ]
    return render(
        request,
        "dashboard.html",
        hs_up=hs_up,
        server_name=w.server_name(),
        bridge=bridge,
        bridge_error=bridge_error,
        bridge_problems=problems,
        lines=lines,
        disk_free_gb=usage.free / 1e9,
        disk_free_pct=100 * usage.free / usage.total if usage.total else 0,
        uptime=human_duration(_system_uptime()),
        version=__version__,
        bridge_uptime=human_duration((bridge or {}).get("bridge", {}).get("uptime_s")),
        signal_charts=signal_charts,
        activity=[{**a, "words": STATE_WORDS.get(str(a.get("state")), str(a.get("state"))),
                   "line": names.get(str(a.get("line_id")), str(a.get("line_id")))}
                  for a in activity],
        messages_chart=plots.messages_chart(days),
        days=days,
        fmt_time=lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if t
        else "",
        cert_action="/certificate",
        **{**secure.certificate_context(request), **extra},
    )


# -- family -----------------------------------------------------------------------------


async def family_page(request: web.Request, *, status: int = 200,
                      errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None,
                      chosen: list[str] | None = None) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    lines, bridge_error = await family.known_lines(request)
    policy = w.state.policy()
    return render(
        request,
        "family.html",
        status=status,
        members=w.state.family(),
        lines=lines,
        bridge_error=bridge_error,
        errors=errors or {},
        values=values or {"method": "password"},
        chosen=chosen or [],
        policy=policy,
    )


async def family_get(request: web.Request) -> web.Response:
    return await family_page(request)


async def family_add(request: web.Request) -> web.Response:
    _owner_only(request)
    lines, _ = await family.known_lines(request)
    form = await request.post()
    values, errors, chosen = family.parse_member_form(form, [str(x.get("line_id")) for x in lines])
    if not errors:
        errors = await family.add_member(request, values, chosen)
    if errors:
        return await family_page(request, status=400, errors=errors, values=values,
                                 chosen=chosen)
    raise web.HTTPSeeOther(f"/family/{values['username']}/welcome")


async def family_remove(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    member = w.state.member(request.match_info["username"])
    if member is None:
        raise web.HTTPNotFound()
    if member.owner:
        return plain_error(request, 400, "Not possible", "The owner's account cannot be removed.")
    # On the family's own server the account is theirs: it leaves the lines, nothing more.
    hs = None if w.external() else w.homeserver()
    if hs is not None:
        try:
            await hs.deactivate_user(member.username)
        except UserNotFound:
            pass  # never registered (an unused registration token): just forget them
        except HomeserverError as exc:
            return plain_error(request, 502, "Home server problem",
                               f"The account could not be closed: {exc}. Nothing was changed.")
    w.state.remove_member(member.username)
    # Their phones' WireGuard access ends with their membership.
    await remote.forget_member(request, member.username)
    raise web.HTTPSeeOther("/family")


async def family_reset(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    member = w.state.member(request.match_info["username"])
    if member is None:
        raise web.HTTPNotFound()
    if member.owner:
        return plain_error(request, 400, "Not here",
                           "Change your own password in Element (Settings, Account).")
    if w.external():
        return plain_error(request, 400, "On your homeserver",
                           f"Passwords on {w.server_name()} are changed on that server.")
    hs = w.homeserver()
    if hs is None:
        return plain_error(request, 503, "Home server not ready",
                           "The home server is not ready yet. Wait a minute and try again.")
    secret = family.one_time_password()
    try:
        await hs.set_password(member.username, secret)
    except HomeserverError as exc:
        return plain_error(request, 502, "Home server problem",
                           f"The password could not be reset: {exc}.")
    session_of(request).flash = {"username": member.username, "method": "password",
                                 "secret": secret}
    raise web.HTTPSeeOther(f"/family/{member.username}/welcome")


async def family_lines(request: web.Request) -> web.Response:
    _owner_only(request)
    return await set_member_lines(request, "/family")


async def family_welcome(request: web.Request) -> web.Response:
    _owner_only(request)
    return await family.welcome(request, back="/family")


# -- SMS policy -------------------------------------------------------------------------


async def policy_post(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    form = await request.post()
    policy = w.state.policy()
    errors: dict[str, str] = {}
    try:
        policy.default_daily_cap = validate.whole_number(
            str(form.get("default_daily_cap", "")), low=0, high=1000,
            what="the daily limit",
        )
    except validate.Invalid as exc:
        errors["default_daily_cap"] = exc.message
    caps: dict[str, int] = {}
    for member in w.state.family():
        raw = str(form.get(f"cap_{member.username}", "")).strip()
        if not raw:
            continue
        try:
            caps[member.mxid] = validate.whole_number(raw, low=0, high=1000,
                                                      what="the daily limit")
        except validate.Invalid as exc:
            errors[f"cap_{member.username}"] = exc.message
    policy.caps = caps
    policy.block_short_codes = form.get("block_short_codes") == "on"
    policy.block_premium = form.get("block_premium") == "on"
    policy.international_allowed = form.get("international_allowed") == "on"
    if errors:
        return await family_page(request, status=400, errors=errors)
    w.state.save_policy(policy)
    raise web.HTTPSeeOther("/family#limits")


# -- SIM --------------------------------------------------------------------------------


async def sim_get(request: web.Request) -> web.Response:
    _owner_only(request)
    return render(request, "sim.html", **await sim.sim_context(request))


async def sim_pin(request: web.Request) -> web.Response:
    _owner_only(request)
    return await sim.handle_pin(request, "/sim", "sim.html", {})


async def sim_test(request: web.Request) -> web.Response:
    _owner_only(request)
    return await sim.handle_test_sms(request, "/sim", "sim.html", {})


# -- contacts ---------------------------------------------------------------------------


def _check_vcard(data: bytes) -> tuple[str, int]:
    if len(data) > MAX_VCARD:
        raise validate.Invalid("The file is too large (at most 4 MB).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise validate.Invalid("The file is not UTF-8 text. Export it again as vCard.") from None
    if not text.lstrip().upper().startswith("BEGIN:VCARD"):
        raise validate.Invalid("This is not a vCard file (.vcf). Export your contacts as vCard.")
    if any(ord(ch) < 32 and ch not in "\r\n\t" for ch in text):
        raise validate.Invalid("The file contains control characters; it may be damaged.")
    count = sum(1 for line in text.splitlines() if line.strip().upper() == "BEGIN:VCARD")
    ends = sum(1 for line in text.splitlines() if line.strip().upper() == "END:VCARD")
    if count == 0 or count != ends:
        raise validate.Invalid("The vCard file is incomplete (a contact is not closed).")
    return text, count


def _contact_count(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return sum(1 for line in text.splitlines() if line.strip().upper() == "BEGIN:VCARD")


def contacts_reason(health: dict[str, Any]) -> str:
    if health.get("homeserver_reachable") is False:
        return "the bridge cannot reach the home server"
    error = (health.get("contacts") or {}).get("error")
    return f"the last try failed: {error}" if error else "the bridge is applying them now"


async def contacts_applied(request: web.Request) -> tuple[bool, str] | None:
    """Whether the bridge has applied the uploaded file (it retries until it has), with
    words for the page; None when nothing was uploaded."""
    w = get_web(request)
    try:
        data = await asyncio.to_thread((w.state.dir / CONTACTS_FILE).read_bytes)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256(data).hexdigest()
    if w.control is None:
        return False, "Saved. The bridge is not connected to this page."
    try:
        health = (await w.control.status()).get("bridge", {}).get("health", {})
    except (ControlUnavailable, ControlError):
        return False, ("Saved, not applied yet: the bridge is not running. The names are "
                       "applied when it starts.")
    if (health.get("contacts") or {}).get("applied") == digest:
        return True, "Applied: chats show these names."
    return False, (f"Saved, not applied yet: {contacts_reason(health)}. Textbridge keeps "
                   "trying and applies them as soon as it can.")


async def contacts_get(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    return render(request, "contacts.html", count=_contact_count(w.state.dir / CONTACTS_FILE),
                  errors={}, saved=request.query.get("saved") == "1",
                  applied=await contacts_applied(request))


async def contacts_post(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    form = await request.post()
    upload = form.get("vcf")
    if not isinstance(upload, web.FileField):
        return render(request, "contacts.html", status=400,
                      count=_contact_count(w.state.dir / CONTACTS_FILE),
                      errors={"vcf": "Please choose a .vcf file."}, saved=False,
                      applied=await contacts_applied(request))
    data = upload.file.read(MAX_VCARD + 1)
    try:
        text, _ = _check_vcard(data)
    except validate.Invalid as exc:
        return render(request, "contacts.html", status=400,
                      count=_contact_count(w.state.dir / CONTACTS_FILE),
                      errors={"vcf": exc.message}, saved=False,
                      applied=await contacts_applied(request))
    write_private(w.state.dir / CONTACTS_FILE, text.encode("utf-8"))
    raise web.HTTPSeeOther("/contacts?saved=1")


# -- backup -----------------------------------------------------------------------------


async def backup_get(request: web.Request) -> web.Response:
    _owner_only(request)
    return render(request, "backup.html", errors={}, restored=request.query.get("restored"),
                  **backup_pages.context(request))


async def backup_download(request: web.Request) -> web.StreamResponse:
    _owner_only(request)
    w = get_web(request)
    form = await request.post()
    phrase = str(form.get("passphrase", ""))[:2000]
    errors: dict[str, str] = {}
    try:
        validate.passphrase(phrase)
        if phrase != str(form.get("passphrase2", "")):
            raise validate.Invalid("The two passphrases are not the same.")
    except validate.Invalid as exc:
        errors["passphrase"] = exc.message
        return render(request, "backup.html", status=400, errors=errors, restored=None)
    blob = await asyncio.to_thread(backup.backup, w.state.dir, phrase)
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    return web.Response(
        body=blob,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="textbridge-{stamp}.tbbackup"'},
    )


async def backup_restore(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    form = await request.post()
    upload = form.get("file")
    phrase = str(form.get("passphrase", ""))[:2000]
    if not isinstance(upload, web.FileField):
        return render(request, "backup.html", status=400, restored=None,
                      errors={"file": "Please choose the backup file."})
    blob = upload.file.read(backup.MAX_BACKUP + 1)
    if len(blob) > backup.MAX_BACKUP:
        return render(request, "backup.html", status=400, restored=None,
                      errors={"file": "That file is too large to be a Textbridge backup."})
    try:
        restored = await asyncio.to_thread(backup.restore, w.state.dir, blob, phrase)
    except backup.BackupError as exc:
        return render(request, "backup.html", status=400, restored=None,
                      errors={"file": str(exc)})
    # The restored owner password may differ: everyone logs in again against it.
    w.sessions.drop_all()
    raise web.HTTPSeeOther(f"/login?next=/backup%3Frestored%3D{len(restored)}")


# -- the owner's own password for these pages ---------------------------------------------


async def account_get(request: web.Request) -> web.Response:
    _owner_only(request)
    return render(request, "account.html", errors={}, changed=request.query.get("changed"))


async def account_post(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    owner = w.state.owner()
    assert owner is not None  # _owner_only checked it
    form = await request.post()
    current = str(form.get("current", ""))[:2000]
    new = str(form.get("password", ""))[:2000]
    again = str(form.get("password2", ""))[:2000]
    key = f"user:{owner['username']}"
    errors: dict[str, str] = {}
    # The current password is a login by another door: the same throttle applies, so a
    # borrowed unlocked session cannot be used to guess it.
    wait = w.login_wait(request, key)
    if wait > 0:
        errors["current"] = f"Too many wrong tries. Please wait {int(wait) + 1} seconds."
    elif not await verify_password(owner["password_hash"], current):
        w.login_failed(request, key)
        errors["current"] = "That is not your current password."
    else:
        w.login_succeeded(request, key)
        try:
            validate.new_password(new, again, user=owner["username"])
        except validate.Invalid as exc:
            errors["password"] = exc.message
    if errors:
        return render(request, "account.html", status=400, errors=errors, changed=None)
    w.state.save_owner(name=owner["name"], username=owner["username"], mxid=owner["mxid"],
                       password_hash=await hash_password(new))
    # Every other session ends: a password change is what one does after a leak.
    w.sessions.drop_all()
    replace_session(request, w.sessions.new())
    session_of(request).user = owner["username"]
    raise web.HTTPSeeOther("/account?changed=1")


# -- log --------------------------------------------------------------------------------


async def logs_get(request: web.Request) -> web.Response:
    _owner_only(request)
    w = get_web(request)
    lines = await logs.recent_lines(log_file=w.settings.log_file,
                                    units=w.settings.journal_units)
    return render(request, "logs.html", lines=lines)


# -- certificate install pages (public: family phones fetch them without a login) ---------


async def install(request: web.Request) -> web.Response:
    w = get_web(request)
    ca = w.ca()
    if not ca.exists():
        return plain_error(request, 404, "Not ready yet",
                           "The owner has not made the security certificate yet.")
    platform = request.match_info.get("platform", "")
    if platform not in ("", "android", "ios"):
        raise web.HTTPNotFound()
    return render(request, "install.html", platform=platform, ca=ca.info(),
                  server_name=w.server_name())


async def ca_file(request: web.Request) -> web.Response:
    w = get_web(request)
    ca = w.ca()
    if not ca.exists():
        raise web.HTTPNotFound()
    kind = request.match_info["kind"]
    if kind == "textbridge-ca.crt":
        # DER: what Android's "install certificate" screen expects for a CA.
        return web.Response(body=ca.ca_der(), content_type="application/x-x509-ca-cert",
                            headers={"Content-Disposition":
                                     'attachment; filename="textbridge-ca.crt"'})
    if kind == "textbridge-ca.pem":
        return web.Response(body=ca.ca_pem(), content_type="application/x-pem-file",
                            headers={"Content-Disposition":
                                     'attachment; filename="textbridge-ca.pem"'})
    if kind == "textbridge.mobileconfig":
        return web.Response(body=ca.mobileconfig(),
                            content_type="application/x-apple-aspen-config",
                            headers={"Content-Disposition":
                                     'attachment; filename="textbridge.mobileconfig"'})
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/family", family_get)
    app.router.add_post("/family/add", family_add)
    app.router.add_post("/family/{username}/remove", family_remove)
    app.router.add_post("/family/{username}/reset", family_reset)
    app.router.add_post("/family/{username}/lines", family_lines)
    app.router.add_get("/family/{username}/welcome", family_welcome)
    app.router.add_post("/policy", policy_post)
    app.router.add_get("/sim", sim_get)
    app.router.add_post("/sim/pin", sim_pin)
    app.router.add_post("/sim/test-sms", sim_test)
    app.router.add_get("/contacts", contacts_get)
    app.router.add_post("/contacts", contacts_post)
    app.router.add_get("/backup", backup_get)
    app.router.add_post("/backup/download", backup_download)
    app.router.add_post("/backup/restore", backup_restore)
    backup_pages.add_routes(app)
    app.router.add_get("/logs", logs_get)
    app.router.add_get("/account", account_get)
    app.router.add_post("/account", account_post)
    app.router.add_get("/install", install)
    app.router.add_get("/install/{platform}", install)
    app.router.add_get("/ca/{kind}", ca_file)
