"""The WireGuard device's configuration (keys, port, peers), as we want it and as the system
has it, and the smallest set of changes between the two.

Only differences are sent, never a full replace: re-setting an unchanged peer would be
harmless to WireGuard's sessions, but sending nothing when nothing changed makes "apply twice
changes nothing" something a test can see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.wireguard.tunnel import Tunnel


@dataclass(frozen=True)
class PeerConfig:
    public_key: str
    preshared_key: str
    allowed_ips: tuple[str, ...]

    def __repr__(self) -> str:
        # The preshared key is secret: never in a repr, a log line or a traceback.
        return f"PeerConfig(public_key={self.public_key!r}, allowed_ips={self.allowed_ips!r})"


@dataclass(frozen=True)
class PeerStats:
    public_key: str
    endpoint: str | None = None
    last_handshake: float | None = None  # unix time; None: never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class DeviceConfig:
    private_key: str | None
    listen_port: int | None
    peers: tuple[PeerConfig, ...] = ()
    stats: tuple[PeerStats, ...] = ()

    def __repr__(self) -> str:
        return f"DeviceConfig(listen_port={self.listen_port}, peers={len(self.peers)})"


@dataclass(frozen=True)
class Changes:
    private_key: str | None = None  # set when it differs
    listen_port: int | None = None
    upsert: tuple[PeerConfig, ...] = ()  # new peers, or peers whose PSK or IPs changed
    remove: tuple[str, ...] = ()  # public keys
    replace_peers: bool = False  # drop every peer first (remote access switched off)

    def __bool__(self) -> bool:
        return bool(
            self.private_key or self.listen_port or self.upsert or self.remove
            or self.replace_peers
        )

    def __repr__(self) -> str:
        return (
            f"Changes(private_key={'set' if self.private_key else None}, "
            f"listen_port={self.listen_port}, upsert={len(self.upsert)}, "
            f"remove={len(self.remove)}, replace_peers={self.replace_peers})"
        )


@dataclass
class ApplyResult:
    backend: str  # "kernel", "userspace" or "none"
    changes: Changes = field(default_factory=Changes)
    created: bool = False
    deleted: bool = False
    addresses_added: list[str] = field(default_factory=list)
    addresses_removed: list[str] = field(default_factory=list)
    brought_up: bool = False
    brought_down: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.changes or self.created or self.deleted or self.addresses_added
            or self.addresses_removed or self.brought_up or self.brought_down
        )


def desired(tunnel: Tunnel, private_key: str) -> DeviceConfig:
    return DeviceConfig(
        private_key=private_key,
        listen_port=tunnel.listen_port,
        peers=tuple(
            PeerConfig(p.public_key, p.preshared_key, (f"{p.address}/32",))
            for p in tunnel.peers
        ),
    )


def diff(want: DeviceConfig, have: DeviceConfig) -> Changes:
    current = {p.public_key: p for p in have.peers}
    wanted = {p.public_key: p for p in want.peers}
    upsert = tuple(
        p
        for key, p in wanted.items()
        if key not in current
        or current[key].preshared_key != p.preshared_key
        or sorted(current[key].allowed_ips) != sorted(p.allowed_ips)
    )
    return Changes(
        private_key=want.private_key if want.private_key != have.private_key else None,
        listen_port=want.listen_port if want.listen_port != have.listen_port else None,
        upsert=upsert,
        remove=tuple(sorted(k for k in current if k not in wanted)),
    )
