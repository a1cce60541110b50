"""The tunnel: interface, listen port, subnet, the appliance's address and one peer per device.

It lives in one JSON file (0600) in the web state directory, `{data_dir}/web/wireguard.json`:
the web service writes it when the owner changes something, and the privileged apply step
(`textbridge wireguard apply`, started by a systemd path unit when the file changes) reads it.
The appliance's private key sits beside it in `wireguard.key`. A phone's private key is never
in either: it is made when the device is added, shown once, and forgotten.

The subnet is a random /24 inside 10.100.0.0–10.254.255.0, chosen the first time remote access
is set up: home routers hand out 192.168.x, 10.0.x, 10.1.x and 10.10.x, not these, and being
inside 10.0.0.0/8 keeps the tunnel address within the private ranges the appliance's own
certificate authority may certify (appliance/web/ca.py), so the server certificate can name
it. Phones get a /32 route to the appliance's address only (split tunnel), so a clash with
the network a phone happens to be on would need that exact address.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.files import write_private
from appliance.wireguard import keys

INTERFACE = "wg0"
LISTEN_PORT = 51820
KEEPALIVE = 25
STATE_FILE = "wireguard.json"
KEY_FILE = "wireguard.key"
MAX_PEERS = 200
MAX_DEVICE_NAME = 32
# Home routers' favourite ranges stay out of the draw.
SUBNET_SECOND_OCTETS = range(100, 255)

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOME_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "100.64.0.0/10")
)


class Invalid(ValueError):
    """Owner input that cannot be used; `message` is shown next to the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- owner input ------------------------------------------------------------------------


def endpoint_host(raw: str) -> str:
    """The public name or address phones dial: a DNS name or an IP address."""
    value = raw.strip().lower().rstrip(".")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if not value:
        raise Invalid("Please type your home's public address or name, e.g. smith.duckdns.org.")
    if len(value) > 253:
        raise Invalid("That name is too long.")
    if any(unicodedata.category(ch)[0] == "C" for ch in value):
        raise Invalid("The address contains invisible control characters. Please retype it.")
    if value.count(":") == 1:
        raise Invalid("Please type the port in the port field, not after the address.")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
            raise Invalid("That address cannot be reached from the internet.")
        if any(ip in net for net in _HOME_NETWORKS):
            raise Invalid(
                "That is an address inside a home (or provider) network: phones away from "
                "home cannot reach it. Use your home's public address (your router shows it) "
                "or a dynamic DNS name."
            )
        return str(ip)
    labels = value.split(".")
    if len(labels) < 2 or not all(_HOST_LABEL.fullmatch(lb) for lb in labels):
        raise Invalid(
            "That is not a valid internet name or address. Use letters, digits and hyphens "
            "with dots between the parts (like smith.duckdns.org), or numbers like 203.0.113.7."
        )
    if labels[-1].isdigit():
        raise Invalid("That looks like a number address with a mistake in it. Please check it.")
    if labels[-1] in ("local", "lan", "home", "internal", "localdomain"):
        raise Invalid(
            f"“.{labels[-1]}” names only work inside the home. Use a name that works on the "
            "internet, such as a dynamic DNS name."
        )
    return value


def endpoint_port(raw: str | int) -> int:
    value = str(raw).strip()
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= 65535:
        raise Invalid("The port is a whole number from 1 to 65535 (usually 51820).")
    return int(value)


def device_name(raw: str) -> str:
    value = " ".join(raw.split())
    if not value:
        raise Invalid("Please give the device a name, e.g. “Anna's phone”.")
    if len(value) > MAX_DEVICE_NAME:
        raise Invalid(f"That name is too long: at most {MAX_DEVICE_NAME} characters, please.")
    for ch in value:
        cat = unicodedata.category(ch)
        if cat[0] == "C":
            raise Invalid("The name contains invisible control characters. Please retype it.")
        if not (cat[0] in "LMN" or ch in " .'’-_()"):
            raise Invalid(
                f"Please use only letters, numbers, spaces and . ' - _ ( ) in the name "
                f"(not {ch!r})."
            )
    return value


def choose_subnet(
    avoid: Iterable[ipaddress.IPv4Network] = (), rng: secrets.SystemRandom | None = None
) -> ipaddress.IPv4Network:
    """A random 10.X.Y.0/24 (X from 100 to 254) that overlaps none of `avoid` (the
    appliance's own networks, when known)."""
    rng = rng or secrets.SystemRandom()
    avoid = list(avoid)
    for _ in range(1000):
        net = ipaddress.IPv4Network(
            (f"10.{rng.choice(SUBNET_SECOND_OCTETS)}.{rng.randrange(256)}.0", 24)
        )
        if not any(net.overlaps(other) for other in avoid):
            return net
    raise RuntimeError("no free tunnel subnet")  # only if `avoid` covers all of 10/8


# -- the model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One device (a phone, a tablet) of one family member."""

    id: str
    name: str
    member: str  # the family member's username
    address: str  # its tunnel address, IPv4
    public_key: str
    preshared_key: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "member": self.member,
            "address": self.address,
            "public_key": self.public_key,
            "preshared_key": self.preshared_key,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Peer:
        return cls(
            id=str(data["id"]),
            name=device_name(str(data["name"])),
            member=str(data["member"]),
            address=str(ipaddress.IPv4Address(str(data["address"]))),
            public_key=keys.check(str(data["public_key"])),
            preshared_key=keys.check(str(data["preshared_key"])),
            created_at=float(data.get("created_at", 0.0)),
        )


@dataclass(frozen=True)
class NewDevice:
    """A device just added: its peer entry and the private key shown once, never stored."""

    peer: Peer
    private_key: str


@dataclass(frozen=True)
class Tunnel:
    enabled: bool = False
    endpoint_host: str = ""
    endpoint_port: int = LISTEN_PORT
    subnet: str = ""
    interface: str = INTERFACE
    listen_port: int = LISTEN_PORT
    peers: tuple[Peer, ...] = field(default_factory=tuple)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def appliance_address(self) -> str:
        """The appliance's address inside the tunnel: the subnet's first host."""
        return str(self.network.network_address + 1)

    @property
    def ready(self) -> bool:
        """Enough is known to hand a phone a config."""
        return bool(self.subnet and self.endpoint_host)

    def peer(self, peer_id: str) -> Peer | None:
        return next((p for p in self.peers if p.id == peer_id), None)

    def with_subnet(self, avoid: Iterable[ipaddress.IPv4Network] = ()) -> Tunnel:
        return self if self.subnet else replace(self, subnet=str(choose_subnet(avoid)))

    def free_address(self) -> str:
        used = {p.address for p in self.peers} | {self.appliance_address}
        for host in self.network.hosts():
            if str(host) not in used:
                return str(host)
        raise Invalid("There is no room for another device. Remove one you no longer use.")

    def add_device(self, name: str, member: str, *, now: float | None = None) -> tuple[
        Tunnel, NewDevice
    ]:
        name = device_name(name)
        if not self.subnet:
            raise Invalid("Set up remote access first.")
        if len(self.peers) >= MAX_PEERS:
            raise Invalid(f"At most {MAX_PEERS} devices, please remove one first.")
        if any(p.member == member and p.name.lower() == name.lower() for p in self.peers):
            raise Invalid("This person already has a device with that name. Pick another name.")
        private = keys.private_key()
        peer = Peer(
            id=secrets.token_hex(8),
            name=name,
            member=member,
            address=self.free_address(),
            public_key=keys.public_key(private),
            preshared_key=keys.preshared_key(),
            created_at=time.time() if now is None else now,
        )
        return replace(self, peers=(*self.peers, peer)), NewDevice(peer, private)

    def remove_device(self, peer_id: str) -> Tunnel:
        return replace(self, peers=tuple(p for p in self.peers if p.id != peer_id))

    def remove_member(self, member: str) -> Tunnel:
        return replace(self, peers=tuple(p for p in self.peers if p.member != member))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "enabled": self.enabled,
            "endpoint_host": self.endpoint_host,
            "endpoint_port": self.endpoint_port,
            "subnet": self.subnet,
            "interface": self.interface,
            "listen_port": self.listen_port,
            "peers": [p.to_json() for p in self.peers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tunnel:
        """Checks everything: this file steers a privileged step."""
        subnet = str(data.get("subnet", ""))
        if subnet:
            net = ipaddress.IPv4Network(subnet)
            if net.prefixlen > 30:
                raise ValueError("tunnel subnet too small")
            subnet = str(net)
        interface = str(data.get("interface", INTERFACE))
        if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,15}", interface):
            raise ValueError("bad interface name")
        host = str(data.get("endpoint_host", ""))
        peers = tuple(Peer.from_json(p) for p in data.get("peers", []))
        if subnet:
            for p in peers:
                if ipaddress.IPv4Address(p.address) not in ipaddress.IPv4Network(subnet):
                    raise ValueError("peer address outside the tunnel subnet")
        if len({p.public_key for p in peers}) != len(peers):
            raise ValueError("two peers with one key")
        return cls(
            enabled=bool(data.get("enabled", False)),
            endpoint_host=endpoint_host(host) if host else "",
            endpoint_port=endpoint_port(data.get("endpoint_port", LISTEN_PORT)),
            subnet=subnet,
            interface=interface,
            listen_port=endpoint_port(data.get("listen_port", LISTEN_PORT)),
            peers=peers,
        )


def load(path: Path) -> Tunnel:
    """The tunnel in `path`; a missing file is remote access never set up (off)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Tunnel()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return Tunnel.from_json(data)


def save(path: Path, tunnel: Tunnel) -> None:
    write_private(path, (json.dumps(tunnel.to_json(), indent=2, sort_keys=True) + "\n").encode())
