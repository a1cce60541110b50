"""`textbridge homeserver registration|firewall`: the family's own homeserver by hand.

Both read what `textbridge run` reads: the config file and, over it, the wizard's choice
(appliance/homeserver_choice.py). `registration` writes the registration once (0600) and
prints it for the server's admin; `firewall` prints the nftables table that admits only the
homeserver to the bridge's port (homeserver/firewall.py), and with `--apply` loads it, or
removes it when the Pi's own homeserver is in use again (textbridge-appservice-firewall).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIG = Path("/etc/textbridge/config.toml")
NFT = "nft"


def add_arguments(sub: Any) -> None:
    config_help = "the appliance config (/etc/textbridge/config.toml)"
    reg = sub.add_parser(
        "registration",
        help="external homeserver: write (once) and print the registration to install there",
    )
    reg.add_argument("--config", type=Path, default=CONFIG, help=config_help)
    fw = sub.add_parser(
        "firewall", help="external homeserver: nft rules that admit only it to the bridge's port"
    )
    fw.add_argument("--config", type=Path, default=CONFIG, help=config_help)
    fw.add_argument(
        "--apply",
        action="store_true",
        help="load the rules with nft (needs CAP_NET_ADMIN); with the Pi's own homeserver, "
        "remove them",
    )


def run(args: argparse.Namespace) -> int:
    from appliance.config import Config, ConfigError
    from appliance.homeserver import firewall
    from appliance.homeserver.external import registration_for
    from appliance.homeserver_choice import apply_choice, read_choice

    try:
        full = Config.load(args.config)
        config = apply_choice(full, read_choice(full.general.data_dir / "web")).bridge
    except ConfigError as exc:
        print(f"textbridge homeserver: {exc}", file=sys.stderr)
        return 2
    external = config.homeserver == "external" and bool(config.homeserver_address)
    if args.homeserver_command == "firewall" and getattr(args, "apply", False):
        if not external:
            return _nft(firewall.removal())
        return _nft(firewall.ruleset(config.listen_port, config.homeserver_address))
    if not external:
        print(
            'textbridge homeserver: set [bridge] homeserver = "external" and '
            "homeserver_address first (or choose the server in the setup wizard)",
            file=sys.stderr,
        )
        return 2
    if args.homeserver_command == "firewall":
        print(firewall.ruleset(config.listen_port, config.homeserver_address), end="")
        return 0
    host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
    registration = registration_for(
        config.registration, f"http://{host}:{config.listen_port}", config.server_name
    )
    # The file holds both tokens: it goes to the homeserver's admin, nowhere else.
    print(registration.to_yaml(config.server_name), end="")
    return 0


def _nft(ruleset: str) -> int:
    try:
        proc = subprocess.run([NFT, "-f", "-"], input=ruleset, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"textbridge homeserver: nft: {exc}", file=sys.stderr)
        return 1
    if proc.returncode != 0:
        print(f"textbridge homeserver: nft: {proc.stderr.strip()}", file=sys.stderr)
    return proc.returncode
