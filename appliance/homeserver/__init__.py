"""The homeserver next to the bridge, behind one small adapter per homeserver.

The bridge speaks only the standard appservice and client-server APIs; what differs between
Synapse (tests, the demo) and Tuwunel (the appliance) lives here. See docs/homeserver.md.
"""

from appliance.homeserver.base import (
    HomeserverAdapter,
    HomeserverError,
    HomeserverUnavailable,
    LoginFailed,
    UserExists,
    UserNotFound,
)
from appliance.homeserver.bootstrap import adapter_for
from appliance.homeserver.registration import Registration, RegistrationError

__all__ = [
    "HomeserverAdapter",
    "HomeserverError",
    "HomeserverUnavailable",
    "LoginFailed",
    "Registration",
    "RegistrationError",
    "UserExists",
    "UserNotFound",
    "adapter_for",
]
