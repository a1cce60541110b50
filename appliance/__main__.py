"""`python -m appliance <command>`: the appliance's command line.

Each command lives in the module that owns it and registers itself in COMMANDS, so this file
only dispatches; commands are imported lazily so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help). The module defines
#   add_arguments(parser: argparse.ArgumentParser) -> None
#   run(args: argparse.Namespace) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("appliance.cli_config", "validate a configuration file and print it"),
    "sms-line": ("appliance.sms.cli", "run only the store and the SMS line (no Matrix)"),
    "modem-sim": ("appliance.sim.cli", "run the modem simulator on a pseudo-terminal"),
    "network": ("appliance.sim.network_cli", "act as the phone network of a running simulator"),
    "homeserver": ("appliance.homeserver.bootstrap", "set up the homeserver for the bridge"),
    "web": ("appliance.web.cli", "serve the setup wizard and the dashboard"),
    "phone": ("appliance.phone.cli", "pair with the Android phone and check its set-up"),
    "phone-sim": ("appliance.adbsim.cli", "run the simulated Android phone (ADB over TCP)"),
    "wireguard": ("appliance.wireguard.cli", "apply or show the WireGuard remote access"),
    "backup": ("appliance.backup.cli", "make, check and restore full encrypted backups"),
    "update": ("appliance.update.cli", "install a system update, show the slots, check one"),
    "owner-reset": ("appliance.web.owner_reset", "reopen the owner step (boot partition file)"),
    "run": ("appliance.run", "run the bridge, the lines and the store (the appliance)"),
    "demo": ("appliance.demo", "run the whole stack on this machine, on loopback"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="textbridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        sp.set_defaults(_module=module)
        # Only the chosen command's module is imported: startup stays fast (the crash test
        # starts the SMS line hundreds of times) and one command's imports cannot break another.
        if name == chosen:
            importlib.import_module(module).add_arguments(sp)
    args = parser.parse_args(argv)
    result: int = importlib.import_module(args._module).run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
