"""Checks a bundle before anything is written, and says in plain words why one is refused.

rauc itself checks the signature against the keyring (`rauc info`); this adds what rauc
leaves to the system: the board (compatible), no downgrade, and room in the slot. Nothing
here writes anywhere, so a refused bundle leaves the running system as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.update import version as versions
from appliance.update.rauc import BundleInfo, Rauc, RaucError, SystemStatus

NOT_INSTALLED = "Nothing was changed."
# rauc puts the CMS signature's size in the last 8 bytes of a bundle.
SIGNATURE_SIZE_BYTES = 8
SQUASHFS_MAGIC = b"hsqs"
SQUASHFS_HEAD = 96
SQUASHFS_PAD = 4096


class UpdateRefused(Exception):
    """The update cannot be installed; str() is the plain words a person reads."""


def _plain_rauc(detail: str) -> str:
    low = detail.lower()
    if "no such file" in low:
        return "The update file is not there."
    if "signature size is 0" in low:
        return f"This file is not a signed Textbridge update. {NOT_INSTALLED}"
    if "exceeds bundle size" in low or "invalid bundle" in low or "squashfs" in low:
        return (f"This update file is damaged or incomplete (perhaps it did not finish "
                f"downloading or copying). {NOT_INSTALLED}")
    if "signature" in low or "verif" in low or "certificate" in low:
        return (f"This update is not signed by the publisher this Textbridge trusts, so it "
                f"may not be genuine. {NOT_INSTALLED}")
    return f"This update file could not be read ({detail}). {NOT_INSTALLED}"


def _looks_whole(path: Path) -> str | None:
    """A quick look before rauc: a file cut short has no valid signature size at its end."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            return "The update must be a file."
        if size <= SIGNATURE_SIZE_BYTES:
            return f"This update file is empty or incomplete. {NOT_INSTALLED}"
        with path.open("rb") as f:
            head = f.read(SQUASHFS_HEAD)
            f.seek(size - SIGNATURE_SIZE_BYTES)
            sig = int.from_bytes(f.read(SIGNATURE_SIZE_BYTES), "big")
    except FileNotFoundError:
        return "The update file is not there."
    except OSError as exc:
        return f"The update file could not be read ({exc.strerror}). {NOT_INSTALLED}"
    damaged = (f"This update file is damaged or incomplete (perhaps it did not finish "
               f"downloading or copying). {NOT_INSTALLED}")
    # A bundle starts with a squashfs whose superblock says how long it is; the signature
    # comes after it (after the verity hash tree in a verity bundle).
    squashed = int.from_bytes(head[40:48], "little") if head[:4] == SQUASHFS_MAGIC else 0
    if size < squashed:
        return damaged
    if sig == 0:
        padded = -(-squashed // SQUASHFS_PAD) * SQUASHFS_PAD
        if squashed and size <= padded:
            return f"This file is not a signed Textbridge update. {NOT_INSTALLED}"
        return damaged
    if sig > size - SIGNATURE_SIZE_BYTES - squashed:
        return damaged
    return None


def device_size(device: str) -> int:
    """Bytes a slot holds: a block device's length, or a file's (tests, loop images)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def check_manifest(info: BundleInfo, status: SystemStatus, running: str) -> None:
    if info.compatible != status.compatible:
        raise UpdateRefused(
            f"This update is for another kind of device ({info.compatible or 'unnamed'}), "
            f"not for this Textbridge ({status.compatible}). {NOT_INSTALLED}")
    newer = versions.newer(info.version, running)
    if newer is None:
        raise UpdateRefused(
            f"This update's version ({info.version or 'none'}) cannot be compared with the "
            f"running {running}, so it might be older. {NOT_INSTALLED}")
    if not newer:
        same = versions.parse(info.version) == versions.parse(running)
        raise UpdateRefused(
            f"This update is version {info.version}, and Textbridge already runs "
            f"{running}{'' if same else ', which is newer'}. Only a newer version can be "
            f"installed. {NOT_INSTALLED}")
    target = status.other_slot()
    if target is None:
        raise UpdateRefused(f"This Textbridge has no second system slot to install into. "
                            f"{NOT_INSTALLED}")
    try:
        room = device_size(target.device)
    except OSError as exc:
        raise UpdateRefused(f"The spare system slot ({target.device}) cannot be opened "
                            f"({exc.strerror}). {NOT_INSTALLED}") from None
    need = max((image.size for image in info.images if image.slotclass == "rootfs"),
               default=0)
    if need > room:
        raise UpdateRefused(
            f"This update needs {_mib(need)}, but the spare system slot holds only "
            f"{_mib(room)}. There is not enough space; {NOT_INSTALLED.lower()}")


async def check(rauc: Rauc, bundle: Path, running: str) -> BundleInfo:
    """The bundle's manifest if it may be installed on this system; else UpdateRefused."""
    problem = _looks_whole(bundle)
    if problem:
        raise UpdateRefused(problem)
    try:
        info = await rauc.info(bundle)
    except RaucError as exc:
        raise UpdateRefused(_plain_rauc(exc.detail or exc.message)) from None
    try:
        status = await rauc.status()
    except RaucError as exc:
        raise UpdateRefused(f"{exc.message} {NOT_INSTALLED}") from None
    check_manifest(info, status, running)
    return info
