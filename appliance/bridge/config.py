"""The [bridge] configuration section.

The dataclasses live in appliance/config.py with every other section (one loader, one
place to read the file's shape); they are re-exported here so bridge code and its tests
import them from the bridge. `validate` adds the checks that span several entries, which
the per-value loader cannot make.
"""

from __future__ import annotations

import ipaddress
import logging

from appliance.config import BridgeConfig, CapsConfig, ConfigError, LineConfig

__all__ = ["BridgeConfig", "CapsConfig", "LineConfig", "validate", "validate_listener"]

log = logging.getLogger(__name__)


def validate(config: BridgeConfig) -> None:
    """Raise ConfigError for a configuration the bridge cannot run with."""
    validate_listener(config)
    seen: set[str] = set()
    for i, line in enumerate(config.lines):
        if line.id in seen:
            # Two lines with one id would share portals and send through either.
            raise ConfigError(f"bridge.lines[{i}].id", f"line {line.id!r} is listed twice")
        seen.add(line.id)
        if not line.everyone:
            # Allowed (setup adds people later), but nobody can use or hear of this line.
            log.warning("line %s has no owner and no members yet", line.id)


def validate_listener(config: BridgeConfig) -> None:
    """Where the appservice listener may be bound, for the homeserver mode chosen."""
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
