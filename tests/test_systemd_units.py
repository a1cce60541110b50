"""The appliance's systemd units (systemd/) pass `systemd-analyze verify` and keep their
hardening. Part of `make test`: runs on the Debian build machine, no image needed.

verify is pointed at a scratch root holding the units, this machine's own system units (for
the targets they name) and a stub executable at every path the units run, so it checks the
units themselves: syntax, unknown settings, dependencies and ordering cycles.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
OVERLAYS = REPO / "overlays"
HOST_UNITS = Path("/lib/systemd/system")

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)

EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload")
# Services that run a long-lived appliance process as the unprivileged user.
APPLIANCE_SERVICES = (
    "textbridge.service",
    "textbridge-web.service",
    "textbridge-homeserver.service",
)


# Helpers that only read the appliance's settings and write nothing.
READ_ONLY_SERVICES = ("textbridge-appservice-firewall.service",)


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".path"))


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys repeat, so configparser alone won't do)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: setting outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def executables(path: Path) -> set[str]:
    found = set()
    for key, values in parse(path).get("Service", {}).items():
        if key not in EXEC_KEYS:
            continue
        for value in values:
            cmd = value.lstrip("-@:+!")
            if cmd.startswith("/"):
                found.add(cmd.split()[0])
    return found


def make_root(tmp: Path) -> Path:
    root = tmp / "root"
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for unit in unit_files():
        shutil.copy(unit, system / unit.name)
    for dropin in UNITS.glob("*.d"):
        shutil.copytree(dropin, system / dropin.name)
    # ssh.service comes from Debian's openssh-server in the image; a minimal stand-in lets
    # verify load our drop-in on top of it.
    ssh = root / "usr/lib/systemd/system/ssh.service"
    if not ssh.exists():
        ssh.write_text(
            "[Unit]\nDescription=OpenBSD Secure Shell server\n"
            "[Service]\nExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D\n"
        )
    stubs = {"/usr/sbin/sshd"}
    for unit in [*unit_files(), *UNITS.glob("*.d/*.conf")]:
        stubs |= executables(unit)
    for exe in stubs:
        target = root / exe.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\nexit 0\n")
        target.chmod(0o755)
    (root / "etc/default").mkdir(parents=True, exist_ok=True)
    (root / "etc/default/textbridge").write_text("HOMESERVER=synapse\n")
    return root


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("units"))


def test_units_exist() -> None:
    names = {p.name for p in unit_files()}
    for needed in (
        "textbridge.service",
        "textbridge-web.service",
        "textbridge-homeserver.service",
        "textbridge-firstboot.service",
    ):
        assert needed in names
    # The modem simulator is attached from outside by the image test, never shipped.
    assert "textbridge-modem-sim.service" not in names


def test_systemd_analyze_verify(scratch_root: Path) -> None:
    root = scratch_root
    units = [str(root / "etc/systemd/system" / p.name) for p in unit_files()]
    units.append(str(root / "usr/lib/systemd/system/ssh.service"))
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    # verify exits 0 on some problems it only warns about (unknown keys, bad values).
    problems = [
        line
        for line in output.splitlines()
        if re.search(r"Unknown key|Unknown section|Failed to parse|Invalid|not executable", line)
    ]
    assert not problems, "\n".join(problems)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit with a misspelt setting is reported."""
    root = make_root(tmp_path)
    broken = root / "etc/systemd/system/broken.service"
    broken.write_text("[Service]\nExecStart=/usr/bin/true\nProtectSytem=strict\n")
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/true").write_text("#!/bin/sh\n")
    (root / "usr/bin/true").chmod(0o755)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ProtectSytem" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", [p.name for p in unit_files() if p.suffix == ".service"])
def test_hardening(name: str) -> None:
    service = parse(UNITS / name)["Service"]

    def one(key: str) -> str:
        assert key in service, f"{name}: no {key}="
        return service[key][-1]

    assert one("ProtectSystem") in ("strict", "full")
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("SystemCallFilter").startswith("@system-service")
    assert "RestrictAddressFamilies" in service
    assert "CapabilityBoundingSet" in service
    if name in READ_ONLY_SERVICES:
        # It only reads its settings: no path is opened for writing.
        assert "ReadWritePaths" not in service and one("ProtectSystem") == "strict"
    elif one("ProtectSystem") == "strict":
        assert "/var/lib/textbridge" in " ".join(service.get("ReadWritePaths", []))


@pytest.mark.parametrize("name", APPLIANCE_SERVICES)
def test_appliance_services_run_unprivileged(name: str) -> None:
    service = parse(UNITS / name)["Service"]
    assert service["User"] == ["textbridge"]
    caps = service["CapabilityBoundingSet"][-1].split()
    ambient = service.get("AmbientCapabilities", [""])[-1].split()
    if name == "textbridge-web.service":
        # Port 80, and nothing more.
        assert caps == ["CAP_NET_BIND_SERVICE"] and ambient == ["CAP_NET_BIND_SERVICE"]
    else:
        assert caps == [] and ambient == []


def test_bridge_is_notify_with_watchdog() -> None:
    service = parse(UNITS / "textbridge.service")["Service"]
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] == ["30"]
    assert service["Restart"] == ["on-failure"]
    assert "dialout" in service["SupplementaryGroups"][-1].split()


def test_homeserver_is_restarted_when_it_fails_or_is_killed() -> None:
    """The homeserver watch in `textbridge run` (appliance/homeserver/watch.py) SIGKILLs a
    homeserver that stopped answering; the unit's restart policy is what starts it again,
    and the watch may signal it only because both run as the same user."""
    service = parse(UNITS / "textbridge-homeserver.service")["Service"]
    unit = parse(UNITS / "textbridge-homeserver.service")["Unit"]
    bridge = parse(UNITS / "textbridge.service")["Service"]
    assert service["Type"] == ["notify"]
    # on-failure covers SIGKILL and a watchdog timeout (not a clean SIGTERM stop).
    assert service["Restart"] == ["on-failure"]
    assert int(service["RestartSec"][0]) <= 10
    # Restarts are limited, but far above what the watch asks for (one per two minutes).
    assert int(unit["StartLimitBurst"][0]) >= 5 and int(unit["StartLimitIntervalSec"][0]) <= 600
    assert service["User"] == bridge["User"] == ["textbridge"]
    assert "WatchdogSec" not in service  # Synapse pings no watchdog: only Tuwunel's drop-in


def _settings(homeserver: str, tmp: Path) -> Path:
    root = tmp / homeserver
    env = {**os.environ, "OUT": str(tmp / "out"), "HOMESERVER": homeserver}
    subprocess.run([str(REPO / "image/build.sh"), "settings", str(root)], env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return root / "etc/systemd/system/textbridge-homeserver.service.d/kind.conf"


def test_only_tuwunel_gets_the_sd_notify_watchdog(tmp_path: Path) -> None:
    """image/build.sh writes the homeserver unit's drop-in: Tuwunel 1.9 pings WATCHDOG=1 at
    half of WatchdogSec, so its unit gets the two minutes; a Synapse unit with a watchdog
    would be killed every two minutes, so it gets none."""
    tuwunel = parse(_settings("tuwunel", tmp_path))
    assert tuwunel["Service"]["WatchdogSec"] == ["2min"]
    assert tuwunel["Unit"]["ConditionPathExists"] == ["/var/lib/textbridge/tuwunel.toml"]
    synapse = parse(_settings("synapse", tmp_path))
    assert "Service" not in synapse
    # The drop-in is valid on top of the unit.
    root = make_root(tmp_path / "verify")
    dropin = root / "etc/systemd/system/textbridge-homeserver.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    shutil.copy(_settings("tuwunel", tmp_path), dropin / "kind.conf")
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}",
         str(root / "etc/systemd/system/textbridge-homeserver.service")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Unknown key" not in output and "Invalid" not in output, output


def test_web_may_read_the_journal_for_its_log_page() -> None:
    service = parse(UNITS / "textbridge-web.service")["Service"]
    assert "systemd-journal" in service["SupplementaryGroups"][-1].split()


def test_wireguard_apply_is_oneshot_with_net_admin_only() -> None:
    service = parse(UNITS / "textbridge-wireguard.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["User"] == ["textbridge"]
    assert service["CapabilityBoundingSet"][-1].split() == ["CAP_NET_ADMIN"]
    assert service["AmbientCapabilities"][-1].split() == ["CAP_NET_ADMIN"]
    assert service["ExecStart"][-1].split()[1:3] == ["wireguard", "apply"]
    # A fresh box has no web state yet: the unit waits for the settings instead of failing
    # (namespacing a missing ReadWritePaths= fails a unit; hence also the "-").
    unit = parse(UNITS / "textbridge-wireguard.service")["Unit"]
    assert "/var/lib/textbridge/web/wireguard.json" in unit["ConditionPathExists"]
    assert service["ReadWritePaths"] == ["-/var/lib/textbridge/web"]
    watch = parse(UNITS / "textbridge-wireguard.path")
    assert watch["Path"]["PathChanged"] == ["/var/lib/textbridge/web/wireguard.json"]
    assert watch["Path"]["Unit"] == ["textbridge-wireguard.service"]
    build = (REPO / "image/build.sh").read_text()
    assert "textbridge-wireguard.service" in build and "textbridge-wireguard.path" in build


def test_appservice_firewall_follows_the_homeserver_choice() -> None:
    service = parse(UNITS / "textbridge-appservice-firewall.service")["Service"]
    assert service["Type"] == ["oneshot"] and service["User"] == ["textbridge"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert service["ExecStart"][-1].split()[1:4] == ["homeserver", "firewall", "--apply"]
    assert "nftables.service" in parse(UNITS / "textbridge-appservice-firewall.service")[
        "Unit"]["After"][-1]
    watch = parse(UNITS / "textbridge-appservice-firewall.path")
    assert watch["Path"]["PathChanged"] == ["/var/lib/textbridge/web/homeserver.json"]
    assert watch["Path"]["Unit"] == ["textbridge-appservice-firewall.service"]
    build = (REPO / "image" / "build.sh").read_text()
    assert "textbridge-appservice-firewall.service" in build
    assert "textbridge-appservice-firewall.path" in build


def test_firstboot_runs_once() -> None:
    unit = parse(UNITS / "textbridge-firstboot.service")["Unit"]
    assert "!/var/lib/textbridge/.firstboot-done" in unit["ConditionPathExists"]
    script = (OVERLAYS / "usr/lib/textbridge/firstboot").read_text()
    assert ".firstboot-done" in script


def test_hardware_watchdog_and_volatile_journal() -> None:
    cp = configparser.ConfigParser()
    cp.read(OVERLAYS / "etc/systemd/system.conf.d/textbridge-watchdog.conf")
    assert cp["Manager"]["RuntimeWatchdogSec"] == "15"
    cp = configparser.ConfigParser()
    cp.read(OVERLAYS / "etc/systemd/journald.conf.d/textbridge.conf")
    assert cp["Journal"]["Storage"] == "volatile"


def test_overlay_scripts_are_valid_shell() -> None:
    for script in sorted((OVERLAYS / "usr/lib/textbridge").iterdir()):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_firewall_ruleset_parses() -> None:
    """nftables.service loads this at boot; `nft -c` checks it without applying it."""
    ruleset = OVERLAYS / "etc/nftables.conf"
    proc = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert proc.returncode == 0, proc.stderr
    text = ruleset.read_text()
    assert "policy drop" in text and "192.168.0.0/16" in text and "fc00::/7" in text


def test_avahi_service_announces_http() -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(OVERLAYS / "etc/avahi/services/textbridge.service").getroot()
    assert root.findtext("service/type") == "_http._tcp"
    assert root.findtext("service/port") == "80"


@pytest.mark.parametrize("name", [p.name for p in unit_files() if p.suffix == ".service"])
def test_exposure_level(name: str, scratch_root: Path) -> None:
    """systemd's own hardening score: "OK" (below 5.0) for every unit; the long-running
    appliance services stay at or below 2.5 (as built: about 1.7-1.9)."""
    root = scratch_root
    proc = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={root}",
            "--no-pager",
            str(root / "etc/systemd/system" / name),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    level = float(match.group(1))
    assert level < (2.5 if name in APPLIANCE_SERVICES else 5.0), proc.stdout
