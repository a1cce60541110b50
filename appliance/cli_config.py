"""`textbridge check-config`: load and validate the configuration, print the result."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from appliance.config import DEFAULT_PATH, Config, ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH)


def run(args: argparse.Namespace) -> int:
    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(config), indent=2, default=str))
    return 0
