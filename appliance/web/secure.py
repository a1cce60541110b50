"""Getting a publicly trusted certificate for the family's own domain, from the wizard's
step 5 (before setup is complete) and from the dashboard (after).

The order itself runs in the background (tls.Certificates); these pages start it and show
its progress in words. While it runs the page reloads itself every few seconds (a meta
refresh: no script is needed, and the strict CSP allows it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.web import validate
from appliance.web.app import get_web, plain_error, require_owner

# Let's Encrypt's contact is a mailto: URL; the checks keep it to what mail servers accept.
EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@([A-Za-z0-9.-]{1,253})")


def email(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    match = EMAIL_RE.fullmatch(value)
    if match is None:
        raise validate.Invalid("That is not an email address. Leave it empty if you prefer.")
    try:
        validate.hostname(match.group(1))
    except validate.Invalid:
        raise validate.Invalid(
            "The part after @ is not a valid domain name. Leave it empty if you prefer."
        ) from None
    return value


def domain_of(request: web.Request) -> str:
    return str(get_web(request).state.setup().get("domain") or "")


def certificate_context(request: web.Request) -> dict[str, object]:
    """What the certificate panel (cert_panel.html) shows."""
    w = get_web(request)
    return {"domain": domain_of(request), "cert": w.tls.describe(), "cert_errors": {},
            "cert_values": {}}


Again = Callable[[dict[str, str], dict[str, str]], Awaitable[web.Response]]


async def _order(request: web.Request, back: str, again: Again) -> web.Response:
    w = get_web(request)
    domain = domain_of(request)
    if not domain:
        return plain_error(
            request, 400, "No domain",
            "No domain of your own was entered (setup step 2), so there is nothing to get a "
            "certificate for. The home certificate is used.",
        )
    form = await request.post()
    raw_email = str(form.get("email", ""))[:500]
    errors: dict[str, str] = {}
    contact = None
    try:
        contact = email(raw_email)
    except validate.Invalid as exc:
        errors["email"] = exc.message
    if form.get("agree") != "yes":
        errors["agree"] = (
            "Let's Encrypt gives certificates only to people who accept its subscriber "
            "agreement. Tick the box to go on."
        )
    if errors:
        return await again(errors, {"email": raw_email})
    w.tls.start(domain, f"mailto:{contact}" if contact else None)
    raise web.HTTPSeeOther(back)


async def wizard_order(request: web.Request) -> web.Response:
    from appliance.web import wizard

    wizard.guard(request, 5)

    async def again(errors: dict[str, str], values: dict[str, str]) -> web.Response:
        context = await wizard.step_context(request, 5)
        context.update(cert_errors=errors, cert_values=values)
        return wizard.page(request, 5, "setup_5.html", status=400, **context)

    return await _order(request, "/setup/5", again)


async def dashboard_order(request: web.Request) -> web.Response:
    require_owner(request)
    if not get_web(request).state.complete:
        raise web.HTTPSeeOther("/setup/5")

    async def again(errors: dict[str, str], values: dict[str, str]) -> web.Response:
        from appliance.web import dashboard

        response = await dashboard.dashboard(request, cert_errors=errors, cert_values=values)
        response.set_status(400)
        return response

    return await _order(request, "/#certificate", again)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/setup/5/acme", wizard_order)
    app.router.add_post("/certificate", dashboard_order)
