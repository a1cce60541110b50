"""The nightly backup to a USB stick: write, verify, keep the last few, and tell the owners.

Each run writes a new backup next to the old ones, reads it back (decrypt, unpack, every
database through `PRAGMA integrity_check`, every file through its validator), removes it if
that fails, and otherwise removes all but the newest `keep`. What the owners must hear goes
through the bridge's owner notices (`POST /v1/notices`), which speak once per key of a topic:
- topic "backup": "failed:<what>" when a backup fails, "missing" when the stick is not
  there, and "ok" once when backups work again after either was told;
- topic "backup-age": "stale" when no backup has succeeded for STALE_AFTER, "ok" when one
  has again.
A notice that could not be delivered (the bridge down) is tried again at the next run: the
status file remembers only what was told.

Status file `{data_dir}/backup-status.json` (0600): last_success, last_file, last_error,
told {topic: key}.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.backup import create, key, restore
from appliance.backup.errors import BackupError
from appliance.backup.layout import Layout
from appliance.files import write_private

STATUS_FILE = "backup-status.json"
PATTERN = "textbridge-*.tbbackup"
KEEP = 7
STALE_AFTER = 3 * 86400.0

Notify = Callable[[str, str, str, str], bool]  # topic, key, severity, text -> delivered


@dataclass
class Status:
    last_success: float | None = None
    last_file: str = ""
    last_error: str = ""
    told: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Status:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        success = data.get("last_success")
        told = data.get("told")
        return cls(
            last_success=float(success) if isinstance(success, int | float) else None,
            last_file=str(data.get("last_file") or ""),
            last_error=str(data.get("last_error") or ""),
            told={str(k): str(v) for k, v in told.items()} if isinstance(told, dict) else {},
        )

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {"last_success": self.last_success, "last_file": self.last_file,
                                "last_error": self.last_error, "told": self.told}
        write_private(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class Outcome:
    ok: bool
    file: Path | None = None
    problem: str = ""  # "" / "missing" / plain words of the failure
    removed: tuple[Path, ...] = ()


def _plain(exc: BaseException) -> str:
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "The USB stick is full."
    if isinstance(exc, OSError):
        return f"The USB stick could not be written ({exc.strerror or exc})."
    return f"Something unexpected went wrong ({type(exc).__name__})."


def backup_once(layout: Layout, target: Path, *, keep: int = KEEP, require_mount: bool = True,
                now: float | None = None) -> Outcome:
    """Blocking: one scheduled backup into `target` (the stick's mount point)."""
    if not target.is_dir() or (require_mount and not os.path.ismount(target)):
        return Outcome(False, problem="missing")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    out = target / f"textbridge-{stamp}.tbbackup"
    try:
        box_key = key.load(layout.key_file)
        create.create(layout, box_key, out)
        restore.verify(out, layout, box_key.identity)
    except Exception as exc:  # every failure is told in plain words; nothing half-kept
        out.unlink(missing_ok=True)
        return Outcome(False, problem=_plain(exc))
    kept = sorted(target.glob(PATTERN))
    removed = tuple(kept[:-keep]) if len(kept) > keep else ()
    for old in removed:
        old.unlink(missing_ok=True)
    return Outcome(True, file=out, removed=removed)


def notices(status: Status, outcome: Outcome, now: float) -> list[tuple[str, str, str, str]]:
    """What the owners must hear after this run: (topic, key, severity, text)."""
    said: list[tuple[str, str, str, str]] = []
    if outcome.ok:
        if status.told.get("backup", "ok") != "ok":
            said.append(("backup", "ok", "info",
                         f"Backups work again: {outcome.file.name if outcome.file else ''} "
                         "was written to the USB stick and checked."))
        if status.told.get("backup-age", "ok") != "ok":
            said.append(("backup-age", "ok", "info", "A backup succeeded again."))
        return said
    if outcome.problem == "missing":
        said.append(("backup", "missing", "warning",
                     "Tonight's backup could not be made: the backup USB stick is not plugged "
                     "in. Plug it into the Textbridge box; the next backup runs tomorrow night."))
    else:
        digest = hashlib.sha256(outcome.problem.encode()).hexdigest()[:12]
        said.append(("backup", f"failed:{digest}", "error",
                     f"Tonight's backup failed: {outcome.problem} The older backups on the "
                     "stick are kept."))
    last = status.last_success
    if (last is None or now - last > STALE_AFTER) and status.told.get("backup-age") != "stale":
        since = "yet" if last is None else "for more than 3 days"
        said.append(("backup-age", "stale", "error",
                     f"No backup of Textbridge has succeeded {since}. If the SD card failed "
                     "now, the family's messages and accounts would be lost."))
    return [s for s in said if status.told.get(s[0]) != s[1]]


def run(layout: Layout, target: Path, notify: Notify, *, keep: int = KEEP,
        require_mount: bool = True, now: float | None = None) -> Outcome:
    now = time.time() if now is None else now
    status_path = layout.data_dir / STATUS_FILE
    status = Status.load(status_path)
    outcome = backup_once(layout, target, keep=keep, require_mount=require_mount, now=now)
    for topic, notice_key, severity, text in notices(status, outcome, now):
        if notify(topic, notice_key, severity, text):
            status.told[topic] = notice_key
    if outcome.ok:
        status.last_success = now
        status.last_file = outcome.file.name if outcome.file else ""
        status.last_error = ""
        # Nothing was told, or all was cleared: the next problem is new again.
        for topic in ("backup", "backup-age"):
            status.told.setdefault(topic, "ok")
    else:
        status.last_error = outcome.problem
    status.save(status_path)
    return outcome
