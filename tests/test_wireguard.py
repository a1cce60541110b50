"""WireGuard pieces that need no network: keys (checked against wireguard-tools' own `wg`),
the tunnel model and its owner-input checks, the phone's config, the change set, the
userspace API's text, and the kernel netlink translation (through pyroute2's real encoder
and decoder: the kernel round trip itself cannot run on a kernel without the module)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import stat
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.generic.wireguard import AsyncWireGuard, wgmsg

from appliance.wireguard import client, device, keys, netlink, tunnel, uapi
from appliance.wireguard.device import Changes, DeviceConfig, PeerConfig
from appliance.wireguard.tunnel import Invalid, Tunnel

needs_wg = pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)")


def _tunnel() -> Tunnel:
    return Tunnel(enabled=True, endpoint_host="smith.duckdns.org", endpoint_port=51999,
                  subnet="10.123.45.0/24")


# -- keys --------------------------------------------------------------------------------


@needs_wg
def test_keys_match_wireguard_tools() -> None:
    private = keys.private_key()
    wg_pub = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert keys.public_key(private) == wg_pub
    made = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                          check=True).stdout.strip()
    wg_made_pub = subprocess.run(["wg", "pubkey"], input=made, capture_output=True, text=True,
                                 check=True).stdout.strip()
    assert keys.public_key(made) == wg_made_pub
    assert len(keys.decode(keys.preshared_key())) == 32
    assert keys.private_key() != keys.private_key()


def test_key_forms() -> None:
    k = keys.private_key()
    assert keys.from_hex(keys.to_hex(k)) == k
    for bad in ("", "abc", "A" * 44, keys.preshared_key()[:-4], "!" * 43 + "="):
        with pytest.raises(keys.BadKey):
            keys.decode(bad)
    with pytest.raises(keys.BadKey):
        keys.from_hex("00" * 31)


def test_appliance_key_made_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "web" / tunnel.KEY_FILE
    found: list[str] = []

    def get() -> None:
        found.append(keys.load_or_create(path))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert keys.load_or_create(path) == found[0]
    # A damaged key file is an error, never silently replaced (every phone would stop).
    path.write_text("garbage\n")
    with pytest.raises(keys.BadKey):
        keys.load_or_create(path)


# -- owner input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("smith.duckdns.org", "smith.duckdns.org"), (" Home.Example.NET. ", "home.example.net"),
     ("203.0.113.7", "203.0.113.7"), ("[2001:db8::7]", "2001:db8::7"),
     ("2001:DB8::7", "2001:db8::7"), ("xn--bcher-kva.example", "xn--bcher-kva.example")],
)
def test_endpoint_host_accepts(raw: str, clean: str) -> None:
    assert tunnel.endpoint_host(raw) == clean


@pytest.mark.parametrize(
    ("raw", "words"),
    [("", "Please type"), ("192.168.1.10", "inside a home"), ("10.0.0.1", "inside a home"),
     ("100.70.1.2", "inside a home"), ("fd00::1", "inside a home"), ("127.0.0.1", "cannot be"),
     ("0.0.0.0", "cannot be"), ("224.0.0.1", "cannot be"), ("fe80::1", "cannot be"),
     ("textbridge.local", "only work inside"), ("router.lan", "only work inside"),
     ("smith.net:51820", "port field"), ("localhost", "not a valid"),
     ("<script>.net", "not a valid"), ("a..b", "not a valid"), ("-bad.example", "not a valid"),
     ("1.2.3.999", "number address"), ("x" * 254, "too long"), ("smith\u202e.net", "control"),
     ("smith net.org", "not a valid")],
)
def test_endpoint_host_refuses(raw: str, words: str) -> None:
    with pytest.raises(Invalid, match=words):
        tunnel.endpoint_host(raw)


def test_port_and_device_name() -> None:
    assert tunnel.endpoint_port(" 51820 ") == 51820
    assert tunnel.endpoint_port(1) == 1
    for bad in ("0", "65536", "-1", "51 820", "abc", "", "1e3", "０１"):
        with pytest.raises(Invalid, match="1 to 65535"):
            tunnel.endpoint_port(bad)
    assert tunnel.device_name("  Anna's   phone ") == "Anna's phone"
    assert tunnel.device_name("Oma’s iPad (neu)") == "Oma’s iPad (neu)"
    for bad, words in [("", "Please give"), ("x" * 33, "too long"), ("a<b", "only letters"),
                       ("a\x00b", "control"), ("a\u200fb", "control"), ("a;b", "only letters")]:
        with pytest.raises(Invalid, match=words):
            tunnel.device_name(bad)


# -- the model ---------------------------------------------------------------------------


def test_subnet_is_random_private_and_avoids_home_networks() -> None:
    seen = {tunnel.choose_subnet() for _ in range(50)}
    assert len(seen) > 40
    for net in seen:
        assert net.prefixlen == 24 and net.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))
        assert 100 <= int(str(net).split(".")[1]) <= 254
    avoid = [ipaddress.IPv4Network("10.128.0.0/9")]
    for _ in range(50):
        assert not tunnel.choose_subnet(avoid).overlaps(avoid[0])
    with pytest.raises(RuntimeError):
        tunnel.choose_subnet([ipaddress.IPv4Network("10.0.0.0/8")])
    assert Tunnel().with_subnet().subnet
    fixed = _tunnel()
    assert fixed.with_subnet() is fixed


def test_devices_get_addresses_and_keys(tmp_path: Path) -> None:
    t = _tunnel()
    assert t.appliance_address == "10.123.45.1"
    t, a = t.add_device("Anna's phone", "anna", now=1.0)
    t, b = t.add_device("Anna's tablet", "anna")
    t, c = t.add_device("Anna's phone", "ben")  # another person may use the same name
    assert [p.address for p in t.peers] == ["10.123.45.2", "10.123.45.3", "10.123.45.4"]
    assert keys.public_key(a.private_key) == a.peer.public_key
    assert len({a.peer.preshared_key, b.peer.preshared_key, c.peer.preshared_key}) == 3
    with pytest.raises(Invalid, match="already has a device"):
        t.add_device("anna's PHONE", "anna")
    t = t.remove_device(b.peer.id)
    t, d = t.add_device("Anna's laptop", "anna")
    assert d.peer.address == "10.123.45.3"  # a revoked device's address is free again
    assert [p.member for p in t.remove_member("anna").peers] == ["ben"]
    with pytest.raises(Invalid, match="Set up remote access first"):
        Tunnel().add_device("x", "anna")

    # The state file: 0600, and the device's private key is not in it.
    path = tmp_path / "web" / tunnel.STATE_FILE
    tunnel.save(path, t)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for dev in (a, c, d):
        assert dev.private_key not in text
        assert dev.peer.preshared_key in text  # the appliance needs that one
    assert tunnel.load(path) == t
    assert tunnel.load(tmp_path / "nothing.json") == Tunnel()


def test_small_subnet_fills_up() -> None:
    t = replace(_tunnel(), subnet="10.200.0.0/30")  # hosts .1 (appliance) and .2
    t, _ = t.add_device("one", "anna")
    with pytest.raises(Invalid, match="no room"):
        t.add_device("two", "anna")


@pytest.mark.parametrize(
    "change",
    [
        {"interface": "wg0; rm -rf /"},
        {"interface": "a" * 16},
        {"subnet": "10.1.2.0/31"},
        {"subnet": "not a net"},
        {"endpoint_host": "192.168.1.1"},
        {"endpoint_port": 70000},
        {"listen_port": "x"},
        {"peers": [{"id": "x", "name": "n", "member": "m", "address": "10.9.9.9",
                    "public_key": keys.public_key(keys.private_key()),
                    "preshared_key": keys.preshared_key()}]},
        {"peers": [{"id": "x", "name": "n", "member": "m", "address": "10.123.45.2",
                    "public_key": "short", "preshared_key": keys.preshared_key()}]},
        {"peers": [{"id": "x", "name": "<b>", "member": "m", "address": "10.123.45.2",
                    "public_key": keys.public_key(keys.private_key()),
                    "preshared_key": keys.preshared_key()}]},
    ],
)
def test_state_file_is_checked(tmp_path: Path, change: dict[str, Any]) -> None:
    """The file steers a privileged step: anything odd in it is refused, not applied."""
    data = {**_tunnel().to_json(), **change}
    path = tmp_path / "wireguard.json"
    path.write_text(json.dumps(data))
    with pytest.raises((ValueError, KeyError)):
        tunnel.load(path)


def test_duplicate_peer_keys_refused(tmp_path: Path) -> None:
    t, _ = _tunnel().add_device("one", "anna")
    data = t.to_json()
    data["peers"].append({**data["peers"][0], "id": "other", "address": "10.123.45.9"})
    path = tmp_path / "wireguard.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="one key"):
        tunnel.load(path)


# -- the phone's config ------------------------------------------------------------------


def test_client_config_is_a_split_tunnel() -> None:
    t, dev = _tunnel().add_device("Anna's phone", "anna")
    appliance_pub = keys.public_key(keys.private_key())
    text = client.client_config(t, dev, appliance_pub)
    sections = client.parse(text)
    assert [name for name, _ in sections] == ["Interface", "Peer"]
    iface, peer = dict(sections[0][1]), dict(sections[1][1])
    assert iface == {"PrivateKey": dev.private_key, "Address": "10.123.45.2/32"}
    assert peer == {
        "PublicKey": appliance_pub,
        "PresharedKey": dev.peer.preshared_key,
        "Endpoint": "smith.duckdns.org:51999",
        "AllowedIPs": "10.123.45.1/32",
        "PersistentKeepalive": "25",
    }
    assert "DNS" not in text
    v6 = replace(t, endpoint_host="2001:db8::7")
    assert "Endpoint = [2001:db8::7]:51999" in client.client_config(v6, dev, appliance_pub)
    with pytest.raises(ValueError):
        client.client_config(Tunnel(), dev, appliance_pub)


def test_setconf_text_strips_wg_quick_keys() -> None:
    """What `wg setconf` gets (the netns test feeds it to a real device): no Address."""
    t, dev = _tunnel().add_device("Anna's phone", "anna")
    text = client.client_config(t, dev, keys.public_key(keys.private_key()))
    stripped = client.setconf_text(text)
    assert "Address" not in stripped and "PrivateKey" in stripped
    assert client.parse(stripped)[1][1][0][0] == "PublicKey"
    with pytest.raises(ValueError):
        client.parse("PrivateKey = x\n")


# -- changes -----------------------------------------------------------------------------


def _peer(ip: str = "10.1.1.2/32") -> PeerConfig:
    return PeerConfig(keys.public_key(keys.private_key()), keys.preshared_key(), (ip,))


def test_diff() -> None:
    a, b, c = _peer(), _peer("10.1.1.3/32"), _peer("10.1.1.4/32")
    priv = keys.private_key()
    want = DeviceConfig(priv, 51820, (a, b))
    first = device.diff(want, DeviceConfig(None, 39000, ()))
    assert first.private_key == priv and first.listen_port == 51820
    assert set(first.upsert) == {a, b} and first.remove == ()
    assert not device.diff(want, DeviceConfig(priv, 51820, (b, a)))
    moved = PeerConfig(a.public_key, a.preshared_key, ("10.1.1.9/32",))
    rekeyed = PeerConfig(b.public_key, keys.preshared_key(), b.allowed_ips)
    later = device.diff(want, DeviceConfig(priv, 51820, (moved, rekeyed, c)))
    assert set(later.upsert) == {a, b} and later.remove == (c.public_key,)
    assert not later.private_key and not later.listen_port
    # Nothing secret in the reprs that end up in logs and tracebacks.
    for text in (repr(first), repr(want), repr(a)):
        assert priv not in text and a.preshared_key not in text and b.preshared_key not in text


def test_desired_from_tunnel() -> None:
    t, dev = _tunnel().add_device("p", "anna")
    priv = keys.private_key()
    want = device.desired(t, priv)
    assert want.listen_port == 51820 and want.private_key == priv
    assert want.peers == (PeerConfig(dev.peer.public_key, dev.peer.preshared_key,
                                     ("10.123.45.2/32",)),)


# -- userspace API -----------------------------------------------------------------------


def test_uapi_set_text() -> None:
    a, gone = _peer(), keys.public_key(keys.private_key())
    priv = keys.private_key()
    text = uapi.set_text(Changes(private_key=priv, listen_port=51820, upsert=(a,), remove=(gone,)))
    assert text.endswith("\n\n") and text.startswith("set=1\n")
    assert text.splitlines()[1:] == [
        f"private_key={keys.to_hex(priv)}",
        "listen_port=51820",
        f"public_key={keys.to_hex(gone)}",
        "remove=true",
        f"public_key={keys.to_hex(a.public_key)}",
        f"preshared_key={keys.to_hex(a.preshared_key)}",
        "replace_allowed_ips=true",
        "allowed_ip=10.1.1.2/32",
        "",
    ]
    assert uapi.set_text(Changes()) == ""
    assert "replace_peers=true" in uapi.set_text(Changes(replace_peers=True))


def test_uapi_parse_get() -> None:
    priv, a = keys.private_key(), _peer()
    lines = (
        f"private_key={keys.to_hex(priv)}\nlisten_port=51820\n"
        f"public_key={keys.to_hex(a.public_key)}\npreshared_key={keys.to_hex(a.preshared_key)}\n"
        "protocol_version=1\nendpoint=198.51.100.2:40000\nlast_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=500000000\ntx_bytes=92\nrx_bytes=1000\n"
        "persistent_keepalive_interval=0\nallowed_ip=10.1.1.2/32\n"
        f"public_key={keys.to_hex(keys.public_key(priv))}\nprotocol_version=1\n"
        "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
    )
    items = [tuple(line.split("=", 1)) for line in lines.splitlines()]
    got = uapi.parse_get(items)  # type: ignore[arg-type]
    assert got.private_key == priv and got.listen_port == 51820
    assert got.peers[0] == a
    assert got.peers[1].allowed_ips == () and got.peers[1].preshared_key == "A" * 43 + "="
    assert got.stats[0].last_handshake == 1700000000.5 and got.stats[0].rx_bytes == 1000
    assert got.stats[0].endpoint == "198.51.100.2:40000"
    assert got.stats[1].last_handshake is None


# -- kernel netlink ----------------------------------------------------------------------


def _through_pyroute2(kwargs: dict[str, Any]) -> Any:
    """Build the WG_CMD_SET_DEVICE message exactly as pyroute2's WireGuard.set() does, encode
    it to bytes and decode it again: what the kernel would receive, checked by pyroute2's own
    key and address validation."""
    builder = AsyncWireGuard.__new__(AsyncWireGuard)
    msg = wgmsg()
    msg["attrs"].append(["WGDEVICE_A_IFNAME", "wg0"])
    if "private_key" in kwargs:
        builder._wg_test_key(kwargs["private_key"])
        msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", kwargs["private_key"]])
    if "listen_port" in kwargs:
        msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", kwargs["listen_port"]])
    if "peer" in kwargs:
        builder._wg_set_peer(msg, kwargs["peer"])
    msg["cmd"], msg["version"] = 1, 1
    msg.encode()
    back = wgmsg(msg.data)
    back.decode()
    return back


def test_netlink_calls_round_trip_through_pyroute2() -> None:
    priv, a, gone = keys.private_key(), _peer(), keys.public_key(keys.private_key())
    calls = netlink.calls(Changes(private_key=priv, listen_port=51820, upsert=(a,),
                                  remove=(gone,)))
    assert calls == [
        {"private_key": priv, "listen_port": 51820},
        {"peer": {"public_key": gone, "remove": True}},
        {"peer": {"public_key": a.public_key, "preshared_key": a.preshared_key,
                  "replace_allowed_ips": True, "allowed_ips": ["10.1.1.2/32"]}},
    ]
    msgs = [_through_pyroute2(kw) for kw in calls]
    flags = [
        [peer.get_attr("WGPEER_A_FLAGS") for peer in m.get_attr("WGDEVICE_A_PEERS") or []]
        for m in msgs
    ]
    assert flags == [[], [1], [2]]  # REMOVE_ME; REPLACE_ALLOWEDIPS
    parsed = netlink.parse_info(msgs)
    assert parsed.private_key == priv and parsed.listen_port == 51820
    assert parsed.peers[1] == a
    assert netlink.calls(Changes()) == []


def test_netlink_parse_info_of_a_device_dump() -> None:
    """A dump as the kernel sends it (device attributes, then peers with handshake times)."""
    priv, a = keys.private_key(), _peer()
    msg = wgmsg()
    msg["cmd"], msg["version"] = 0, 1
    msg["attrs"] = [
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PRIVATE_KEY", priv],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
    ]
    AsyncWireGuard.__new__(AsyncWireGuard)._wg_set_peer(
        msg, {"public_key": a.public_key, "preshared_key": a.preshared_key,
              "allowed_ips": list(a.allowed_ips)},
    )
    msg.encode()
    back = wgmsg(msg.data)
    back.decode()
    got = netlink.parse_info([back])
    assert got == DeviceConfig(priv, 51820, (a,), got.stats)
    assert got.stats[0].last_handshake is None


def test_local_networks_are_read_from_the_system() -> None:
    from appliance.wireguard import apply

    nets = apply.local_networks()
    assert ipaddress.IPv4Network("127.0.0.0/8") in nets
    for _ in range(20):
        assert not any(tunnel.choose_subnet(nets).overlaps(n) for n in nets)


def test_wireguard_imports_nothing_above_it() -> None:
    """One direction of imports: the web imports this package, never the reverse."""
    import ast

    allowed = {"appliance.files", "appliance.config", "appliance.log", "appliance",
               "appliance.control_client"}
    for path in sorted((Path(__file__).parent.parent / "appliance/wireguard").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("appliance") and not name.startswith("appliance.wireguard"):
                    assert name in allowed, f"{path.name} imports {name}"
                assert not name.startswith("mautrix"), f"{path.name} imports {name}"
