"""`textbridge wireguard apply|status`: put the tunnel state on the system, or show it.

`apply` is what textbridge-wireguard.service runs (at boot, and through its path unit
whenever the web service rewrites wireguard.json); it needs CAP_NET_ADMIN and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import logging
import sys
import time
from pathlib import Path

from appliance.wireguard import apply, tunnel, uapi

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["apply", "status"])
    parser.add_argument("--config", type=Path, default=None,
                        help="the appliance config (for data_dir)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where wireguard.json and wireguard.key are "
                        "(default: {data_dir}/web, the web state directory)")
    parser.add_argument("--interface", default=None, help="override the interface name")
    parser.add_argument("--netns", default=None, help="a network namespace (tests)")
    parser.add_argument("--socket-dir", type=Path, default=uapi.SOCKET_DIR,
                        help="where userspace WireGuard keeps its control sockets")
    parser.add_argument("--control-socket", type=Path, default=None,
                        help="the bridge's control socket, to tell the owners in their chat "
                        "when applying fails (default: {data_dir}/control.sock)")


def _data_dir(args: argparse.Namespace) -> Path:
    if args.config is not None:
        from appliance.config import Config

        return Config.load(args.config).general.data_dir
    return Path("/var/lib/textbridge")


def state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    return _data_dir(args) / "web"


NOTICE_TOPIC = "remote-access"


def tell_owners(socket_path: Path, key: str, severity: str, text: str) -> None:
    """Best effort: the owners hear in their chat (through the bridge) what the journal
    says; with the bridge down they still see it in `textbridge wireguard status`."""
    from appliance.control_client import ControlClient

    try:
        asyncio.run(ControlClient(socket_path, timeout=5).notice(NOTICE_TOPIC, key, text, severity))
    except Exception as exc:
        log.info("the owners could not be told in their chat: %s", exc)


def _told_failure(args: argparse.Namespace, problem: str) -> None:
    socket_path = args.control_socket or _data_dir(args) / "control.sock"
    # One notice per distinct problem: the path unit re-runs apply on every change.
    key = "failed:" + hashlib.sha256(problem.encode()).hexdigest()[:16]
    tell_owners(
        socket_path, key, "error",
        f"Remote access (WireGuard) could not be set up: {problem} Family phones cannot "
        "reach Textbridge away from home until this is fixed; at home everything works.",
    )


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    at = dt.datetime.fromtimestamp(when, dt.UTC)
    return f"{int(time.time() - when)} s ago ({at:%H:%M:%S} UTC)"


def run(args: argparse.Namespace) -> int:
    from appliance import log as applog

    applog.setup("info")
    paths = apply.Paths.in_dir(state_dir(args))
    try:
        if args.action == "apply":
            t0 = time.monotonic()
            result = asyncio.run(apply.apply(paths, netns=args.netns, socket_dir=args.socket_dir,
                                             interface=args.interface))
            print(f"{'changed' if result.changed else 'unchanged'} ({result.backend}, "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms)")
            if tunnel.load(paths.state).enabled:
                # Said once after each failure (and once when it first works).
                tell_owners(args.control_socket or _data_dir(args) / "control.sock", "ok",
                            "info", "Remote access (WireGuard) is working.")
            return 0
        state = tunnel.load(paths.state)
        name = args.interface or state.interface
        have = asyncio.run(apply.status(name, netns=args.netns, socket_dir=args.socket_dir))
    except apply.NoWireGuard as exc:
        print(f"textbridge wireguard: {exc}", file=sys.stderr)
        if args.action == "apply":
            _told_failure(args, str(exc))
        return 2
    except (OSError, ValueError) as exc:
        print(f"textbridge wireguard: {exc}", file=sys.stderr)
        if args.action == "apply":
            _told_failure(args, str(exc))
        return 1
    print(f"remote access: {'on' if state.enabled else 'off'}; interface {name}: "
          f"{'present' if have is not None else 'absent'}")
    if state.subnet:
        print(f"tunnel address {state.appliance_address}/{state.network.prefixlen}, "
              f"public address {state.endpoint_host or '(not set)'}:{state.endpoint_port}")
    stats = {s.public_key: s for s in (have.stats if have else ())}
    for peer in state.peers:
        s = stats.get(peer.public_key)
        seen = _ago(s.last_handshake) if s else "not on the interface"
        print(f"  {peer.name} ({peer.member}) {peer.address}: last handshake {seen}")
    return 0
