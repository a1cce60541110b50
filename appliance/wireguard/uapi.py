"""The cross-platform userspace API (https://www.wireguard.com/xplatform/): the text protocol
wireguard-go (and boringtun, and the other userspace implementations) speak on
`/var/run/wireguard/<interface>.sock`.

A request is `get=1` or `set=1` and `key=value` lines, ended by an empty line; the answer is
`key=value` lines ending in `errno=N` and an empty line. Keys are hex there, not base64.
Blocking socket I/O: callers run it in the apply step's executor, never on the event loop.
"""

from __future__ import annotations

import socket
from pathlib import Path

from appliance.wireguard import keys
from appliance.wireguard.device import Changes, DeviceConfig, PeerConfig, PeerStats

SOCKET_DIR = Path("/var/run/wireguard")
TIMEOUT = 5.0
_ZERO_KEY = "0" * 64


class UapiError(OSError):
    pass


def socket_path(interface: str, directory: Path = SOCKET_DIR) -> Path:
    return directory / f"{interface}.sock"


def _request(path: Path, text: str) -> list[tuple[str, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(text.encode("ascii"))
        buf = b""
        while not (buf.endswith(b"\n\n") and b"errno=" in buf):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    items = []
    for line in buf.decode("ascii", "replace").splitlines():
        if line:
            key, _, value = line.partition("=")
            items.append((key, value))
    errno = next((v for k, v in reversed(items) if k == "errno"), None)
    if errno != "0":
        raise UapiError(f"{path.name}: the userspace WireGuard refused the request (errno={errno})")
    return items[:-1]


def parse_get(items: list[tuple[str, str]]) -> DeviceConfig:
    private_key: str | None = None
    listen_port: int | None = None
    peers: list[PeerConfig] = []
    stats: list[PeerStats] = []
    peer: dict[str, object] | None = None

    def close() -> None:
        if peer is None:
            return
        key = str(peer["public_key"])
        ips = peer["allowed_ips"]
        assert isinstance(ips, list)
        peers.append(PeerConfig(key, str(peer["preshared_key"]), tuple(ips)))
        sec, nsec = int(str(peer["hs_sec"])), int(str(peer["hs_nsec"]))
        stats.append(
            PeerStats(
                public_key=key,
                endpoint=str(peer["endpoint"]) if peer["endpoint"] else None,
                last_handshake=(sec + nsec / 1e9) if sec else None,
                rx_bytes=int(str(peer["rx"])),
                tx_bytes=int(str(peer["tx"])),
            )
        )

    for key, value in items:
        if key == "public_key":
            close()
            peer = {"public_key": keys.from_hex(value), "preshared_key": keys.from_hex(_ZERO_KEY),
                    "allowed_ips": [], "endpoint": "", "hs_sec": "0", "hs_nsec": "0",
                    "rx": "0", "tx": "0"}
        elif peer is None:
            if key == "private_key":
                private_key = keys.from_hex(value) if value != _ZERO_KEY else None
            elif key == "listen_port":
                listen_port = int(value)
        elif key == "preshared_key":
            peer["preshared_key"] = keys.from_hex(value)
        elif key == "allowed_ip":
            ips = peer["allowed_ips"]
            assert isinstance(ips, list)
            ips.append(value)
        elif key == "endpoint":
            peer["endpoint"] = value
        elif key == "last_handshake_time_sec":
            peer["hs_sec"] = value
        elif key == "last_handshake_time_nsec":
            peer["hs_nsec"] = value
        elif key == "rx_bytes":
            peer["rx"] = value
        elif key == "tx_bytes":
            peer["tx"] = value
    close()
    return DeviceConfig(private_key, listen_port, tuple(peers), tuple(stats))


def set_text(changes: Changes) -> str:
    """The `set=1` request for `changes` (empty string: nothing to send)."""
    if not changes:
        return ""
    lines = ["set=1"]
    if changes.private_key:
        lines.append(f"private_key={keys.to_hex(changes.private_key)}")
    if changes.listen_port:
        lines.append(f"listen_port={changes.listen_port}")
    if changes.replace_peers:
        lines.append("replace_peers=true")
    for public in changes.remove:
        lines += [f"public_key={keys.to_hex(public)}", "remove=true"]
    for peer in changes.upsert:
        lines += [
            f"public_key={keys.to_hex(peer.public_key)}",
            f"preshared_key={keys.to_hex(peer.preshared_key)}",
            "replace_allowed_ips=true",
            *(f"allowed_ip={ip}" for ip in peer.allowed_ips),
        ]
    return "\n".join(lines) + "\n\n"


class Uapi:
    """One userspace WireGuard interface, through its control socket."""

    name = "userspace"

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> DeviceConfig:
        return parse_get(_request(self.path, "get=1\n\n"))

    def write(self, changes: Changes) -> None:
        text = set_text(changes)
        if text:
            _request(self.path, text)
