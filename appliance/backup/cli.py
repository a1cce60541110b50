"""`textbridge backup`: make, check and restore full backups from the command line.

    textbridge backup create --out FILE          (the key from {data_dir}/backup.key)
    textbridge backup verify FILE [--key-file K]
    textbridge backup restore FILE [--key-file K] (else the key or passphrase is asked for)
    textbridge backup scheduled --to DIR         (nightly: write, verify, keep 7, tell owners)
    textbridge backup key [--passphrase]         (make the key; show the emergency kit text)
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from pathlib import Path

from appliance.backup import create, key, restore, schedule
from appliance.backup.errors import BackupError
from appliance.backup.layout import FAILED_FILE, PENDING_FILE, Layout
from appliance.files import write_private

DEFAULT_DATA_DIR = Path("/var/lib/textbridge")
# Written when the image is built: which homeserver the image runs.
IMAGE_SETTINGS = Path("/etc/default/textbridge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="the appliance config (data_dir, store and bridge database)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the data directory (default: from --config, else "
                        f"{DEFAULT_DATA_DIR})")
    parser.add_argument("--homeserver", choices=["synapse", "tuwunel"], default=None,
                        help=f"which homeserver this box runs (default: HOMESERVER in "
                        f"{IMAGE_SETTINGS}, else tuwunel)")
    sub = parser.add_subparsers(dest="action", required=True)
    make = sub.add_parser("create", help="write a backup of everything to FILE")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--no-verify", action="store_true",
                      help="skip reading the new backup back and checking it")
    for name, text in (("restore", "restore FILE onto this box (services stopped)"),
                       ("verify", "decrypt FILE and check everything in it")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("file", type=Path, nargs="?" if name == "restore" else None)
        if name == "restore":
            sp.add_argument("--pending", action="store_true",
                            help="the restore the wizard asked for ({data_dir}/"
                            f"{PENDING_FILE}; textbridge-restore.service)")
        sp.add_argument("--key-file", type=Path, default=None,
                        help="a file holding the key (AGE-SECRET-KEY-1…) or the passphrase")
    night = sub.add_parser("scheduled", help="the nightly backup: write to DIR, verify, "
                           "keep the newest, tell the owners (textbridge-backup.timer)")
    night.add_argument("--to", type=Path, required=True, help="the USB stick's mount point")
    night.add_argument("--keep", type=int, default=schedule.KEEP)
    night.add_argument("--no-mount-check", action="store_true",
                       help="accept a plain directory (tests, a NAS mounted elsewhere)")
    keys = sub.add_parser("key", help="make the backup key if missing and print the kit text")
    keys.add_argument("--passphrase", action="store_true",
                      help="also let a passphrase (asked for) open future backups")


def _homeserver(args: argparse.Namespace) -> str:
    if args.homeserver is not None:
        return str(args.homeserver)
    try:
        for line in IMAGE_SETTINGS.read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "HOMESERVER" and value.strip() in ("synapse", "tuwunel"):
                return value.strip()
    except OSError:
        pass
    return "tuwunel"


def layout_from_args(args: argparse.Namespace) -> Layout:
    args.homeserver = _homeserver(args)
    if args.config is not None:
        layout = Layout.from_config(args.config, args.homeserver)
        if args.data_dir is None:
            return layout
        return Layout(args.data_dir, args.homeserver, args.config)
    return Layout(args.data_dir or DEFAULT_DATA_DIR, args.homeserver)


def _secret(args: argparse.Namespace) -> str:
    if args.key_file is not None:
        try:
            return str(args.key_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise BackupError(f"The key file cannot be read: {exc.strerror}.") from None
    return getpass.getpass("Backup key (AGE-SECRET-KEY-1…) or passphrase: ")


def _notifier(layout: Layout) -> schedule.Notify:
    import asyncio

    from appliance.control_client import ControlClient, ControlError, ControlUnavailable

    client = ControlClient(layout.data_dir / "control.sock", timeout=15)

    def notify(topic: str, notice_key: str, severity: str, text: str) -> bool:
        try:
            asyncio.run(client.notice(topic, notice_key, text, severity))
        except (ControlUnavailable, ControlError) as exc:
            print(f"textbridge backup: the owners could not be told now: {exc}", file=sys.stderr)
            return False
        return True

    return notify


def _restore_pending(layout: Layout) -> int:
    """The wizard's request: taken away first (a failure must not start it again and
    again), then carried out; a failure is left where the wizard shows it."""
    pending = layout.data_dir / PENDING_FILE
    try:
        request = json.loads(pending.read_text(encoding="utf-8"))
        file, secret = Path(str(request["file"])), str(request["secret"])
    except (OSError, ValueError, KeyError, TypeError):
        print("textbridge backup: no restore was asked for", file=sys.stderr)
        pending.unlink(missing_ok=True)
        return 1
    pending.unlink()
    try:
        if _services_running(layout):
            raise BackupError("Textbridge was still running; the restore was not started.")
        done = restore.restore(file, layout, secret)
    except BackupError as exc:
        write_private(layout.data_dir / FAILED_FILE,
                      (json.dumps({"error": str(exc)}) + "\n").encode())
        print(f"textbridge backup: {exc}", file=sys.stderr)
        return 1
    print(f"Restored {done.files} files from {file.name}.")
    return 0


def _services_running(layout: Layout) -> bool:
    path = layout.data_dir / "control.sock"
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def run(args: argparse.Namespace) -> int:
    try:
        layout = layout_from_args(args)
        if args.action == "create":
            made = create.create(layout, key.load(layout.key_file), args.out)
            if not args.no_verify:
                restore.verify(args.out, layout, key.load(layout.key_file).identity)
            print(create.describe(made))
        elif args.action == "scheduled":
            outcome = schedule.run(layout, args.to, _notifier(layout), keep=max(1, args.keep),
                                   require_mount=not args.no_mount_check)
            if not outcome.ok:
                problem = outcome.problem
                raise BackupError("the backup USB stick is not there" if problem == "missing"
                                  else problem)
            print(f"Wrote and checked {outcome.file}; removed {len(outcome.removed)} older.")
        elif args.action == "verify":
            count = restore.verify(args.file, layout, _secret(args))
            print(f"The backup is sound: {count} files, every database checked.")
        elif args.action == "restore" and args.pending:
            return _restore_pending(layout)
        elif args.action == "restore":
            if args.file is None:
                raise BackupError("Name the backup file to restore.")
            if _services_running(layout):
                raise BackupError(
                    "Textbridge is running. Stop it first: systemctl stop textbridge "
                    "textbridge-web textbridge-homeserver"
                )
            done = restore.restore(args.file, layout, _secret(args))
            print(f"Restored {done.files} files from the backup of "
                  f"{done.header.appliance_version} ({done.header.homeserver}).")
        else:
            current = key.load_or_create(layout.key_file)
            if args.passphrase:
                phrase = getpass.getpass("New backup passphrase: ")
                if phrase != getpass.getpass("The same again: "):
                    raise BackupError("The two passphrases are not the same.")
                current = key.with_passphrase(current, phrase)
                key.save(layout.key_file, current)
            print(key.kit_text(current))
    except BackupError as exc:
        print(f"textbridge backup: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a stick pulled out: words, not a traceback
        print(f"textbridge backup: {exc.strerror or exc} ({exc.filename or ''})",
              file=sys.stderr)
        return 1
    return 0
