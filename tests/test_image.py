"""Boots the built image under qemu-system-aarch64 and checks the appliance from outside.

Skipped unless TEXTBRIDGE_IMAGE_TEST=1 (`make image-test` sets it after building the image,
by default with HOMESERVER=synapse: Tuwunel's release cannot be downloaded on the build
machines). The image under test is a copy of build/<name>.img.xz, with test-only additions:
  * `ssh` and `authorized_keys` on the firmware partition (the documented way to turn SSH on),
    so the test can look inside;
  * a udev rule in the root filesystem naming qemu's emulated USB serial adapter
    /dev/textbridge-modem, as the modem engineer's rule does for real LTE sticks;
  * the disk grown to 4 GiB, as if flashed to a larger card.
The modem simulator (`textbridge modem-sim`) runs on this machine and is attached to the VM as
that USB serial adapter (qemu usb-serial over the simulator's pty). The VM boots the image's
own kernel and initrd, read out of its root partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
WORK = BUILD / "image-test"
HOMESERVER = os.environ.get("HOMESERVER", "synapse")
DISK_SIZE = 4 * 1024**3
READY_TIMEOUT = float(os.environ.get("TEXTBRIDGE_IMAGE_READY_TIMEOUT", "1800"))
SERVICES = ("textbridge-homeserver.service", "textbridge.service", "textbridge-web.service")

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        os.environ.get("TEXTBRIDGE_IMAGE_TEST") != "1",
        reason="boots the image under qemu: run `make image-test` (TEXTBRIDGE_IMAGE_TEST=1)",
    ),
]

TEST_UDEV_RULE = """\
# Test only (tests/test_image.py): qemu's usb-serial adapter carries the modem simulator.
ACTION=="remove", GOTO="tb_test_end"
SUBSYSTEM=="tty", KERNEL=="ttyUSB*", ENV{ID_VENDOR_ID}=="0403", SYMLINK+="textbridge-modem"
SUBSYSTEM=="tty", KERNEL=="ttyUSB*", ATTRS{idVendor}=="0403", SYMLINK+="textbridge-modem"
LABEL="tb_test_end"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


@dataclass
class Partition:
    start: int  # bytes
    size: int


def partitions(image: Path) -> list[Partition]:
    table = json.loads(run("sfdisk", "--json", str(image)).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return [Partition(p["start"] * sector, p["size"] * sector) for p in table["partitions"]]


def image_name() -> str:
    return run(
        str(REPO / "image/build.sh"), "name", env={**os.environ, "HOMESERVER": HOMESERVER}
    ).stdout.strip()


@dataclass
class VM:
    work: Path
    ports: dict[str, int]
    key: Path
    proc: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    powered_on: float = 0.0
    ready_after: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.key),
                "-p",
                str(self.ports["ssh"]),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                command,
            ],
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ssh {command!r} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def http(self, port_name: str, path: str, timeout: float = 10) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.ports[port_name]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def sim_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['sim']}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")


def prepare_disk(work: Path, key: Path) -> tuple[Path, Path, Path]:
    """The test's copy of the image with the test-only additions: (disk, kernel, initrd)."""
    xz = BUILD / f"{image_name()}.img.xz"
    if not xz.exists():
        pytest.fail(f"{xz} is missing: build it with `make image HOMESERVER={HOMESERVER}`")
    disk = work / "disk.img"
    with disk.open("wb") as out:
        subprocess.run(["xz", "-dc", "-T0", str(xz)], stdout=out, check=True)
    fw, root, _data = partitions(disk)
    # SSH on, the documented way: files on the firmware partition.
    (work / "ssh").write_text("")
    shutil.copy(key.with_suffix(".pub"), work / "authorized_keys")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run(
        "mcopy",
        "-o",
        "-i",
        f"{disk}@@{fw.start}",
        str(work / "ssh"),
        str(work / "authorized_keys"),
        "::/",
        env=env,
    )
    # The root filesystem, edited offline with debugfs: the test's udev rule in, kernel out.
    rootfs = work / "root.ext4"
    run(
        "dd",
        f"if={disk}",
        f"of={rootfs}",
        "bs=1M",
        f"skip={root.start // 2**20}",
        f"count={root.size // 2**20}",
        "status=none",
    )
    rule = work / "99-textbridge-test-modem.rules"
    rule.write_text(TEST_UDEV_RULE)
    listing = run("debugfs", "-R", "ls -p /boot", str(rootfs)).stdout
    names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
    kernel_name = sorted(n for n in names if n.startswith("vmlinuz-"))[-1]
    kver = kernel_name.removeprefix("vmlinuz-")
    kernel, initrd = work / "vmlinuz", work / "initrd.img"
    for f in (kernel, initrd):
        f.unlink(missing_ok=True)
    cmds = work / "debugfs.cmd"
    cmds.write_text(
        f"dump /boot/{kernel_name} {kernel}\n"
        f"dump /boot/initrd.img-{kver} {initrd}\n"
        "cd /etc/udev/rules.d\n"
        f"write {rule} {rule.name}\n"
        f"sif /etc/udev/rules.d/{rule.name} mode 0100644\n"
    )
    run("debugfs", "-w", "-f", str(cmds), str(rootfs))
    run(
        "dd",
        f"if={rootfs}",
        f"of={disk}",
        "bs=1M",
        f"seek={root.start // 2**20}",
        "conv=notrunc",
        "status=none",
    )
    rootfs.unlink()
    assert kernel.stat().st_size > 1_000_000 and initrd.stat().st_size > 1_000_000
    # As if written to a 4 GiB card: the data partition should grow into the rest.
    os.truncate(disk, DISK_SIZE)
    return disk, kernel, initrd


def wait_ready(vm: VM) -> None:
    deadline = vm.powered_on + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        assert vm.proc is not None and vm.proc.poll() is None, "qemu exited"
        try:
            states = vm.ssh("systemctl is-active " + " ".join(SERVICES), check=False, timeout=30)
            code, _ = vm.http("homeserver", "/_matrix/client/versions", timeout=5)
            web, _ = vm.http("web", "/", timeout=5)
            last = f"{states.split()} versions={code} web={web}"
            if states.split() == ["active"] * len(SERVICES) and code == 200 and web < 500:
                vm.ready_after = time.monotonic() - vm.powered_on
                return
        except (OSError, subprocess.TimeoutExpired) as exc:
            last = repr(exc)
        time.sleep(3)
    tail = (vm.work / "console.log").read_text(errors="replace")[-4000:]
    raise AssertionError(f"not ready after {READY_TIMEOUT:.0f} s: {last}\n--- console ---\n{tail}")


@pytest.fixture(scope="module")
def vm() -> Iterator[VM]:
    for tool in ("qemu-system-aarch64", "debugfs", "mcopy", "sfdisk", "ssh", "ssh-keygen", "xz"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is missing: `make image-test` installs it (scripts/install-deps image)"
            )
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    key = WORK / "id_ed25519"
    run(
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "textbridge-image-test", "-f", str(key)
    )
    disk, kernel, initrd = prepare_disk(WORK, key)
    ports = {name: free_port() for name in ("ssh", "web", "homeserver", "sim")}
    vm = VM(work=WORK, ports=ports, key=key)
    link = WORK / "modem-pty"
    vm.sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "modem-sim",
            "--link",
            str(link),
            "--control",
            f"127.0.0.1:{ports['sim']}",
            "--auto-report",
            "0",
        ],
        cwd=REPO,
        stdout=(WORK / "modem-sim.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(100):
        if link.exists():
            break
        time.sleep(0.1)
    assert link.exists(), (WORK / "modem-sim.log").read_text()
    hostfwd = ",".join(
        [
            f"hostfwd=tcp:127.0.0.1:{ports['ssh']}-:22",
            f"hostfwd=tcp:127.0.0.1:{ports['web']}-:80",
            f"hostfwd=tcp:127.0.0.1:{ports['homeserver']}-:8008",
        ]
    )
    cmd = [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-smp",
        "2",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "root=LABEL=TB_ROOT rw rootwait console=ttyAMA0 fsck.repair=yes",
        "-drive",
        f"if=none,id=hd,file={disk},format=raw,cache=unsafe",
        "-device",
        "virtio-blk-pci,drive=hd",
        "-netdev",
        f"user,id=n0,hostname=textbridge,{hostfwd}",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-device",
        "virtio-rng-pci",
        "-device",
        "qemu-xhci,id=xhci",
        "-chardev",
        f"serial,id=modem,path={os.path.realpath(link)}",
        "-device",
        "usb-serial,chardev=modem,bus=xhci.0",
        "-serial",
        f"file:{WORK / 'console.log'}",
        "-monitor",
        "none",
    ]
    (WORK / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    vm.powered_on = time.monotonic()
    vm.proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=(WORK / "qemu.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(vm)
        print(f"\npower-on to ready (under qemu TCG emulation): {vm.ready_after:.0f} s")
        yield vm
    finally:
        # The VM may be gone already; the console log is kept either way.
        with contextlib.suppress(Exception):
            (WORK / "journal.txt").write_text(
                vm.ssh("journalctl -b --no-pager", check=False, timeout=60)
            )
        for proc in (vm.proc, vm.sim):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_power_on_to_ready(vm: VM) -> None:
    assert vm.ready_after is not None
    state = vm.ssh("systemctl is-system-running --wait", check=False, timeout=600).strip()
    analyze = vm.ssh("systemd-analyze time", check=False).strip()
    print(f"\npower-on to ready: {vm.ready_after:.0f} s; system {state}; {analyze}")
    assert state == "running", vm.ssh("systemctl --failed --no-pager", check=False)


def test_no_failed_units(vm: VM) -> None:
    failed = vm.ssh("systemctl list-units --failed --no-legend --plain").strip()
    assert failed == "", failed


def test_first_boot_ran_and_data_partition_grew(vm: VM) -> None:
    vm.ssh("test -e /var/lib/textbridge/.firstboot-done")
    size = int(vm.ssh("findmnt -bno SIZE /var/lib/textbridge").strip())
    source = vm.ssh("findmnt -no SOURCE /var/lib/textbridge").strip()
    print(
        f"\ndata partition {source}: {size / 2**20:.0f} MiB on a {DISK_SIZE / 2**30:.0f} GiB disk"
    )
    assert size > 2 * 1024**3
    assert "TB_DATA" in vm.ssh(f"lsblk -no LABEL {source}")


def test_homeserver_answers(vm: VM) -> None:
    code, body = vm.http("homeserver", "/_matrix/client/versions")
    assert code == 200 and "versions" in json.loads(body)


def test_bridge_ready_with_watchdog(vm: VM) -> None:
    props = dict(
        line.split("=", 1)
        for line in vm.ssh(
            "systemctl show textbridge.service"
            " -p ActiveState,SubState,WatchdogUSec,StatusText,Type,NRestarts"
        ).splitlines()
        if "=" in line
    )
    print(f"\ntextbridge.service: {props}")
    assert props["Type"] == "notify" and props["ActiveState"] == "active"
    assert props["WatchdogUSec"] == "30s"
    assert props["NRestarts"] == "0"


def test_setup_page_answers(vm: VM) -> None:
    code, body = vm.http("web", "/")
    assert code == 200, (code, body[:500])
    assert "<html" in body.lower()


AVAHI = "busctl call org.freedesktop.Avahi / org.freedesktop.Avahi.Server"


def test_avahi_announces_name_and_http_service(vm: VM) -> None:
    # qemu's user-mode network carries no multicast, so mDNS cannot be watched from this
    # machine; avahi resolves its own announcements over the VM's network interface instead
    # (the same mDNS queries and answers a phone on the home network would exchange).
    # ("--": the -1s are arguments, any interface / protocol, not options.)
    fqdn = vm.ssh(f"{AVAHI} GetHostNameFqdn")
    assert '"textbridge.local"' in fqdn, fqdn
    host = vm.ssh(f"{AVAHI} -- ResolveHostName iisiu -1 0 textbridge.local 0 0", timeout=60)
    assert '"textbridge.local"' in host and '"10.0.2.15"' in host, host
    service = vm.ssh(
        f"{AVAHI} -- ResolveService iisssiu -1 0 'Textbridge on textbridge' _http._tcp local 0 0",
        timeout=60,
    )
    assert '"_http._tcp"' in service and " 80 " in service, service


def test_firewall_loaded(vm: VM) -> None:
    ruleset = vm.ssh("nft list ruleset")
    assert "table inet textbridge" in ruleset
    assert re.search(r"hook input priority filter; policy drop;", ruleset)


def test_secure_defaults(vm: VM) -> None:
    shadow = vm.ssh("getent shadow root").split(":")
    assert shadow[1].startswith("!"), "root must be locked"
    sshd = vm.ssh("sshd -T")
    assert "passwordauthentication no" in sshd and "permitrootlogin without-password" in sshd
    modes = vm.ssh(
        "stat -c '%a %U %n' /var/lib/textbridge/registration.yaml"
        " /var/lib/textbridge/credentials.json"
    )
    for line in modes.splitlines():
        assert line.startswith("600 textbridge"), line
    if HOMESERVER == "synapse":
        cfg = json.loads(vm.ssh("cat /var/lib/textbridge/synapse/homeserver.yaml"))
        assert cfg["federation_domain_whitelist"] == []
        assert not cfg["enable_registration"]
        assert all(
            "federation" not in r["names"] for ls in cfg["listeners"] for r in ls["resources"]
        )


# What the image's homeserver really is, asked of the program itself (not the recipe).
HOMESERVER_VERSION_CMD = """. /etc/default/textbridge; case "$HOMESERVER" in
  synapse) /opt/synapse/bin/python -c 'import synapse; print(synapse.__version__)' ;;
  tuwunel) dpkg-query -W -f '${Version}' tuwunel ;;
esac"""


def homeserver_facts(vm: VM) -> tuple[str, str, str]:
    """(kind, version the program reports, version the recipe put in image-release)."""
    release = dict(
        line.split("=", 1)
        for line in vm.ssh("cat /etc/textbridge/image-release").splitlines()
        if "=" in line
    )
    running = vm.ssh(HOMESERVER_VERSION_CMD).strip()
    return release["HOMESERVER"], running, release.get("HOMESERVER_VERSION", "")


def test_idle_memory(vm: VM) -> None:
    time.sleep(30)  # let first-boot work settle
    kind, version, pinned = homeserver_facts(vm)
    rows = []
    for unit in (*SERVICES, "avahi-daemon.service", "systemd-journald.service", "ssh.service"):
        mem = vm.ssh(f"systemctl show -p MemoryCurrent --value {unit}").strip()
        rows.append((unit, int(mem) / 2**20 if mem.isdigit() else float("nan")))
    total = vm.ssh("free -m").splitlines()[1].split()
    print(f"\nhomeserver: {kind} {version} (the recipe pins {pinned or '?'})")
    print("idle memory (cgroup MemoryCurrent, MiB):")
    for unit, mib in rows:
        label = f"{unit} ({kind} {version})" if unit == "textbridge-homeserver.service" else unit
        print(f"  {label:52s} {mib:8.1f}")
    print(f"  system used {total[2]} MiB of {total[1]} MiB")
    vm.facts["homeserver"] = (kind, version)
    assert kind == HOMESERVER
    assert version and (not pinned or version.startswith(pinned)), (version, pinned)
    assert all(mib < 512 for _, mib in rows)


WG_SCRIPT = """
import pathlib, sys
from appliance.wireguard import tunnel
path = pathlib.Path("/var/lib/textbridge/web/wireguard.json")
state = tunnel.load(path)
if sys.argv[1] == "on":
    state, _ = tunnel.Tunnel(enabled=True, endpoint_host="home.example.org").with_subnet(
    ).add_device("Anna's phone", "anna")
else:
    state = state.remove_member("anna")
tunnel.save(path, state)
print(state.appliance_address, " ".join(p.public_key for p in state.peers))
"""


def test_remote_access_is_put_on_wg0_by_the_kernel(vm: VM) -> None:
    # What the web page writes when the owner turns remote access on and adds a phone; the
    # path unit runs textbridge-wireguard.service, which uses the kernel's WireGuard here
    # (the only place the kernel backend runs: the build machines have no module).
    def write(action: str) -> list[str]:
        out = vm.ssh(
            "install -d -o textbridge -g textbridge -m 0700 /var/lib/textbridge/web && "
            f"cat > /tmp/wg.py <<'EOF'\n{WG_SCRIPT}\nEOF\n"
            f"runuser -u textbridge -- /opt/textbridge/bin/python /tmp/wg.py {action}"
        )
        return out.split()

    address, peer = write("on")
    deadline = time.monotonic() + 120
    while True:
        peers = vm.ssh("wg show wg0 peers", check=False).split()
        if peer in peers:
            break
        assert time.monotonic() < deadline, vm.ssh(
            "systemctl status --no-pager textbridge-wireguard.service", check=False)
        time.sleep(2)
    assert f"inet {address}/24" in vm.ssh("ip -4 addr show wg0")
    assert vm.ssh("wg show wg0 listen-port").strip() == "51820"
    assert vm.ssh("stat -c %a /var/lib/textbridge/web/wireguard.key").strip() == "600"
    # The phone is revoked on the page: it is off the interface at once.
    write("off")
    deadline = time.monotonic() + 120
    while peer in vm.ssh("wg show wg0 peers", check=False).split():
        assert time.monotonic() < deadline, "the revoked phone is still on wg0"
        time.sleep(2)
    result = vm.ssh("systemctl show -p Result --value textbridge-wireguard.service").strip()
    assert result == "success", result


def test_simulated_sms_reaches_matrix(vm: VM) -> None:
    """Simulated network -> modem (USB serial) -> bridge -> homeserver -> Matrix client."""
    vm.ssh("test -e /dev/textbridge-modem")
    creds = json.loads(vm.ssh("cat /var/lib/textbridge/credentials.json"))
    accounts = creds.get("accounts", creds) if isinstance(creds, dict) else creds
    owner = next(iter(accounts.values())) if isinstance(accounts, dict) else accounts[0]
    mxid, password = owner["mxid"], owner["password"]
    # What the web setup records when the owner signs in and picks who may use the line
    # (files in the web service's state directory, read by the bridge when it starts).
    web = "/var/lib/textbridge/web"
    vm.ssh(
        f"install -d -o textbridge -g textbridge -m 0700 {web} && "
        f"printf '%s' '{json.dumps({'mxid': mxid})}' > {web}/owner.json && "
        f"printf '%s' '{json.dumps({'sms': [mxid]})}' > {web}/members.json && "
        f"chown textbridge:textbridge {web}/owner.json {web}/members.json && "
        "systemctl restart textbridge.service"
    )
    text = f"image test {time.time():.0f}"
    vm.sim_call("POST", "/deliver", {"sender": "+4915112345678", "text": text})
    base = f"http://127.0.0.1:{vm.ports['homeserver']}"
    login = json.dumps(
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": mxid},
            "password": password,
        }
    ).encode()
    req = urllib.request.Request(
        f"{base}/_matrix/client/v3/login", data=login, headers={"Content-Type": "application/json"}
    )
    token = json.loads(urllib.request.urlopen(req, timeout=30).read())["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 300
    since = ""
    while time.monotonic() < deadline:
        url = f"{base}/_matrix/client/v3/sync?timeout=10000" + (f"&since={since}" if since else "")
        sync = json.loads(
            urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=60).read()
        )
        since = sync["next_batch"]
        rooms = sync.get("rooms", {})
        for room_id in rooms.get("invite", {}):
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{base}/_matrix/client/v3/rooms/{room_id}/join", data=b"{}", headers=auth
                ),
                timeout=30,
            )
        for room in rooms.get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                if event.get("content", {}).get("body", "").endswith(text):
                    return
    raise AssertionError(
        f"the text did not reach {mxid}; sim status {vm.sim_call('GET', '/status')}"
    )


def test_a_hung_homeserver_is_restarted_by_the_watch(vm: VM) -> None:
    """SIGSTOP the homeserver as a hang would: after two minutes without an answer on
    /_matrix/client/versions, the watch in `textbridge run` kills it and the unit's
    Restart=on-failure starts it again. Last in the file: it takes the homeserver away."""

    def show() -> dict[str, str]:
        out = vm.ssh("systemctl show textbridge-homeserver.service -p MainPID,NRestarts")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    before = show()
    since = vm.ssh("date -u '+%Y-%m-%d %H:%M:%S'").strip()
    vm.ssh(f"kill -STOP {before['MainPID']}")
    stopped = time.monotonic()
    deadline = stopped + 900
    while time.monotonic() < deadline:
        now = show()
        if now["MainPID"] not in ("0", before["MainPID"]) and int(now["NRestarts"]) > int(
            before["NRestarts"]
        ):
            with contextlib.suppress(Exception):
                code, _ = vm.http("homeserver", "/_matrix/client/versions")
                if code == 200:
                    break
        time.sleep(5)
    else:
        raise AssertionError(f"the hung homeserver was not restarted: {show()}")
    took = time.monotonic() - stopped
    journal = vm.ssh(f"journalctl -u textbridge.service --since '{since}' --no-pager -o cat")
    print(f"\nhung homeserver answering again after {took:.0f} s (restarts {show()['NRestarts']})")
    assert "restarting it" in journal, journal[-2000:]
    assert took >= 120
