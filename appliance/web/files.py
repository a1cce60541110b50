"""Small durable files in the state directory.

Every write goes to a temporary file that is fsynced and renamed over the old one, and the
directory is fsynced too: a power cut during setup leaves the old or the new file, never half
of one, and the bridge never reads a torn members.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.files import write_private

__all__ = ["read_json", "write_json", "write_private"]


def write_json(path: Path, value: Any) -> None:
    write_private(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
