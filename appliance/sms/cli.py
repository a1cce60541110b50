"""`textbridge sms-line`: only the store and the SMS line, no Matrix.

Used by the crash test (killed with SIGKILL hundreds of times mid-traffic) and handy on a Pi
to check a modem without the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from appliance import log as applog
from appliance import sdnotify
from appliance.config import DEFAULT_PATH, Config, ConfigError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="config.toml")
    parser.add_argument("--line-id", default="sms", help="the line's id in the store")


def run(args: argparse.Namespace) -> int:
    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"textbridge: {exc}")
        return 2
    applog.setup(config.general.log_level)
    return asyncio.run(_main(config, args.line_id))


async def _main(config: Config, line_id: str) -> int:
    from appliance.sms.line import SmsLine
    from appliance.store import Store

    config.general.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(config.store_path)
    pin = read_pin(config.modem.pin_file)
    line = SmsLine(line_id, config.modem, store, on_event=_log_event, pin=pin)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await line.start()
    watchdog = asyncio.create_task(sdnotify.watchdog_loop())
    if await line.wait_ready(60.0):
        sdnotify.notify("READY=1", f"STATUS={line.status().summary}")
    await stop.wait()
    sdnotify.stop_notifying()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    await line.stop()
    await store.close()
    return 0


def read_pin(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        pin = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return pin or None


def _log_event(event: object) -> None:
    log.warning("line event: %s", getattr(event, "text", event))
