"""The [bridge] settings of "Connect to my homeserver": where the listener may be bound."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.bridge.config import BridgeConfig, validate
from appliance.config import ConfigError, _build
from appliance.homeserver import firewall
from appliance.homeserver.external import (
    ExternalAdapter,
    ExternalHomeserver,
    NotInThisMode,
    split_mxid,
)
from appliance.homeserver.registration import Registration

REPO = Path(__file__).resolve().parent.parent


def load(raw: dict[str, Any]) -> BridgeConfig:
    config: BridgeConfig = _build(BridgeConfig, raw, "bridge")
    validate(config)
    return config


EXTERNAL = {"homeserver": "external", "homeserver_address": "192.0.2.7"}


def test_external_listens_on_the_home_address() -> None:
    config = load({**EXTERNAL, "listen_host": "192.168.1.20", "server_name": "example.org",
                   "homeserver_url": "https://matrix.example.org"})
    assert config.homeserver == "external" and config.listen_host == "192.168.1.20"


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"listen_host": "192.168.1.20"}, "bridge.listen_host", "loopback only"),
        ({**EXTERNAL, "listen_host": "0.0.0.0"}, "bridge.listen_host", "not on every address"),
        ({**EXTERNAL, "listen_host": "::"}, "bridge.listen_host", "not on every address"),
        ({"homeserver": "external", "listen_host": "10.0.0.2"}, "bridge.homeserver_address",
         "firewall"),
        ({**EXTERNAL, "listen_host": "10.0.0.300"}, "bridge.listen_host", "not an IP"),
    ],
)
def test_listener_mistakes(raw: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(raw)
    assert err.value.key == key and words in str(err.value)


def test_mxids_and_addresses() -> None:
    assert split_mxid("@anna:example.org") == ("anna", "example.org")
    assert split_mxid("@ben:matrix.example.org:8448") == ("ben", "matrix.example.org:8448")
    for bad in ("anna", "@Anna:example.org", "@anna", "@anna:exa mple.org"):
        with pytest.raises(ValueError):
            split_mxid(bad)
    with pytest.raises(ValueError):
        ExternalHomeserver("matrix.example.org", "example.org")
    with pytest.raises(ValueError):
        ExternalHomeserver("https://matrix.example.org", "example org")


async def test_no_admin_calls_in_this_mode() -> None:
    adapter = ExternalAdapter(
        ExternalHomeserver("https://matrix.example.org", "example.org"),
        Registration.generate(url="http://192.168.1.20:29330"),
    )
    for call in (
        adapter.create_user("anna", "pw"),
        adapter.set_password("anna", "pw"),
        adapter.deactivate_user("anna"),
        adapter.create_registration_token(),
        adapter.install_appservice(Registration.generate(url="http://192.168.1.20:1")),
    ):
        with pytest.raises(NotInThisMode) as err:
            await call
        assert "example.org" in str(err.value)


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[general]
data_dir = "{tmp_path / 'data'}"

[bridge]
homeserver = "external"
homeserver_url = "https://matrix.example.org"
server_name = "example.org"
listen_host = "192.168.1.20"
listen_port = 29331
homeserver_address = "192.168.1.10"
registration = "{tmp_path / 'reg' / 'textbridge.yaml'}"
"""
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "appliance", "homeserver", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cli_registration_is_made_once(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    first = _cli("registration", "--config", str(config))
    assert first.returncode == 0, first.stderr
    path = tmp_path / "reg" / "textbridge.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    registration = Registration.from_yaml(first.stdout)
    assert registration.url == "http://192.168.1.20:29331"
    assert registration.user_regex("example.org") == r"^@sms_.*:example\.org$"
    again = _cli("registration", "--config", str(config))
    assert again.stdout == first.stdout  # the tokens are kept: the server's copy still fits


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_cli_firewall_rules_parse(tmp_path: Path) -> None:
    out = _cli("firewall", "--config", str(_config_file(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "ip saddr 192.168.1.10 tcp dport 29331 accept" in out.stdout
    assert out.stdout.index("accept") < out.stdout.index("tcp dport 29331 drop")
    check = subprocess.run(["nft", "-c", "-f", "-"], input=out.stdout, capture_output=True,
                           text=True)
    if check.returncode != 0 and "Operation not permitted" in check.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert check.returncode == 0, check.stderr
    assert "fd00::1 tcp" in firewall.ruleset(29331, "fd00::1")
    with pytest.raises(ValueError):
        firewall.ruleset(29331, "matrix.example.org")


def test_cli_refuses_the_own_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[general]\ndata_dir = "{tmp_path}"\n')
    out = _cli("firewall", "--config", str(path))
    assert out.returncode == 2 and 'homeserver = "external"' in out.stderr


def test_the_wizards_choice_applies_over_the_config(tmp_path: Path) -> None:
    from appliance.config import Config
    from appliance.run import apply_members
    from appliance.web.files import write_json

    config = Config.from_dict({"general": {"data_dir": str(tmp_path)}})
    chosen = {
        "mode": "external", "url": "https://matrix.example.org", "server_name": "example.org",
        "owner": "@anna:example.org", "listen_host": "192.168.1.20", "listen_port": 29331,
        "homeserver_address": "192.168.1.10", "registration": str(tmp_path / "reg.yaml"),
    }
    write_json(tmp_path / "homeserver.json", chosen)
    bridge = apply_members(config, tmp_path).bridge
    assert (bridge.homeserver, bridge.server_name, bridge.listen_host, bridge.listen_port) == (
        "external", "example.org", "192.168.1.20", 29331)
    assert bridge.registration == tmp_path / "reg.yaml"
    # A listener on every address is refused: the file is ignored, the bridge still starts.
    write_json(tmp_path / "homeserver.json", {**chosen, "listen_host": "0.0.0.0"})
    assert apply_members(config, tmp_path).bridge == config.bridge
    write_json(tmp_path / "homeserver.json", {"mode": "external"})
    assert apply_members(config, tmp_path).bridge == config.bridge


def test_a_new_homeserver_choice_restarts_textbridge_run(tmp_path: Path) -> None:
    """`textbridge run` exits 75 when the setup writes homeserver.json: systemd's
    Restart=on-failure starts it again, on the new listener and registration."""
    import time

    from appliance.homeserver.synapse import free_port

    registration = tmp_path / "registration.yaml"
    Registration.generate(url="http://127.0.0.1:1").save(registration, "textbridge.test")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[general]\ndata_dir = "{tmp_path / "data"}"\n[modem]\nenabled = false\n'
        f'[bridge]\nhomeserver_url = "http://127.0.0.1:{free_port()}"\n'
        f'registration = "{registration}"\nlisten_port = {free_port()}\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        socket_path = tmp_path / "data" / "control.sock"
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "textbridge run did not start"
            time.sleep(0.1)
        (tmp_path / "data" / "web").mkdir(exist_ok=True)
        (tmp_path / "data" / "web" / "homeserver.json").write_text('{"mode": "external"}')
        assert proc.wait(30) == 75
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_firewall_follows_the_wizards_choice(tmp_path: Path) -> None:
    from appliance.web.files import write_json

    config = tmp_path / "config.toml"
    config.write_text(f'[general]\ndata_dir = "{tmp_path / "data"}"\n')
    write_json(tmp_path / "data" / "web" / "homeserver.json", {
        "mode": "external", "url": "https://matrix.example.org", "server_name": "example.org",
        "listen_host": "10.99.0.2", "listen_port": 29332, "homeserver_address": "10.99.0.1",
        "registration": str(tmp_path / "data" / "web" / "external-registration.yaml"),
    })
    out = _cli("firewall", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "ip saddr 10.99.0.1 tcp dport 29332 accept" in out.stdout


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or
                    shutil.which("ip") is None, reason="needs root, ip and nft")
def test_cli_firewall_apply_loads_and_removes_the_table(tmp_path: Path) -> None:
    """As textbridge-appservice-firewall.service runs it, in a namespace of its own."""
    import secrets

    ns = f"tbfw-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def apply() -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            return subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "appliance", "homeserver",
                 "firewall", "--apply", "--config", str(config)],
                capture_output=True, text=True, env=env, timeout=60)

        def tables() -> str:
            return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                                  capture_output=True, text=True, check=True).stdout

        config = _config_file(tmp_path)
        for _ in range(2):  # twice: still one table
            out = apply()
            assert out.returncode == 0, out.stderr
        assert tables().count(firewall.TABLE) == 1
        # Back to the Pi's own homeserver: the table goes (and going twice is no error).
        config.write_text(f'[general]\ndata_dir = "{tmp_path / "data"}"\n')
        for _ in range(2):
            out = apply()
            assert out.returncode == 0, out.stderr
        assert firewall.TABLE not in tables()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
