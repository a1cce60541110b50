"""Bringing the system in line with the tunnel state: the link, its address and up state
(pyroute2's IPRoute), and the keys and peers through the kernel's netlink family or, where the
kernel has no WireGuard, the userspace implementation's socket.

Idempotent: every step reads first and changes only what differs, so applying the same
state twice changes nothing, and a peer removed from the state is removed from the interface
at once (its session ends with it). Logs say what changed, by device name; never a key.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from appliance.wireguard import device, keys, tunnel, uapi
from appliance.wireguard.device import ApplyResult, Changes, DeviceConfig
from appliance.wireguard.netlink import Kernel
from appliance.wireguard.tunnel import Tunnel

log = logging.getLogger(__name__)

# One thread: netlink and the UAPI socket block, and two applies must never interleave.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wireguard")


class NoWireGuard(RuntimeError):
    """Neither the kernel module nor a running userspace implementation for the interface."""


class Backend(Protocol):
    name: str

    def read(self) -> DeviceConfig: ...

    def write(self, changes: Changes) -> None: ...


@dataclass(frozen=True)
class Paths:
    state: Path  # wireguard.json
    key: Path  # wireguard.key

    @classmethod
    def in_dir(cls, state_dir: Path) -> Paths:
        return cls(state_dir / tunnel.STATE_FILE, state_dir / tunnel.KEY_FILE)


def _ipr(netns: str | None) -> Any:
    from pyroute2 import IPRoute

    return IPRoute(netns=netns) if netns else IPRoute()


def _index(ipr: Any, interface: str) -> int | None:
    found = ipr.link_lookup(ifname=interface)
    return int(found[0]) if found else None


def _backend(interface: str, socket_dir: Path) -> Backend:
    path = uapi.socket_path(interface, socket_dir)
    if path.exists():
        return uapi.Uapi(path)
    return Kernel(interface)


def apply_sync(
    state: Tunnel,
    private_key: str,
    *,
    netns: str | None = None,
    socket_dir: Path = uapi.SOCKET_DIR,
) -> ApplyResult:
    """Blocking: run it through `apply()` (the executor) from async code."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return _apply_sync(state, private_key, netns=netns, socket_dir=socket_dir)
    except NetlinkError as exc:
        if exc.code == errno.EPERM:
            raise PermissionError(
                f"not permitted to configure {state.interface}: this needs CAP_NET_ADMIN"
            ) from exc
        raise OSError(exc.code, f"netlink refused a change to {state.interface}: {exc}") from exc


def _apply_sync(
    state: Tunnel, private_key: str, *, netns: str | None, socket_dir: Path
) -> ApplyResult:
    name = state.interface
    with _ipr(netns) as ipr:
        index = _index(ipr, name)
        if not state.enabled:
            return _disable(ipr, index, name, socket_dir)
        result = ApplyResult(backend="none")
        sock = uapi.socket_path(name, socket_dir)
        if index is None:
            if sock.exists():
                raise NoWireGuard(f"{sock} exists but there is no interface {name}")
            try:
                ipr.link("add", ifname=name, kind="wireguard")
            except Exception as exc:
                if getattr(exc, "code", None) in (errno.EOPNOTSUPP, errno.ENODEV):
                    raise NoWireGuard(
                        f"this kernel has no WireGuard module and no userspace WireGuard "
                        f"(wireguard-go {name}) is running"
                    ) from exc
                raise
            index = _index(ipr, name)
            assert index is not None
            result.created = True
            log.info("wireguard: created interface %s", name)
        backend = _backend(name, socket_dir)
        result.backend = backend.name
        changes = device.diff(device.desired(state, private_key), backend.read())
        backend.write(changes)
        result.changes = changes
        _log_peers(state, changes)
        _addresses(ipr, index, state, result)
        link = ipr.get_links(index)[0]
        if not link.get("flags", 0) & 1:  # IFF_UP
            ipr.link("set", index=index, state="up")
            result.brought_up = True
    if result.changed:
        log.info(
            "wireguard: %s applied (%s backend): %d device(s), %d added or changed, %d removed",
            name, result.backend, len(state.peers), len(changes.upsert), len(changes.remove),
        )
    else:
        log.info("wireguard: %s already as configured (%d device(s))", name, len(state.peers))
    return result


def _disable(ipr: Any, index: int | None, name: str, socket_dir: Path) -> ApplyResult:
    if index is None:
        return ApplyResult(backend="none")
    sock = uapi.socket_path(name, socket_dir)
    if sock.exists():
        # The userspace daemon owns its interface; leave it running, with no peers and down.
        backend = uapi.Uapi(sock)
        result = ApplyResult(backend=backend.name)
        if backend.read().peers:
            result.changes = Changes(replace_peers=True)
            backend.write(result.changes)
        link = ipr.get_links(index)[0]
        if link.get("flags", 0) & 1:
            ipr.link("set", index=index, state="down")
            result.brought_down = True
        if result.changed:
            log.info("wireguard: remote access off: %s has no devices and is down", name)
        return result
    ipr.link("del", index=index)
    log.info("wireguard: remote access off: interface %s removed", name)
    return ApplyResult(backend="kernel", deleted=True)


def _addresses(ipr: Any, index: int, state: Tunnel, result: ApplyResult) -> None:
    want = ipaddress.IPv4Interface(f"{state.appliance_address}/{state.network.prefixlen}")
    have = []
    # IPv4 only: the kernel gives a tun link its own IPv6 link-local address, which stays.
    for msg in ipr.get_addr(index=index, family=socket.AF_INET):
        addr = msg.get_attr("IFA_ADDRESS")
        if addr is not None:
            have.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    for other in have:
        if other != want:
            ipr.addr("del", index=index, address=str(other.ip), prefixlen=other.network.prefixlen)
            result.addresses_removed.append(str(other))
    if want not in have:
        ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)
        result.addresses_added.append(str(want))


def _log_peers(state: Tunnel, changes: Changes) -> None:
    by_key = {p.public_key: p for p in state.peers}
    for peer in changes.upsert:
        known = by_key.get(peer.public_key)
        log.info("wireguard: device %r of %s allowed at %s",
                 known.name if known else "?", known.member if known else "?",
                 ", ".join(peer.allowed_ips))
    if changes.remove:
        log.info("wireguard: %d revoked device(s) removed from the interface", len(changes.remove))


def status_sync(
    interface: str, *, netns: str | None = None, socket_dir: Path = uapi.SOCKET_DIR
) -> DeviceConfig | None:
    with _ipr(netns) as ipr:
        if _index(ipr, interface) is None:
            return None
    return _backend(interface, socket_dir).read()


def local_networks(netns: str | None = None) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine is on (its home network among them), for the tunnel
    subnet to avoid. Reading addresses needs no privilege; an error gives an empty list."""
    try:
        with _ipr(netns) as ipr:
            return [
                ipaddress.IPv4Interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}").network
                for m in ipr.get_addr(family=socket.AF_INET)
                if m.get_attr("IFA_ADDRESS")
            ]
    except Exception as exc:  # the subnet is still random; this only narrows the draw
        log.warning("wireguard: could not read this machine's addresses: %s", exc)
        return []


def load(paths: Paths) -> tuple[Tunnel, str]:
    """The state and the appliance's private key (made now if this is the first use)."""
    state = tunnel.load(paths.state)
    return state, keys.load_or_create(paths.key)


async def apply(
    paths: Paths, *, netns: str | None = None, socket_dir: Path = uapi.SOCKET_DIR,
    interface: str | None = None,
) -> ApplyResult:
    def work() -> ApplyResult:
        state, private_key = load(paths)
        if interface:
            state = replace(state, interface=interface)
        return apply_sync(state, private_key, netns=netns, socket_dir=socket_dir)

    return await asyncio.get_running_loop().run_in_executor(_executor, work)


async def status(
    interface: str, *, netns: str | None = None, socket_dir: Path = uapi.SOCKET_DIR
) -> DeviceConfig | None:
    return await asyncio.get_running_loop().run_in_executor(
        _executor, lambda: status_sync(interface, netns=netns, socket_dir=socket_dir)
    )
