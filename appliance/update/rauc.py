"""The rauc command line, run in an executor.

Only rauc's documented CLI is used: `rauc info --output-format=json`, `rauc status
--output-format=json`, `rauc install` and `rauc status mark-good|mark-bad`. `rauc status`
and `rauc install` talk to the rauc service over D-Bus; `info` reads the bundle itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# An install copies a whole root filesystem: minutes on an SD card.
INSTALL_TIMEOUT = 30 * 60.0
QUERY_TIMEOUT = 60.0


class RaucError(Exception):
    """rauc failed; `detail` is rauc's own last words, `message` plain words for a person."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclasses.dataclass(frozen=True)
class Slot:
    name: str  # rootfs.0
    bootname: str  # A
    device: str
    state: str  # booted | active | inactive
    boot_status: str  # good | bad | ""


@dataclasses.dataclass(frozen=True)
class SystemStatus:
    compatible: str
    booted: str  # the bootname of the running slot
    boot_primary: str  # the slot name the next boot starts
    slots: tuple[Slot, ...]

    def booted_slot(self) -> Slot | None:
        return next((s for s in self.slots if s.bootname == self.booted), None)

    def other_slot(self) -> Slot | None:
        return next((s for s in self.slots if s.bootname and s.bootname != self.booted), None)


@dataclasses.dataclass(frozen=True)
class BundleImage:
    slotclass: str
    filename: str
    size: int


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    compatible: str
    version: str
    images: tuple[BundleImage, ...]


def parse_status(text: str) -> SystemStatus:
    data = json.loads(text)
    slots = []
    for entry in data.get("slots") or []:
        for name, slot in entry.items():
            slots.append(Slot(name=name, bootname=str(slot.get("bootname") or ""),
                              device=str(slot.get("device") or ""),
                              state=str(slot.get("state") or ""),
                              boot_status=str(slot.get("boot_status") or "")))
    slots.sort(key=lambda s: s.name)
    return SystemStatus(compatible=str(data.get("compatible") or ""),
                        booted=str(data.get("booted") or ""),
                        boot_primary=str(data.get("boot_primary") or ""),
                        slots=tuple(slots))


def parse_info(text: str) -> BundleInfo:
    data = json.loads(text)
    images = []
    for entry in data.get("images") or []:
        for slotclass, image in entry.items():
            images.append(BundleImage(slotclass, str(image.get("filename") or ""),
                                      int(image.get("size") or 0)))
    return BundleInfo(compatible=str(data.get("compatible") or ""),
                      version=str(data.get("version") or ""), images=tuple(images))


def last_words(stderr: str) -> str:
    """rauc's error line, without its progress messages."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "rauc-Message" not in ln and "rauc-DEBUG" not in ln]
    return (errors or lines or [""])[-1]


class Rauc:
    """One rauc installation: its binary, its system.conf and keyring, and the D-Bus system
    bus its service listens on (the box's own, or a private one in tests)."""

    def __init__(self, *, binary: str = "rauc", conf: Path | None = None,
                 keyring: Path | None = None, env: Mapping[str, str] | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.binary = binary
        self.conf = conf
        self.keyring = keyring
        self.env = dict(env) if env is not None else None
        # rauc blocks for minutes during an install: its own thread, never the loop's.
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="rauc")

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [self.binary]
        if self.conf is not None:
            argv.append(f"--conf={self.conf}")
        if self.keyring is not None:
            argv.append(f"--keyring={self.keyring}")
        return [*argv, *args]

    def _run_blocking(self, args: Sequence[str], timeout: float) -> Result:
        env = {**os.environ, **self.env} if self.env is not None else None
        try:
            done = subprocess.run(self._argv(args), capture_output=True, text=True,
                                  timeout=timeout, env=env, check=False)
        except FileNotFoundError:
            raise RaucError("The update tool (rauc) is not installed on this system.") from None
        except subprocess.TimeoutExpired:
            raise RaucError(f"The update tool did not finish within {int(timeout)} s.") from None
        return Result(done.returncode, done.stdout, done.stderr)

    async def run(self, args: Sequence[str], limit: float = QUERY_TIMEOUT) -> Result:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._run_blocking, list(args), limit)

    async def _checked(self, args: Sequence[str], what: str,
                       limit: float = QUERY_TIMEOUT) -> Result:
        result = await self.run(args, limit)
        if result.returncode != 0:
            detail = last_words(result.stderr)
            raise RaucError(f"{what} failed: {detail or 'rauc gave no reason'}", detail)
        return result

    async def status(self) -> SystemStatus:
        result = await self._checked(["status", "--output-format=json"],
                                     "Reading the update state")
        try:
            return parse_status(result.stdout)
        except (ValueError, AttributeError) as exc:
            raise RaucError(f"The update state could not be read ({exc}).") from None

    async def info(self, bundle: Path) -> BundleInfo:
        """The manifest, once the signature checked out against the keyring. Raises with
        rauc's words; appliance/update/bundle.py turns them into plain ones."""
        result = await self.run(["info", "--output-format=json", str(bundle)])
        if result.returncode != 0:
            detail = last_words(result.stderr)
            raise RaucError(detail or "rauc could not read the bundle", detail)
        try:
            return parse_info(result.stdout)
        except (ValueError, AttributeError) as exc:
            raise RaucError(f"The update file's description could not be read ({exc}).") from None

    async def install(self, bundle: Path) -> Result:
        return await self._checked(["install", str(bundle)], "Installing the update",
                                   INSTALL_TIMEOUT)

    async def mark(self, how: str, which: str = "booted") -> None:
        if how not in ("good", "bad", "active"):
            raise ValueError(how)
        await self._checked(["status", f"mark-{how}", which], f"Marking the system {how}")


def rauc_from(settings: Mapping[str, Any]) -> Rauc:
    """A Rauc from the [update] settings (binary, conf, keyring), for the CLI and the web."""
    conf = settings.get("rauc_conf")
    keyring = settings.get("keyring")
    return Rauc(binary=str(settings.get("rauc") or "rauc"),
                conf=Path(conf) if conf else None,
                keyring=Path(keyring) if keyring else None)
