""""I already run Matrix" with the homeserver outside the home: over a WireGuard tunnel.

Two namespaces joined by a veth pair that stands for the internet: "vps" runs the family's
Synapse, listening on its tunnel address only; "pi" is the appliance. A real WireGuard
tunnel (wireguard-go, configured with `wg`) joins them. The wizard's way of finding the
bridge's address (the route towards the homeserver) must give the Pi's tunnel address, and
the link must hold both ways through the tunnel, and be named unreachable when it is down.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.bridge import Bridge, BridgeConfig, LineConfig
from appliance.homeserver.external import registration_for
from appliance.homeserver.link import check_link, listener_answers
from appliance.homeserver.synapse import DEFAULT_PYTHON, SynapseServer, free_port
from appliance.store import Store
from appliance.web.own_server import _address_towards
from appliance.wireguard import uapi
from tests.netns import sh, why_not
from tests.test_external_homeserver import inside

VPS_IP, PI_IP = "198.51.100.1", "198.51.100.2"  # "the internet", on the veth
VPS_TUN, PI_TUN = "10.99.0.1", "10.99.0.2"  # the tunnel, inside these namespaces only
SERVER_NAME = "family.test"
WG_PORT = 51820


def _why_not() -> str | None:
    return why_not(["wireguard-go", "wg", "ip", "nft"], tun=True, python=DEFAULT_PYTHON)


pytestmark = [
    pytest.mark.netns,
    pytest.mark.synapse,
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
]


@dataclass
class Tunnel:
    vps: str
    pi: str
    wg_vps: str
    wg_pi: str
    base: Path


def _key(base: Path, name: str) -> tuple[Path, str]:
    private = sh("wg", "genkey").stdout.strip()
    path = base / f"{name}.key"
    path.write_text(private + "\n")
    path.chmod(0o600)
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    return path, public


@pytest.fixture
def tunnel(tmp_path: Path) -> Iterator[Tunnel]:
    sfx = secrets.token_hex(3)
    t = Tunnel(f"tbtv-{sfx}", f"tbtp-{sfx}", f"wgv{sfx}", f"wgp{sfx}", tmp_path)
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (t.vps, t.pi):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"tv{sfx}", "netns", t.vps, "type", "veth",
           "peer", "name", f"tp{sfx}", "netns", t.pi)
        for ns, dev, ip in ((t.vps, f"tv{sfx}", VPS_IP), (t.pi, f"tp{sfx}", PI_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        keys = {ns: _key(tmp_path, ns) for ns in (t.vps, t.pi)}
        sides = (
            (t.vps, t.wg_vps, VPS_TUN, t.pi, PI_IP, PI_TUN),
            (t.pi, t.wg_pi, PI_TUN, t.vps, VPS_IP, VPS_TUN),
        )
        for ns, wg, tun_ip, peer, peer_ip, peer_tun in sides:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "wireguard-go", "-f", wg],
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            procs.append(proc)
            deadline = time.monotonic() + 10
            while not uapi.socket_path(wg).exists():
                assert proc.poll() is None and time.monotonic() < deadline, "no wireguard-go"
                time.sleep(0.02)
            sh("ip", "netns", "exec", ns, "wg", "set", wg, "private-key", str(keys[ns][0]),
               "listen-port", str(WG_PORT), "peer", keys[peer][1],
               "allowed-ips", f"{peer_tun}/32", "endpoint", f"{peer_ip}:{WG_PORT}")
            sh("ip", "-n", ns, "addr", "add", f"{tun_ip}/24", "dev", wg)
            sh("ip", "-n", ns, "link", "set", wg, "up")
        yield t
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in (t.vps, t.pi):
            sh("ip", "netns", "del", ns, check=False)


def test_the_link_through_the_tunnel(tunnel: Tunnel) -> None:
    server = SynapseServer(
        tunnel.base / "synapse",
        server_name=SERVER_NAME,
        bind_host=VPS_TUN,
        command_prefix=["ip", "netns", "exec", tunnel.vps],
    )
    with inside(tunnel.pi):
        asyncio.run(_walk(tunnel, server))


async def _walk(tunnel: Tunnel, server: SynapseServer) -> None:
    await server.start(120)
    try:
        # The bridge's address towards a server in the tunnel is the Pi's tunnel address.
        assert await asyncio.to_thread(_address_towards, VPS_TUN) == PI_TUN
        assert await asyncio.to_thread(_address_towards, VPS_IP) == PI_IP
        port = free_port()
        registration = registration_for(
            tunnel.base / "pi" / "registration.yaml", f"http://{PI_TUN}:{port}", SERVER_NAME
        )
        installed = tunnel.base / "admin" / "textbridge.yaml"
        installed.parent.mkdir()
        shutil.copy(tunnel.base / "pi" / "registration.yaml", installed)
        server.add_appservice_file(installed)
        await server.restart(120)

        config = BridgeConfig(
            homeserver="external", homeserver_url=server.url, server_name=SERVER_NAME,
            homeserver_address=VPS_TUN, listen_host=PI_TUN, listen_port=port,
            database=tunnel.base / "bridge.db", lines=[LineConfig(id="sms")],
        )
        store = await Store.open(tunnel.base / "textbridge.db")
        bridge = Bridge(config, registration, store, {})
        await bridge.start()
        try:
            report = await check_link(server.url, SERVER_NAME, registration,
                                      bridge_listening=await listener_answers(PI_TUN, port))
            assert report.ok, report.problems
            assert report.ping_ms is not None
            # The tunnel down: the homeserver is out of reach, and it is said so.
            sh("ip", "-n", tunnel.pi, "link", "set", tunnel.wg_pi, "down")
            report = await check_link(server.url, SERVER_NAME, registration,
                                      bridge_listening=True)
            assert report.to_homeserver is not None
            assert report.to_homeserver.key == "unreachable", report.problems
            assert "WireGuard tunnel" in report.to_homeserver.words
        finally:
            await bridge.stop()
            await store.close()
    finally:
        await server.stop()

