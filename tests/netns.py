"""What the network-namespace tests share: a command that must succeed, and why such a test
cannot run on this machine (they need root and the tools scripts/install-deps installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def why_not(tools: Sequence[str], *, tun: bool = False, python: Path | None = None) -> str | None:
    """None when the test can run here, else the reason to skip it."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if tun and not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun for wireguard-go"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/install-deps test installs it)"
    if python is not None and not python.exists():
        return f"{python} is missing"
    return None
