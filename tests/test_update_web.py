"""The dashboard shows the version that runs, so an owner can tell whether an update took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance import __version__
from tests.plugins.web import complete_setup


async def test_the_dashboard_shows_the_running_version(web_factory: Any, tmp_path: Path) -> None:
    c = await web_factory(control_socket=tmp_path / "missing.sock")
    complete_setup(c.settings)
    await c.login()
    status, text = await c.page("/")
    assert status == 200
    assert f"Textbridge {__version__}</p>" in text
