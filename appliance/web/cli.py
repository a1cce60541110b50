"""`textbridge web`: serve the setup wizard and the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from appliance.homeserver import HomeserverAdapter, adapter_for
from appliance.web.app import WEB_KEY, Web, make_app
from appliance.web.config import WebSettings

log = logging.getLogger(__name__)
# Hourly: cheap (file reads), and a new DHCP address gets into the certificate soon.
RENEW_CHECK_INTERVAL = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="the appliance config (for data_dir and the homeserver)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the web state directory (default: {data_dir}/web)")
    parser.add_argument("--control-socket", type=Path, default=None,
                        help="the bridge's control socket (default: {data_dir}/control.sock)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--https-port", type=int, default=0,
                        help="also serve HTTPS with the appliance's own certificate")
    parser.add_argument("--certificate-ip", action="append", default=[],
                        help="an address the home certificate must name (repeatable)")
    parser.add_argument("--detect-addresses", action="store_true",
                        help="also name this box's current home-network addresses in it, "
                        "re-checked hourly (the appliance: the router may hand out another)")
    parser.add_argument("--homeserver", choices=["tuwunel", "synapse"], default="tuwunel",
                        help="which homeserver runs next to the bridge")
    parser.add_argument("--homeserver-url", default=None,
                        help="its client API on loopback, e.g. http://127.0.0.1:8008")
    parser.add_argument("--homeserver-upstream", default=None,
                        help="where the HTTPS site proxies /_matrix/ to "
                        "(default: --homeserver-url, else the homeserver's own config)")
    parser.add_argument("--server-name", default=None, help="its server name (synapse only)")
    parser.add_argument("--public-url", default=None,
                        help="the address family members type into Element X")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="show this file in the log view instead of the journal")
    parser.add_argument("--allow-remote-setup", action="store_true",
                        help="answer the setup wizard from any address (demo only)")
    parser.add_argument("--secure-cookies", action="store_true")


def settings_from_args(args: argparse.Namespace) -> WebSettings:
    data_dir = Path("/var/lib/textbridge")
    if args.config is not None:
        from appliance.config import Config

        data_dir = Config.load(args.config).general.data_dir
    state_dir = args.state_dir or data_dir / "web"
    kind, url, server_name = args.homeserver, args.homeserver_url, args.server_name

    def homeserver() -> HomeserverAdapter:
        # Built on first use: the homeserver may still be starting when the web comes up.
        return adapter_for(kind, state_dir=data_dir, url=url, server_name=server_name)

    return WebSettings(
        state_dir=state_dir,
        homeserver=homeserver,
        control_socket=args.control_socket or data_dir / "control.sock",
        host=args.host,
        port=args.port,
        trust_local_only=not args.allow_remote_setup,
        secure_cookies=args.secure_cookies,
        homeserver_public_url=args.public_url,
        homeserver_upstream=args.homeserver_upstream or url,
        log_file=args.log_file,
        certificate_ips=tuple(args.certificate_ip),
        detect_addresses=args.detect_addresses,
        data_dir=data_dir,
        homeserver_kind=kind,
        config_file=args.config,
    )


async def serve(settings: WebSettings, https_port: int = 0) -> None:
    app = make_app(settings)
    w = app[WEB_KEY]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("web: listening on %s:%d", settings.host, settings.port)
    if https_port:
        context = await asyncio.to_thread(w.tls.context)
        await web.TCPSite(runner, settings.host, https_port, ssl_context=context).start()
        log.info("web: HTTPS on %s:%d", settings.host, https_port)
    try:
        while True:
            await asyncio.sleep(RENEW_CHECK_INTERVAL)
            if https_port:
                await renew(w)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


async def renew(w: Web) -> None:
    """The regular check: the home certificate (renewed in place when due; new handshakes use
    it, open connections keep theirs) and the family domain's certificate from ACME."""
    try:
        if await asyncio.to_thread(w.tls.reload):
            log.info("web: server certificate renewed")
    except Exception:
        log.exception("web: renewing the home certificate failed")
    domain = str(w.state.setup().get("domain") or "")
    if w.tls.renewal_due(domain):
        log.info("web: the certificate for %s is due, ordering a new one", domain)
        w.tls.start(domain)


def run(args: argparse.Namespace) -> int:
    from appliance import log as applog

    applog.setup("info")
    settings = settings_from_args(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, args.https_port))
    return 0
