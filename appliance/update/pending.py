"""The update waiting for its check, kept on the data partition so both slots see it.

`textbridge update install` writes it before the reboot into the new slot; the health check
(appliance/update/health.py) reads it at every boot and removes it once the owners have been
told how the update went.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from appliance.files import write_private

FILE = Path("update") / "pending.json"
# How long the new slot has to become ready after its first boot.
CHECK_DEADLINE = 5 * 60.0


@dataclasses.dataclass
class Pending:
    from_version: str
    to_version: str
    from_slot: str  # bootname of the slot that installed it
    slot: str  # bootname of the slot it went into
    installed_at: float = dataclasses.field(default_factory=time.time)
    # "" while waiting for the check; "good", or "failed" with the reason, once decided.
    outcome: str = ""
    reason: str = ""


def path(data_dir: Path) -> Path:
    return data_dir / FILE


def load(data_dir: Path) -> Pending | None:
    try:
        raw: Any = json.loads(path(data_dir).read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(Pending)}
        return Pending(**{k: v for k, v in raw.items() if k in fields})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError):
        # A torn file must not stop the box from booting: the check then has nothing to do.
        return None


def save(data_dir: Path, pending: Pending) -> None:
    target = path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, json.dumps(dataclasses.asdict(pending), indent=1).encode())


def clear(data_dir: Path) -> None:
    path(data_dir).unlink(missing_ok=True)
