"""`textbridge run` takes what the owner chose in the web setup: line members, the owner,
and the SMS cost guard, from the web's state files."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.config import Config
from appliance.run import apply_members


def _config() -> Config:
    return Config.from_dict(
        {"bridge": {"lines": [{"id": "sms", "members": ["@anna:home.test"]}, {"id": "phone"}]}}
    )


def test_nothing_chosen_yet_keeps_the_config(tmp_path: Path) -> None:
    config = _config()
    assert apply_members(config, tmp_path) == config


def test_members_owner_and_policy_from_the_web(tmp_path: Path) -> None:
    (tmp_path / "members.json").write_text(
        json.dumps({"sms": ["@ben:home.test", "@anna:home.test"], "phone": ["@ben:home.test"]})
    )
    (tmp_path / "owner.json").write_text(json.dumps({"mxid": "@mum:home.test"}))
    (tmp_path / "policy.json").write_text(
        json.dumps(
            {
                "default_daily_cap": 20,
                "block_premium": False,
                "block_short_codes": True,
                "international_allowed": False,
                "users": {"@ben:home.test": {"daily_cap": 3}},
            }
        )
    )
    config = apply_members(_config(), tmp_path)
    sms, phone = config.bridge.lines
    assert sms.members == ["@anna:home.test", "@ben:home.test"]  # merged, no repeats
    assert phone.members == ["@ben:home.test"]
    assert sms.owner == phone.owner == "@mum:home.test"
    caps = config.bridge.caps
    assert caps.daily_per_user == 20 and caps.daily_for("@ben:home.test") == 3
    assert caps.daily_for("@anna:home.test") == 20
    assert caps.block_premium  # short codes still blocked
    assert not caps.international_allowed


def test_broken_web_files_are_ignored_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "members.json").write_text("{not json")
    (tmp_path / "policy.json").write_text(json.dumps({"default_daily_cap": "lots"}))
    (tmp_path / "owner.json").write_text(json.dumps(["not", "a", "mapping"]))
    config = _config()
    assert apply_members(config, tmp_path) == config
