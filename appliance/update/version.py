"""Release versions as the bundles and the appliance spell them: dotted numbers (0.3.0)."""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,3}")


def parse(text: str) -> tuple[int, ...] | None:
    """(0, 3, 0) for "0.3.0"; None for anything else, which is never installed: an update
    whose order against the running version is unknown could be a downgrade."""
    text = text.strip()
    if not VERSION_RE.fullmatch(text):
        return None
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def newer(candidate: str, running: str) -> bool | None:
    a, b = parse(candidate), parse(running)
    if a is None or b is None:
        return None
    return a > b
