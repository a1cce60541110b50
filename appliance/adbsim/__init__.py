"""A simulated Android phone with Google Messages behind a real ADB protocol server, for
tests and the demo (see server.py for the protocol, device.py for the model)."""

from appliance.adbsim.device import SimPhone
from appliance.adbsim.server import AdbSimServer

__all__ = ["AdbSimServer", "SimPhone"]
