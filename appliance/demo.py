"""`textbridge demo`: the whole stack on this machine, on loopback only.

Synapse (the test and demo homeserver), the modem simulator on a pty (the phone network is
scriptable: `textbridge network send ...`), the appliance process's parts (store, SMS line,
bridge, control API) and the web setup, all started here; state kept in ./demo-state so a
second run continues where the first stopped. Synapse stands in for Tuwunel, which runs on
the appliance; both sit behind the same adapter interface.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from appliance import log as applog

log = logging.getLogger(__name__)

SERVER_NAME = "textbridge.local"
HS_PORT = 8008
BRIDGE_PORT = 29330
WEB_PORT = 8080
SIM_CONTROL_PORT = 29320
FAMILY_MEMBER = "alex"
DEMO_REPORT_DELAY = 3.0  # seconds from a text leaving the modem to its delivery report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, default=Path("demo-state"), help="state directory")
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    parser.add_argument("--homeserver-port", type=int, default=HS_PORT)
    parser.add_argument("--bridge-port", type=int, default=BRIDGE_PORT)
    parser.add_argument("--sim-control-port", type=int, default=SIM_CONTROL_PORT)
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="start everything, print the banner, then stop (used by the tests)",
    )


def run(args: argparse.Namespace) -> int:
    applog.setup(os.environ.get("TEXTBRIDGE_LOG_LEVEL", "warning"))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(Demo(args).main())
    return 0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As a server binds: connections of a run that just ended (TIME_WAIT) do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state: Path = args.state.resolve()
        self.synapse: Any = None
        self.sim: Any = None
        self.sim_runner: Any = None
        self.phone: Any = None
        self.adb: Any = None
        self.appliance: Any = None
        self.web_runner: Any = None
        self.log_path = self.state / "textbridge.log"

    async def main(self) -> int:
        for name, port in (
            ("homeserver", self.args.homeserver_port),
            ("bridge", self.args.bridge_port),
            ("web", self.args.web_port),
            ("simulator control", self.args.sim_control_port),
        ):
            if not _port_free(port):
                print(f"textbridge demo: port {port} ({name}) is in use; is a demo running?")
                return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            banner = await self.start()
            print(banner, flush=True)
            if not self.args.exit_when_ready:
                await stop.wait()
        finally:
            await self.stop()
        return 0

    async def start(self) -> str:
        from aiohttp import web

        from appliance.adbsim.device import SimPhone
        from appliance.adbsim.server import AdbSimServer
        from appliance.config import Config
        from appliance.homeserver.bootstrap import bootstrap
        from appliance.homeserver.synapse import SynapseAdapter, SynapseServer
        from appliance.run import Appliance
        from appliance.sim.cli import make_app as make_sim_app
        from appliance.sim.modem import ModemSimulator
        from appliance.web.app import make_app
        from appliance.web.config import WebSettings

        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        # There is no journal here: the dashboard's log view shows this file.
        applog.add_file(self.log_path)
        hs_state = self.state / "homeserver"
        data = self.state / "data"
        web_state = data / "web"
        bridge_url = f"http://127.0.0.1:{self.args.bridge_port}"

        print("Starting Synapse (the demo's homeserver)…", flush=True)
        self.synapse = SynapseServer(
            hs_state / "synapse", server_name=SERVER_NAME, port=self.args.homeserver_port
        )
        await self.synapse.start()
        adapter = SynapseAdapter.for_server(self.synapse, state_dir=hs_state)

        async def make_ready(changed: bool) -> None:
            if changed:
                await self.synapse.restart()

        result = await bootstrap(
            adapter,
            state_dir=hs_state,
            bridge_url=bridge_url,
            owner=FAMILY_MEMBER,
            make_ready=make_ready,
        )
        creds = json.loads(result.credentials_path.read_text(encoding="utf-8"))
        account = creds["accounts"][FAMILY_MEMBER]
        member = account["mxid"]

        print("Starting the modem simulator…", flush=True)
        link = self.state / "modem"
        self.sim = ModemSimulator(pin=None, link_path=link)
        # As a real network does, a few seconds after each text: "delivered". `network
        # auto-report --status 0x41` (failed) or `--off` (no report) play other networks.
        self.sim.network.auto_report = 0x00
        self.sim.network.report_delay = DEMO_REPORT_DELAY
        self.sim.start()
        print("Starting the simulated Android phone…", flush=True)
        self.phone = SimPhone()
        self.phone.auto_accept = True  # the "Allow USB debugging?" tap, done for the demo
        self.adb = AdbSimServer(self.phone).start()
        control_app = make_sim_app(self.sim)
        add_phone_routes(control_app, self.phone)
        self.sim_runner = web.AppRunner(control_app, access_log=None)
        await self.sim_runner.setup()
        await web.TCPSite(self.sim_runner, "127.0.0.1", self.args.sim_control_port).start()

        config = Config.from_dict(
            {
                "general": {"data_dir": str(data), "home_country": "DE", "log_level": "info"},
                "modem": {"port": str(link), "sweep_interval": 30.0},
                "phone": {
                    "enabled": True,
                    "transport": "tcp",
                    "port": self.adb.port,
                    "poll_interval": 1.0,
                },
                "bridge": {
                    "homeserver_url": self.synapse.url,
                    "server_name": SERVER_NAME,
                    "registration": str(result.registration_path),
                    "listen_port": self.args.bridge_port,
                    # Who is on which line lives in the web state (seed_family), as on
                    # the appliance: one family for the wizard, the dashboard and the bot.
                    "lines": [{"id": "sms"}, {"id": "phone", "kind": "phone"}],
                },
            }
        )
        seed_family(web_state, member, [line.id for line in config.bridge.lines])
        print("Starting the bridge…", flush=True)
        self.appliance = Appliance(config, web_state=web_state)
        await self.appliance.start()

        settings = WebSettings(
            state_dir=web_state,
            homeserver=lambda: adapter,
            control_socket=self.appliance.control_socket,
            host="127.0.0.1",
            port=self.args.web_port,
            homeserver_public_url=self.synapse.url,
            log_file=self.log_path,
        )
        app = make_app(settings)
        self.web_runner = web.AppRunner(app, access_log=None)
        await self.web_runner.setup()
        await web.TCPSite(self.web_runner, "127.0.0.1", self.args.web_port).start()

        control = f"127.0.0.1:{self.args.sim_control_port}"
        net = f".venv/bin/python -m appliance network --control {control}"
        return f"""
Textbridge demo is running (state in {self.state}).

  Setup wizard:   http://127.0.0.1:{self.args.web_port}/
  Homeserver:     {self.synapse.url}   (server name {SERVER_NAME})
  Family member:  {member}
  Password:       {account["password"]}
                  (for chatting; the setup wizard creates the owner, who manages the box)

Log in with Element (or any Matrix client) using that homeserver, user and password.
To start a chat with a phone number, either:
  - write "new +4915112345678" to the Textbridge bot (the chat named Textbridge), or
  - use "Start chat" with @sms_4915112345678:{SERVER_NAME}; Element X makes that chat
    encrypted, which Textbridge cannot read, so you are invited to the real chat instead.

Act as the phone network (another terminal, in this directory):
  {net} send --from +4915112345678 --text "Hi!"
  {net} sent      # what the modem sent, with the reference `report` takes
  {net} auto-report --off   # no delivery reports (--status 0x41: failed; 0: delivered)
and as the people texting the tethered phone (RCS, or --sms; --group NAME --members a,b):
  {net} phone-send --from +4917612345678 --text "Hi!"
  {net} phone-sent  # what the phone sent

Ctrl-C stops everything.
"""

    async def stop(self) -> None:
        # Each part is stopped even if stopping another failed.
        for part, method in (
            (self.web_runner, "cleanup"),
            (self.appliance, "stop"),
            (self.sim_runner, "cleanup"),
            (self.synapse, "stop"),
        ):
            if part is None:
                continue
            with contextlib.suppress(Exception):
                await getattr(part, method)()
        if self.sim is not None:
            with contextlib.suppress(Exception):
                self.sim.stop()
        if self.adb is not None:
            with contextlib.suppress(Exception):
                self.adb.shutdown()
                self.adb.server_close()


def seed_family(web_state: Path, mxid: str, line_ids: list[str]) -> None:
    """The demo's family member, written where the wizard writes every member (family.json,
    and members.json for the bridge), so the wizard, the dashboard and the bot's `lines`
    show the same people. Only into a new state: a member the owner removed stays removed."""
    from appliance.web.config import FAMILY_FILE, WebSettings
    from appliance.web.state import Member, WebState

    if (web_state / FAMILY_FILE).exists():
        return
    state = WebState(WebSettings(state_dir=web_state))
    username = mxid[1:].split(":", 1)[0]
    state.upsert_member(
        Member(name=username.capitalize(), username=username, mxid=mxid, lines=line_ids,
               added_at=time.time())
    )


def add_phone_routes(app: Any, phone: Any) -> None:
    """The simulated phone's side of the demo's network control (`network phone-send`)."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        sender, text = str(body.get("sender", "")), str(body.get("text", ""))
        if not sender or not text:
            return web.json_response({"error": "sender and text are needed"}, status=400)
        members = body.get("members")
        phone.receive(
            sender,
            text,
            rcs=bool(body.get("rcs", True)),
            group=body.get("group") or None,
            members=tuple(str(m) for m in members) if members else None,
        )
        return web.json_response({"ok": True})

    async def sent(request: web.Request) -> web.Response:
        return web.json_response(
            {"messages": [{"to": list(m.recipients), "text": m.text} for m in phone.sent]}
        )

    app.router.add_post("/phone/receive", receive)
    app.router.add_get("/phone/sent", sent)
