"""Logging: to the journal under systemd, to stderr otherwise.

Policy (enforced by review and by tests that grep captured logs): message bodies and secrets
are never logged at any level; phone numbers are logged through `mask_number` at info level.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path


def setup(level: str = "info") -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    handler: logging.Handler | None = _journal_handler() if under_systemd else None
    if handler is None:
        # Under systemd without systemd-python, stderr still reaches the journal (no timestamps).
        handler = _stderr_handler(with_time=not under_systemd)
    # Its own level too: a file added later (add_file) may lower the root's.
    handler.setLevel(level.upper())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log request bodies or tokens at debug stay at warning.
    # adb_shell logs whole packets at debug level, and packets carry message texts.
    for noisy in ("aiohttp.access", "mau.appservice.api", "gsmmodem", "adb_shell"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def add_file(path: Path, level: str = "info") -> logging.Handler:
    """Also keep the log in `path` (0600, rotated at 1 MB): where there is no journal (the
    demo), the dashboard's log view reads this file. The handlers set up before keep the
    level that `setup` gave them."""
    root = logging.getLogger()
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=1024 * 1024, backupCount=1, encoding="utf-8"
    )
    file_handler.setLevel(level.upper())
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    root.setLevel(min(root.level, file_handler.level))
    return file_handler


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    journal: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="textbridge")
    journal.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return journal


def _stderr_handler(*, with_time: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if with_time else (
        "%(levelname)s %(name)s: %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def mask_number(number: str) -> str:
    """+491701234567 -> +49170***67: enough to tell conversations apart in a log."""
    if len(number) <= 6:
        return "***"
    return f"{number[:6]}***{number[-2:]}"
