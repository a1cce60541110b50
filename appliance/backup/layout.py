"""Where a box keeps what a backup holds, and what is never in one.

Everything lives under the data directory (`general.data_dir`, /var/lib/textbridge on the
appliance), plus the configuration file. Synapse keeps its database, media store and signing
key in `{data_dir}/synapse`; Tuwunel its RocksDB in `{data_dir}/tuwunel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.backup.key import KEY_FILE

# Top-level names in the data directory that belong to this box, not to the family: the
# journal, the filesystem's own directory, the first-boot marker, the control socket, and
# the work directories of a backup or restore that is running.
SKIP_TOP = frozenset({"journal", "lost+found", ".firstboot-done", "control.sock",
                      ".restore-pending.json", ".restore-failed.json"})
WORK_PREFIXES = (".backup-", ".restore-")
# Never copied: a live database's sidecars (the online backup holds their content), locks,
# pids and sockets, and the homeserver's logs.
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".sock", ".lock", ".pid", ".log", ".tmp")
SQLITE_MAGIC = b"SQLite format 3\x00"
# The wizard's restore request and its failure (appliance/web/restore_step.py), both at the
# top of the data directory; never in a backup.
PENDING_FILE = ".restore-pending.json"
FAILED_FILE = ".restore-failed.json"


@dataclass(frozen=True)
class Layout:
    data_dir: Path
    homeserver: str  # "synapse" or "tuwunel"
    config_file: Path | None = None
    store: Path | None = None  # default {data_dir}/textbridge.db
    bridge_db: Path | None = None  # default {data_dir}/bridge.db

    @classmethod
    def from_config(cls, config_file: Path, homeserver: str) -> Layout:
        from appliance.config import Config

        config = Config.load(config_file)
        data_dir = config.general.data_dir
        bridge_db = config.bridge.database
        return cls(
            data_dir=data_dir,
            homeserver=homeserver,
            config_file=config_file,
            store=config.store_path,
            bridge_db=bridge_db if bridge_db.is_absolute() else data_dir / bridge_db,
        )

    @property
    def store_path(self) -> Path:
        return self.store or self.data_dir / "textbridge.db"

    @property
    def bridge_path(self) -> Path:
        return self.bridge_db or self.data_dir / "bridge.db"

    @property
    def homeserver_dir(self) -> Path:
        return self.data_dir / self.homeserver

    @property
    def key_file(self) -> Path:
        return self.data_dir / KEY_FILE


def skipped(rel: PurePosixPath) -> bool:
    """True for a path (relative to the data directory) that a backup leaves out."""
    top = rel.parts[0]
    if top in SKIP_TOP or top.startswith(WORK_PREFIXES):
        return True
    if rel.parts[-1].startswith(".") and rel.parts[-1].endswith(".tmp"):
        return True
    return rel.name.endswith(SKIP_SUFFIXES) or ".log." in rel.name


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
