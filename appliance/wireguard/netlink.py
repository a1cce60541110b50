"""The kernel's WireGuard, through its generic netlink family (pyroute2's WireGuard class).

The Pi's kernel (Debian's linux-image-arm64) has the module; the build and test machines'
kernels do not, so `calls()` (the translation of changes into WireGuard.set arguments) and
`parse_info()` are unit-tested and the round trip through the kernel is not tested here.
Blocking netlink: callers run this in the apply step's executor.
"""

from __future__ import annotations

from typing import Any

from appliance.wireguard.device import Changes, DeviceConfig, PeerConfig, PeerStats

_ZERO_KEY = "A" * 43 + "="


def calls(changes: Changes) -> list[dict[str, Any]]:
    """Keyword arguments for one `WireGuard.set(interface, ...)` call each; pyroute2 takes
    one peer per call."""
    out: list[dict[str, Any]] = []
    device: dict[str, Any] = {}
    if changes.private_key:
        device["private_key"] = changes.private_key
    if changes.listen_port:
        device["listen_port"] = changes.listen_port
    if device:
        out.append(device)
    for public in changes.remove:
        out.append({"peer": {"public_key": public, "remove": True}})
    for peer in changes.upsert:
        out.append(
            {
                "peer": {
                    "public_key": peer.public_key,
                    "preshared_key": peer.preshared_key,
                    "replace_allowed_ips": True,
                    "allowed_ips": list(peer.allowed_ips),
                }
            }
        )
    return out


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def _key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return None if value in (None, _ZERO_KEY) else str(value)


def parse_info(messages: list[Any]) -> DeviceConfig:
    """WireGuard.info()'s messages (a large device comes in several) into a DeviceConfig."""
    private_key: str | None = None
    listen_port: int | None = None
    peers: list[PeerConfig] = []
    stats: list[PeerStats] = []
    for msg in messages:
        private_key = _key(_attr(msg, "WGDEVICE_A_PRIVATE_KEY")) or private_key
        listen_port = _attr(msg, "WGDEVICE_A_LISTEN_PORT") or listen_port
        for peer in _attr(msg, "WGDEVICE_A_PEERS") or []:
            public = _key(_attr(peer, "WGPEER_A_PUBLIC_KEY"))
            if public is None:
                continue
            ips = []
            for allowed in _attr(peer, "WGPEER_A_ALLOWEDIPS") or []:
                # decoded by pyroute2 into an "addr" entry such as "10.0.0.2/32"
                addr = allowed.get("addr") if isinstance(allowed, dict) else None
                if addr is not None:
                    ips.append(str(addr))
            psk = _key(_attr(peer, "WGPEER_A_PRESHARED_KEY")) or _ZERO_KEY
            peers.append(PeerConfig(public, psk, tuple(ips)))
            handshake = _attr(peer, "WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            sec = int(handshake.get("tv_sec", 0)) if isinstance(handshake, dict) else 0
            endpoint = _attr(peer, "WGPEER_A_ENDPOINT")
            stats.append(
                PeerStats(
                    public_key=public,
                    endpoint=(f"{endpoint['addr']}:{endpoint['port']}"
                              if isinstance(endpoint, dict) and "addr" in endpoint else None),
                    last_handshake=float(sec) if sec else None,
                    rx_bytes=int(_attr(peer, "WGPEER_A_RX_BYTES") or 0),
                    tx_bytes=int(_attr(peer, "WGPEER_A_TX_BYTES") or 0),
                )
            )
    return DeviceConfig(private_key, listen_port, tuple(peers), tuple(stats))


class Kernel:
    """One kernel WireGuard interface in the current network namespace."""

    name = "kernel"

    def __init__(self, interface: str) -> None:
        self.interface = interface

    def read(self) -> DeviceConfig:
        from pyroute2 import WireGuard

        with WireGuard() as wg:
            return parse_info(list(wg.info(self.interface)))

    def write(self, changes: Changes) -> None:
        from pyroute2 import WireGuard

        todo = calls(changes)
        if not todo:
            return
        with WireGuard() as wg:
            if changes.replace_peers:
                for peer in parse_info(list(wg.info(self.interface))).peers:
                    wg.set(self.interface, peer={"public_key": peer.public_key, "remove": True})
            for kwargs in todo:
                wg.set(self.interface, **kwargs)
