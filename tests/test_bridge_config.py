"""The [bridge] configuration section, loaded the way appliance.config loads every section."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.bridge.config import BridgeConfig, validate
from appliance.config import ConfigError, _build


def load(raw: dict[str, Any]) -> BridgeConfig:
    config: BridgeConfig = _build(BridgeConfig, raw, "bridge")
    validate(config)
    return config


def test_a_family_line_loads() -> None:
    config = load(
        {
            "server_name": "home.example",
            "lines": [
                {
                    "id": "modem",
                    "owner": "@anna:home.example",
                    "members": ["@ben:home.example"],
                    "home_country": "GB",
                }
            ],
            "caps": {"daily_per_user": 20},
            "edits": "render",
        }
    )
    line = config.line("modem")
    assert line is not None
    assert line.everyone == ["@anna:home.example", "@ben:home.example"]
    assert line.shared and line.relay_prefix and line.home_country == "GB"
    assert config.caps.daily_per_user == 20 and config.caps.block_premium
    assert config.edits == "render" and config.reactions == "notice"
    assert config.line("phone") is None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"lines": [{"id": "modem", "members": ["anna"]}]}, "bridge.lines[0].members[0]"),
        ({"lines": [{"id": "modem", "owner": "anna@home"}]}, "bridge.lines[0].owner"),
        (
            {"lines": [{"id": "m", "owner": "@a:b"}, {"id": "m", "owner": "@a:b"}]},
            "bridge.lines[1].id",
        ),
        ({"listen_host": "0.0.0.0"}, "bridge.listen_host"),
        ({"edits": "silently"}, "bridge.edits"),
        ({"caps": {"daily_per_user": -1}}, "bridge.caps.daily_per_user"),
        (
            {"lines": [{"id": "modem", "owner": "@a:b", "home_country": "de"}]},
            "bridge.lines[0].home_country",
        ),
    ],
)
def test_mistakes_name_their_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(raw)
    assert err.value.key.startswith(key), err.value.key
