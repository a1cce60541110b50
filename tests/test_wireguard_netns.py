"""WireGuard remote access end to end, in real network namespaces with real WireGuard.

Two namespaces joined by a veth pair: "home" is the appliance (our code applies the tunnel
state through the userspace API to a wireguard-go interface), "away" is a phone (configured
with `wg setconf` from the client config text our code generated, minus wg-quick's host-only
keys, plus the Address and the AllowedIPs route the WireGuard app would add). An HTTP server
listens on the appliance's tunnel address, which exists only inside "home".

This machine's kernel has no WireGuard module, so the kernel netlink backend is not run here
(see tests/test_wireguard.py for its translation); the Pi's kernel has the module.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from appliance.wireguard import apply, client, keys, tunnel, uapi
from appliance.wireguard.tunnel import Tunnel
from tests.netns import sh, why_not

REPO = Path(__file__).resolve().parent.parent
HOME_IP = "198.51.100.1"  # the appliance's "public" address, on the veth
AWAY_IP = "198.51.100.2"
HTTP_PORT = 8080
BODY = b"textbridge through the tunnel"


def _why_not() -> str | None:
    return why_not(["wireguard-go", "wg", "ip"], tun=True)


pytestmark = [pytest.mark.netns, pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]




@dataclass
class Net:
    home: str
    away: str
    wg_home: str
    wg_away: str
    state_dir: Path
    procs: list[subprocess.Popen[bytes]]

    @property
    def paths(self) -> apply.Paths:
        return apply.Paths.in_dir(self.state_dir)

    def in_away(
        self, *cmd: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.away, *cmd, check=check, timeout=timeout)

    def fetch(self, address: str, timeout: float = 3.0) -> bytes | None:
        """An HTTP GET from "away" to the appliance's tunnel address; None if it fails."""
        code = (
            "import sys, urllib.request\n"
            f"try: sys.stdout.write(urllib.request.urlopen('http://{address}:{HTTP_PORT}/', "
            f"timeout={timeout}).read().decode())\n"
            "except OSError as e: sys.stderr.write(repr(e)); sys.exit(3)\n"
        )
        proc = self.in_away(sys.executable, "-c", code, check=False, timeout=timeout + 10)
        return proc.stdout.encode() if proc.returncode == 0 else None

    def away_handshake(self) -> int:
        out = self.in_away("wg", "show", self.wg_away, "latest-handshakes").stdout.split()
        return int(out[1]) if len(out) >= 2 else 0

    def phone_from_config(self, text: str) -> None:
        """What the phone's WireGuard app does with the config: keys and peer into the
        device, the Address on the interface, a route for each AllowedIPs."""
        conf = self.state_dir.parent / f"phone-{secrets.token_hex(3)}.conf"
        conf.write_text(client.setconf_text(text))
        conf.chmod(0o600)
        self.in_away("wg", "setconf", self.wg_away, str(conf))
        conf.unlink()
        sections = dict((name, dict(items)) for name, items in client.parse(text))
        sh("ip", "-n", self.away, "addr", "flush", "dev", self.wg_away)
        sh("ip", "-n", self.away, "addr", "add", sections["Interface"]["Address"],
           "dev", self.wg_away)
        sh("ip", "-n", self.away, "link", "set", self.wg_away, "up")
        for net in sections["Peer"]["AllowedIPs"].split(","):
            sh("ip", "-n", self.away, "route", "replace", net.strip(), "dev", self.wg_away)


def _wait_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"wireguard-go never made {path}")
        time.sleep(0.02)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    sfx = secrets.token_hex(3)
    n = Net(f"tbh-{sfx}", f"tba-{sfx}", f"wgh{sfx}", f"wga{sfx}", tmp_path / "web", [])
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    try:
        for ns in (n.home, n.away):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"vh{sfx}", "netns", n.home, "type", "veth",
           "peer", "name", f"va{sfx}", "netns", n.away)
        sh("ip", "-n", n.home, "addr", "add", f"{HOME_IP}/24", "dev", f"vh{sfx}")
        sh("ip", "-n", n.away, "addr", "add", f"{AWAY_IP}/24", "dev", f"va{sfx}")
        sh("ip", "-n", n.home, "link", "set", f"vh{sfx}", "up")
        sh("ip", "-n", n.away, "link", "set", f"va{sfx}", "up")
        for ns, name in ((n.home, n.wg_home), (n.away, n.wg_away)):
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "wireguard-go", "-f", name],
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            n.procs.append(proc)
            _wait_socket(uapi.socket_path(name), proc)
        yield n
    finally:
        for proc in n.procs:
            proc.terminate()
        for proc in n.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in (n.home, n.away):
            sh("ip", "netns", "del", ns, check=False)


def _start_http(net: Net, address: str) -> subprocess.Popen[bytes]:
    code = (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        self.send_response(200); self.end_headers(); self.wfile.write({BODY!r})\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(({address!r}, {HTTP_PORT}), H).serve_forever()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", net.home, sys.executable, "-c", code],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    net.procs.insert(0, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = sh("ip", "netns", "exec", net.home, sys.executable, "-c",
                   f"import socket; socket.create_connection(({address!r}, {HTTP_PORT}), 1)",
                   check=False)
        if probe.returncode == 0:
            return proc
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the HTTP server in 'home' never listened")


def _state(net: Net) -> Tunnel:
    return Tunnel(enabled=True, endpoint_host=HOME_IP, endpoint_port=tunnel.LISTEN_PORT,
                  interface=net.wg_home).with_subnet()


async def _apply(net: Net) -> apply.ApplyResult:
    return await apply.apply(net.paths, netns=net.home)


async def test_phone_reaches_the_appliance_and_revoked_device_cannot(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance")
    state = _state(net)
    state, anna = state.add_device("Anna's phone", "anna")
    state, ben = state.add_device("Ben's tablet", "ben")
    tunnel.save(net.paths.state, state)

    t0 = time.monotonic()
    first = await _apply(net)
    apply_ms = (time.monotonic() - t0) * 1000
    assert first.backend == "userspace"
    assert first.changed and len(first.changes.upsert) == 2 and first.changes.private_key
    assert first.addresses_added == [f"{state.appliance_address}/24"] and first.brought_up
    public = keys.public_key(keys.load_or_create(net.paths.key))
    have = await apply.status(net.wg_home, netns=net.home)
    assert have is not None and have.private_key is not None
    assert keys.public_key(have.private_key) == public
    assert {p.public_key for p in have.peers} == {anna.peer.public_key, ben.peer.public_key}
    assert have.listen_port == tunnel.LISTEN_PORT

    _start_http(net, state.appliance_address)
    text = client.client_config(state, anna, public)
    t0 = time.monotonic()
    net.phone_from_config(text)
    assert net.fetch(state.appliance_address) == BODY
    first_fetch_ms = (time.monotonic() - t0) * 1000
    handshake = net.away_handshake()
    assert handshake > 0
    have = await apply.status(net.wg_home, netns=net.home)
    assert have is not None
    seen = {s.public_key: s for s in have.stats}
    assert seen[anna.peer.public_key].last_handshake is not None
    assert seen[ben.peer.public_key].last_handshake is None

    # Applying the same state again changes nothing and keeps the phone's session.
    t0 = time.monotonic()
    again = await _apply(net)
    reapply_ms = (time.monotonic() - t0) * 1000
    assert not again.changed, again
    assert net.fetch(state.appliance_address) == BODY
    assert net.away_handshake() == handshake  # no new handshake was needed

    # Revoked: removed from the interface at once; the phone's next handshake goes nowhere.
    state = state.remove_device(anna.peer.id)
    tunnel.save(net.paths.state, state)
    revoked = await _apply(net)
    assert revoked.changes.remove == (anna.peer.public_key,) and not revoked.changes.upsert
    have = await apply.status(net.wg_home, netns=net.home)
    assert have is not None and [p.public_key for p in have.peers] == [ben.peer.public_key]
    # Forget the phone's session so it must shake hands again (as after a reboot).
    net.in_away("wg", "set", net.wg_away, "peer", public, "remove")
    net.phone_from_config(text)
    assert net.away_handshake() == 0
    assert net.fetch(state.appliance_address, timeout=3.0) is None
    assert net.away_handshake() == 0, "the appliance answered a revoked device's handshake"

    # The other device still gets in, with its own config.
    net.in_away("wg", "set", net.wg_away, "peer", public, "remove")
    net.phone_from_config(client.client_config(state, ben, public))
    assert net.fetch(state.appliance_address) == BODY

    # Secrets: files 0600, no key in any log line.
    for path in (net.paths.key, net.paths.state):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets_ = [keys.load_or_create(net.paths.key), anna.private_key, ben.private_key,
                anna.peer.preshared_key, ben.peer.preshared_key]
    for secret in secrets_:
        assert secret not in caplog.text
        assert keys.to_hex(secret) not in caplog.text
    assert "Anna's phone" in caplog.text  # the log does say what changed
    print(f"\napply (2 devices, new interface): {apply_ms:.0f} ms; re-apply: {reapply_ms:.0f} ms;"
          f" phone config to first HTTP answer (handshake included): {first_fetch_ms:.0f} ms")


async def test_cli_apply_status_and_switching_off(net: Net) -> None:
    state = _state(net)
    state, dev = state.add_device("Carla's phone", "carla")
    tunnel.save(net.paths.state, state)
    base = [sys.executable, "-m", "appliance", "wireguard"]
    opts = ["--state-dir", str(net.state_dir), "--netns", net.home]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    first = subprocess.run([*base, "apply", *opts], capture_output=True, text=True, env=env,
                           timeout=60, cwd=REPO)
    wall_ms = (time.monotonic() - t0) * 1000
    assert first.returncode == 0, first.stderr
    print(f"\nCLI apply: {first.stdout.strip()}; whole process {wall_ms:.0f} ms")
    assert first.stdout.startswith("changed (userspace")
    second = subprocess.run([*base, "apply", *opts], capture_output=True, text=True, env=env,
                            timeout=60, cwd=REPO)
    assert second.returncode == 0 and second.stdout.startswith("unchanged"), second
    shown = subprocess.run([*base, "status", *opts], capture_output=True, text=True, env=env,
                           timeout=60, cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert "remote access: on" in shown.stdout and "Carla's phone (carla)" in shown.stdout
    assert "last handshake never" in shown.stdout
    private = keys.load_or_create(net.paths.key)
    for out in (first, second, shown):
        for secret in (private, dev.private_key, dev.peer.preshared_key):
            assert secret not in out.stdout + out.stderr

    # Off: the userspace interface stays (its daemon owns it) but has no peers and is down.
    tunnel.save(net.paths.state, replace(state, enabled=False))
    off = await _apply(net)
    assert off.changes.replace_peers and off.brought_down
    have = await apply.status(net.wg_home, netns=net.home)
    assert have is not None and have.peers == ()
    assert not (await _apply(net)).changed
    # And on again: the peers come back, the link comes up.
    tunnel.save(net.paths.state, state)
    on = await _apply(net)
    assert on.brought_up and len(on.changes.upsert) == 1


@pytest.mark.skipif(Path("/sys/module/wireguard").exists(), reason="this kernel has WireGuard")
async def test_missing_wireguard_is_a_clear_error(net: Net) -> None:
    """No module in this kernel and no wireguard-go for the name: a plain error, no link."""
    state = replace(_state(net), interface=f"wgx{secrets.token_hex(3)}")
    tunnel.save(net.paths.state, state)
    with pytest.raises(apply.NoWireGuard, match="no WireGuard module"):
        await _apply(net)
    assert state.interface not in sh("ip", "-n", net.home, "link").stdout


async def test_from_the_web_page_to_the_tunnel(net: Net, web_factory: Any) -> None:
    """The owner's page writes the state; the apply step puts it on the interface; the
    config shown on the page gets the phone in; revoking on the page shuts it out."""
    import html
    import re

    from tests.test_web_remote import GOOD, config_of, owner_client

    c = await owner_client(web_factory)
    # The page's state directory is this test's: point the apply step at it.
    net.state_dir = Path(c.settings.state_dir)
    status, text, _ = await c.submit("/remote", "/remote", GOOD | {"endpoint_host": HOME_IP})
    assert status == 303, text
    status, page, _ = await c.submit("/remote", "/remote/devices",
                                     {"member": "anna", "device_name": "Anna's phone"})
    assert status == 200, page
    config = config_of(page)
    result = await apply.apply(net.paths, netns=net.home, interface=net.wg_home)
    assert result.changed and len(result.changes.upsert) == 1
    state = tunnel.load(net.paths.state)
    _start_http(net, state.appliance_address)
    net.phone_from_config(config)
    assert net.fetch(state.appliance_address) == BODY

    (peer,) = state.peers
    status, _, _ = await c.submit("/remote", f"/remote/devices/{peer.id}/revoke", {})
    assert status == 303
    result = await apply.apply(net.paths, netns=net.home, interface=net.wg_home)
    assert result.changes.remove == (peer.public_key,)
    public = keys.public_key(keys.load_or_create(net.paths.key))
    net.in_away("wg", "set", net.wg_away, "peer", public, "remove")
    net.phone_from_config(config)
    assert net.fetch(state.appliance_address, timeout=2.0) is None
    assert net.away_handshake() == 0
    assert re.search(r"<strong>Anna", html.unescape((await c.page("/remote"))[1])) is None


NOBODY = 65534


def _as_nobody(caps: str) -> list[str]:
    """setpriv to an unprivileged user holding `caps` (e.g. "+net_admin") and nothing else:
    what textbridge-wireguard.service gives the apply step (User= + AmbientCapabilities=)."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            "--bounding-set=-all,+net_admin"]


@pytest.mark.skipif(shutil.which("setpriv") is None or shutil.which("unshare") is None,
                    reason="needs setpriv and unshare (util-linux)")
def test_apply_needs_only_cap_net_admin(net: Net) -> None:
    """As a user that is not root, the apply step fails without CAP_NET_ADMIN and works
    with that one capability. The userspace daemon runs as the same user (its control
    socket is its owner's only), its socket directory bind-mounted in a mount namespace of
    its own, so nothing of this machine's /var/run/wireguard or /dev/net/tun changes."""
    sfx = net.wg_home[3:]
    name = f"wgn{sfx}"
    base = Path(f"/tmp/tbwg-{sfx}")
    sockets, state_dir = base / "sock", base / "state"
    try:
        for d in (base, sockets, state_dir):
            d.mkdir(mode=0o700)
            os.chown(d, NOBODY, NOBODY)
        base.chmod(0o755)
        Path("/var/run/wireguard").mkdir(parents=True, exist_ok=True)
        daemon = subprocess.Popen(
            # This machine's /dev/net/tun may be root's only (Debian's udev makes it 0666);
            # a node of our own is bound over it inside the private mount namespace.
            ["ip", "netns", "exec", net.home, "unshare", "-m", "sh", "-c",
             f"mount --bind {sockets} /var/run/wireguard"
             f" && mknod -m 666 {base}/tun c 10 200 && mount --bind {base}/tun /dev/net/tun"
             " && exec " + " ".join(_as_nobody("+net_admin")) + f" wireguard-go -f {name}"],
            env={**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        net.procs.insert(0, daemon)
        _wait_socket(sockets / f"{name}.sock", daemon)
        state = replace(_state(net), interface=name)
        state, _ = state.add_device("Dan's phone", "dan")
        tunnel.save(state_dir / tunnel.STATE_FILE, state)
        for path in state_dir.iterdir():
            os.chown(path, NOBODY, NOBODY)
        cmd = [sys.executable, "-m", "appliance", "wireguard", "apply",
               "--state-dir", str(state_dir), "--socket-dir", str(sockets)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}

        def run(caps: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", net.home, *_as_nobody(caps), *cmd],
                                  capture_output=True, text=True, env=env, timeout=60,
                                  cwd=REPO)

        denied = run("-all")
        assert denied.returncode == 1, denied
        assert "needs CAP_NET_ADMIN" in denied.stderr and "Traceback" not in denied.stderr
        allowed = run("+net_admin")
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.startswith("changed (userspace")
        link = sh("ip", "-n", net.home, "addr", "show", name).stdout
        assert f"inet {state.appliance_address}/24" in link and ",UP" in link
        assert run("+net_admin").stdout.startswith("unchanged")
        key = state_dir / tunnel.KEY_FILE
        assert key.stat().st_uid == NOBODY and stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        shutil.rmtree(base, ignore_errors=True)
