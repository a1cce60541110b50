"""`textbridge update`: install and inspect system updates (docs/update.md).

    textbridge update status
    textbridge update install FILE [--no-reboot]
    textbridge update check          (at every boot: textbridge-update-check.service)
    textbridge update bootloader ... (rauc's custom bootloader backend for the Pi's tryboot)
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.update import tryboot
from appliance.update.pending import CHECK_DEADLINE

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.update import health

DEFAULT_CONFIG = Path("/etc/textbridge/config.toml")
REBOOT = "systemctl reboot"
# The Pi firmware's one-shot flag: the next boot starts autoboot.txt's [tryboot] partition.
TRY_REBOOT = "systemctl reboot '0 tryboot'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--rauc", default="rauc", help="the rauc program")
    parser.add_argument("--rauc-conf", type=Path, default=None,
                        help="rauc's system.conf (default: rauc's own, /etc/rauc/system.conf)")
    parser.add_argument("--keyring", type=Path, default=None,
                        help="the keyring bundles are checked against (default: system.conf's)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("status", help="the running version and both system slots")
    inst = sub.add_parser("install", help="check FILE, write it to the spare slot, try it")
    inst.add_argument("file", type=Path)
    inst.add_argument("--no-reboot", action="store_true", help="try it at the next restart")
    inst.add_argument("--reboot-command", default=TRY_REBOOT)
    chk = sub.add_parser("check", help="after an update: mark it good, or go back")
    chk.add_argument("--web-url", default="http://127.0.0.1:80/")
    chk.add_argument("--deadline", type=float, default=CHECK_DEADLINE)
    chk.add_argument("--reboot-command", default=REBOOT)
    boot = sub.add_parser("bootloader", help="rauc's custom bootloader backend (tryboot)")
    tryboot.add_arguments(boot)


def _reboot(command: str) -> health.Reboot:
    async def reboot() -> None:
        proc = await asyncio.create_subprocess_exec(*shlex.split(command))
        await proc.wait()

    return reboot


def _notify(socket: Path) -> health.Notify:
    from appliance.control_client import ControlClient, ControlError, ControlUnavailable

    async def notify(topic: str, key: str, severity: str, text: str) -> bool:
        try:
            return await ControlClient(socket).notice(topic, key, text, severity)
        except (ControlUnavailable, ControlError) as exc:
            print(f"update: the owners could not be told yet ({exc})", file=sys.stderr)
            return False

    return notify


async def _main(args: argparse.Namespace, config: Config) -> int:
    from appliance import __version__
    from appliance.update import health, install
    from appliance.update import pending as pendings
    from appliance.update.rauc import Rauc, RaucError

    rauc = Rauc(binary=args.rauc, conf=args.rauc_conf, keyring=args.keyring)
    data_dir = config.general.data_dir
    if args.action == "status":
        try:
            status = await rauc.status()
        except RaucError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        print(install.describe(status, __version__, pendings.load(data_dir)))
        return 0
    if args.action == "install":
        outcome = await install.install(
            rauc, args.file, data_dir=data_dir, running=__version__,
            reboot=None if args.no_reboot else _reboot(args.reboot_command))
        print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
        return 0 if outcome.ok else 1
    probes = health.Probes(homeserver_url=config.bridge.homeserver_url,
                           control_socket=data_dir / "control.sock", web_url=args.web_url,
                           store_db=config.store_path,
                           bridge_db=data_dir / config.bridge.database)
    did = await health.after_boot(rauc=rauc, data_dir=data_dir, probes=probes,
                                  notify=_notify(probes.control_socket),
                                  reboot=_reboot(args.reboot_command), deadline=args.deadline)
    print(f"update check: {did}")
    return 0


def run(args: argparse.Namespace) -> int:
    # rauc runs the bootloader backend several times per command: it imports nothing else.
    if args.action == "bootloader":
        return tryboot.run(args)
    from appliance.config import Config, ConfigError

    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"update: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_main(args, config))
