"""`textbridge homeserver bootstrap`: make a homeserver ready for the bridge.

Generates the appservice registration (tokens kept if the state directory has one),
installs it, and creates the owner's and the family's accounts with generated passwords,
kept in a 0600 credentials file. Safe to run again: nothing is regenerated, and accounts that
exist are left alone.

State directory layout:
  registration.yaml     the appservice registration (0600); the bridge reads its tokens here
  credentials.json      the accounts this command made and their passwords (0600)
  textbridge-admin.json the adapter's own admin account (0600)
  synapse/              with --kind synapse: the Synapse server's state
  tuwunel.toml          with --kind tuwunel: Tuwunel's config, unless --tuwunel-config says
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.files import write_secret_file
from appliance.homeserver.api import MatrixHttp, random_password
from appliance.homeserver.base import (
    HomeserverAdapter,
    HomeserverError,
    HomeserverUnavailable,
    LoginFailed,
    UserExists,
)
from appliance.homeserver.registration import Registration

log = logging.getLogger(__name__)

REGISTRATION_FILE = "registration.yaml"
CREDENTIALS_FILE = "credentials.json"
KINDS = ("synapse", "tuwunel")
_LOCALPART = r"[a-z0-9._=/-]+"


def adapter_for(
    kind: str,
    *,
    state_dir: Path,
    server_name: str | None = None,
    url: str | None = None,
    config_path: Path | None = None,
    shared_secret: str | None = None,
) -> HomeserverAdapter:
    """The adapter for a homeserver that is already set up (by `bootstrap` or a test).

    synapse: `url` and `server_name` are required; the shared secret is read from
    `state_dir/synapse/registration_shared_secret` unless given.
    tuwunel: everything is read from its config (`config_path`, default
    `state_dir/tuwunel.toml`); `url` overrides where to reach it.
    """
    state_dir = Path(state_dir)
    if kind == "synapse":
        from appliance.homeserver.synapse import SynapseAdapter

        if url is None or server_name is None:
            raise ValueError("a Synapse adapter needs url and server_name")
        if shared_secret is None:
            secret_file = state_dir / "synapse" / "registration_shared_secret"
            shared_secret = secret_file.read_text(encoding="utf-8").strip()
        return SynapseAdapter(url, server_name, shared_secret=shared_secret, state_dir=state_dir)
    if kind == "tuwunel":
        from appliance.homeserver.tuwunel import TuwunelAdapter

        return TuwunelAdapter(
            config_path or state_dir / "tuwunel.toml", state_dir=state_dir, url=url
        )
    raise ValueError(f"unknown homeserver kind {kind!r}; one of {', '.join(KINDS)}")


class RestartRequired(HomeserverError):
    """The homeserver answers but has not loaded the registration: it needs a restart."""


@dataclass
class Account:
    localpart: str
    mxid: str
    password: str
    admin: bool = False
    # False between choosing the password and the server confirming the account: a crash
    # there leaves a record that the next run completes instead of a lost password.
    confirmed: bool = False


@dataclass
class Credentials:
    server_name: str
    homeserver_url: str
    accounts: dict[str, Account] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Credentials(server_name={self.server_name!r}, accounts={list(self.accounts)})"

    @classmethod
    def load(cls, path: Path, server_name: str, url: str) -> Credentials:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(server_name, url)
        accounts = {
            lp: Account(
                localpart=lp,
                mxid=str(a["mxid"]),
                password=str(a["password"]),
                admin=bool(a.get("admin", False)),
                confirmed=bool(a.get("confirmed", True)),
            )
            for lp, a in data.get("accounts", {}).items()
        }
        return cls(str(data.get("server_name", server_name)), url, accounts)

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "server_name": self.server_name,
            "homeserver_url": self.homeserver_url,
            "accounts": {
                a.localpart: {
                    "mxid": a.mxid,
                    "password": a.password,
                    "admin": a.admin,
                    "confirmed": a.confirmed,
                }
                for a in self.accounts.values()
            },
        }
        write_secret_file(path, json.dumps(data, indent=2) + "\n")


@dataclass
class BootstrapResult:
    registration: Registration
    registration_path: Path
    credentials_path: Path
    created: list[Account]
    # Accounts that were there already: (localpart, whether credentials.json knows the password)
    kept: list[tuple[str, bool]]
    appservice_changed: bool


def prepare_state_dir(state_dir: Path) -> None:
    # Everything in it is a secret or guards one.
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)


def ensure_registration(state_dir: Path, bridge_url: str, server_name: str) -> Registration:
    """The registration in `state_dir`, made on first use. A changed bridge URL is updated
    in place; the tokens are never replaced, or a running bridge would be locked out."""
    path = state_dir / REGISTRATION_FILE
    if path.exists():
        registration = Registration.load(path)
        if registration.url != bridge_url:
            registration = replace(registration, url=bridge_url)
            registration.save(path, server_name)
        return registration
    registration = Registration.generate(url=bridge_url)
    registration.save(path, server_name)
    return registration


async def bootstrap(
    adapter: HomeserverAdapter,
    *,
    state_dir: Path,
    bridge_url: str,
    owner: str,
    family: Sequence[str] = (),
    make_ready: Callable[[bool], Awaitable[None]],
) -> BootstrapResult:
    """`make_ready(changed)` is called after the registration is installed; it must leave
    the homeserver running with the registration loaded (restarting it if `changed`)."""
    prepare_state_dir(state_dir)
    registration = ensure_registration(state_dir, bridge_url, adapter.server_name)
    changed = await adapter.install_appservice(registration)
    await make_ready(changed)
    await check_appservice_loaded(adapter, registration)

    creds_path = state_dir / CREDENTIALS_FILE
    creds = Credentials.load(creds_path, adapter.server_name, adapter.url)
    creds.homeserver_url = adapter.url
    created: list[Account] = []
    kept: list[tuple[str, bool]] = []
    wanted = [(owner, True), *((lp, False) for lp in family if lp != owner)]
    for localpart, admin in wanted:
        account = creds.accounts.get(localpart)
        if account is not None and account.confirmed:
            kept.append((localpart, True))
            continue
        if account is None:
            if await adapter.user_exists(localpart):
                # Made by someone else (or before credentials.json was lost): not ours to
                # reset; the owner can reset it from the dashboard.
                log.warning("%s already exists; its password is not in %s", localpart, creds_path)
                kept.append((localpart, False))
                continue
            account = Account(
                localpart=localpart,
                mxid=f"@{localpart}:{adapter.server_name}",
                password=random_password(),
                admin=admin,
            )
            creds.accounts[localpart] = account
            creds.save(creds_path)
        try:
            account.mxid = await adapter.create_user(
                localpart, account.password, admin=admin, displayname=localpart.capitalize()
            )
            created.append(account)
        except UserExists:
            # A previous run created it and stopped before recording that, or someone made
            # it meanwhile: only the password tells which.
            try:
                token = await adapter.login(localpart, account.password)
                await MatrixHttp(adapter.url, adapter.server_name).logout(token)
            except LoginFailed:
                del creds.accounts[localpart]
                creds.save(creds_path)
                kept.append((localpart, False))
                continue
            kept.append((localpart, True))
        account.confirmed = True
        creds.save(creds_path)
        log.info("account %s ready", account.mxid)
    return BootstrapResult(
        registration=registration,
        registration_path=state_dir / REGISTRATION_FILE,
        credentials_path=creds_path,
        created=created,
        kept=kept,
        appservice_changed=changed,
    )


async def check_appservice_loaded(adapter: HomeserverAdapter, registration: Registration) -> None:
    """Ask the server, through the standard API, whether it honours the registration's
    as_token: the one proof that it runs with the config just written."""
    if not await adapter.is_up():
        raise HomeserverUnavailable(f"{adapter.name} does not answer on {adapter.url}")
    http = MatrixHttp(adapter.url, adapter.server_name)
    bot = registration.bot_mxid(adapter.server_name)
    for attempt in range(2):
        try:
            if await http.whoami(registration.as_token) == bot:
                return
        except HomeserverUnavailable:
            raise
        except HomeserverError:
            if attempt == 1:
                break
        # A server that does not create the appservice's own user implicitly gets it
        # registered the standard appservice way, as the bridge would.
        await http.request(
            "POST",
            "/_matrix/client/v3/register",
            token=registration.as_token,
            body={"type": "m.login.application_service", "username": registration.sender_localpart},
        )
    raise RestartRequired(
        f"{adapter.name} on {adapter.url} does not accept the bridge's registration yet"
    )


async def wait_until_up(adapter: HomeserverAdapter, timeout: float) -> bool:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        if await adapter.is_up():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="homeserver_command", required=True, metavar="SUBCOMMAND")
    boot = sub.add_parser("bootstrap", help="registration, appservice and accounts (idempotent)")
    boot.add_argument("--kind", choices=KINDS, required=True)
    boot.add_argument("--state", type=Path, required=True, help="state directory (kept 0700)")
    boot.add_argument("--server-name", required=True, help="the Matrix server name")
    boot.add_argument("--bridge-url", required=True, help="where the homeserver reaches the bridge")
    boot.add_argument("--owner", type=_localpart, required=True, help="the owner's localpart")
    boot.add_argument("--family", type=_localparts, default=[], help="more localparts: a,b,c")
    boot.add_argument(
        "--show-passwords",
        action="store_true",
        help="print the passwords of accounts created now, once, to the terminal",
    )
    boot.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the server")
    synapse = boot.add_argument_group("synapse")
    synapse.add_argument("--synapse-python", type=Path, default=None)
    tuwunel = boot.add_argument_group("tuwunel")
    tuwunel.add_argument("--tuwunel-config", type=Path, default=None)
    tuwunel.add_argument("--tuwunel-database", type=Path, default=Path("/var/lib/tuwunel"))
    tuwunel.add_argument("--tuwunel-port", type=int, default=6167)
    tuwunel.add_argument("--tuwunel-user", default=None, help="system user Tuwunel runs as")
    tuwunel.add_argument(
        "--restart-command",
        default=None,
        help='how to restart Tuwunel when its config changed, e.g. "systemctl restart tuwunel"',
    )


    from appliance.homeserver import external_cli

    external_cli.add_arguments(sub)


def _localpart(value: str) -> str:
    if not re.fullmatch(_LOCALPART, value):
        raise argparse.ArgumentTypeError(f"{value!r}: use lowercase letters, digits, . _ = - /")
    return value


def _localparts(value: str) -> list[str]:
    return [_localpart(v.strip()) for v in value.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    from appliance import log as applog

    if args.homeserver_command in ("registration", "firewall"):
        from appliance.homeserver import external_cli

        return external_cli.run(args)
    applog.setup("info")
    try:
        result = asyncio.run(_run(args))
    except (HomeserverError, ValueError, OSError) as exc:
        print(f"textbridge homeserver: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 3
    _report(result, show_passwords=args.show_passwords)
    return 0


async def _run(args: argparse.Namespace) -> BootstrapResult | None:
    state: Path = args.state.resolve()
    prepare_state_dir(state)
    if args.kind == "synapse":
        return await _run_synapse(args, state)
    return await _run_tuwunel(args, state)


async def _run_synapse(args: argparse.Namespace, state: Path) -> BootstrapResult:
    from appliance.homeserver.synapse import DEFAULT_PYTHON, SynapseAdapter, SynapseServer

    server = SynapseServer(
        state / "synapse",
        server_name=args.server_name,
        python=args.synapse_python or DEFAULT_PYTHON,
    )
    adapter = SynapseAdapter.for_server(server, state_dir=state)

    async def make_ready(changed: bool) -> None:
        # Installed before the first start, so a fresh server needs no restart.
        if server.running and changed:
            await server.restart(args.wait)
        else:
            await server.start(args.wait)

    try:
        return await bootstrap(
            adapter,
            state_dir=state,
            bridge_url=args.bridge_url,
            owner=args.owner,
            family=args.family,
            make_ready=make_ready,
        )
    finally:
        await server.stop()


async def _run_tuwunel(args: argparse.Namespace, state: Path) -> BootstrapResult | None:
    from appliance.homeserver.tuwunel import TuwunelAdapter, write_config

    config_path: Path = args.tuwunel_config or state / "tuwunel.toml"
    _, config_changed = write_config(
        config_path,
        server_name=args.server_name,
        database_path=args.tuwunel_database,
        port=args.tuwunel_port,
        owner=args.tuwunel_user,
    )
    adapter = TuwunelAdapter(config_path, state_dir=state, owner=args.tuwunel_user)

    async def make_ready(changed: bool) -> None:
        if (changed or config_changed) and args.restart_command:
            proc = await asyncio.create_subprocess_exec(*shlex.split(args.restart_command))
            if await proc.wait() != 0:
                raise HomeserverError(f"{args.restart_command!r} failed")
        # Without a restart command, a changed config is caught by the check that follows
        # (the running server rejects the new as_token), and the person is asked to restart.
        if not await wait_until_up(adapter, args.wait):
            raise HomeserverUnavailable(
                f"Tuwunel did not answer on {adapter.url} within {args.wait:.0f} s"
            )

    try:
        return await bootstrap(
            adapter,
            state_dir=state,
            bridge_url=args.bridge_url,
            owner=args.owner,
            family=args.family,
            make_ready=make_ready,
        )
    except RestartRequired:
        print(
            f"Tuwunel has not loaded {config_path} yet. Restart Tuwunel "
            "(systemctl restart tuwunel), then run this command again.",
            file=sys.stderr,
        )
        return None


def _report(result: BootstrapResult, *, show_passwords: bool) -> None:
    lines = [
        f"registration: {result.registration_path}",
        f"credentials:  {result.credentials_path} (0600)",
    ]
    for account in result.created:
        secret = f"  password: {account.password}" if show_passwords else ""
        lines.append(f"created {account.mxid}{' (admin)' if account.admin else ''}{secret}")
    for localpart, known in result.kept:
        note = "" if known else " (password not in the credentials file)"
        lines.append(f"kept {localpart}{note}")
    if result.created and not show_passwords:
        lines.append("passwords are in the credentials file; --show-passwords prints them once")
    print("\n".join(lines))
