"""The dashboard's full backups: the emergency kit (the key, printable) and a download of
a full backup (appliance/backup/) while everything runs.

The key is made when the wizard finishes (`ensure_key`), or at the first visit here on a
box set up before; it is never replaced, because old backups need it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.backup import create as backup_create
from appliance.backup import key as backup_key
from appliance.backup.errors import BackupError
from appliance.backup.layout import Layout
from appliance.web import validate
from appliance.web.app import Web, get_web, render, require_owner

CHUNK = 1 << 20


def layout_of(w: Web) -> Layout | None:
    settings = w.settings
    if settings.data_dir is None:
        return None
    return Layout(settings.data_dir, settings.homeserver_kind, settings.config_file)


async def ensure_key(w: Web) -> backup_key.BackupKey | None:
    layout = layout_of(w)
    if layout is None:
        return None
    return await asyncio.to_thread(backup_key.load_or_create, layout.key_file)


def context(request: web.Request) -> dict[str, Any]:
    """What backup.html needs to offer full backups."""
    layout = layout_of(get_web(request))
    return {"full_backups": layout is not None,
            "full_error": request.query.get("full_error", "")}


async def kit(request: web.Request) -> web.Response:
    require_owner(request)
    w = get_web(request)
    key = await ensure_key(w)
    if key is None:
        raise web.HTTPNotFound()
    return await _kit_page(request, key)


async def _kit_page(request: web.Request, key: backup_key.BackupKey, *, status: int = 200,
                    errors: dict[str, str] | None = None) -> web.Response:
    w = get_web(request)
    owner = w.state.owner() or {}
    return render(request, "backup_kit.html", status=status, kit=backup_key.kit_text(key),
                  passphrase=bool(key.passphrase_identity), owner=owner.get("name", ""),
                  server_name=w.server_name(), errors=errors or {},
                  saved=request.query.get("passphrase") == "1",
                  made=time.strftime("%Y-%m-%d", time.localtime()))


async def set_passphrase(request: web.Request) -> web.Response:
    """The owner's own passphrase, which then opens every new backup as the kit's key does
    (appliance/backup/key.py). Seconds of scrypt, once."""
    require_owner(request)
    w = get_web(request)
    current = await ensure_key(w)
    if current is None:
        raise web.HTTPNotFound()
    form = await request.post()
    phrase = str(form.get("passphrase", ""))[:2000]
    try:
        validate.passphrase(phrase)
        if phrase != str(form.get("passphrase2", "")):
            raise validate.Invalid("The two passphrases are not the same.")
    except validate.Invalid as exc:
        return await _kit_page(request, current, status=400, errors={"passphrase": exc.message})
    layout = layout_of(w)
    assert layout is not None
    updated = await asyncio.to_thread(backup_key.with_passphrase, current, phrase)
    await asyncio.to_thread(backup_key.save, layout.key_file, updated)
    raise web.HTTPSeeOther("/backup/kit?passphrase=1")


async def download_full(request: web.Request) -> web.StreamResponse:
    require_owner(request)
    w = get_web(request)
    layout = layout_of(w)
    if layout is None:
        raise web.HTTPNotFound()
    key = await ensure_key(w)
    assert key is not None
    work = Path(tempfile.mkdtemp(prefix=".backup-download-", dir=layout.data_dir))
    try:
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        out = work / f"textbridge-full-{stamp}.tbbackup"
        try:
            await asyncio.to_thread(backup_create.create, layout, key, out)
        except BackupError as exc:
            return render(request, "backup.html", status=503, errors={}, restored=None,
                          full_backups=True, full_error=str(exc))
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{out.name}"',
            "Content-Length": str(out.stat().st_size),
        })
        await response.prepare(request)
        with out.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def add_routes(app: web.Application) -> None:
    from appliance.web import restore_step  # it builds on this module

    app.router.add_get("/backup/kit", kit)
    app.router.add_post("/backup/full", download_full)
    app.router.add_post("/backup/passphrase", set_passphrase)
    restore_step.add_routes(app)
