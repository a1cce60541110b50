"""Bundles are checked with the real rauc (`rauc info` against the keyring, the rauc
service's `rauc status`) before anything is written, and every refusal is plain words with
nothing changed: the spare slot's bytes, rauc's slot states and the data directory stay as
they were. tests/update_rig.py says what of the set-up is real."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import __version__
from appliance.update import bundle as bundles
from appliance.update import install
from appliance.update import version as versions
from tests.update_rig import (
    COMPATIBLE,
    MAKE_BUNDLE,
    TOP,
    Keys,
    RaucRig,
    dev_key,
    make_bundle,
    needs_rauc,
    rauc_rig,
)

pytestmark = needs_rauc
NEWER = "0.9.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return dev_key(tmp_path_factory.mktemp("dev-key"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RaucRig]:
    # One rig for all refusals: each test checks that it is left exactly as it was.
    with rauc_rig(tmp_path_factory.mktemp("rig"), keys.cert) as rig:
        yield rig


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _install(rig: RaucRig, tmp: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    config = tmp / "config.toml"
    config.write_text(f'[general]\ndata_dir = "{tmp / "data"}"\n')
    return subprocess.run(
        [sys.executable, "-m", "appliance", "update", "--config", str(config),
         "--rauc-conf", str(rig.conf), "install", "--no-reboot", str(bundle)],
        capture_output=True, text=True, env=rig.cli_env(), timeout=120, check=False)


def _untouched(rig: RaucRig, tmp: Path, before: tuple[str, str]) -> None:
    assert (_digest(rig.slot_b), rig.firmware.joinpath("autoboot.txt").read_text()) == before
    assert not (tmp / "data" / "update" / "pending.json").exists()
    assert not (rig.firmware / "tryboot.state").exists()


def test_dev_key_is_private_and_make_bundle_signs_against_the_keyring(
        tmp_path: Path, keys: Keys) -> None:
    assert keys.key.stat().st_mode & 0o777 == 0o600
    assert keys.key.parent.stat().st_mode & 0o777 == 0o700
    out = make_bundle(tmp_path, keys, NEWER, fmt="verity", keyring=keys.cert)
    info = subprocess.run(["rauc", f"--keyring={keys.cert}", "info", "--output-format=json",
                           str(out)], capture_output=True, text=True, check=True)
    manifest = json.loads(info.stdout)
    assert (manifest["compatible"], manifest["version"]) == (COMPATIBLE, NEWER)
    assert [next(iter(i)) for i in manifest["images"]] == ["rootfs"]
    # Signed by one key but checked against another keyring: the build itself refuses.
    other = dev_key(tmp_path / "other")
    with pytest.raises(subprocess.CalledProcessError):
        make_bundle(tmp_path, keys, NEWER, name="mismatch", keyring=other.cert)


def test_make_bundle_target_builds_from_a_rootfs_directory(tmp_path: Path, keys: Keys) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("textbridge\n")
    out = tmp_path / "out.raucb"
    done = subprocess.run(
        ["make", "--no-print-directory", "bundle", f"BUNDLE_ROOTFS={rootfs}",
         f"BUNDLE_CERT={keys.cert}", f"BUNDLE_KEY={keys.key}", f"BUNDLE_OUT={out}"],
        cwd=TOP, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    info = subprocess.run(["rauc", f"--keyring={keys.cert}", "info", "--output-format=json",
                           str(out)], capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["version"] == __version__
    missing = subprocess.run(["make", "--no-print-directory", "bundle",
                              f"BUNDLE_ROOTFS={tmp_path / 'nothing'}", f"BUNDLE_OUT={out}",
                              f"BUNDLE_CERT={keys.cert}", f"BUNDLE_KEY={keys.key}"],
                             cwd=TOP, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode != 0 and "make image" in missing.stderr


async def test_a_good_bundle_passes(rig: RaucRig, tmp_path: Path, keys: Keys) -> None:
    info = await bundles.check(rig.rauc(), make_bundle(tmp_path, keys, NEWER), __version__)
    assert (info.compatible, info.version) == (COMPATIBLE, NEWER)


def _unsigned(tmp: Path, keys: Keys) -> Path:
    good = make_bundle(tmp, keys, NEWER, name="to-unsign")
    content = tmp / "unsigned-content"
    subprocess.run(["unsquashfs", "-q", "-d", str(content), str(good)], check=True,
                   capture_output=True)
    out = tmp / "unsigned.raucb"
    subprocess.run(["mksquashfs", str(content), str(out), "-quiet", "-all-root", "-noappend"],
                   check=True, capture_output=True)
    return out


def _cut(keep: float | int) -> object:
    def cut(tmp: Path, keys: Keys) -> Path:
        good = make_bundle(tmp, keys, NEWER, name="to-cut", payload=os.urandom(256 << 10))
        data = good.read_bytes()
        out = tmp / "cut.raucb"
        out.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
        return out

    return cut


CASES = {
    "unsigned": (_unsigned, "not a signed Textbridge update"),
    "wrongly signed": (lambda tmp, keys: make_bundle(tmp, dev_key(tmp / "stranger"), NEWER,
                                                     name="stranger"),
                       "not signed by the publisher this Textbridge trusts"),
    "another board": (lambda tmp, keys: make_bundle(tmp, keys, NEWER, name="other-board",
                                                    compatible="someone-elses-board"),
                      "for another kind of device (someone-elses-board)"),
    "older": (lambda tmp, keys: make_bundle(tmp, keys, "0.0.9"),
              f"version 0.0.9, and Textbridge already runs {__version__}, which is newer"),
    "same": (lambda tmp, keys: make_bundle(tmp, keys, __version__),
             f"version {__version__}, and Textbridge already runs {__version__}. Only a newer"),
    "cut in the middle": (_cut(0.66), "damaged or incomplete"),
    "cut in the signature": (_cut(-100), "damaged or incomplete"),
    "cut to nothing": (_cut(5), "empty or incomplete"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_bundle_is_refused_in_plain_words_and_nothing_changes(
        case: str, rig: RaucRig, tmp_path: Path, keys: Keys) -> None:
    build, words = CASES[case]
    bundle = build(tmp_path, keys)
    before = (_digest(rig.slot_b), rig.firmware.joinpath("autoboot.txt").read_text())
    status_before = rig.rauc()._run_blocking(["status", "--output-format=json"], 30).stdout
    done = _install(rig, tmp_path, bundle)
    assert done.returncode == 1
    assert words in done.stderr, done.stderr
    assert "Nothing was changed" in done.stderr and "Traceback" not in done.stderr
    _untouched(rig, tmp_path, before)
    assert rig.rauc()._run_blocking(["status", "--output-format=json"], 30).stdout \
        == status_before


def test_a_bundle_larger_than_the_slot_is_refused(tmp_path: Path, keys: Keys) -> None:
    with rauc_rig(tmp_path / "small", keys.cert, slot_size=1 << 20) as rig:
        bundle = make_bundle(tmp_path, keys, NEWER)
        before = (_digest(rig.slot_b), rig.firmware.joinpath("autoboot.txt").read_text())
        done = _install(rig, tmp_path, bundle)
        assert done.returncode == 1
        assert "holds only 1 MiB. There is not enough space" in done.stderr, done.stderr
        _untouched(rig, tmp_path, before)


def test_the_bundle_builder_refuses_a_bad_version(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "r").mkdir()
    done = subprocess.run([str(MAKE_BUNDLE), "--rootfs", str(tmp_path / "r"), "--out",
                           str(tmp_path / "x.raucb"), "--version", "latest", "--cert",
                           str(keys.cert), "--key", str(keys.key)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "dotted numbers" in done.stderr


def test_version_order() -> None:
    assert versions.newer("0.3.0", "0.2.0") and versions.newer("0.10", "0.9.9")
    assert versions.newer("0.2", "0.2.0") is False and versions.newer("0.2.0", "0.3") is False
    assert versions.newer("0.3.0-rc1", "0.2.0") is None


def _cli(rig: RaucRig, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp / "config.toml"
    config.write_text(f'[general]\ndata_dir = "{tmp / "data"}"\n')
    return subprocess.run(
        [sys.executable, "-m", "appliance", "update", "--config", str(config),
         "--rauc-conf", str(rig.conf), *args],
        capture_output=True, text=True, env=rig.cli_env(), timeout=120, check=False)


def test_install_and_status_from_the_command_line(tmp_path: Path, keys: Keys) -> None:
    with rauc_rig(tmp_path / "own", keys.cert) as rig:
        status = _cli(rig, tmp_path, "status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines() == [
            f"Textbridge {__version__} runs from system slot A (good).",
            "The spare slot B can start.",
            "The next start uses slot A.",
            f"Board: {COMPATIBLE}.",
        ]
        bundle = make_bundle(tmp_path, keys, NEWER)
        done = _cli(rig, tmp_path, "install", "--no-reboot", str(bundle))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Version {NEWER} is written to the spare system.")
        image = subprocess.run(["unsquashfs", "-cat", str(bundle), "rootfs.ext4"],
                               capture_output=True, check=True).stdout
        assert rig.slot_b.read_bytes()[: len(image)] == image
        after = _cli(rig, tmp_path, "status").stdout
        assert "The next start uses slot B." in after
        assert f"The update to {NEWER} waits for its check." in after
        pending = tmp_path / "data" / "update" / "pending.json"
        assert json.loads(pending.read_text())["to_version"] == NEWER
        assert pending.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("model", "refused"), [
    ("Raspberry Pi 3 Model B Plus Rev 1.3", True),
    ("Raspberry Pi 4 Model B Rev 1.4", False),
    ("Raspberry Pi 5 Model B Rev 1.0", False),
])
async def test_a_pi_3_is_not_offered_updates(rig: RaucRig, tmp_path: Path, keys: Keys,
                                             model: str, refused: bool) -> None:
    tree = tmp_path / "model"
    tree.write_bytes(model.encode() + b"\0")  # as the device tree has it
    before = _digest(rig.slot_b)
    bundle = make_bundle(tmp_path, keys, "0.0.1") if not refused else make_bundle(
        tmp_path, keys, NEWER)
    outcome = await install.install(rig.rauc(), bundle, data_dir=tmp_path / "data",
                                    running=__version__, model=tree)
    assert not outcome.ok
    if refused:
        assert outcome.message.startswith("Updates need a Raspberry Pi 4 or 5")
    else:  # past the board check: refused for its version instead
        assert "Only a newer version can be installed" in outcome.message
    assert _digest(rig.slot_b) == before
