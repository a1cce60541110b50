"""`textbridge run`: the appliance's main process (systemd `textbridge.service`).

It holds the store, the lines and the bridge, and serves the control API that the web
service uses. Under systemd it is Type=notify: READY=1 goes out once the store is open, the
appservice listener answers and every line has started (a line that is down, say for a
missing PIN, is still "started": it reports its trouble in the chat and on the dashboard).
The watchdog is pinged from the event loop, so a blocked loop gets the service restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import log as applog
from appliance import sdnotify
from appliance.config import DEFAULT_PATH, Config, ConfigError, UserCapConfig
from appliance.homeserver_choice import HOMESERVER_FILE, apply_choice, read_choice
from appliance.tasks import stop_tasks

log = logging.getLogger(__name__)

MEMBERS_FILE = "members.json"
OWNER_FILE = "owner.json"
POLICY_FILE = "policy.json"
CONTACTS_FILE = "contacts.vcf"
# Exit status that asks systemd (Restart=on-failure) for a restart onto a new homeserver.
EXIT_RESTART = 75
# How often the files the web setup writes are looked at for changes.
RELOAD_INTERVAL = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="config.toml")


def run(args: argparse.Namespace) -> int:
    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"textbridge: {exc}")
        return 2
    applog.setup(config.general.log_level)
    return asyncio.run(main(config))


def apply_members(config: Config, web_state: Path) -> Config:
    """Who may use which line, as the web setup recorded it, joins the config's lists.

    The web service writes {line_id: [mxid, ...]} to members.json and the owner's Matrix ID
    to owner.json in its state directory; the owner becomes the owner of every line that
    names none, so line problems reach someone.
    """
    config = _apply_policy(config, _read_json(web_state / POLICY_FILE))
    config = apply_choice(config, read_choice(web_state))
    chosen = _read_json(web_state / MEMBERS_FILE)
    owner_data = _read_json(web_state / OWNER_FILE)
    owner = owner_data.get("mxid") if isinstance(owner_data, Mapping) else None
    if not isinstance(chosen, Mapping):
        chosen = {}
    lines = []
    for line in config.bridge.lines:
        extra = [m for m in chosen.get(line.id, []) if isinstance(m, str)]
        merged = list(dict.fromkeys([*line.members, *extra]))
        new_owner = line.owner or (owner if isinstance(owner, str) else "")
        lines.append(dataclasses.replace(line, members=merged, owner=new_owner))
    return dataclasses.replace(config, bridge=dataclasses.replace(config.bridge, lines=lines))


def _apply_policy(config: Config, policy: Any) -> Config:
    """The cost guard as the owner set it in the dashboard (policy.json) replaces the
    config file's [bridge.caps]."""
    if not isinstance(policy, Mapping):
        return config
    caps = config.bridge.caps
    try:
        users = policy.get("users") or {}
        per_user = [
            UserCapConfig(user=str(mxid), daily=int(entry.get("daily_cap", caps.daily_per_user)))
            for mxid, entry in users.items()
            if isinstance(entry, Mapping)
        ]
        caps = dataclasses.replace(
            caps,
            daily_per_user=int(policy.get("default_daily_cap", caps.daily_per_user)),
            block_premium=bool(policy.get("block_premium", True))
            or bool(policy.get("block_short_codes", True)),
            international_allowed=bool(policy.get("international_allowed", True)),
            per_user=per_user,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        log.error("ignoring the SMS cost guard settings: %s", exc)
        return config
    return dataclasses.replace(config, bridge=dataclasses.replace(config.bridge, caps=caps))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("ignoring %s: %s", path, exc)
        return None


class Appliance:
    """Everything `textbridge run` holds, startable in-process (the demo and tests do)."""

    def __init__(
        self,
        config: Config,
        *,
        web_state: Path | None = None,
        restart_homeserver: Callable[[], Awaitable[None]] | None = None,
        homeserver_grace: float | None = None,
        on_homeserver_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        # The listener and the registration are set at start: another homeserver chosen in
        # the setup needs a new start (main() exits for systemd to restart it).
        self._on_homeserver_change = on_homeserver_change
        # The homeserver watch (appliance/homeserver/watch.py): how a silent homeserver is
        # restarted (systemd's unit by default) and after how long.
        self._restart_homeserver = restart_homeserver
        self._homeserver_grace = homeserver_grace
        self.homeserver_watch: Any = None
        # Where `textbridge web` keeps what the owner chose (members.json, owner.json).
        self.web_state = web_state or config.general.data_dir / "web"
        self._reload_task: asyncio.Task[None] | None = None
        self._seen: tuple[float, ...] = ()
        self.store: Any = None
        self.lines: dict[str, Any] = {}
        self.bridge: Any = None
        self._control_runner: web.AppRunner | None = None
        self.control_socket = config.general.data_dir / "control.sock"
        self.address_book: Any = None

    async def start(self) -> None:
        from appliance.bridge.core import Bridge
        from appliance.control import make_control_app
        from appliance.homeserver.registration import Registration
        from appliance.sms.cli import read_pin
        from appliance.sms.line import SmsLine
        from appliance.store import Store

        config = apply_members(self.config, self.web_state)
        self._seen = self._stamps()
        data_dir = config.general.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await Store.open(config.store_path)
        registration = Registration.load(config.bridge.registration)
        bridge_config = config.bridge
        if not bridge_config.database.is_absolute():
            bridge_config = dataclasses.replace(
                bridge_config, database=data_dir / bridge_config.database
            )
        self.bridge = Bridge(bridge_config, registration, self.store, self.lines)
        if config.modem.enabled:
            self.lines["sms"] = SmsLine(
                "sms",
                config.modem,
                self.store,
                on_event=self.bridge.on_line_event,
                pin=read_pin(config.modem.pin_file),
            )
        if config.phone.enabled:
            from appliance.phone.line import PhoneLine

            key_file = config.phone.key_file
            self.lines["phone"] = PhoneLine(
                "phone",
                config.phone,
                self.store,
                key_path=key_file if key_file.is_absolute() else data_dir / key_file,
                on_event=self.bridge.on_line_event,
            )
        await self.bridge.start()
        for line in self.lines.values():
            await line.start()
        sims = {lid: line for lid, line in self.lines.items() if hasattr(line, "enter_pin")}
        app = make_control_app(
            lines=self.lines,
            store=self.store,
            sim_control=sims,
            bridge_health=self.health,
            notify_owners=self.bridge.notify_owners,
        )
        self._control_runner = web.AppRunner(app, access_log=None)
        await self._control_runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.control_socket.unlink()
        site = web.UnixSite(self._control_runner, str(self.control_socket))
        await site.start()
        os.chmod(self.control_socket, 0o660)
        # An address book uploaded while the bridge was down is taken now.
        await self._import_contacts()
        self._reload_task = asyncio.create_task(self._reload_loop(), name="reload-members")
        if config.bridge.homeserver == "own":
            # The family's own server is theirs to restart, never the appliance's.
            self._watch_homeserver(config)

    def _watch_homeserver(self, config: Config) -> None:
        from appliance.homeserver import watch

        grace = self._homeserver_grace or watch.GRACE
        store = self.store

        async def pending() -> int:
            return len(await store.inbox.pending())

        self.homeserver_watch = watch.HomeserverWatch(
            config.bridge.homeserver_url,
            restart=self._restart_homeserver or watch.restart_systemd_unit(),
            notify=self.bridge.notify_owners,
            pending=pending,
            grace=grace,
            interval=min(watch.INTERVAL, grace / 4),
        )
        self.homeserver_watch.start()

    def _stamps(self) -> tuple[float, ...]:
        stamps = []
        for name in (MEMBERS_FILE, OWNER_FILE, POLICY_FILE, CONTACTS_FILE, HOMESERVER_FILE):
            try:
                stamps.append((self.web_state / name).stat().st_mtime)
            except OSError:
                stamps.append(0.0)
        return tuple(stamps)

    def health(self) -> dict[str, Any]:
        """The bridge's health and the address book's state, as the control API serves it."""
        health: dict[str, Any] = self.bridge.health()
        if self.address_book is not None:
            health["contacts"] = self.address_book.state()
        return health

    async def _import_contacts(self, *, changed: bool = False) -> None:
        from appliance.bridge.address_book import AddressBook

        owner = _read_json(self.web_state / OWNER_FILE)
        added_by = owner.get("mxid", "web") if isinstance(owner, Mapping) else "web"
        if self.address_book is None:
            self.address_book = AddressBook(
                self.bridge, self.web_state / CONTACTS_FILE, self.config.general.data_dir,
                self.config.general.home_country, str(added_by),
            )
        self.address_book.added_by = str(added_by)
        try:
            await self.address_book.sync(changed=changed)
        except Exception:  # the next look tries again
            log.exception("importing the uploaded contacts failed")

    async def _reload_loop(self) -> None:
        """Membership changes made in the web setup take effect without a restart."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            stamps = self._stamps()
            contacts_changed = stamps[3] != self._seen[3]
            if contacts_changed or self.address_book.state()["pending"]:
                # An upload not applied yet (the homeserver was away) is retried here.
                await self._import_contacts(changed=contacts_changed)
            if stamps == self._seen:
                continue
            if stamps[4] != self._seen[4] and self._on_homeserver_change is not None:
                log.warning("another homeserver was chosen in the setup: restarting")
                self._on_homeserver_change()
            self._seen = stamps
            config = apply_members(self.config, self.web_state)
            new = dataclasses.replace(config.bridge, database=self.bridge.config.database)
            self.bridge.config = new
            try:
                await self.bridge.reload_config()
            except Exception:
                log.exception("applying new line members failed")
            log.info("line membership reloaded")

    async def stop(self) -> None:
        if self.homeserver_watch is not None:
            await self.homeserver_watch.stop()
        if self._reload_task is not None:
            await stop_tasks([self._reload_task], "members reload")
        if self._control_runner is not None:
            await self._control_runner.cleanup()
        for line in self.lines.values():
            with contextlib.suppress(Exception):
                await line.stop()
        if self.bridge is not None:
            with contextlib.suppress(Exception):
                await self.bridge.stop()
        if self.store is not None:
            await self.store.close()

    def healthy(self) -> bool:
        if self.bridge is None:
            return False
        health: dict[str, Any] = self.bridge.health()
        return bool(health.get("running", True))


async def main(config: Config) -> int:
    stop = asyncio.Event()
    restart = False

    def homeserver_changed() -> None:
        nonlocal restart
        restart = True
        stop.set()

    appliance = Appliance(config, on_homeserver_change=homeserver_changed)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await appliance.start()
    except Exception as exc:
        log.exception("textbridge could not start")
        sdnotify.notify(f"STATUS=Could not start: {exc}")
        await appliance.stop()
        return 1
    watchdog = asyncio.create_task(sdnotify.watchdog_loop(appliance.healthy))
    summaries = "; ".join(line.status().summary for line in appliance.lines.values())
    sdnotify.notify("READY=1", f"STATUS=Bridge running. {summaries}".strip())
    await stop.wait()
    sdnotify.stop_notifying()
    await stop_tasks([watchdog], "systemd watchdog")
    await appliance.stop()
    return EXIT_RESTART if restart else 0
