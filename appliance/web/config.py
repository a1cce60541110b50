"""What the web service needs to know, and the files it shares with the bridge.

Files in `state_dir` (every one written atomically, 0600):
  setup.json      -- wizard progress; `complete` closes the wizard for good
  owner.json      -- the owner's username, Matrix id and argon2id password hash
  session.key     -- the secret that signs session cookies
  family.json     -- the family members the web knows (never their passwords)
  members.json    -- {line_id: [mxid, ...]}: who may use which line (read by the bridge)
  policy.json     -- per-user daily SMS caps and the cost guard (read by the bridge)
  contacts.vcf    -- the imported address book (read by the bridge)
  homeserver.json -- "Connect to my homeserver": the family's server (read by the bridge)
  ca/             -- the appliance's own certificate authority and server certificate
  acme/           -- the family domain's certificate from an ACME CA, its keys, status.json
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.homeserver.base import HomeserverAdapter

# Written by the wizard (web/own_server.py), read by the bridge: one name for both.
from appliance.homeserver_choice import HOMESERVER_FILE as HOMESERVER_FILE

SETUP_FILE = "setup.json"
OWNER_FILE = "owner.json"
SESSION_KEY_FILE = "session.key"
FAMILY_FILE = "family.json"
MEMBERS_FILE = "members.json"
POLICY_FILE = "policy.json"
CONTACTS_FILE = "contacts.vcf"
CA_DIR = "ca"


@dataclass(frozen=True)
class WebSettings:
    state_dir: Path
    # Built lazily: the homeserver may still be starting when the web service comes up.
    homeserver: Callable[[], HomeserverAdapter] | None = None
    control_socket: Path | None = None
    host: str = "0.0.0.0"
    port: int = 80
    # Before setup is complete only neighbours on the home network may see the wizard: the
    # first visitor becomes the owner, so that visitor must be in the house.
    trust_local_only: bool = True
    # Force the Secure flag on cookies even when a TLS proxy in front hides the scheme.
    secure_cookies: bool = False
    # The address family members type into Element X; derived from the server name if unset.
    homeserver_public_url: str | None = None
    # The homeserver's client API on loopback, which the HTTPS site proxies `/_matrix/` to
    # (matrix_proxy.py); None: the homeserver adapter's URL.
    homeserver_upstream: str | None = None
    # Where the log view reads from: a file (tests, demo) or, when None, the journal.
    log_file: Path | None = None
    journal_units: tuple[str, ...] = ("textbridge", "textbridge-web")
    session_ttl: float = 12 * 3600.0
    # Login throttle: this many failures are free, then each one doubles the wait.
    login_free_failures: int = 3
    login_base_delay: float = 2.0
    login_max_delay: float = 900.0
    # Extra names and addresses for the server certificate (the Pi's LAN address).
    certificate_ips: tuple[str, ...] = ()
    # Also put this box's own home-network addresses in it, as they are now (the appliance).
    detect_addresses: bool = False
    extra_hostnames: tuple[str, ...] = field(default=("textbridge.local",))
    # Where a certificate for the family's own domain comes from (RFC 8555 directory), and
    # the CA bundle that server's HTTPS is checked with (None: the system's; tests: pebble).
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_bundle: Path | None = None
    acme_poll_interval: float = 2.0
    # Full backups (appliance/backup/): the data directory the web state sits in, which
    # homeserver runs, and the configuration file; None: the Backup page offers only the
    # web state.
    data_dir: Path | None = None
    homeserver_kind: str = "tuwunel"
    config_file: Path | None = None
    # The bridge's appservice port ([bridge] listen_port): "Connect to my homeserver" puts
    # it in the registration's url (web/own_server.py).
    appservice_port: int = 29330
    # Where the wizard's "Restore from a backup" looks for backups (the USB stick).
    backup_sources: tuple[Path, ...] = (Path("/media/textbridge-backup"),)

    def path(self, name: str) -> Path:
        return self.state_dir / name
