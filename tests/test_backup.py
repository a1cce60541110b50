"""Full backups on the host: the file format, every bad input refused with nothing on the
box changed, the web state checked with the forms' validators (issue 12.4), the owner reset
from the boot partition, and the CLI. The round trip with a real Synapse and texts arriving
during the backup is in tests/test_backup_synapse.py."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from appliance import __version__
from appliance.backup import age, cut, header, key
from appliance.backup.create import create
from appliance.backup.errors import BackupError
from appliance.backup.layout import Layout
from appliance.backup.restore import restore, verify
from appliance.backup.unpack import Limits
from appliance.homeserver.registration import Registration
from appliance.store import Store
from appliance.store.models import InboundMessage, OutboundRequest
from appliance.web import owner_reset
from appliance.web.ca import CertificateAuthority
from appliance.web.config import WebSettings
from appliance.web.state import WebState
from appliance.wireguard import keys as wg_keys
from tests.plugins.web import OWNER, complete_setup

REPO = Path(__file__).resolve().parents[1]


def _inbound(i: int) -> InboundMessage:
    return InboundMessage(line_id="modem", conversation="+491701234567",
                          sender="+491701234567", body=f"text {i}",
                          sent_at=1_700_000_000_000 + i, dedup_key=f"k{i}")


async def _fill_store(path: Path, texts: int) -> None:
    store = await Store.open(path)
    try:
        for i in range(texts):
            row, _ = await store.inbox.add(_inbound(i))
            if i % 2 == 0:
                await store.inbox.mark_delivered(row.id, f"$event{i}")
        await store.outbox.enqueue(
            OutboundRequest("$out1", "modem", "+491701234567", "queued one", "@a:t"), 1
        )
    finally:
        await store.close()


def make_box(base: Path, homeserver: str = "synapse") -> Layout:
    """A box's data directory as the appliance lays it out, with real parts: a store with
    texts (the WAL still open-ended), a bridge database, a Synapse-shaped directory, the web
    state with the CA, WireGuard keys, the registration, the config and the backup key."""
    data = base / "data"
    data.mkdir(mode=0o750, parents=True)
    asyncio.run(_fill_store(data / "textbridge.db", 20))
    bridge = sqlite3.connect(data / "bridge.db")
    bridge.execute("PRAGMA journal_mode=WAL")
    bridge.execute("CREATE TABLE inbox_attempt (row_id INTEGER PRIMARY KEY, room_id TEXT)")
    bridge.execute("CREATE TABLE ghost (mxid TEXT PRIMARY KEY, displayname TEXT)")
    bridge.execute("INSERT INTO ghost VALUES ('@sms_49170:t', 'Anna')")
    bridge.commit()
    bridge.close()
    hs = data / "synapse"
    (hs / "media_store" / "local_content" / "ab").mkdir(parents=True)
    (hs / "media_store" / "local_content" / "ab" / "cdef").write_bytes(os.urandom(5000))
    db = sqlite3.connect(hs / "homeserver.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE events (event_id TEXT)")
    db.executemany("INSERT INTO events VALUES (?)", [(f"$e{i}",) for i in range(50)])
    db.commit()
    db.close()
    (hs / "signing.key").write_text("ed25519 a_abcd c2VjcmV0\n")
    (hs / "signing.key").chmod(0o600)
    (hs / "homeserver.log").write_text("noise\n")
    settings = WebSettings(state_dir=data / "web")
    complete_setup(settings)
    WebState(settings).session_secret()
    CertificateAuthority(data / "web" / "ca", "textbridge.local").ensure()
    wg_keys.load_or_create(data / "web" / "wireguard.key")
    Registration.generate(url="http://127.0.0.1:29330").save(data / "registration.yaml",
                                                               "textbridge.test")
    (data / "control.sock").write_text("")  # never in a backup
    (data / ".firstboot-done").write_text("")
    config = base / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[general]\ndata_dir = "{data}"\n')
    layout = Layout(data, homeserver, config)
    key.save(layout.key_file, key.generate())
    return layout


def state_of(layout: Layout) -> dict[str, tuple[bytes, int]]:
    found = {}
    for root in (layout.data_dir, layout.config_file.parent if layout.config_file else None):
        if root is None:
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
            else:
                found[str(path)] = (b"dir", stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, Path, str]:
    """One box and one good backup of it, shared by the refusal tests (scrypt is slow)."""
    base = tmp_path_factory.mktemp("box")
    layout = make_box(base)
    out = base / "out" / "box.tbbackup"
    create(layout, key.load(layout.key_file), out)
    return layout, out, key.load(layout.key_file).identity


def test_round_trip_restores_everything_onto_a_new_card(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    identity = key.load(layout.key_file).identity
    before = state_of(layout)
    out = tmp_path / "stick" / "b.tbbackup"
    made = create(layout, key.load(layout.key_file), out)
    assert made.databases == 3 and stat.S_IMODE(out.stat().st_mode) == 0o600
    blob = out.read_bytes()
    assert blob.startswith(header.MAGIC)
    for secret in (b"password_hash", b"PRIVATE KEY", identity.encode(), b"text 1"):
        assert secret not in blob
    head, _ = header.read(io.BytesIO(blob))
    assert head.homeserver == "synapse" and head.appliance_version == __version__

    # A new card: the data directory is another box's, the old one is gone.
    for path in sorted(layout.data_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    layout.config_file.unlink()  # type: ignore[union-attr]
    (layout.data_dir / "synapse").mkdir()
    (layout.data_dir / "synapse" / "homeserver.db").write_bytes(b"a fresh box's")
    (layout.data_dir / "textbridge.db-wal").write_bytes(b"a stale WAL of another database")
    done = restore(out, layout, identity)
    assert done.files >= 10
    after = state_of(layout)
    skipped = ("control.sock", ".firstboot-done", "homeserver.log", ".lock")
    for name, (content, mode) in before.items():
        if name.endswith(skipped):
            assert name not in after
            continue
        if name.endswith((".db", "-wal", "-shm")):
            continue  # compared through SQLite below
        assert after[name][0] == content, name
        if content != b"dir":
            assert after[name][1] == (mode & 0o640) | 0o600 or after[name][1] == 0o600, name
    assert not (layout.data_dir / "textbridge.db-wal").exists()
    for rel in ("web/owner.json", "web/ca/ca.key", "web/wireguard.key", "synapse/signing.key",
                "backup.key", "registration.yaml", "textbridge.db", "bridge.db"):
        assert stat.S_IMODE((layout.data_dir / rel).stat().st_mode) == 0o600, rel
    db = sqlite3.connect(layout.data_dir / "synapse" / "homeserver.db")
    assert db.execute("SELECT count(*) FROM events").fetchone() == (50,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    ghost = sqlite3.connect(layout.data_dir / "bridge.db")
    assert ghost.execute("SELECT displayname FROM ghost").fetchall() == [("Anna",)]
    ghost.close()

    async def check_store() -> None:
        store = await Store.open(layout.data_dir / "textbridge.db")
        try:
            assert len(await store.inbox.pending(limit=1000)) == 10
            row = await store.outbox.by_request("$out1")
            assert row is not None and row.state.value == "queued"
        finally:
            await store.close()

    asyncio.run(check_store())
    assert not list(layout.data_dir.glob(".restore-*"))


def test_the_cut_puts_texts_delivered_after_the_homeserver_copy_back(tmp_path: Path) -> None:
    asyncio.run(_fill_store(tmp_path / "s.db", 6))  # rows 1..6; odd ids delivered
    before = cut.mark(tmp_path / "s.db")
    assert before.max_id == 6 and before.undelivered == {2, 4, 6}

    async def later() -> None:
        store = await Store.open(tmp_path / "s.db")
        await store.inbox.mark_delivered(2, "$late")  # after the homeserver's copy
        row, _ = await store.inbox.add(_inbound(99))  # arrived and delivered after it too
        await store.inbox.mark_delivered(row.id, "$later")
        await store.close()

    asyncio.run(later())
    bridge = tmp_path / "b.db"
    conn = sqlite3.connect(bridge)
    conn.execute("CREATE TABLE inbox_attempt (row_id INTEGER PRIMARY KEY, room_id TEXT)")
    conn.executemany("INSERT INTO inbox_attempt VALUES (?, '!r')", [(1,), (2,), (42,)])
    conn.commit()
    conn.close()
    assert cut.apply(before, tmp_path / "s.db", bridge) == 2
    conn = sqlite3.connect(tmp_path / "s.db")
    received = [r[0] for r in conn.execute("SELECT id FROM inbox WHERE state='received' "
                                           "ORDER BY id")]
    assert received == [2, 4, 6, 7]
    conn = sqlite3.connect(bridge)
    attempts = [r[0] for r in conn.execute("SELECT row_id FROM inbox_attempt ORDER BY row_id")]
    assert attempts == [1, 2, 4, 6, 7]  # row 42 was never in the store's copy


# -- bad input: refused, with nothing on the box changed ---------------------------------


def hostile(layout: Layout, members: list[tuple[tarfile.TarInfo, bytes]], *,
            head: header.Header | None = None, raw_header: bytes | None = None) -> bytes:
    k = key.load(layout.key_file)
    head = head or header.Header.new("synapse", k.recipient)
    raw = head.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("header.json")
        info.size = len(raw_header or raw)
        tar.addfile(info, io.BytesIO(raw_header or raw))
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    sink = io.BytesIO()
    sink.write(header.MAGIC + raw)
    age.encrypt_stream(io.BytesIO(buf.getvalue()), sink, k.recipient)
    return sink.getvalue()


def file_member(name: str, data: bytes, mode: int = 0o600) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, b""


def good_owner() -> bytes:
    from argon2 import PasswordHasher

    return json.dumps({"name": "Owner Person", "username": OWNER,
                       "mxid": f"@{OWNER}:textbridge.test",
                       "password_hash": PasswordHasher().hash("x" * 12)}).encode()


def _malformed_owner(layout: Layout) -> bytes:
    setup = json.dumps({"complete": True, "done": [1, 2, 3, 4, 5, 6]}).encode()
    return hostile(layout, [file_member("data/web/setup.json", setup),
                            file_member("data/web/owner.json", b'{"username": "owner"', 0o644)])


BAD_ARCHIVES: dict[str, tuple[Any, str]] = {
    "dotdot": (lambda lay: hostile(lay, [file_member("data/../../escape", b"x")]),
               "outside the data directory"),
    "absolute": (lambda lay: hostile(lay, [file_member("/etc/evil", b"x")]),
                 "outside the data directory"),
    "other top": (lambda lay: hostile(lay, [file_member("etc/passwd", b"x")]),
                  "outside the data directory"),
    "symlink": (lambda lay: hostile(lay, [special("data/web/owner.json", tarfile.SYMTYPE,
                                                  "/etc/shadow")]), "a link"),
    "hardlink": (lambda lay: hostile(lay, [special("data/x", tarfile.LNKTYPE, "/etc/shadow")]),
                 "a link"),
    "device": (lambda lay: hostile(lay, [special("data/dev", tarfile.CHRTYPE)]), "a device"),
    "fifo": (lambda lay: hostile(lay, [special("data/fifo", tarfile.FIFOTYPE)]), "a device"),
    "huge": (lambda lay: hostile(lay, [file_member("data/big", b"\0" * (3 << 20))]),
             "far too large"),
    "twice": (lambda lay: hostile(lay, [file_member("data/a", b"1"), file_member("data/a", b"2")]),
              "same file twice"),
    "header swapped": (lambda lay: hostile(lay, [], raw_header=b'{"product":"textbridge"}\n'),
                       "header does not match"),
    "malformed owner.json": (_malformed_owner, "web/owner.json is not valid"),
    "finished without owner": (
        lambda lay: hostile(lay, [file_member("data/web/setup.json", b'{"complete": true}')]),
        "there is no owner"),
    "owner with bad username": (
        lambda lay: hostile(lay, [file_member(
            "data/web/owner.json", good_owner().replace(b'"owner"', b'"Root Admin"'))]),
        "web/owner.json is not valid"),
    "bad family": (lambda lay: hostile(lay, [file_member(
        "data/web/family.json", b'{"members": [{"name": "<script>", "username": "x", '
        b'"mxid": "@x:t"}]}')]), "web/family.json is not valid"),
    "damaged database": (lambda lay: hostile(lay, [file_member(
        "data/textbridge.db", b"SQLite format 3\x00" + b"\xff" * 4000)]), "database is damaged"),
    "bad config": (lambda lay: hostile(lay, [file_member("etc/config.toml", b"[general]\nx=1\n")]),
                   "config.toml is not valid"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_hostile_archives_are_refused_and_change_nothing(
    box: tuple[Layout, Path, str], tmp_path: Path, case: str
) -> None:
    layout, _, identity = box
    build, words = BAD_ARCHIVES[case]
    path = tmp_path / "bad.tbbackup"
    path.write_bytes(build(layout))
    before = state_of(layout)
    with pytest.raises(BackupError, match=words) as caught:
        restore(path, layout, identity, Limits(max_member=2 << 20))
    assert "Traceback" not in str(caught.value)
    assert state_of(layout) == before
    assert not (tmp_path.parent / "escape").exists()


def _flip(blob: bytes, at: int) -> bytes:
    changed = bytearray(blob)
    changed[at] ^= 0x01
    return bytes(changed)


def _set_header(blob: bytes, **changes: Any) -> bytes:
    rest = blob[len(header.MAGIC):]
    line, body = rest.split(b"\n", 1)
    data = json.loads(line)
    data.update(changes)
    return header.MAGIC + json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + \
        b"\n" + body


BAD_FILES: dict[str, tuple[Any, str]] = {
    "truncated": (lambda b: b[: len(b) * 2 // 3], "damaged or cut off"),
    "tampered body": (lambda b: _flip(b, len(b) - 100), "damaged or cut off"),
    "tampered header": (lambda b: _set_header(b, created_at=1.0), "header does not match"),
    "another product": (lambda b: _set_header(b, product="homeassistant"), "another product"),
    "plain age file": (lambda b: b[b.index(header.AGE_MAGIC):], "not a Textbridge backup"),
    "old settings backup": (lambda b: header.OLD_MAGIC + b"\0" * 64, "older Textbridge"),
    "not a backup": (lambda b: b"PK\x03\x04 a zip file", "not a Textbridge backup"),
    "empty": (lambda b: b"", "not a Textbridge backup"),
    "newer version": (lambda b: _set_header(b, appliance_version="99.0"),
                      "newer Textbridge .* Update this box first"),
    "newer format": (lambda b: _set_header(b, format=3), "newer Textbridge"),
    "other homeserver": (lambda b: _set_header(b, homeserver="tuwunel"),
                         "running Tuwunel, and this one runs Synapse. Flash the Tuwunel image"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_refused_and_change_nothing(
    box: tuple[Layout, Path, str], tmp_path: Path, case: str
) -> None:
    layout, good, identity = box
    change, words = BAD_FILES[case]
    path = tmp_path / "bad.tbbackup"
    path.write_bytes(change(good.read_bytes()))
    before = state_of(layout)
    with pytest.raises(BackupError, match=words):
        restore(path, layout, identity)
    assert state_of(layout) == before


def test_wrong_keys_are_refused_and_change_nothing(box: tuple[Layout, Path, str]) -> None:
    layout, good, identity = box
    before = state_of(layout)
    with pytest.raises(BackupError, match="does not open this backup"):
        restore(good, layout, key.generate().identity)
    with pytest.raises(BackupError, match="mistyped"):
        restore(good, layout, identity[:-3] + "QQQ")
    with pytest.raises(BackupError, match="opens only with its key"):
        restore(good, layout, "a passphrase that was never set")
    with pytest.raises(BackupError, match="too large"):
        restore(good, layout, identity, Limits(max_file=100))
    with pytest.raises(BackupError, match="more than this box can hold"):
        restore(good, layout, identity, Limits(max_total=1000))
    assert state_of(layout) == before
    assert verify(good, layout, identity) > 10


def test_passphrase_opens_the_backup_as_well_as_the_kit(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    k = key.with_passphrase(key.load(layout.key_file), "our family's long phrase")
    key.save(layout.key_file, k)
    out = tmp_path / "p.tbbackup"
    create(layout, k, out)
    with pytest.raises(BackupError, match="passphrase is wrong"):
        verify(out, layout, "not our family's phrase")
    assert verify(out, layout, "our family's long phrase") > 10
    kit = key.kit_text(k)
    assert kit.startswith("AGE-SECRET-KEY-1 ") and verify(out, layout, kit.lower()) > 10


def test_tuwunel_box_is_refused_rather_than_half_backed_up(tmp_path: Path) -> None:
    layout = make_box(tmp_path, homeserver="tuwunel")
    with pytest.raises(BackupError, match="Tuwunel"):
        create(layout, key.load(layout.key_file), tmp_path / "t.tbbackup")
    assert not (tmp_path / "t.tbbackup").exists()


def test_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "backup.key"
    first = key.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.load_or_create(path) == first
    path.write_text("{}")
    with pytest.raises(BackupError, match="damaged"):
        key.load(path)


# -- the CLI -----------------------------------------------------------------------------


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "appliance", "backup", *args], env=env,
                          capture_output=True, text=True, timeout=120, input=stdin)


def test_cli_create_and_restore(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    base = ["--config", str(layout.config_file), "--homeserver", "synapse"]
    out = tmp_path / "cli.tbbackup"
    made = cli(*base, "create", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["databases"] == 3
    kit = cli(*base, "key")
    assert kit.stdout.startswith("AGE-SECRET-KEY-1 ")
    (layout.data_dir / "web" / "owner.json").unlink()
    keyfile = tmp_path / "kit.txt"
    keyfile.write_text(kit.stdout)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(key.generate().identity)
    refused = cli(*base, "restore", str(out), "--key-file", str(wrong))
    assert refused.returncode == 1 and "does not open this backup" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (layout.data_dir / "web" / "owner.json").exists()
    done = cli(*base, "restore", str(out), "--key-file", str(keyfile))
    assert done.returncode == 0, done.stderr
    assert (layout.data_dir / "web" / "owner.json").is_file()


# -- issue 12.4: the way back for an owner with the box in hand ----------------------------


def test_owner_reset_from_the_boot_partition(tmp_path: Path) -> None:
    settings = WebSettings(state_dir=tmp_path / "web")
    complete_setup(settings)
    state = WebState(settings)
    old_secret = state.session_secret()
    boot = tmp_path / "boot"
    boot.mkdir()
    assert not owner_reset.reset(settings.state_dir, boot / "textbridge-reset-owner")
    assert state.complete and state.owner() is not None
    (boot / "textbridge-reset-owner").write_text("")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run(
        [sys.executable, "-m", "appliance", "owner-reset", "--state-dir",
         str(settings.state_dir), "--boot-file", str(boot / "textbridge-reset-owner")],
        env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "open again" in ran.stdout
    assert not state.complete and state.owner() is None
    assert 1 not in state.done_steps()
    assert state.setup()[owner_reset.RESET_KEY] == OWNER
    assert state.session_secret() != old_secret
    kept = settings.state_dir / "owner.json.before-reset"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert not (boot / "textbridge-reset-owner").exists()
    assert [m.username for m in state.family()] == [OWNER]  # the family stays


def test_web_service_unit_runs_the_owner_reset_as_root() -> None:
    unit = (REPO / "systemd" / "textbridge-web.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStartPre="))
    assert line.startswith("ExecStartPre=-+/opt/textbridge/bin/textbridge owner-reset")


def test_a_swap_that_fails_half_way_is_rolled_back(box: tuple[Layout, Path, str],
                                                    tmp_path: Path) -> None:
    """The data directory's entries are swapped first, the configuration last; here /etc is
    gone, so the last step fails after the others were done, and all are put back."""
    layout, good, identity = box
    before = state_of(layout)
    elsewhere = Layout(layout.data_dir, "synapse", tmp_path / "no-such-etc" / "config.toml")
    with pytest.raises(BackupError, match="put back as it was"):
        restore(good, elsewhere, identity)
    assert state_of(layout) == before
    assert not list(layout.data_dir.glob(".restore-*"))


def test_cli_says_plainly_when_the_target_cannot_be_written(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    (tmp_path / "afile").write_text("")
    made = cli("--config", str(layout.config_file), "--homeserver", "synapse", "create",
               "--out", str(tmp_path / "afile" / "b.tbbackup"))
    assert made.returncode == 1 and "Traceback" not in made.stderr
    assert "File exists" in made.stderr and "afile" in made.stderr
