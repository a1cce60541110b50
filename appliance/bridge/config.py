"""The [bridge] configuration section.

The dataclasses live in appliance/config.py with every other section (one loader, one
place to read the file's shape); they are re-exported here so bridge code and its tests
import them from the bridge. `validate` adds the checks that span several entries, which
the per-value loader cannot make.
"""

from __future__ import annotations

import logging

from appliance.config import BridgeConfig, CapsConfig, ConfigError, LineConfig
from appliance.homeserver_choice import validate_listener

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

