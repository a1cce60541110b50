"""A GSM/LTE USB-stick modem simulator speaking AT commands (27.005/27.007) on a pty."""

from appliance.sim.modem import Faults, ModemSimulator, Network, SentSms

__all__ = ["Faults", "ModemSimulator", "Network", "SentSms"]
