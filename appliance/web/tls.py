"""The certificates the HTTPS site presents, and getting one for the family's own domain.

Two certificates can be in use at once, chosen per connection by the name the client asks
for (SNI):
- the home CA's server certificate (ca.py) for `textbridge.local`, the server name and home
  addresses: trusted by the phones that installed the appliance's root;
- for the family's own domain, a publicly trusted certificate from an ACME CA (Let's Encrypt
  by default, acme.py): phones trust it with nothing to install.

A client that sends no name or any other name gets the home certificate. An ACME
certificate is used only while it is valid and belongs to its key (a power cut between
writing the two is caught by `acme.needs_renewal`), so a half-written renewal never breaks
the site: it falls back to the home certificate until the next attempt.

Getting the certificate runs as a background task (an ACME order takes seconds to a minute),
its progress and its last error in `acme/status.json`, which the wizard and the dashboard
show in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from appliance.web import acme
from appliance.web.ca import PRIVATE_NETWORKS, CertificateAuthority
from appliance.web.files import read_json, write_json

log = logging.getLogger(__name__)

ACME_DIR = "acme"
State = Literal["none", "working", "ok", "error"]
# A failed order is tried again after this long, not at every hourly check.
RETRY_AFTER_ERROR_S = 6 * 3600.0


_HOME_NETWORKS = [ipaddress.ip_network(n) for n in PRIVATE_NETWORKS]


def is_home_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address a phone at home can type and the home root may vouch for: private IPv4,
    ULA IPv6; not loopback or link-local (no phone types those)."""
    if address.is_loopback or address.is_link_local:
        return False
    return any(address in net for net in _HOME_NETWORKS)


def home_addresses() -> tuple[str, ...]:
    """This box's addresses that a phone at home can type (private IPv4, ULA IPv6), for the
    home certificate: a phone whose system cannot resolve `.local` names uses the address
    from the router's list. Link-local and loopback addresses are left out (no phone types
    those), and so are public ones (the home root may not vouch for them). Blocking
    (netlink): called off the event loop."""
    from pyroute2 import IPRoute

    found: list[str] = []
    with IPRoute() as ip:
        for msg in ip.get_addr():
            raw = msg.get_attr("IFA_ADDRESS")
            if not raw:
                continue
            address = ipaddress.ip_address(raw)
            if is_home_address(address) and str(address) not in found:
                found.append(str(address))
    return tuple(found)


# Tells the owners in their chat: (topic, key, text, severity) -> whether it was sent.
Notifier = Callable[[str, str, str, str], Awaitable[bool]]
NOTICE_TOPIC = "certificate"


@dataclass(frozen=True)
class AcmeStatus:
    state: State
    domain: str = ""
    message: str = ""
    not_after: dt.datetime | None = None
    at: float = 0.0

    @property
    def days_left(self) -> int | None:
        if self.not_after is None:
            return None
        return (self.not_after - dt.datetime.now(dt.UTC)).days


class Certificates:
    """Owned by the web app (`Web.tls`); `context()` is what the HTTPS site serves with."""

    def __init__(
        self,
        state_dir: Path,
        ca: Callable[[], CertificateAuthority],
        *,
        hostnames: tuple[str, ...],
        ips: tuple[str, ...],
        directory_url: str,
        ca_bundle: Path | None = None,
        poll_interval: float = 2.0,
        detect_addresses: bool = False,
        notify: Notifier | None = None,
        more_ips: Callable[[], tuple[str, ...]] | None = None,
    ) -> None:
        self.dir = state_dir / ACME_DIR
        self._ca = ca
        self.hostnames = hostnames
        self.ips = ips
        self.directory_url = directory_url
        self.ca_bundle = ca_bundle
        self.poll_interval = poll_interval
        self.detect_addresses = detect_addresses
        self.notify = notify
        # Addresses known from our own state rather than the interfaces (the WireGuard
        # tunnel's, so a phone away from home can use it the moment remote access is on).
        self.more_ips = more_ips
        self.challenges = acme.ChallengeStore()
        self._home: ssl.SSLContext | None = None
        self._own: ssl.SSLContext | None = None
        self._own_names: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None
        # reload() runs in threads (the hourly check, refresh_soon): two at once could write
        # one's key and the other's certificate.
        self._reload_lock = threading.Lock()

    # --- files --------------------------------------------------------------------------

    @property
    def account_key_path(self) -> Path:
        return self.dir / "account.key"

    @property
    def cert_path(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def key_path(self) -> Path:
        return self.dir / "key.pem"

    @property
    def status_path(self) -> Path:
        return self.dir / "status.json"

    def status(self) -> AcmeStatus:
        raw = read_json(self.status_path, {})
        if not isinstance(raw, dict):
            raw = {}
        found = raw.get("state")
        state: State = found if found in ("none", "working", "ok", "error") else "none"
        if state == "working" and not self.working:
            # The service restarted during an order: it is not running any more.
            state = "error"
            raw["message"] = "Textbridge restarted while it was getting the certificate."
        not_after = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            not_after = cert.not_valid_after_utc
        return AcmeStatus(
            state=state,
            domain=str(raw.get("domain", "")),
            message=str(raw.get("message", "")),
            not_after=not_after,
            at=float(raw.get("at", 0.0)),
        )

    @property
    def _last_state(self) -> str:
        raw = read_json(self.status_path, {})
        return str(raw.get("state", "none")) if isinstance(raw, dict) else "none"

    def _record(self, state: State, domain: str, message: str = "") -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json(
            self.status_path,
            {"state": state, "domain": domain, "message": message, "at": time.time()},
        )

    # --- the TLS context ------------------------------------------------------------------

    def context(self) -> ssl.SSLContext:
        """The server context (made on first use); later renewals change what it serves
        without a restart."""
        if self._home is None:
            self._home = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._home.sni_callback = self._pick
            self.reload()
        return self._home

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        own = self._own
        if own is not None and name and name.lower().rstrip(".") in self._own_names:
            sslobj.context = own

    def reload(self) -> bool:
        """Load (again) the home certificate, renewing it if due, and the ACME certificate if
        it is usable. Blocking (file I/O and key generation): call it off the loop where it
        matters. Returns whether the home certificate was renewed."""
        with self._reload_lock:
            return self._reload()

    def _reload(self) -> bool:
        ca = self._ca()
        ips = self.ips
        if self.detect_addresses:
            try:
                ips += tuple(a for a in home_addresses() if a not in ips)
            except Exception as exc:  # no netlink (a container): the names still work
                log.warning("tls: this box's addresses are not readable: %s", exc)
        if self.more_ips is not None:
            try:
                ips += tuple(a for a in self.more_ips() if a not in ips)
            except (OSError, ValueError) as exc:
                log.warning("tls: addresses from the state not readable: %s", exc)
        renewed = ca.ensure(self.hostnames, ips)
        if self._home is not None:
            self._home.load_cert_chain(ca.server_cert_path, ca.server_key_path)
        self._own, self._own_names = self._load_own()
        return renewed

    def _load_own(self) -> tuple[ssl.SSLContext | None, frozenset[str]]:
        if acme.needs_renewal(self.cert_path, days=0, key_path=self.key_path):
            return None, frozenset()
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = frozenset(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
            own = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            own.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ValueError, ssl.SSLError, x509.ExtensionNotFound) as exc:
            log.warning("tls: the domain's certificate is not usable: %s", exc)
            return None, frozenset()
        return own, names

    def refresh_soon(self) -> None:
        """Reload in the background after a change that adds an address (remote access
        switched on), so new handshakes name it; errors are logged."""

        def run() -> None:
            try:
                if self.reload():
                    log.info("tls: home certificate re-issued for a new address")
            except Exception:
                log.exception("tls: refreshing the home certificate failed")

        asyncio.get_running_loop().run_in_executor(None, run)

    # --- ACME -----------------------------------------------------------------------------

    @property
    def working(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, domain: str, contact: str | None = None) -> bool:
        """Begin getting a certificate for `domain` in the background. False if an order is
        already under way (a second press of the button does not start a second one)."""
        if self.working:
            return False
        was_failing = self._last_state == "error"
        self._record("working", domain)
        self._task = asyncio.create_task(
            self._obtain(domain, contact, was_failing=was_failing), name="acme-order"
        )
        return True

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _obtain(self, domain: str, contact: str | None, *, was_failing: bool) -> None:
        ssl_arg: acme.SslArg = None
        if self.ca_bundle is not None:
            ssl_arg = ssl.create_default_context(cafile=str(self.ca_bundle))
        try:
            await acme.obtain_certificate(
                self.directory_url,
                [domain],
                account_key_path=self.account_key_path,
                cert_path=self.cert_path,
                key_path=self.key_path,
                challenges=self.challenges,
                contact=contact,
                ssl=ssl_arg,
                poll_interval=self.poll_interval,
            )
        except asyncio.CancelledError:
            self._record("error", domain, "Getting the certificate was interrupted.")
            raise
        except acme.AcmeError as exc:
            log.warning("tls: no certificate for %s: %s", domain, exc)
            await self._failed(domain, str(exc))
            return
        except Exception as exc:
            log.exception("tls: getting a certificate for %s failed", domain)
            words = f"Getting the certificate failed unexpectedly ({type(exc).__name__})."
            await self._failed(domain, words)
            return
        await asyncio.to_thread(self.reload)
        self._record("ok", domain)
        log.info("tls: %s now has a publicly trusted certificate", domain)
        if was_failing:
            until = self.status().not_after
            when = until.strftime("%Y-%m-%d") if until else "next year"
            await self._tell(f"ok:{when}", "info",
                             f"The certificate for {domain} is renewed, valid until {when}.")

    async def _failed(self, domain: str, message: str) -> None:
        self._record("error", domain, message)
        current = self.status().not_after
        if current is not None and current > dt.datetime.now(dt.UTC):
            what = "could not be renewed"
            after = (f"The current one is valid until {current.strftime('%Y-%m-%d')}; after "
                     f"that, phones using https://{domain} cannot connect until it is renewed.")
        else:
            what = "could not be obtained"
            after = (f"Until it works, phones using https://{domain} cannot connect; the home "
                     "certificate (textbridge.local) still works.")
        # One notice a day at most for the same failure (the key carries the date).
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        await self._tell(f"failed:{day}", "warning",
                         f"The certificate for {domain} {what}: {message} {after} "
                         "Textbridge tries again by itself; the dashboard shows the details.")

    async def _tell(self, key: str, severity: str, text: str) -> None:
        if self.notify is None:
            return
        try:
            await self.notify(NOTICE_TOPIC, key, text, severity)
        except Exception as exc:  # the bridge is down: the dashboard still says it
            log.warning("tls: the owners could not be told in their chat: %s", exc)

    def renewal_due(self, domain: str | None, now: float | None = None) -> bool:
        """Whether the regular check should order a certificate for `domain`: one was wanted
        (an order was made before) and it expires within 30 days, or names another domain,
        or the last attempt failed long enough ago."""
        if not domain or self.working:
            return False
        status = self.status()
        if status.state == "none":
            return False  # the owner never asked for one
        if status.state == "error":
            return (now or time.time()) - status.at >= RETRY_AFTER_ERROR_S
        return acme.needs_renewal(self.cert_path, domains=[domain], key_path=self.key_path)

    def describe(self) -> dict[str, Any]:
        """For the pages: what a person sees about the domain's certificate."""
        status = self.status()
        return {
            "state": "working" if self.working else status.state,
            "domain": status.domain,
            "message": status.message,
            "not_after": status.not_after,
            "days_left": status.days_left,
            "serving": bool(self._own_names),
        }
