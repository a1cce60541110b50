"""The [bridge] settings of "Connect to my homeserver": where the listener may be bound."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.bridge.config import BridgeConfig, validate
from appliance.config import ConfigError, _build
from appliance.homeserver.external import (
    ExternalAdapter,
    ExternalHomeserver,
    NotInThisMode,
    split_mxid,
)
from appliance.homeserver.registration import Registration


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
