"""The configuration a phone's WireGuard app imports (wg-quick's INI form, as text or QR).

Split tunnel: AllowedIPs is the appliance's tunnel address alone, so only Textbridge traffic
goes through the tunnel and the phone's other traffic takes its usual way. No DNS line: the
phone keeps its own resolver.
"""

from __future__ import annotations

import ipaddress

from appliance.wireguard import keys
from appliance.wireguard.tunnel import KEEPALIVE, NewDevice, Tunnel

# Keys wg-quick understands but `wg setconf` does not (they configure the host, not the
# WireGuard device).
WG_QUICK_ONLY = frozenset(
    {"address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig"}
)


def endpoint(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def client_config(tunnel: Tunnel, device: NewDevice, appliance_public_key: str) -> str:
    if not tunnel.ready:
        raise ValueError("the tunnel has no subnet or public address yet")
    peer = device.peer
    return (
        "[Interface]\n"
        f"PrivateKey = {keys.check(device.private_key)}\n"
        f"Address = {peer.address}/32\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {keys.check(appliance_public_key)}\n"
        f"PresharedKey = {peer.preshared_key}\n"
        f"Endpoint = {endpoint(tunnel.endpoint_host, tunnel.endpoint_port)}\n"
        f"AllowedIPs = {tunnel.appliance_address}/32\n"
        f"PersistentKeepalive = {KEEPALIVE}\n"
    )


def parse(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """wg-quick INI into [(section, [(key, value), ...]), ...]; comments dropped."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip(), []))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise ValueError(f"not a WireGuard config line: {line[:40]!r}")
        sections[-1][1].append((key.strip(), value.strip()))
    return sections


def setconf_text(text: str) -> str:
    """The same config without wg-quick's host-only keys: what `wg setconf` accepts."""
    out = []
    for section, items in parse(text):
        out.append(f"[{section}]")
        out += [f"{k} = {v}" for k, v in items if k.lower() not in WG_QUICK_ONLY]
        out.append("")
    return "\n".join(out)
