"""Settings of the phone line: the `[phone]` section of the appliance's config file.

The dataclass lives in appliance/config.py with every other section (one loader, one place
to read the file's shape); it is re-exported here for the line and its tests.
"""

from __future__ import annotations

from appliance.config import PhoneConfig

__all__ = ["PhoneConfig"]
