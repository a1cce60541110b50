"""RAUC's custom bootloader backend for the Raspberry Pi 4 and 5 firmware's tryboot.

RAUC calls `textbridge update bootloader ARGS` (through /usr/lib/textbridge/rauc-bootloader,
named in system.conf) with its custom-backend verbs:

    get-primary                -> the bootname the next boot starts
    set-primary BOOTNAME       make BOOTNAME the next boot: a try of the other slot
    get-state BOOTNAME         -> good | bad
    set-state BOOTNAME good|bad
    get-current                -> the bootname running now (from the firmware's device tree)

The firmware reads `autoboot.txt` on the first FAT partition. With `tryboot_a_b=1` a normal
boot starts `[all] boot_partition`, and a reboot with the one-shot tryboot flag
(`reboot "0 tryboot"`) starts `[tryboot] boot_partition` once; any later reset, a hang the
watchdog cuts, a power cut, goes back to `[all]`. So a new slot is only ever tried, and it
becomes the committed one only when it is marked good, which rewrites `[all]`.

Our own state beside it (`tryboot.state`) keeps each slot's good/bad and which slot waits to be
tried. Unproven: that the Pi firmware does all of the above (docs/update.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from appliance.files import fsync_dir

AUTOBOOT = "autoboot.txt"
STATE = "tryboot.state"
# The Pi firmware's device tree names the partition it booted from (a 32-bit big-endian int).
DT_PARTITION = Path("/proc/device-tree/chosen/bootloader/partition")


class BootError(Exception):
    pass


def parse_slots(text: str) -> dict[str, int]:
    """"A=2,B=3": each slot's bootname and its boot (FAT) partition number."""
    slots: dict[str, int] = {}
    for item in text.split(","):
        name, _, part = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not part.isdigit():
            raise BootError(f"bad slot mapping {item!r}")
        slots[name] = int(part)
    if len(slots) != 2 or len(set(slots.values())) != 2:
        raise BootError("exactly two slots with two partitions are needed")
    return slots


def _write(path: Path, text: str) -> None:
    # The FAT partition may lose power mid-write: the old file stays whole until the rename.
    tmp = path.with_name(path.name + ".new")
    with tmp.open("w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Tryboot:
    def __init__(self, firmware: Path, slots: dict[str, int]) -> None:
        self.firmware = firmware
        self.slots = slots

    def _name(self, partition: int) -> str:
        for name, part in self.slots.items():
            if part == partition:
                return name
        raise BootError(f"partition {partition} is not a slot")

    def _other(self, name: str) -> str:
        return next(n for n in self.slots if n != name)

    def _check(self, name: str) -> str:
        if name not in self.slots:
            raise BootError(f"unknown slot {name!r}")
        return name

    def committed(self) -> str:
        """The slot `[all] boot_partition` names: what every normal boot starts."""
        try:
            text = (self.firmware / AUTOBOOT).read_text(encoding="ascii")
        except FileNotFoundError:
            raise BootError(f"no {AUTOBOOT} in {self.firmware}") from None
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[all]" and line.startswith("boot_partition="):
                return self._name(int(line.split("=", 1)[1]))
        raise BootError(f"{AUTOBOOT} names no [all] boot_partition")

    def _state(self) -> dict[str, str]:
        state: dict[str, str] = {}
        try:
            text = (self.firmware / STATE).read_text(encoding="ascii")
        except FileNotFoundError:
            return state
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip():
                state[key.strip()] = value.strip()
        return state

    def _save(self, state: dict[str, str]) -> None:
        _write(self.firmware / STATE, "".join(f"{k}={v}\n" for k, v in sorted(state.items())))

    def _autoboot(self, committed: str) -> None:
        _write(self.firmware / AUTOBOOT,
               f"[all]\ntryboot_a_b=1\nboot_partition={self.slots[committed]}\n"
               f"[tryboot]\nboot_partition={self.slots[self._other(committed)]}\n")

    def get_primary(self) -> str:
        trying = self._state().get("try", "")
        return trying if trying in self.slots else self.committed()

    def set_primary(self, name: str) -> None:
        self._check(name)
        state = self._state()
        if name == self.committed():
            state.pop("try", None)
        else:
            # rauc has just written this slot and calls it bootable: it may be tried.
            state["try"] = name
            state[name] = "good"
        self._save(state)

    def get_state(self, name: str) -> str:
        self._check(name)
        return "bad" if self._state().get(name) == "bad" else "good"

    def set_state(self, name: str, good: bool) -> None:
        self._check(name)
        state = self._state()
        state[name] = "good" if good else "bad"
        if good and state.get("try") == name:
            # The tried slot passed its check: every boot from now on starts it.
            self._autoboot(name)
            state.pop("try", None)
        elif not good and state.get("try") == name:
            state.pop("try", None)
        self._save(state)

    def get_current(self, dt_partition: Path = DT_PARTITION) -> str:
        try:
            raw = dt_partition.read_bytes()
        except OSError:
            raise BootError("the firmware did not say which partition it booted") from None
        return self._name(int.from_bytes(raw[:4], "big"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firmware", type=Path, default=Path("/boot/firmware"),
                        help="the FAT partition holding autoboot.txt")
    parser.add_argument("--slots", default="A=2,B=3",
                        help="bootname=boot partition number of each slot")
    parser.add_argument("--dt-partition", type=Path, default=DT_PARTITION,
                        help="where the firmware says which partition it booted")
    parser.add_argument("verb", choices=["get-primary", "set-primary", "get-state",
                                         "set-state", "get-current"])
    parser.add_argument("args", nargs="*")


def run(args: argparse.Namespace) -> int:
    try:
        boot = Tryboot(args.firmware, parse_slots(args.slots))
        verb, rest = args.verb, list(args.args)
        if verb == "get-primary":
            print(boot.get_primary())
        elif verb == "set-primary" and len(rest) == 1:
            boot.set_primary(rest[0])
        elif verb == "get-state" and len(rest) == 1:
            print(boot.get_state(rest[0]))
        elif verb == "set-state" and len(rest) == 2 and rest[1] in ("good", "bad"):
            boot.set_state(rest[0], rest[1] == "good")
        elif verb == "get-current":
            print(boot.get_current(args.dt_partition))
        else:
            raise BootError(f"bad arguments for {verb}: {rest}")
    except (BootError, OSError, ValueError) as exc:
        print(f"tryboot: {exc}", file=sys.stderr)
        return 1
    return 0
