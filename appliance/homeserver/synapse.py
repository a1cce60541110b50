"""Synapse: a real homeserver on loopback for the tests and `make demo`.

`SynapseServer` writes a locked-down configuration (loopback only, no federation listener,
registration closed, generated secrets), runs Synapse from its own venv as a subprocess and
waits until the client API answers. `SynapseAdapter` is the `HomeserverAdapter` for it.

The process is managed with `subprocess.Popen` and polled with `asyncio.sleep` instead of
asyncio's subprocess API, because a test session shares one server across many event loops
and an asyncio subprocess belongs to the loop that made it.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import logging
import secrets
import signal
import socket
import string
import subprocess
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from appliance.files import write_secret_file
from appliance.homeserver.api import AdminCredentials, MatrixHttp, random_password
from appliance.homeserver.base import HomeserverError, HomeserverUnavailable, UserExists
from appliance.homeserver.registration import Registration

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO / ".venv-synapse" / "bin" / "python"

T = TypeVar("T")

# Far above anything a test or the demo does, so a burst test measures the bridge, not
# Synapse's anti-abuse limits.
_RELAXED = {"per_second": 1000, "burst_count": 10000}

_running: weakref.WeakSet[SynapseServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # A test run that dies before its finalizers must not leave Synapse processes behind.
    for server in list(_running):
        server.kill()


class SynapseStartError(RuntimeError):
    """Synapse exited or did not answer in time; the message ends with its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = secrets.token_urlsafe(48)
    write_secret_file(path, value + "\n")
    return value


class SynapseServer:
    def __init__(
        self,
        state_dir: Path,
        *,
        server_name: str = "textbridge.test",
        port: int | None = None,
        python: Path = DEFAULT_PYTHON,
        appservice_files: Sequence[Path] = (),
        registration_tokens: bool = False,
        bind_host: str = "127.0.0.1",
        command_prefix: Sequence[str] = (),
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        # bind_host, command_prefix (e.g. `ip netns exec NS`) and extra_config let a test
        # play a family's own server on another host: tests/test_external_homeserver.py.
        self.bind_host = bind_host
        self.command_prefix = list(command_prefix)
        self.extra_config = dict(extra_config or {})
        self.state_dir = Path(state_dir).resolve()
        self.server_name = server_name
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.python = Path(python)
        # A state directory that has run before keeps its appservices, as it keeps its
        # accounts: `textbridge homeserver bootstrap` installs the registration once and
        # every later start (the demo, a restart) still honours it.
        self.appservice_files: list[Path] = self._installed_appservices()
        for path in appservice_files:
            if Path(path).resolve() not in self.appservice_files:
                self.appservice_files.append(Path(path).resolve())
        # True: registration is open to holders of a registration token (the standard
        # m.login.registration_token flow); False: closed to everyone.
        self.registration_tokens = registration_tokens
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def _installed_appservices(self) -> list[Path]:
        try:
            previous = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [Path(p) for p in previous.get("app_service_config_files", []) if Path(p).exists()]

    # --- paths and secrets --------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"http://{host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "homeserver.log"

    @property
    def stdout_path(self) -> Path:
        return self.state_dir / "stdout.log"

    @property
    def shared_secret_path(self) -> Path:
        return self.state_dir / "registration_shared_secret"

    @property
    def registration_shared_secret(self) -> str:
        return _read_or_create_secret(self.shared_secret_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for path in (self.stdout_path, self.log_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no log written)"

    # --- configuration ------------------------------------------------------------------

    def add_appservice_file(self, path: Path) -> bool:
        """List a registration file in app_service_config_files. Returns True if it was not
        listed yet; Synapse reads the list only at start, so a restart is then needed."""
        path = Path(path).resolve()
        if path in self.appservice_files:
            return False
        self.appservice_files.append(path)
        if self.config_path.exists():
            self.write_config()
        return True

    def _signing_key(self) -> Path:
        path = self.state_dir / "signing.key"
        if not path.exists():
            # Synapse's key file format: "<algorithm> <version> <unpadded base64 seed>".
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            version = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
            write_secret_file(path, f"ed25519 {version} {seed}\n")
        return path

    def config(self) -> dict[str, Any]:
        state = self.state_dir
        log_config = state / "log_config.yaml"
        return {
            "server_name": self.server_name,
            "pid_file": str(state / "homeserver.pid"),
            "public_baseurl": self.url + "/",
            "listeners": [
                {
                    "port": self.port,
                    # Loopback only; no "federation" resource: this server talks to nobody
                    # but the bridge and the tests.
                    "bind_addresses": [self.bind_host],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(state / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(state / "media_store"),
            "signing_key_path": str(self._signing_key()),
            "registration_shared_secret_path": str(self.shared_secret_path),
            "macaroon_secret_key_path": str(self._secret_file("macaroon_secret_key")),
            "form_secret_path": str(self._secret_file("form_secret")),
            "report_stats": False,
            "enable_metrics": False,
            # An empty whitelist turns outbound federation off as well.
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "allow_public_rooms_over_federation": False,
            "enable_registration": self.registration_tokens,
            "registration_requires_token": self.registration_tokens,
            "enable_registration_without_verification": False,
            "allow_guest_access": False,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "app_service_config_files": [str(p) for p in self.appservice_files],
            # Appservices authenticate with the Authorization header only, as the spec says.
            "use_appservice_legacy_authorization": False,
            "experimental_features": {
                "msc2409_to_device_messages_enabled": True,
                "msc3202_transaction_extensions": True,
            },
            # Tests and the demo only (the appliance runs Tuwunel): a cheap hash saves a
            # quarter second per login and account, hundreds of times in a test run.
            "bcrypt_rounds": 4,
            "rc_message": _RELAXED,
            "rc_registration": _RELAXED,
            "rc_registration_token_validity": _RELAXED,
            "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
            "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
            "rc_joins_per_room": _RELAXED,
            "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
            "rc_admin_redaction": _RELAXED,
            "rc_room_creation": _RELAXED,
            "rc_profile": _RELAXED,
            "rc_presence": {"per_user": _RELAXED},
            "rc_delayed_event_mgmt": _RELAXED,
            **self.extra_config,
        }

    def _secret_file(self, name: str) -> Path:
        path = self.state_dir / name
        _read_or_create_secret(path)
        return path

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {
                "precise": {"format": "%(asctime)s %(name)s %(levelname)s %(request)s %(message)s"}
            },
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "filters": ["context"],
                    "encoding": "utf-8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        self.registration_shared_secret  # noqa: B018 - creates the secret file on first use
        # JSON is YAML: Synapse reads these with a YAML loader, and JSON cannot be misquoted.
        write_secret_file(
            self.state_dir / "log_config.yaml", json.dumps(self._log_config(), indent=2) + "\n"
        )
        write_secret_file(self.config_path, json.dumps(self.config(), indent=2) + "\n")

    # --- process ------------------------------------------------------------------------

    # `timeout` is part of the interface the bridge tests and the demo call.
    async def start(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        if self.running:
            return
        for attempt in range(3):
            try:
                await self._start_once(timeout)
                return
            except SynapseStartError as exc:
                # A port picked by free_port() can be taken by someone else before Synapse
                # binds it; pick another rather than fail the run.
                if self._fixed_port or "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.port = free_port()

    async def _start_once(self, timeout: float) -> None:  # noqa: ASYNC109
        self.write_config()
        self._proc = await asyncio.to_thread(self._spawn)
        self._paused = False
        _running.add(self)
        http = MatrixHttp(self.url, self.server_name, timeout=5.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise SynapseStartError(f"Synapse exited with {code}\n{self.log_tail()}")
            if await http.is_up():
                log.info("Synapse %s is up on %s", self.server_name, self.url)
                return
            await asyncio.sleep(0.2)
        self.kill()
        raise SynapseStartError(f"Synapse did not answer within {timeout:.0f} s\n{self.log_tail()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.stdout_path.open("ab") as out:
            return subprocess.Popen(
                [
                    *self.command_prefix,
                    str(self.python),
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    str(self.config_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
            )

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.resume()
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                log.warning("Synapse ignored SIGTERM for %.0f s; killing it", timeout)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._proc = None
        _running.discard(self)

    async def restart(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        await self.stop()
        await self.start(timeout)

    def kill(self) -> None:
        """SIGKILL, as a power cut or OOM kill would: for outage tests."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._paused = False
        _running.discard(self)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers, like a hung homeserver."""
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._paused and self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    async def __aenter__(self) -> SynapseServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SynapseAdapter:
    """Accounts through Synapse's shared-secret registration (atomic: a taken localpart is
    an error, never an overwrite) and the admin API, with an admin account of its own whose
    credentials live in `state_dir` (0600)."""

    name = "synapse"
    ADMIN_LOCALPART = "textbridge-admin"

    def __init__(
        self,
        url: str,
        server_name: str,
        *,
        shared_secret: str,
        state_dir: Path,
        server: SynapseServer | None = None,
    ) -> None:
        self.url = url
        self.server_name = server_name
        self.state_dir = Path(state_dir)
        self._shared_secret = shared_secret
        self._server = server
        self.http = MatrixHttp(url, server_name)

    def __repr__(self) -> str:
        return f"SynapseAdapter(url={self.url!r}, server_name={self.server_name!r})"

    @classmethod
    def for_server(cls, server: SynapseServer, *, state_dir: Path | None = None) -> SynapseAdapter:
        """An adapter that follows `server` across restarts; its admin credentials and
        registration copies go to `state_dir` (default: the server's own)."""
        return cls(
            server.url,
            server.server_name,
            shared_secret=server.registration_shared_secret,
            state_dir=state_dir or server.state_dir,
            server=server,
        )

    @property
    def admin_credentials_path(self) -> Path:
        return self.state_dir / "textbridge-admin.json"

    def mxid(self, localpart: str) -> str:
        return self.http.mxid(localpart)

    async def is_up(self) -> bool:
        if self._server is not None:
            # The adapter follows its server across restarts onto a new port.
            self._follow_server()
        return await self.http.is_up()

    def _follow_server(self) -> None:
        if self._server is not None and self._server.url != self.url:
            self.url = self._server.url
            self.http = MatrixHttp(self.url, self.server_name)

    async def create_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        self._follow_server()
        mxid, token = await self.http.shared_secret_register(
            self._shared_secret, localpart, password, admin=admin, displayname=displayname
        )
        # Registration logged the account in; that device is ours, not the person's.
        await self.http.logout(token)
        log.info("created %s%s", mxid, " (admin)" if admin else "")
        return mxid

    async def user_exists(self, localpart: str) -> bool:
        return await self._as_admin(lambda t: self.http.admin_user_exists(t, localpart))

    async def set_password(self, localpart: str, password: str) -> None:
        await self._as_admin(lambda t: self.http.admin_reset_password(t, localpart, password))

    async def deactivate_user(self, localpart: str) -> None:
        await self._as_admin(lambda t: self.http.admin_deactivate(t, localpart))

    async def login(self, localpart: str, password: str) -> str:
        self._follow_server()
        return await self.http.login(localpart, password)

    async def create_registration_token(
        self, *, uses: int = 1, expiry_ms: int | None = None
    ) -> str:
        return await self._as_admin(
            lambda t: self.http.admin_create_registration_token(t, uses=uses, expiry_ms=expiry_ms)
        )

    async def install_appservice(self, registration: Registration) -> bool:
        path = self.state_dir / "appservices" / f"{registration.id}.yaml"
        text = registration.to_yaml(self.server_name)
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        if changed:
            write_secret_file(path, text)
        if self._server is not None:
            changed = self._server.add_appservice_file(path) or changed
        return changed

    async def _as_admin(self, call: Callable[[str], Awaitable[T]]) -> T:
        self._follow_server()
        creds = await self._admin()
        try:
            return await call(creds.access_token)
        except HomeserverUnavailable:
            raise
        except HomeserverError as exc:
            if exc.errcode != "M_UNKNOWN_TOKEN":
                raise
        # The token was logged out (e.g. a password reset of the admin): log in again.
        token = await self.http.login(creds.localpart, creds.password, device_name="textbridge")
        AdminCredentials(creds.localpart, creds.password, token).save(self.admin_credentials_path)
        return await call(token)

    async def _admin(self) -> AdminCredentials:
        creds = AdminCredentials.load(self.admin_credentials_path)
        if creds is not None:
            return creds
        password = random_password(32)
        try:
            _, token = await self.http.shared_secret_register(
                self._shared_secret, self.ADMIN_LOCALPART, password, admin=True
            )
        except UserExists:
            raise HomeserverError(
                f"{self.ADMIN_LOCALPART} exists but {self.admin_credentials_path} is gone; "
                "restore that file, or delete the account with Synapse's tools"
            ) from None
        creds = AdminCredentials(self.ADMIN_LOCALPART, password, token)
        creds.save(self.admin_credentials_path)
        return creds
