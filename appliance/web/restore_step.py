"""The wizard's other way in: "Restore from a backup", before the owner's account exists.

The box lists the backups on the plugged-in USB stick (`WebSettings.backup_sources`), the
person picks one and types its key (or passphrase). The web service checks it completely
(`appliance.backup.restore.verify`: decrypt, unpack into scratch, every validator; nothing
changes) and then asks for the restore: it writes `{data_dir}/.restore-pending.json` (0600,
the file's path and the key), which starts textbridge-restore.service through its path unit.
That service, as root, stops the bridge and the homeserver, runs
`textbridge backup restore --pending`, and starts everything again; the web service cannot
stop the others, and must not swap their files under them. A failure is left in
`.restore-failed.json` and shown here.

Only while the setup is open and nobody owns the box; the local-only middleware already
keeps everyone but the home network out of the wizard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.backup import header
from appliance.backup import restore as backup_restore
from appliance.backup.errors import BackupError
from appliance.backup.layout import FAILED_FILE, PENDING_FILE
from appliance.files import write_private
from appliance.web.app import get_web, render
from appliance.web.backup_pages import layout_of

MAX_LISTED = 50


@dataclass(frozen=True)
class Found:
    path: Path
    made: str
    version: str
    homeserver: str


def _found(sources: tuple[Path, ...]) -> list[Found]:
    found: list[Found] = []
    for source in sources:
        try:
            paths = sorted(source.glob("*.tbbackup"), reverse=True)[:MAX_LISTED]
        except OSError:
            continue
        for path in paths:
            if not path.is_file() or path.is_symlink():
                continue
            try:
                with path.open("rb") as handle:
                    head, _ = header.read(handle)
            except (OSError, BackupError):
                continue
            made = time.strftime("%Y-%m-%d %H:%M", time.localtime(head.created_at))
            found.append(Found(path, made, head.appliance_version, head.homeserver))
    return found


def _open(request: web.Request) -> None:
    w = get_web(request)
    if w.state.complete or w.state.owner() is not None or layout_of(w) is None:
        raise web.HTTPSeeOther("/setup")


def _page(request: web.Request, found: list[Found], *, status: int = 200,
          **context: Any) -> web.Response:
    w = get_web(request)
    layout = layout_of(w)
    assert layout is not None
    failed = ""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        failed = str(json.loads((layout.data_dir / FAILED_FILE).read_text())["error"])
    pending = (layout.data_dir / PENDING_FILE).exists()
    context.setdefault("errors", {})
    return render(request, "setup_restore.html", status=status, found=found,
                  failed=failed, pending=pending, **context)


async def show(request: web.Request) -> web.Response:
    _open(request)
    found = await asyncio.to_thread(_found, get_web(request).settings.backup_sources)
    return _page(request, found)


async def submit(request: web.Request) -> web.Response:
    _open(request)
    w = get_web(request)
    layout = layout_of(w)
    assert layout is not None
    found = await asyncio.to_thread(_found, w.settings.backup_sources)
    form = await request.post()
    choice = str(form.get("backup", ""))
    secret = str(form.get("key", ""))[:2000]
    errors: dict[str, str] = {}
    # The client names a listed backup by its place in the list, never by a path.
    chosen = next((f for i, f in enumerate(found) if str(i) == choice), None)
    if chosen is None:
        errors["backup"] = "Please choose one of the backups on the USB stick."
    if not secret.strip():
        errors["key"] = "Please type the key from the emergency kit, or the passphrase."
    if errors or chosen is None:
        return _page(request, found, status=400, errors=errors)
    try:
        await asyncio.to_thread(backup_restore.verify, chosen.path, layout, secret)
        header.check_compatible(
            await asyncio.to_thread(_header_of, chosen.path), layout.homeserver)
    except BackupError as exc:
        return _page(request, found, status=400, errors={"key": str(exc)})
    (layout.data_dir / FAILED_FILE).unlink(missing_ok=True)
    pending = {"file": str(chosen.path), "secret": secret}
    await asyncio.to_thread(write_private, layout.data_dir / PENDING_FILE,
                            (json.dumps(pending) + "\n").encode())
    return _page(request, found)


def _header_of(path: Path) -> header.Header:
    with path.open("rb") as handle:
        return header.read(handle)[0]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/restore", show)
    app.router.add_post("/restore", submit)
