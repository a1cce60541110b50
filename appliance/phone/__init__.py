"""The phone line: an Android phone running Google Messages, over ADB (see docs/phone.md)."""

from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine

__all__ = ["PhoneConfig", "PhoneLine"]
