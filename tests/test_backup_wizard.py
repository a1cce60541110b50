"""The wizard's "Restore from a backup" on a fresh box: the backups on the USB stick are
listed, a wrong key is refused with nothing written, the right one is checked in full and
handed to the restore service (`textbridge backup restore --pending`, run here as that
service runs it), after which the old owner logs in with the old password."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.backup import key
from appliance.backup.create import create
from appliance.backup.layout import Layout
from tests.plugins.web import OWNER, OWNER_PASSWORD
from tests.test_backup import make_box

REPO = Path(__file__).resolve().parents[1]


def old_box_on_a_stick(tmp_path: Path) -> tuple[Path, str]:
    old = make_box(tmp_path / "old")
    stick = tmp_path / "stick"
    create(old, key.load(old.key_file), stick / "textbridge-20261201-033000.tbbackup")
    return stick, key.kit_text(key.load(old.key_file))


def run_pending(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "appliance", "backup", "--data-dir", str(data),
         "--homeserver", "synapse", "restore", "--pending"],
        env=env, capture_output=True, text=True, timeout=120)


async def test_restore_from_the_stick_at_first_start(web_factory: Any, tmp_path: Path) -> None:
    stick, kit = await asyncio.to_thread(old_box_on_a_stick, tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    c = await web_factory(state_dir=fresh / "web", data_dir=fresh, homeserver_kind="synapse",
                          backup_sources=(stick,))
    status, text = await c.page("/setup/1")
    assert status == 200 and 'href="/restore"' in text
    status, text = await c.page("/restore")
    assert status == 200 and "textbridge-20261201-033000.tbbackup" in text

    status, text, _ = await c.submit("/restore", "/restore",
                                     {"backup": "0", "key": key.generate().identity})
    assert status == 400 and "does not open this backup" in text
    status, text, _ = await c.submit("/restore", "/restore", {"backup": "7", "key": kit})
    assert status == 400 and "choose one of the backups" in text
    assert not (fresh / ".restore-pending.json").exists()

    status, text, _ = await c.submit("/restore", "/restore", {"backup": "0", "key": kit})
    assert status == 200 and "being restored" in text
    pending = fresh / ".restore-pending.json"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600

    done = run_pending(fresh)
    assert done.returncode == 0, done.stderr
    assert not pending.exists()
    assert (fresh / "textbridge.db").is_file() and (fresh / "synapse" / "signing.key").is_file()
    # The box is the old one again: the wizard is closed and the old owner logs in.
    assert (await c.client.get("/restore", allow_redirects=False)).status == 303
    await c.login(OWNER, OWNER_PASSWORD)
    status, _ = await c.page("/")
    assert status == 200


async def test_a_failed_restore_is_shown_and_changes_nothing(
    web_factory: Any, tmp_path: Path
) -> None:
    stick, _ = await asyncio.to_thread(old_box_on_a_stick, tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".restore-pending.json").write_text(json.dumps(
        {"file": str(next(stick.iterdir())), "secret": key.generate().identity}))
    done = run_pending(fresh)
    assert done.returncode == 1
    assert sorted(p.name for p in fresh.iterdir()) == [".restore-failed.json"]
    c = await web_factory(state_dir=fresh / "web", data_dir=fresh, homeserver_kind="synapse",
                          backup_sources=(stick,))
    status, text = await c.page("/restore")
    assert status == 200 and "The last restore did not work" in text
    assert "does not open this backup" in text
    layout = Layout(fresh, "synapse")
    assert not layout.key_file.exists()
