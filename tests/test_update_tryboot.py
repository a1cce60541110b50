"""The tryboot backend as rauc runs it: a process per verb, state in autoboot.txt and
tryboot.state on the firmware partition (here a directory). tests/test_update_health.py
runs it under a real rauc service; this covers the verbs one by one and their refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.update_rig import SLOTS, TOP, firmware_boot

AUTOBOOT = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


def _backend(firmware: Path, *args: str, dt: Path | None = None) -> tuple[int, str, str]:
    extra = ["--dt-partition", str(dt)] if dt is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "update", "bootloader", "--firmware", str(firmware),
         "--slots", SLOTS, *extra, *args],
        capture_output=True, text=True, env={"PYTHONPATH": str(TOP)}, timeout=60, check=False)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def test_a_try_is_committed_only_when_marked_good(tmp_path: Path) -> None:
    (tmp_path / "autoboot.txt").write_text(AUTOBOOT)
    assert _backend(tmp_path, "get-primary") == (0, "A", "")
    # What rauc does around an install into B.
    assert _backend(tmp_path, "set-state", "B", "bad")[0] == 0
    assert _backend(tmp_path, "get-state", "B")[1] == "bad"
    assert _backend(tmp_path, "set-primary", "B")[0] == 0
    assert _backend(tmp_path, "get-primary")[1] == "B"
    assert _backend(tmp_path, "get-state", "B")[1] == "good"
    assert (tmp_path / "autoboot.txt").read_text() == AUTOBOOT  # only a try so far
    assert (firmware_boot(tmp_path, False), firmware_boot(tmp_path, True)) == ("A", "B")
    assert _backend(tmp_path, "set-state", "B", "good")[0] == 0
    assert (firmware_boot(tmp_path, False), firmware_boot(tmp_path, True)) == ("B", "A")
    assert _backend(tmp_path, "get-primary")[1] == "B"
    assert not list(tmp_path.glob("*.new"))


def test_a_bad_try_leaves_the_committed_slot(tmp_path: Path) -> None:
    (tmp_path / "autoboot.txt").write_text(AUTOBOOT)
    _backend(tmp_path, "set-primary", "B")
    assert _backend(tmp_path, "set-state", "B", "bad")[0] == 0
    assert _backend(tmp_path, "get-primary")[1] == "A"
    assert (tmp_path / "autoboot.txt").read_text() == AUTOBOOT
    # Making the committed slot primary again is allowed and changes nothing on the card.
    assert _backend(tmp_path, "set-primary", "A")[0] == 0
    assert (tmp_path / "autoboot.txt").read_text() == AUTOBOOT


def test_the_running_slot_comes_from_the_firmware(tmp_path: Path) -> None:
    (tmp_path / "autoboot.txt").write_text(AUTOBOOT)
    dt = tmp_path / "partition"
    dt.write_bytes((3).to_bytes(4, "big"))
    assert _backend(tmp_path, "get-current", dt=dt) == (0, "B", "")
    dt.write_bytes((7).to_bytes(4, "big"))
    assert _backend(tmp_path, "get-current", dt=dt) == (1, "", "tryboot: partition 7 is not a slot")


def test_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    assert _backend(tmp_path, "get-primary") == (1, "", f"tryboot: no autoboot.txt in {tmp_path}")
    (tmp_path / "autoboot.txt").write_text(AUTOBOOT)
    for args, words in ((("set-primary", "C"), "unknown slot 'C'"),
                        (("set-state", "A", "maybe"), "bad arguments for set-state"),
                        (("get-state",), "bad arguments for get-state")):
        code, out, err = _backend(tmp_path, *args)
        assert (code, out) == (1, "") and words in err
    assert (tmp_path / "autoboot.txt").read_text() == AUTOBOOT
    assert not (tmp_path / "tryboot.state").exists()
