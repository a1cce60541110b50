"""Issue 12.4 through the dashboard: a restore with a malformed owner.json, encrypted with
the right passphrase, is refused and the owner can still log in; a good one is written 0600
whatever mode the archive gave its files."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import tarfile
from typing import Any

import aiohttp
import pytest

from appliance.web import backup
from tests.plugins.web import OWNER, OWNER_PASSWORD, complete_setup

PHRASE = "a very long phrase"


def archive(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return backup.encrypt(buf.getvalue(), PHRASE)


async def _restore(c: Any, blob: bytes) -> aiohttp.ClientResponse:
    token = await c.csrf("/backup")
    form = aiohttp.FormData()
    form.add_field("csrf", token)
    form.add_field("passphrase", PHRASE)
    form.add_field("file", blob, filename="b.tbbackup")
    resp: aiohttp.ClientResponse = await c.client.post("/backup/restore", data=form,
                                                       allow_redirects=False)
    return resp


async def test_malformed_owner_json_is_refused_and_the_owner_keeps_access(
    web_factory: Any,
) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    state_dir = c.settings.state_dir
    before = {p.name: p.read_bytes() for p in state_dir.iterdir() if p.is_file()}
    for owner in (b'{"username": "owner"',  # cut off
                  b'{"name": "X", "username": "owner", "mxid": "@owner:t"}',  # no hash
                  json.dumps({"name": "X", "username": "owner", "mxid": "@owner:t",
                              "password_hash": "plain"}).encode()):
        resp = await _restore(c, archive({"owner.json": owner}))
        assert resp.status == 400
        assert "owner.json is not valid" in await resp.text()
        after = {p.name: p.read_bytes() for p in state_dir.iterdir() if p.is_file()}
        assert after == before
    # Still logged in, and a new login works too.
    assert (await c.client.get("/", allow_redirects=False)).status == 200
    await c.client.post("/logout", data={"csrf": await c.csrf("/")})
    status, text, _ = await c.submit(
        "/login", "/login", {"username": OWNER, "password": OWNER_PASSWORD, "next": "/"}
    )
    assert status == 303, text


async def test_restored_files_are_private_whatever_the_archive_says(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    await c.login()
    policy = json.dumps({"default_daily_cap": 7}).encode()
    resp = await _restore(c, archive({"policy.json": policy, "contacts.vcf": b"BEGIN:VCARD"}))
    assert resp.status == 303
    for name in ("policy.json", "contacts.vcf", "owner.json"):
        path = c.settings.state_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert json.loads((c.settings.state_dir / "policy.json").read_text())["default_daily_cap"] == 7


async def test_owner_reset_then_wizard_sets_a_new_password_on_the_same_account(
    web_factory: Any, synapse_adapter: Any, tmp_path: Any
) -> None:
    """The owner forgot the password: the boot partition's reset file reopens step 1, and
    the same username gets the new password (the old one stops working)."""
    import itertools
    import os

    from appliance.homeserver.base import LoginFailed
    from appliance.web import owner_reset

    c = await web_factory(homeserver=lambda: synapse_adapter)
    owner = f"resetowner{os.getpid()}{next(itertools.count())}"
    form = {"name": "Anna", "username": owner, "password": "the first secret",
            "password2": "the first secret"}
    status, _, _ = await c.submit("/setup/1", "/setup/1", form)
    assert status == 303
    c.state.finish()
    assert (await c.client.get("/setup/1", allow_redirects=False)).status == 303

    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "textbridge-reset-owner").write_text("")
    assert owner_reset.reset(c.settings.state_dir, boot / "textbridge-reset-owner")
    fresh = await web_factory(state_dir=c.settings.state_dir,
                              homeserver=lambda: synapse_adapter)
    status, _ = await fresh.page("/setup/1")
    assert status == 200
    new = {**form, "password": "a brand new secret", "password2": "a brand new secret"}
    status, text, _ = await fresh.submit("/setup/1", "/setup/1", new)
    assert status == 303, text
    await synapse_adapter.login(owner, "a brand new secret")
    with pytest.raises(LoginFailed):
        await synapse_adapter.login(owner, "the first secret")
    assert owner_reset.RESET_KEY not in fresh.state.setup()
    saved = fresh.state.owner()
    assert saved is not None and saved["username"] == owner


async def test_kit_page_and_full_backup_download(web_factory: Any, tmp_path: Any) -> None:
    import re
    from pathlib import Path

    from appliance.backup.layout import Layout
    from appliance.backup.restore import verify

    c = await web_factory(data_dir=tmp_path, homeserver_kind="synapse")
    complete_setup(c.settings)
    await c.login()
    assert not (tmp_path / "backup.key").exists()
    status, text = await c.page("/backup")
    assert status == 200 and "Download full backup" in text and "/backup/kit" in text
    status, text = await c.page("/backup/kit")
    assert status == 200
    # The title is words alone, and the passphrase form is on the page once.
    assert "<title>Emergency kit – Textbridge</title>" in text
    assert text.count('action="/backup/passphrase"') == 1
    assert "If this key is lost, the backups are lost" in text
    assert "Restore from a backup" in text and "textbridge backup restore" in text
    found = re.search(r"AGE-SECRET-KEY-1(?: [0-9A-Z]{1,8})+", text)
    assert found is not None
    assert stat.S_IMODE((tmp_path / "backup.key").stat().st_mode) == 0o600
    status, _, resp = await c.submit("/backup", "/backup/full", {})
    assert status == 200 and "attachment" in resp.headers["Content-Disposition"]
    out = Path(tmp_path / "downloaded.tbbackup")
    out.write_bytes(await resp.read())
    layout = Layout(tmp_path, "synapse")
    assert verify(out, layout, found.group(0)) >= 3
    # The work directory goes once the response is sent (just after the client has it).
    for _ in range(100):
        if not list(tmp_path.glob(".backup-*")):
            break
        await asyncio.sleep(0.05)
    assert not list(tmp_path.glob(".backup-*"))
    # The same key next time: old backups stay readable.
    _, again = await c.page("/backup/kit")
    assert found.group(0) in again
    # Only the owner.
    await c.client.post("/logout", data={"csrf": await c.csrf("/")})
    resp = await c.client.get("/backup/kit", allow_redirects=False)
    assert resp.status in (303, 401, 403)


async def test_owner_sets_a_passphrase_that_opens_new_backups(
    web_factory: Any, tmp_path: Any
) -> None:
    from pathlib import Path

    from appliance.backup.errors import BackupError
    from appliance.backup.layout import Layout
    from appliance.backup.restore import verify

    c = await web_factory(data_dir=tmp_path, homeserver_kind="synapse")
    complete_setup(c.settings)
    await c.login()
    status, text, _ = await c.submit("/backup/kit", "/backup/passphrase",
                                     {"passphrase": "short", "passphrase2": "short"})
    assert status == 400 and "at least 12" in text
    phrase = "our family's long phrase"
    status, _, resp = await c.submit("/backup/kit", "/backup/passphrase",
                                     {"passphrase": phrase, "passphrase2": phrase})
    assert status == 303 and resp.headers["Location"] == "/backup/kit?passphrase=1"
    status, text = await c.page("/backup/kit?passphrase=1")
    assert "new backups open with your passphrase too" in text
    assert phrase not in (tmp_path / "backup.key").read_text()
    status, _, resp = await c.submit("/backup", "/backup/full", {})
    assert status == 200
    out = Path(tmp_path / "p.tbbackup")
    out.write_bytes(await resp.read())
    layout = Layout(tmp_path, "synapse")
    assert verify(out, layout, phrase) >= 3
    with pytest.raises(BackupError, match="passphrase is wrong"):
        verify(out, layout, "not the family's phrase")
