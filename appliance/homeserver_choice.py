"""Which homeserver the bridge uses: the Pi's own, or the family's ("external").

The config file says it ([bridge] homeserver, listen_host, homeserver_address), or the setup
wizard does, in the web state's `homeserver.json` (web/own_server.py), which then counts over
the file. Both are checked the same way here: with the Pi's own server the listener is
loopback only; with the family's it is bound to one address (the home or tunnel address),
never all of them, and the homeserver's address is known so the firewall can admit only it.
This sits at the config level so that `textbridge run`, the bridge and the
`textbridge homeserver firewall|registration` commands read one answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.config import BridgeConfig, Config, ConfigError

log = logging.getLogger(__name__)

HOMESERVER_FILE = "homeserver.json"


def validate_listener(config: BridgeConfig) -> None:
    """Raise ConfigError where the appservice listener may not be bound, for the mode."""
    host = config.listen_host
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise ConfigError("bridge.listen_host", f"{host!r} is not an IP address") from None
    if config.homeserver == "own":
        # The homeserver runs on this box: nothing else may reach the appservice port.
        if not address.is_loopback:
            raise ConfigError(
                "bridge.listen_host",
                f"{host!r}: with the Pi's own homeserver the bridge listens on loopback only",
            )
        return
    if address.is_unspecified:
        # The hs_token guards the port, but the port is for one server: bound to the home
        # or tunnel address, it is not offered to every network the box is on.
        raise ConfigError(
            "bridge.listen_host",
            "listen on the home or tunnel address the homeserver reaches, not on every address",
        )
    if not config.homeserver_address:
        raise ConfigError(
            "bridge.homeserver_address",
            "an external homeserver needs its address, so the firewall can admit only it",
        )
    try:
        ipaddress.ip_address(config.homeserver_address)
    except ValueError:
        raise ConfigError(
            "bridge.homeserver_address", f"{config.homeserver_address!r} is not an IP address"
        ) from None


def read_choice(web_state: Path) -> Any:
    try:
        return json.loads((web_state / HOMESERVER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("ignoring %s: %s", web_state / HOMESERVER_FILE, exc)
        return None


def apply_choice(config: Config, chosen: Any) -> Config:
    """The family's own homeserver, as the wizard recorded it, replaces the config file's
    homeserver, listener and registration; a broken record is logged and ignored."""
    if not isinstance(chosen, Mapping) or chosen.get("mode") != "external":
        return config
    try:
        bridge = dataclasses.replace(
            config.bridge,
            homeserver="external",
            homeserver_url=str(chosen["url"]),
            server_name=str(chosen["server_name"]),
            listen_host=str(chosen["listen_host"]),
            listen_port=int(chosen["listen_port"]),
            homeserver_address=str(chosen["homeserver_address"]),
            registration=Path(str(chosen["registration"])),
        )
        validate_listener(bridge)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("ignoring the homeserver chosen in the setup (%s): %s", HOMESERVER_FILE, exc)
        return config
    return dataclasses.replace(config, bridge=bridge)
