"""The log view: recent lines from the journal (or a file in tests and the demo), with
anything that could be a message's content or a full phone number taken out.

The services never log message bodies (appliance/log.py), but libraries and tracebacks
might; this filter is the second line of defence before a line reaches a browser.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

from appliance.tasks import within

# key=value pairs whose value is content or a secret, with or without quotes.
_SECRET_FIELDS = re.compile(
    r"(?i)\b(body|text|message|content|password|passwd|token|access_token|pin|puk|secret)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
# A run of 7 or more digits (optionally with +) is treated as a phone number.
_NUMBER = re.compile(r"\+?\d[\d ]{5,}\d")
MAX_LINE = 400


def _mask(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"***{digits[-2:]}"


def redact(line: str) -> str:
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    line = _SECRET_FIELDS.sub(lambda m: f"{m.group(1)}{m.group(2)}[hidden]", line)
    line = _NUMBER.sub(_mask, line)
    return line[:MAX_LINE]


def _tail(path: Path, limit: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-limit:]


async def recent_lines(
    *, log_file: Path | None, units: Sequence[str], limit: int = 200
) -> list[str]:
    if log_file is not None:
        raw = await asyncio.to_thread(_tail, log_file, limit)
    else:
        args = ["journalctl", "--no-pager", "-o", "short-iso", "-n", str(limit)]
        for unit in units:
            args += ["-u", unit]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError:
            return ["The system log could not be read."]
        try:
            out, err = await within(10, proc.communicate())
        except TimeoutError:
            proc.kill()  # a journalctl that hangs must not outlive the page that asked
            await proc.wait()
            return ["The system log could not be read."]
        # journalctl's own remarks ("-- No entries --", "-- Boot … --") are not log lines.
        raw = [
            line
            for line in out.decode("utf-8", "replace").splitlines()
            if not (line.startswith("-- ") and line.endswith(" --"))
        ]
        if not raw and (b"permission" in err.lower() or b"systemd-journal" in err):
            # Without the systemd-journal group journalctl sees only this user's own
            # (empty) journal and says "-- No entries --" as if nothing had happened.
            return [
                "The system log could not be read: the web service is not allowed to read "
                "the journal (it needs the systemd-journal group)."
            ]
    return [redact(line) for line in raw]
