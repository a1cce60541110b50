"""Installing a bundle: check it, let rauc write the spare slot, remember what waits for its
check, and restart into the new slot with the firmware's one-shot try."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.update import bundle as bundles
from appliance.update import pending as pendings
from appliance.update.rauc import Rauc, RaucError, SystemStatus

Reboot = Callable[[], Awaitable[None]]
DT_MODEL = Path("/proc/device-tree/model")


def board_refusal(model: Path = DT_MODEL) -> str | None:
    """The Pi 3's firmware has no tryboot: a new slot could not be tried once and left by
    itself, so a Pi 3 gets no updates until another way back exists (docs/update.md)."""
    try:
        name = model.read_bytes().rstrip(b"\0").decode("ascii", "replace")
    except OSError:
        return None  # not a Pi's device tree (a development machine)
    if name.startswith("Raspberry Pi 3"):
        return ("Updates need a Raspberry Pi 4 or 5: a Raspberry Pi 3 cannot try a new "
                f"system once and go back by itself if it fails. {bundles.NOT_INSTALLED}")
    return None


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str  # plain words for the owner
    version: str = ""


async def install(rauc: Rauc, bundle: Path, *, data_dir: Path, running: str,
                  reboot: Reboot | None = None, model: Path = DT_MODEL) -> Outcome:
    refusal = board_refusal(model)
    if refusal:
        return Outcome(False, refusal)
    try:
        info = await bundles.check(rauc, bundle, running)
        status: SystemStatus = await rauc.status()
    except bundles.UpdateRefused as exc:
        return Outcome(False, str(exc))
    except RaucError as exc:
        return Outcome(False, f"{exc.message} {bundles.NOT_INSTALLED}")
    target = status.other_slot()
    if target is None:  # check() refuses this already; kept for the type checker
        return Outcome(False, f"There is no spare system slot. {bundles.NOT_INSTALLED}")
    try:
        await rauc.install(bundle)
    except RaucError as exc:
        # rauc marked the spare slot bad before writing it: the next boot is the old one.
        return Outcome(False, f"The update could not be written ({exc.detail or exc.message}). "
                       f"Textbridge keeps running {running}; nothing was lost.")
    pendings.save(data_dir, pendings.Pending(from_version=running, to_version=info.version,
                                             from_slot=status.booted, slot=target.bootname))
    if reboot is None:
        return Outcome(True, f"Version {info.version} is written to the spare system. It is "
                       "tried at the next restart; if its check fails, Textbridge goes back "
                       f"to {running} by itself.", info.version)
    await reboot()
    return Outcome(True, f"Version {info.version} is written. Textbridge is restarting to try "
                   f"it; if its check fails, it goes back to {running} by itself.", info.version)


def describe(status: SystemStatus, running: str, pending: pendings.Pending | None) -> str:
    """`textbridge update status` in plain words."""
    booted = status.booted_slot()
    other = status.other_slot()
    lines = [f"Textbridge {running} runs from system slot {status.booted or 'unknown'}"
             f"{' (' + booted.boot_status + ')' if booted and booted.boot_status else ''}."]
    if other is not None:
        state = {"good": "can start", "bad": "is marked bad and will not start"}.get(
            other.boot_status, other.boot_status or "unknown")
        lines.append(f"The spare slot {other.bootname} {state}.")
    primary = next((s for s in status.slots if s.name == status.boot_primary), None)
    if primary is not None:
        lines.append(f"The next start uses slot {primary.bootname}.")
    if pending is not None:
        if pending.outcome == "":
            lines.append(f"The update to {pending.to_version} waits for its check.")
        elif pending.outcome == "failed":
            lines.append(f"The update to {pending.to_version} failed its check "
                         f"({pending.reason}).")
    lines.append(f"Board: {status.compatible}.")
    return "\n".join(lines)
