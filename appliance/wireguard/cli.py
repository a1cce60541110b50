"""`textbridge wireguard apply|status`: put the tunnel state on the system, or show it.

`apply` is what textbridge-wireguard.service runs (at boot, and through its path unit
whenever the web service rewrites wireguard.json); it needs CAP_NET_ADMIN and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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


def state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    data_dir = Path("/var/lib/textbridge")
    if args.config is not None:
        from appliance.config import Config

        data_dir = Config.load(args.config).general.data_dir
    return data_dir / "web"


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
            return 0
        state = tunnel.load(paths.state)
        name = args.interface or state.interface
        have = asyncio.run(apply.status(name, netns=args.netns, socket_dir=args.socket_dir))
    except apply.NoWireGuard as exc:
        print(f"textbridge wireguard: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"textbridge wireguard: {exc}", file=sys.stderr)
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
