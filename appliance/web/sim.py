"""The SIM panel (wizard step 3 and the dashboard's SIM page): state, PIN entry, test SMS."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.control_client import ControlError, ControlUnavailable
from appliance.web import validate
from appliance.web.app import get_web, is_owner, render
from appliance.web.family import known_lines

FINAL_STATES = ("delivered", "failed", "cancelled")
STATE_WORDS = {
    "queued": "Waiting to be sent…",
    "sending": "Sending now…",
    "sent": "Sent. Waiting for the delivery report…",
    "delivered": "Delivered to the phone.",
    "failed": "Failed.",
    "ambiguous": "Interrupted while sending; it may or may not have gone out.",
    "cancelled": "Cancelled.",
}
SIM_WORDS = {
    "READY": "The SIM card is unlocked and ready.",
    "SIM PIN": "The SIM card is locked with a PIN. Type the PIN to unlock it.",
    "SIM PUK": (
        "The SIM card is blocked after too many wrong PINs and needs a PUK code. Do not guess "
        "it: after 10 wrong PUKs the SIM is destroyed. Call your mobile carrier; they will "
        "give you the PUK after checking who you are, then put the SIM in a phone to enter it."
    ),
    "unknown": "The modem has not said anything about the SIM yet.",
}


def sim_words(state: str) -> str:
    if "PUK" in state.upper():
        return SIM_WORDS["SIM PUK"]
    return SIM_WORDS.get(state, f"The SIM reports: {state}.")


async def sim_context(request: web.Request, errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None) -> dict[str, Any]:
    w = get_web(request)
    lines, bridge_error = await known_lines(request)
    modems = [x for x in lines if x.get("kind") == "modem"]
    wanted = request.query.get("line")
    line = next((x for x in modems if x.get("line_id") == wanted), modems[0] if modems else None)
    sim: dict[str, Any] | None = None
    if line is not None and w.control is not None:
        try:
            sim = await w.control.sim(str(line["line_id"]))
        except (ControlUnavailable, ControlError) as exc:
            bridge_error = str(exc)
    if sim is not None:
        sim["words"] = sim_words(str(sim.get("state", "unknown")))
    request_id = request.query.get("sms", "")
    return {
        "line": line,
        "sim": sim,
        "bridge_error": bridge_error,
        "errors": errors or {},
        "values": values or {},
        "sms_request": request_id if request_id.startswith("web-test-") else "",
    }


async def handle_pin(request: web.Request, back: str, template: str,
                     extra: dict[str, Any]) -> web.Response:
    w = get_web(request)
    form = await request.post()
    line_id = str(form.get("line", ""))
    try:
        pin = validate.pin(str(form.get("pin", ""))[:64])
    except validate.Invalid as exc:
        ctx = await sim_context(request, errors={"pin": exc.message})
        return render(request, template, status=400, **ctx, **extra)
    if w.control is None:
        raise web.HTTPServiceUnavailable(text="The bridge is not connected.")
    try:
        await w.control.enter_pin(line_id, pin)
    except (ControlUnavailable, ControlError) as exc:
        message = exc.message if isinstance(exc, ControlError) else str(exc)
        ctx = await sim_context(request, errors={"pin": message})
        return render(request, template, status=400, **ctx, **extra)
    raise web.HTTPSeeOther(back)


async def handle_test_sms(request: web.Request, back: str, template: str,
                          extra: dict[str, Any]) -> web.Response:
    w = get_web(request)
    form = await request.post()
    line_id = str(form.get("line", ""))
    values = {"to": str(form.get("to", ""))[:200], "text": str(form.get("text", ""))[:2000]}
    errors: dict[str, str] = {}
    try:
        to = validate.phone_number(values["to"])
    except validate.Invalid as exc:
        errors["to"] = exc.message
    try:
        text = validate.message_text(values["text"])
    except validate.Invalid as exc:
        errors["text"] = exc.message
    if errors:
        ctx = await sim_context(request, errors=errors, values=values)
        return render(request, template, status=400, **ctx, **extra)
    if w.control is None:
        raise web.HTTPServiceUnavailable(text="The bridge is not connected.")
    try:
        request_id = await w.control.test_sms(line_id, to, text)
    except (ControlUnavailable, ControlError) as exc:
        message = exc.message if isinstance(exc, ControlError) else str(exc)
        ctx = await sim_context(request, errors={"to": message}, values=values)
        return render(request, template, status=400, **ctx, **extra)
    raise web.HTTPSeeOther(f"{back}?sms={quote(request_id)}#test-sms")


async def outbox_json(request: web.Request) -> web.Response:
    """Polled by the page's script to show queued/sent/delivered/failed as it happens."""
    if not is_owner(request):
        return web.json_response({"error": "Please log in."}, status=403)
    w = get_web(request)
    request_id = request.match_info["request_id"]
    if w.control is None or not request_id.startswith("web-test-"):
        return web.json_response({"error": "unknown message"}, status=404)
    try:
        data = await w.control.outbox(request_id)
    except ControlUnavailable as exc:
        return web.json_response({"error": str(exc)}, status=503)
    except ControlError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    state = str(data.get("state", ""))
    words = STATE_WORDS.get(state, state)
    if data.get("error"):
        words = f"{words.rstrip('.…')}: {data['error']}"
    return web.json_response({"state": state, "words": words, "final": state in FINAL_STATES})
