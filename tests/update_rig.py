"""A real rauc for the update tests: a private D-Bus system bus, `rauc service` with two
file-backed root slots, and our tryboot backend as rauc's custom bootloader on a firmware
directory. Bundles are built by scripts/make-bundle, signed with a development key made here.

What is not real: the slots are files, not partitions; the Pi firmware is played by
`firmware_boot` below, which reads autoboot.txt as the firmware documents it; a "reboot" is
restarting the rauc service with the slot the firmware chose (`--override-boot-slot`). The
plain bundle format is used for installs, because this host has no device-mapper for
rauc's verity bundles.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.update.rauc import Rauc

TOP = Path(__file__).resolve().parent.parent
MAKE_BUNDLE = TOP / "scripts" / "make-bundle"
COMPATIBLE = "textbridge-rpi-arm64"
SLOTS = "A=2,B=3"

needs_rauc = pytest.mark.skipif(
    shutil.which("rauc") is None or shutil.which("mksquashfs") is None
    or shutil.which("dbus-daemon") is None or os.geteuid() != 0,
    reason="needs rauc, squashfs-tools and dbus-daemon (scripts/install-deps test) and root "
    "(rauc mounts bundles on a loop device)")


@dataclass
class Keys:
    cert: Path
    key: Path


def dev_key(directory: Path) -> Keys:
    subprocess.run([str(MAKE_BUNDLE), "dev-key", str(directory)], check=True,
                   capture_output=True)
    return Keys(directory / "dev.cert.pem", directory / "dev.key.pem")


def make_bundle(tmp: Path, keys: Keys, version: str, *, compatible: str = COMPATIBLE,
                fmt: str = "plain", name: str | None = None, payload: bytes = b"",
                keyring: Path | None = None) -> Path:
    rootfs = tmp / f"rootfs-{name or version}"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "textbridge-version").write_text(version + "\n")
    # Incompressible bytes: rauc wants a verity bundle's squashfs larger than one block.
    (rootfs / "payload").write_bytes(payload or os.urandom(64 << 10))
    out = tmp / f"{name or version}.raucb"
    argv = [str(MAKE_BUNDLE), "--rootfs", str(rootfs), "--out", str(out), "--version", version,
            "--cert", str(keys.cert), "--key", str(keys.key), "--compatible", compatible,
            "--format", fmt, "--slack-mib", "4"]
    if keyring is not None:
        argv += ["--keyring", str(keyring)]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return out


def firmware_boot(firmware: Path, tryboot: bool) -> str:
    """The bootname the Pi firmware would start, as its documentation says: with
    tryboot_a_b=1, the [tryboot] section's boot_partition on a tryboot reboot, else [all]'s.
    (The real firmware is not run here: docs/update.md.)"""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for raw in (firmware / "autoboot.txt").read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif "=" in line:
            key, value = line.split("=", 1)
            sections.setdefault(current, {})[key] = value
    chosen = sections["all"]
    if tryboot and sections["all"].get("tryboot_a_b") == "1" and "tryboot" in sections:
        chosen = {**chosen, **sections["tryboot"]}
    by_partition = {int(p): n for n, p in (s.split("=") for s in SLOTS.split(","))}
    return by_partition[int(chosen["boot_partition"])]


class RaucRig:
    def __init__(self, tmp: Path, keyring: Path, slot_size: int = 16 << 20) -> None:
        self.tmp = tmp
        self.keyring = keyring
        self.firmware = tmp / "firmware"
        self.firmware.mkdir(parents=True)
        (self.firmware / "autoboot.txt").write_text(
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
        self.slot_a = tmp / "slot-a.img"
        self.slot_b = tmp / "slot-b.img"
        for slot in (self.slot_a, self.slot_b):
            with slot.open("wb") as f:
                f.truncate(slot_size)
        backend = tmp / "rauc-bootloader"
        backend.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={TOP} exec {sys.executable} -m appliance update bootloader "
            f"--firmware {self.firmware} --slots {SLOTS} \"$@\"\n")
        backend.chmod(0o755)
        (tmp / "mnt").mkdir()
        self.conf = tmp / "system.conf"
        self.conf.write_text(
            "[system]\n"
            f"compatible={COMPATIBLE}\n"
            "bootloader=custom\n"
            "bundle-formats=plain verity\n"
            f"statusfile={tmp / 'rauc.status'}\n"
            f"mountprefix={tmp / 'mnt'}\n"
            "[handlers]\n"
            f"bootloader-custom-backend={backend}\n"
            "[keyring]\n"
            f"path={keyring}\n"
            "[slot.rootfs.0]\n"
            f"device={self.slot_a}\ntype=raw\nbootname=A\n"
            "[slot.rootfs.1]\n"
            f"device={self.slot_b}\ntype=raw\nbootname=B\n")
        self.bus = tmp / "bus"
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus}"}
        self.dbus: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.booted = ""

    def start_bus(self) -> None:
        conf = self.tmp / "dbus.conf"
        conf.write_text(
            "<busconfig><type>system</type>"
            f"<listen>unix:path={self.bus}</listen><auth>EXTERNAL</auth>"
            "<policy context=\"default\"><allow user=\"root\"/><allow own=\"*\"/>"
            "<allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy>"
            "</busconfig>")
        self.dbus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={conf}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(self.bus.exists, "the private D-Bus")

    def boot(self, slot: str) -> None:
        """Start rauc's service as on a system booted from `slot`."""
        self.stop_service()
        self.booted = slot
        log = (self.tmp / f"rauc-service-{slot}.log").open("ab")
        self.service = subprocess.Popen(
            ["rauc", f"--conf={self.conf}", "service", f"--override-boot-slot={slot}"],
            env={**os.environ, **self.env}, stdout=log, stderr=log)
        log.close()
        probe = self.rauc()
        _wait_for(lambda: probe._run_blocking(["status"], 10).returncode == 0,
                  "rauc service")

    def reboot(self, tryboot: bool) -> str:
        slot = firmware_boot(self.firmware, tryboot)
        self.boot(slot)
        return slot

    def rauc(self) -> Rauc:
        return Rauc(conf=self.conf, env=self.env)

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "PYTHONPATH": str(TOP)}

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.terminate()
            try:
                self.service.wait(10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
            self.service = None

    def close(self) -> None:
        self.stop_service()
        if self.dbus is not None:
            self.dbus.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dbus.wait(10)
            self.dbus = None


def _wait_for(ready: object, what: str, timeout: float = 20.0) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start")
        time.sleep(0.05)


@contextlib.contextmanager
def rauc_rig(tmp: Path, keyring: Path, slot_size: int = 16 << 20) -> Iterator[RaucRig]:
    rig = RaucRig(tmp, keyring, slot_size)
    try:
        rig.start_bus()
        rig.boot("A")
        yield rig
    finally:
        rig.close()
