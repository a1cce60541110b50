"""`textbridge modem-sim`: a simulated modem on a pty, steered over a loopback HTTP API.

The control API is JSON over HTTP on a loopback address only (anyone who can reach it can
make the "modem" send texts):

    POST /deliver  {"sender": "+49...", "text": "...", "timestamp_ms": 0?} -> {"indexes": [...]}
    GET  /sent                                  -> {"parts": [...], "messages": [...]}
    POST /report   {"reference": 3, "status": 0} -> {}
    POST /fault    {"fault": "<name>", ...}      -> {}   (see FAULTS)
    GET  /status                                -> simulator state
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from appliance.sim.modem import ModemSimulator
from appliance.sim.network_cli import DEFAULT_CONTROL, parse_control


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--link", help="stable path to symlink to the modem's tty")
    parser.add_argument(
        "--control",
        default=DEFAULT_CONTROL,
        help=f"loopback host:port of the JSON control API (default {DEFAULT_CONTROL})",
    )
    parser.add_argument("--pin", default=None, help="SIM PIN (default: no PIN lock)")
    parser.add_argument("--storage-size", type=int, default=30, help="SIM message slots")
    parser.add_argument("--own-number", default="+4915100000001")
    parser.add_argument("--operator", default="Textbridge Mobile")
    parser.add_argument(
        "--auto-report",
        type=lambda v: int(v, 0),
        default=None,
        metavar="TP-ST",
        help="report every sent part with this status (e.g. 0 = delivered)",
    )


def _fault(sim: ModemSimulator, body: dict[str, Any]) -> None:
    name = body.get("fault")
    faults = sim.faults
    if name == "hang":
        seconds = body.get("seconds")
        faults.hang(None if seconds is None else float(seconds))
    elif name == "unplug":
        faults.unplug()
    elif name == "replug":
        faults.replug()
    elif name == "garbage":
        faults.garbage(bytes.fromhex(str(body["hex"])))
    elif name == "urc_in_next_response":
        faults.urc_in_next_response(str(body["urc"]))
    elif name == "cms_error_next":
        faults.cms_error_next(
            int(body["code"]), str(body.get("command", "CMGS")), int(body.get("count", 1))
        )
    elif name == "slow":
        faults.slow(float(body["seconds"]))
    elif name == "stuck_prompt":
        faults.stuck_prompt()
    elif name == "storage_full":
        faults.storage_full = bool(body.get("value", True))
    elif name == "registered":
        sim.network.registered = bool(body.get("value", True))
    elif name == "auto_report":  # the network's own status reports: a TP-ST, or None
        status = body.get("status")
        sim.network.auto_report = None if status is None else int(status)
        if body.get("delay") is not None:
            sim.network.report_delay = float(body["delay"])
    else:
        raise ValueError(f"unknown fault {name!r}")


def make_app(sim: ModemSimulator) -> web.Application:
    """The control API for one simulator (also used by tests and the demo in-process)."""

    def handler(
        fn: Callable[[web.Request], Awaitable[Any]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                result = await fn(request)
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(result)

        return wrapped

    async def body_of(request: web.Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    async def deliver(request: web.Request) -> dict[str, Any]:
        body = await body_of(request)
        ts = body.get("timestamp_ms")
        indexes = await asyncio.to_thread(
            sim.network.deliver,
            str(body["sender"]),
            str(body["text"]),
            timestamp_ms=None if ts is None else int(ts),
            encoding=body.get("encoding"),
        )
        return {"indexes": indexes, "pending": sim.network.pending}

    async def sent(_: web.Request) -> dict[str, Any]:
        parts = [asdict(p) for p in list(sim.network.sent)]
        messages = [{"dest": d, "text": t} for d, t in sim.network.sent_messages()]
        return {"parts": parts, "messages": messages}

    async def report(request: web.Request) -> dict[str, Any]:
        body = await body_of(request)
        await asyncio.to_thread(
            sim.network.report, int(body["reference"]), int(body.get("status", 0))
        )
        return {}

    async def fault(request: web.Request) -> dict[str, Any]:
        body = await body_of(request)
        await asyncio.to_thread(_fault, sim, body)
        return {}

    async def status(_: web.Request) -> dict[str, Any]:
        return sim.status()

    app = web.Application()
    app.router.add_post("/deliver", handler(deliver))
    app.router.add_get("/sent", handler(sent))
    app.router.add_post("/report", handler(report))
    app.router.add_post("/fault", handler(fault))
    app.router.add_get("/status", handler(status))
    return app


async def serve(sim: ModemSimulator, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(make_app(sim), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"modem on {sim.port}; control on http://{host}:{port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _main(args: argparse.Namespace, host: str, port: int) -> None:
    sim = ModemSimulator(
        pin=args.pin,
        storage_size=args.storage_size,
        own_number=args.own_number,
        operator=args.operator,
        link_path=args.link,
    )
    sim.network.auto_report = args.auto_report
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sim.start()
    try:
        await serve(sim, host, port, stop)
    finally:
        sim.stop()


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_control(args.control)
    except ValueError as exc:
        print(f"modem-sim: {exc}")
        return 2
    asyncio.run(_main(args, host, port))
    return 0
