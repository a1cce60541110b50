"""The way back for an owner who is locked out and has the box in hand (issue 12.4).

Like `ssh` on the boot partition turns SSH on, an empty file named `textbridge-reset-owner`
on the boot partition (the FAT partition any computer can write when the SD card is put in
it) reopens the wizard's first step at the next start of the web service:
- owner.json is moved aside (kept, 0600, as owner.json.before-reset);
- the wizard is open again at "Your account" (the other steps stay done);
- every session ends (a new session secret);
- the owner may pick the same username: the wizard then sets a new password on that
  Matrix account instead of refusing it as taken;
- the file is removed, so the next boot does not reset again.

Everything else (the family, the lines, the rooms, the messages) is left as it was. The
wizard answers only the home network, as at first setup. textbridge-web.service runs
`textbridge owner-reset` as root before the web service starts (the boot partition is
readable by root only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from appliance.files import fsync_dir
from appliance.web import config as names
from appliance.web.files import read_json, write_json, write_private

log = logging.getLogger(__name__)

BOOT_FILE = Path("/boot/firmware/textbridge-reset-owner")
RESET_KEY = "owner_reset_username"


def reset(state_dir: Path, boot_file: Path = BOOT_FILE) -> bool:
    """True if the file was there and the owner step is open again."""
    if not boot_file.exists():
        return False
    owner_path = state_dir / names.OWNER_FILE
    setup = read_json(state_dir / names.SETUP_FILE, {})
    setup = setup if isinstance(setup, dict) else {}
    try:
        owner = json.loads(owner_path.read_bytes())
    except (OSError, ValueError):
        owner = None
    if owner_path.exists():
        write_private(owner_path.with_name(names.OWNER_FILE + ".before-reset"),
                      owner_path.read_bytes())
        owner_path.unlink()
    username = owner.get("username") if isinstance(owner, dict) else None
    if isinstance(username, str):
        setup[RESET_KEY] = username
    setup["complete"] = False
    setup["done"] = sorted(int(s) for s in setup.get("done", []) if s != 1)
    write_json(state_dir / names.SETUP_FILE, setup)
    write_private(state_dir / names.SESSION_KEY_FILE, os.urandom(32))
    boot_file.unlink()
    fsync_dir(boot_file.parent)
    if os.geteuid() == 0:
        st = os.stat(state_dir)
        for name in (names.SETUP_FILE, names.SESSION_KEY_FILE, names.OWNER_FILE + ".before-reset"):
            path = state_dir / name
            if path.exists():
                os.chown(path, st.st_uid, st.st_gid)
    log.warning("owner reset: the boot partition asked for it; the wizard's first step is open")
    return True



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--boot-file", type=Path, default=BOOT_FILE)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the web state directory (default: {data_dir}/web)")


def run(args: argparse.Namespace) -> int:
    from appliance import log as applog

    applog.setup("info")
    state_dir = args.state_dir
    if state_dir is None:
        data_dir = Path("/var/lib/textbridge")
        if args.config is not None:
            from appliance.config import Config

            data_dir = Config.load(args.config).general.data_dir
        state_dir = data_dir / "web"
    try:
        if reset(state_dir, args.boot_file):
            print("The owner step of the setup is open again: visit http://textbridge.local")
    except OSError as exc:
        # The web service starts all the same; the file stays for the next try.
        log.error("owner reset: could not be done: %s", exc)
        return 1
    return 0
