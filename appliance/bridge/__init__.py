"""The Matrix bridge: the only part of Textbridge that knows Matrix (see docs/bridge.md)."""

from appliance.bridge.config import BridgeConfig, CapsConfig, LineConfig
from appliance.bridge.core import Bridge

__all__ = ["Bridge", "BridgeConfig", "CapsConfig", "LineConfig"]
